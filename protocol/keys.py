"""Ed25519 keys in the three spellings sez-node uses.

* ``did:key`` (multicodec 0xed01, base58btc) inside JSON receipts (design §3);
* C2SP signed-note verifier keys ``name+keyid+base64(type||pub)`` in notes, where
  ``type`` is 0x01 for a log's Ed25519 signature and 0x04 for a
  tlog-cosignature/v1 witness key (c2sp.org/signed-note, c2sp.org/tlog-cosignature);
* the signed-note private key line ``PRIVATE+KEY+name+keyid+base64(0x01||seed)``,
  which is what key files hold (one line, file mode 0600).

Signing and verification go through pynacl (libsodium). Everything here is
pure: reading and writing key files is the caller's business.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import base58
import nacl.exceptions
import nacl.signing

from .errors import LocalProtocolError, PeerProtocolError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "SigningKey",
    "VerifierKey",
    "did_key_from_public",
    "key_id",
    "public_from_did_key",
    "validate_key_name",
]

ALG_ED25519 = 0x01
"""Signed-note signature type of a plain Ed25519 note signature."""
ALG_COSIGNATURE_V1 = 0x04
"""Signed-note signature type of a c2sp.org/tlog-cosignature/v1 cosignature."""

_ED25519_MULTICODEC = b"\xed\x01"
_DID_KEY_PREFIX = "did:key:z"
_PRIVATE_PREFIX = "PRIVATE+KEY+"


_SPACE_OR_PLUS = re.compile(r"[\s+]")
r"""``+`` or any character for which ``str.isspace()`` is true (``\s`` in a str pattern is exactly that set;
a test checks every code point). A regex, because a per-character generator cost about 4 µs per name and
a light client checks a dozen names per bundle."""


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a valid signed-note key name, else raise.

    A key name is non-empty UTF-8 with no Unicode spaces and no ``+``
    (c2sp.org/signed-note "Signatures").
    """
    if not name or _SPACE_OR_PLUS.search(name) is not None:
        raise LocalProtocolError("bad-key-name", f"key name {name!r} is empty or holds a space or '+'")
    return name


@lru_cache(maxsize=4096)
def key_id(name: str, alg: int, public: bytes) -> bytes:
    """The 4-byte signed-note key ID: SHA-256(name || 0x0A || alg || public)[:4].

    Memoized (a pure function of immutable arguments): verifiers look up every trusted key's ID
    for every note they check, a dozen SHA-256 computations per light-client bundle otherwise.
    """
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def did_key_from_public(public: bytes) -> str:
    """``did:key:z6Mk…`` for a 32-byte Ed25519 public key."""
    if len(public) != 32:
        raise LocalProtocolError("bad-key", f"Ed25519 public key must be 32 bytes, got {len(public)}")
    return _DID_KEY_PREFIX + base58.b58encode(_ED25519_MULTICODEC + public).decode()


