"""Transparency-log checkpoints and their cosignatures (c2sp.org/tlog-checkpoint, tlog-cosignature).

A checkpoint is a signed note whose text is the log's origin, its tree size in
decimal and its RFC 6962 root hash in base64, one per line, then optional
extension lines (tlog-checkpoint "Note text"). The log signs it with an Ed25519
note signature (type 0x01) under the key name equal to the origin (design §6).
Watchers and the counterparty node add tlog-cosignature/v1 lines (type 0x04):
Ed25519 over ``cosignature/v1\\ntime <T>\\n`` + the checkpoint text, encoded as
``key ID(4) || u64 big-endian T || signature(64)`` (tlog-cosignature "Format",
"Ed25519 signed message"). A cosigned checkpoint is the same note with more
lines.

Theory of operation
-------------------
* :class:`Checkpoint` is the body as a value; :meth:`Checkpoint.body` is its only
  encoder and :meth:`Checkpoint.from_body` its strict decoder (no leading zeros,
  canonical base64 of exactly 32 bytes, no empty line), so one checkpoint has one
  text and one digest.
* :func:`open_checkpoint` is the gate every checkpoint from a peer passes: parse
  the note, parse the body, check the origin against the log key's name, then
  verify the log signature. Cheap structural checks run before any signature.
* :func:`verify_cosignatures` checks the lines of configured cosigner keys and
  ignores the rest (signed-note: unknown keys are ignored). Quorum, stake and
  freshness are decided elsewhere (``protocol.quorum``) from what it returns.
* Domain separation: a cosignature signs text that begins ``cosignature/v1\\n``
  followed by ``time <T>``, which :meth:`Checkpoint.from_body` refuses as a tree
  size, so a cosignature can never be replayed as a log signature on a
  checkpoint, even if one Ed25519 key were used in both roles.

Pure: no I/O; timestamps are arguments, never read from a clock.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from .errors import LocalProtocolError, PeerProtocolError
from .keys import ALG_COSIGNATURE_V1, ALG_ED25519, SigningKey, VerifierKey, key_id
from .notes import (
    NoteSignature,
    SignedNote,
    parse_note,
    sign_note,
    verify_note,
    with_signatures,
)

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "HASH_SIZE",
    "MAX_TIMESTAMP",
    "MAX_TREE_SIZE",
    "Checkpoint",
    "Cosignature",
    "add_signatures",
    "cosign",
    "cosignature_message",
    "open_checkpoint",
    "parse_checkpoint",
    "require_origin",
    "sign_checkpoint",
    "verify_cosignatures",
    "verify_log_signature",
]

HASH_SIZE = 32
"""Bytes of an RFC 6962 SHA-256 root hash."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size: RFC 6962 / RFC 9162 tree sizes are uint64."""

MAX_TIMESTAMP = 2**63 - 1
"""Largest cosignature timestamp: it "MUST NOT exceed 2^63 - 1" (tlog-cosignature "Format")."""

COSIGNATURE_V1_HEADER = b"cosignature/v1\n"
"""Domain-separation header line of the Ed25519 cosignature message."""

_COSIGNATURE_V1_SIZE = 8 + 64
"""Bytes after the key ID in a type-0x04 line: u64 timestamp, Ed25519 signature."""

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
"""ASCII decimal with no leading zero and at most 20 digits (2**64 - 1 has 20).

Python's ``int()`` alone would accept ``+5``, `` 5``, ``1_000`` and non-ASCII
digits, and raises ValueError past 4300 digits; the pattern runs first.
"""

_ROOT_B64_LEN = 44
"""Length of the canonical base64 of a 32-byte hash (with one ``=``)."""


def _parse_decimal(text: str) -> int | None:
    """The value of a canonical ASCII decimal up to 20 digits, else None."""
    if _DECIMAL.fullmatch(text) is None:
        return None
    return int(text)


def _decode_hash(text: str) -> bytes | None:
    """Decode the canonical standard base64 of a 32-byte hash, else None."""
    if len(text) != _ROOT_B64_LEN:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


_BAD_LINE_CHAR = re.compile("[\x00-\x1f\ud800-\udfff]")
"""A control character (newline included) or a lone surrogate (one regex search, not a per-character loop)."""


def _bad_line(line: str) -> bool:
    """True if a body line is empty, holds a newline, or a forbidden control character."""
    return not line or _BAD_LINE_CHAR.search(line) is not None


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A log's signed tree head, as the text of a C2SP checkpoint (tlog-checkpoint "Note text").

    Attributes:
        origin: the log's identity, e.g. ``sez.gov.pk/corridor/PAK-KSA``. Non-empty
            with no newline or control character. The spec only *recommends* a
            schema-less URL without spaces or ``+``; sez-node's origins are log key
            names as well, which :func:`open_checkpoint` enforces.
        size: number of leaves, 0 <= size <= 2**64 - 1.
        root: the 32-byte RFC 6962 root hash at ``size``.
        extensions: optional extra lines, each non-empty, opaque and not audited
            by monitors (their use is NOT RECOMMENDED; sez-node writes none).

    Raises:
        LocalProtocolError(bad-checkpoint): on construction with a bad field.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or _bad_line(self.origin):
            raise LocalProtocolError("bad-checkpoint", f"invalid origin {self.origin!r}")
        if type(self.size) is not int or not 0 <= self.size <= MAX_TREE_SIZE:
            raise LocalProtocolError("bad-checkpoint", f"tree size {self.size!r} is not a uint64")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise LocalProtocolError("bad-checkpoint", "root hash must be 32 bytes")
        if not isinstance(self.extensions, tuple) or not all(
            isinstance(line, str) and not _bad_line(line) for line in self.extensions
        ):
            raise LocalProtocolError("bad-checkpoint", "extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extensions, each ending in ``\\n``."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text strictly (tlog-checkpoint "Note text").

        Raises:
            PeerProtocolError: ``bad-checkpoint`` (no final newline, fewer than
            three lines, an empty line, a control character),
            ``bad-checkpoint-size`` (not ASCII decimal, a leading zero, over
            2**64 - 1), ``bad-checkpoint-root`` (not the canonical base64 of
            32 bytes).
        """
        if not text.endswith("\n"):
            raise PeerProtocolError("bad-checkpoint", "checkpoint text does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise PeerProtocolError("bad-checkpoint", "checkpoint needs origin, size and root lines")
        if any(_bad_line(line) for line in lines):
            raise PeerProtocolError("bad-checkpoint", "checkpoint has an empty line or a control character")
        origin, size_text, root_text, *extensions = lines
        size = _parse_decimal(size_text)
        if size is None or size > MAX_TREE_SIZE:
            raise PeerProtocolError(
                "bad-checkpoint-size",
                "tree size is not a uint64 in decimal without leading zeros",
                size=size_text[:40],
            )
        root = _decode_hash(root_text)
        if root is None:
            raise PeerProtocolError(
                "bad-checkpoint-root", "root is not the canonical base64 of 32 bytes", root=root_text[:80]
            )
        return cls(origin=origin, size=size, root=root, extensions=tuple(extensions))


def sign_checkpoint(cp: Checkpoint, log_key: SigningKey) -> SignedNote:
    """The log's signed note for ``cp``: one Ed25519 (type 0x01) line under the origin's name.

    Raises:
        LocalProtocolError(wrong-origin): ``log_key.name`` is not ``cp.origin``
            (design §6: the log signs with key name = origin).
    """
    if log_key.name != cp.origin:
        raise LocalProtocolError(
            "wrong-origin",
            f"log key {log_key.name!r} cannot sign for origin {cp.origin!r}",
            origin=cp.origin,
            key_name=log_key.name,
        )
    return SignedNote(text=cp.body(), signatures=(sign_note(cp.body(), log_key),))


def parse_checkpoint(data: bytes) -> tuple[Checkpoint, SignedNote]:
    """Parse a signed checkpoint's shape without verifying any signature.

    For pre-checks (gossip de-duplication, size comparisons) only; trust nothing
    in the result before :func:`open_checkpoint`.

    Raises:
        PeerProtocolError: any :func:`protocol.notes.parse_note` or
            :meth:`Checkpoint.from_body` reason.
    """
    note = parse_note(data)
    return Checkpoint.from_body(note.text), note


def require_origin(cp: Checkpoint, log_key: VerifierKey) -> None:
    """The checkpoint's origin line must be the log key's name (a log signs with key name = origin).

    Raises:
        PeerProtocolError(wrong-origin): with both names (the origin cut to 200 characters).
    """
    if cp.origin != log_key.name:
        raise PeerProtocolError(
            "wrong-origin",
            f"checkpoint origin {cp.origin!r} is not the log key's name {log_key.name!r}",
            origin=cp.origin[:200],
            expected=log_key.name,
        )


def verify_log_signature(note: SignedNote, cp: Checkpoint, log_key: VerifierKey) -> None:
    """Require that ``note`` (whose body is ``cp``) carries the log's valid signature.

    Checks, in order: the origin equals the log key's name; every line of the log
    key verifies; there is at least one. Lines of other keys (cosignatures,
    rotated log keys, other signature types) are ignored.

    Raises:
        PeerProtocolError: ``wrong-origin`` (origin is not the log key's name);
            ``bad-log-signature`` (a line of the log key does not verify);
            ``missing-log-signature`` (no line of the log key, e.g. a wrong key
            ID or key name).
        LocalProtocolError: ``unsupported-key-type`` (``log_key`` is not type
            0x01) or ``checkpoint-mismatch`` (``cp`` is not the note's body).
    """
    if log_key.alg != ALG_ED25519:
        raise LocalProtocolError(
            "unsupported-key-type", f"log key {log_key.name!r} is not an Ed25519 note key"
        )
    if cp.body() != note.text:
        raise LocalProtocolError("checkpoint-mismatch", "checkpoint is not the body of the note")
    require_origin(cp, log_key)
    try:
        signed_by = verify_note(note, [log_key])
    except PeerProtocolError as exc:
        raise PeerProtocolError(
            "bad-log-signature",
            f"the log's signature on {cp.origin} size {cp.size} does not verify",
            origin=cp.origin,
            size=cp.size,
        ) from exc
    if not signed_by:
        raise PeerProtocolError(
            "missing-log-signature",
            f"no signature by log key {log_key.name}+{log_key.key_id.hex()}",
            origin=cp.origin,
            key_id=log_key.key_id.hex(),
        )


def open_checkpoint(data: bytes, log_key: VerifierKey) -> tuple[Checkpoint, SignedNote]:
    """Parse a signed checkpoint and require the log's valid signature.

    The gate for every checkpoint from a peer: :func:`parse_checkpoint` (note
    shape, then body shape), then :func:`verify_log_signature` (origin, then
    signature). Structural checks all run before any signature check.

    Args:
        data: the whole signed note, as received.
        log_key: the log's Ed25519 (type 0x01) verifier key; its name is the origin.

    Returns:
        (checkpoint, note); the note keeps every line, for cosignature checks.

    Raises:
        PeerProtocolError: any :func:`parse_checkpoint` reason; ``wrong-origin``,
            ``bad-log-signature`` or ``missing-log-signature``.
        LocalProtocolError(unsupported-key-type): ``log_key`` is not type 0x01.
    """
    if log_key.alg != ALG_ED25519:
        raise LocalProtocolError(
            "unsupported-key-type", f"log key {log_key.name!r} is not an Ed25519 note key"
        )
    cp, note = parse_checkpoint(data)
    verify_log_signature(note, cp, log_key)
    return cp, note


# --------------------------------------------------------------------------- cosignatures


@dataclass(frozen=True, slots=True, kw_only=True)
class Cosignature:
    """A tlog-cosignature/v1 (Ed25519, type 0x04) line, decoded.

    Attributes:
        name: the cosigner's key name.
        key_id: ``SHA-256(name || 0x0A || 0x04 || public)[:4]``.
        timestamp: POSIX seconds when it was made, 0 <= timestamp <= 2**63 - 1.
        signature: the 64-byte Ed25519 signature of :func:`cosignature_message`.

    Raises:
        LocalProtocolError(bad-cosignature): on construction with a bad field.
    """

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        if type(self.timestamp) is not int or not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise LocalProtocolError("bad-cosignature", f"timestamp {self.timestamp!r} is not in 0..2**63-1")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise LocalProtocolError("bad-cosignature", "an Ed25519 cosignature is 64 bytes")
        try:
            self.to_note_signature()
        except LocalProtocolError as exc:
            raise LocalProtocolError("bad-cosignature", exc.message) from exc

    def to_note_signature(self) -> NoteSignature:
        """The note line: key ID || u64 big-endian timestamp || signature."""
        return NoteSignature(
            name=self.name, key_id=self.key_id, signature=self.timestamp.to_bytes(8, "big") + self.signature
        )

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Cosignature:
        """Decode a type-0x04 line's ``timestamped_signature``.

        Raises:
            PeerProtocolError(bad-cosignature): not 8 + 64 bytes, or a timestamp
                over 2**63 - 1.
        """
        timestamp, signature = _split_cosignature(sig)
        return cls(name=sig.name, key_id=sig.key_id, timestamp=timestamp, signature=signature)


def _split_cosignature(sig: NoteSignature) -> tuple[int, bytes]:
    """(timestamp, 64-byte signature) of a type-0x04 line (:meth:`Cosignature.from_note_signature`'s checks).

    Raises:
        PeerProtocolError(bad-cosignature): not 8 + 64 bytes, or a timestamp over 2**63 - 1.
    """
    if len(sig.signature) != _COSIGNATURE_V1_SIZE:
        raise PeerProtocolError(
            "bad-cosignature",
            f"cosignature by {sig.name} is {len(sig.signature)} bytes, not 72",
            name=sig.name,
        )
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise PeerProtocolError(
            "bad-cosignature", f"cosignature by {sig.name} has a timestamp over 2**63-1", name=sig.name
        )
    return timestamp, sig.signature[8:]


def cosignature_message(cp: Checkpoint, timestamp: int) -> bytes:
    """What a v1 cosigner signs: ``cosignature/v1\\ntime <T>\\n`` + the checkpoint text.

    tlog-cosignature "Ed25519 signed message"; extension lines are included.

    Raises:
        LocalProtocolError(bad-cosignature): ``timestamp`` outside 0..2**63-1.
    """
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise LocalProtocolError("bad-cosignature", f"timestamp {timestamp!r} is not in 0..2**63-1")
    return COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + cp.body().encode("utf-8")


def cosign(cp: Checkpoint, key: SigningKey, timestamp: int) -> NoteSignature:
    """Cosign ``cp`` at ``timestamp`` with a cosigner key (type 0x04).

    The caller (the witness) must first have checked consistency with what it
    cosigned before and persisted its new state (design §6 witness rule); this
    function only signs.

    Returns:
        The line ``— <key.name> base64(key ID || u64 timestamp || signature)``.

    Raises:
        LocalProtocolError(bad-cosignature): ``timestamp`` outside 0..2**63-1.
    """
    signature = key.sign(cosignature_message(cp, timestamp))
    return Cosignature(
        name=key.name,
        key_id=key_id(key.name, ALG_COSIGNATURE_V1, key.public),
        timestamp=timestamp,
        signature=signature,
    ).to_note_signature()


def verify_cosignatures(note: SignedNote, cp: Checkpoint, cosigners: Iterable[VerifierKey]) -> dict[str, int]:
    """Verify the cosignatures of configured cosigners; return name -> timestamp.

    A line counts only if its key name and key ID both match a configured
    cosigner key; all other lines (the log's, unknown witnesses', other types)
    are ignored (signed-note "Signatures"; tlog-cosignature: "ignore any
    signature lines that don't match the name and key ID").

    Args:
        note: the checkpoint note, as returned by :func:`open_checkpoint`.
        cp: its parsed body; ``cp.body()`` must equal ``note.text``.
        cosigners: trusted type-0x04 keys.

    Returns:
        For every cosigner with a valid cosignature, its name and timestamp. If
        one key cosigned more than once (all lines valid), the latest timestamp:
        each line states "the largest tree as of T", so the latest subsumes the
        rest. Timestamps are not compared with any clock here.

    Raises:
        PeerProtocolError(bad-cosignature): a line of a known cosigner is
            malformed or does not verify.
        LocalProtocolError: ``checkpoint-mismatch`` (``cp`` is not the note's
            body), ``unsupported-key-type`` or ``ambiguous-key`` (bad ``cosigners``).
    """
    body = cp.body()
    if body != note.text:
        raise LocalProtocolError("checkpoint-mismatch", "checkpoint is not the body of the note")
    body_bytes = body.encode("utf-8")
    index = _cosigner_index(tuple(cosigners))
    result: dict[str, int] = {}
    for line in note.signatures:
        cosigner = index.get(line.key)
        if cosigner is None:
            continue
        timestamp, signature = _split_cosignature(line)
        # cosignature_message(cp, timestamp), with the body encoded once for all lines
        message = COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + body_bytes
        if not cosigner.verify(message, signature):
            raise PeerProtocolError(
                "bad-cosignature",
                f"cosignature by {line.name}+{line.key_id.hex()} does not verify",
                name=line.name,
                key_id=line.key_id.hex(),
                timestamp=timestamp,
            )
        result[cosigner.name] = max(result.get(cosigner.name, 0), timestamp)
    return result


@lru_cache(maxsize=256)
def _cosigner_index(cosigners: tuple[VerifierKey, ...]) -> Mapping[tuple[str, bytes], VerifierKey]:
    """(name, key ID) -> key for a set of cosigner keys; shared, never to be mutated.

    Memoized (keys are immutable values): a light client checks every bundle against the same
    policy keys, and building the index (a key ID each, the checks below) cost about 3 µs of a
    bundle with seven cosigners, against under 1 µs to look it up.

    Raises:
        LocalProtocolError: ``unsupported-key-type`` (a key is not type 0x04) or ``ambiguous-key``.
    """
    index: dict[tuple[str, bytes], VerifierKey] = {}
    for key in cosigners:
        if key.alg != ALG_COSIGNATURE_V1:
            raise LocalProtocolError(
                "unsupported-key-type", f"cosigner key {key.name!r} has type 0x{key.alg:02x}, expected 0x04"
            )
        if index.setdefault((key.name, key.key_id), key) != key:
            raise LocalProtocolError("ambiguous-key", f"two cosigner keys named {key.name!r} share a key ID")
    return index


def add_signatures(note: SignedNote, sigs: Iterable[NoteSignature]) -> SignedNote:
    """Merge signature lines (usually cosignatures) into a checkpoint note.

    Lines are de-duplicated by (name, key ID), the first held line of a key
    winning (see :func:`protocol.notes.with_signatures`). The order is stable: the
    log's lines (key name = origin) first, then every other line in the order
    first held or received. Nothing is verified: verify received lines with
    :func:`verify_cosignatures` on a note holding them before storing or relaying.

    Raises:
        PeerProtocolError: ``note.text`` is not a checkpoint body (any
            :meth:`Checkpoint.from_body` reason).
        LocalProtocolError(too-many-signatures | note-too-large): the merged note
            would exceed the note limits.
    """
    origin = Checkpoint.from_body(note.text).origin
    merged = with_signatures(note, sigs)
    ordered = tuple(s for s in merged.signatures if s.name == origin) + tuple(
        s for s in merged.signatures if s.name != origin
    )
    if ordered == note.signatures:
        return note
    return SignedNote(text=note.text, signatures=ordered)