def public_from_did_key(did: str) -> bytes:
    """The Ed25519 public key inside a ``did:key``; a ``#fragment`` must repeat the key.

    Raises:
        PeerProtocolError(bad-did): not an Ed25519 did:key.
    """
    base, sep, fragment = did.partition("#")
    if not base.startswith(_DID_KEY_PREFIX):
        raise PeerProtocolError("bad-did", f"{did!r} is not a did:key")
    if sep and fragment != base[len("did:key:") :]:
        raise PeerProtocolError("bad-did", f"{did!r}: fragment does not name the same key")
    try:
        raw = base58.b58decode(base[len(_DID_KEY_PREFIX) :])
    except ValueError as exc:
        raise PeerProtocolError("bad-did", f"{did!r}: invalid base58btc") from exc
    if len(raw) != 34 or raw[:2] != _ED25519_MULTICODEC:
        raise PeerProtocolError("bad-did", f"{did!r} is not an Ed25519 (0xed01) did:key")
    public = raw[2:]
    if did_key_from_public(public) != base:
        raise PeerProtocolError("bad-did", f"{did!r} is not canonically encoded")
    return public


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifierKey:
    """A named Ed25519 public key.

    Attributes:
        name: the signed-note key name (a log's origin, a watcher's name).
        public: 32 raw public-key bytes.
        alg: ALG_ED25519 for note signatures, ALG_COSIGNATURE_V1 for cosignatures.
    """

    name: str
    public: bytes
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        validate_key_name(self.name)
        if len(self.public) != 32:
            raise LocalProtocolError(
                "bad-key", f"Ed25519 public key must be 32 bytes, got {len(self.public)}"
            )
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise LocalProtocolError("bad-key", f"unsupported signature type 0x{self.alg:02x}")

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID that prefixes this key's signatures."""
        return key_id(self.name, self.alg, self.public)

    @property
    def did(self) -> str:
        """This key as ``did:key:z6Mk…``."""
        return did_key_from_public(self.public)

    @property
    def verification_method(self) -> str:
        """``did:key:z6Mk…#z6Mk…``, as receipts' ``proof.verificationMethod`` carries it."""
        did = self.did
        return f"{did}#{did[len('did:key:') :]}"

    def with_alg(self, alg: int) -> VerifierKey:
        """The same public key under another signature type (e.g. as a cosigner)."""
        return VerifierKey(name=self.name, public=self.public, alg=alg)

    def to_vkey(self) -> str:
        """C2SP verifier key string ``name+hex(keyid)+base64(alg||public)``."""
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.alg]) + self.public).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> VerifierKey:
        """Parse a C2SP verifier key string, checking that its key ID matches.

        Raises:
            PeerProtocolError(bad-vkey): malformed, unsupported type, or wrong key ID.
        """
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r} must be name+keyid+key")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r}: bad encoding") from exc
        if len(raw) != 33 or len(kid) != 4 or len(hex_id) != 8:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r}: wrong lengths")
        try:
            key = cls(name=name, public=raw[1:], alg=raw[0])
        except LocalProtocolError as exc:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r}: {exc.message}") from exc
        if key.key_id != kid:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r}: key ID does not match the key")
        if key.to_vkey() != vkey:
            raise PeerProtocolError("bad-vkey", f"verifier key {vkey!r} is not canonically encoded")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is a valid Ed25519 signature of ``message`` by this key."""
        if len(signature) != 64:
            return False
        try:
            _nacl_verify_key(self.public).verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


@lru_cache(maxsize=4096)
def _nacl_verify_key(public: bytes) -> nacl.signing.VerifyKey:
    """pynacl's key object for ``public`` (immutable; built once per key, not once per signature)."""
    return nacl.signing.VerifyKey(public)


class SigningKey:
    """A named Ed25519 signing key (the private half of a :class:`VerifierKey`).

    Not a dataclass on purpose: its ``repr`` never shows the seed.
    """

    __slots__ = ("_nacl", "name")

    def __init__(self, name: str, seed: bytes) -> None:
        validate_key_name(name)
        if len(seed) != 32:
            raise LocalProtocolError("bad-key", f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        self.name = name
        self._nacl = nacl.signing.SigningKey(seed)

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r}, public={self.public.hex()})"

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        """A fresh random key (libsodium's CSPRNG)."""
        return cls(name, bytes(nacl.signing.SigningKey.generate()))

    @property
    def public(self) -> bytes:
        """32 raw public-key bytes."""
        return bytes(self._nacl.verify_key)

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed. Handle with care."""
        return bytes(self._nacl)

    def verifier(self, alg: int = ALG_ED25519) -> VerifierKey:
        """The matching public key, as a note signer (0x01) or cosigner (0x04)."""
        return VerifierKey(name=self.name, public=self.public, alg=alg)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._nacl.sign(message).signature)

    def to_private_line(self) -> str:
        """``PRIVATE+KEY+name+keyid+base64(0x01||seed)``: the key-file format (signed-note skey)."""
        kid = key_id(self.name, ALG_ED25519, self.public)
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{kid.hex()}+{encoded}"

    @classmethod
    def from_private_line(cls, line: str) -> SigningKey:
        """Parse :meth:`to_private_line` output (surrounding whitespace ignored).

        Raises:
            LocalProtocolError(bad-key-file): malformed or inconsistent key line.
        """
        text = line.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise LocalProtocolError("bad-key-file", "key file does not start with PRIVATE+KEY+")
        parts = text[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise LocalProtocolError("bad-key-file", "key line must be PRIVATE+KEY+name+keyid+key")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise LocalProtocolError("bad-key-file", "key line has bad hex or base64") from exc
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise LocalProtocolError("bad-key-file", "key line does not hold an Ed25519 seed")
        key = cls(name, raw[1:])
        if key_id(name, ALG_ED25519, key.public) != kid:
            raise LocalProtocolError("bad-key-file", "key ID in the key line does not match the key")
        return key
