"""Receipts: the signed entries of a corridor log (design §4).

A receipt is carried and stored as its RFC 8785 canonical bytes. Its identity
is ``next_root = SHA-256(JCS(receipt without "proof" and "next_root"))``; the
log signs ``b"sez.receipt/v1\\n" + next_root`` with Ed25519; the receipt's
``prev_root`` chains it to the previous receipt's ``next_root`` (or to the
log's genesis root for sequence 0), and its ``next_root`` is the leaf data of
the log's Merkle Mountain Range.

Three stages, each a type, so that no caller can skip one:

1. :class:`Receipt` (``Receipt.from_bytes`` / :func:`build_receipt`):
   well-formed: canonical bytes, schema-valid envelope and payload, sorted
   digest sets, correct ``payload_sha256`` and ``next_root``.
2. :class:`VerifiedReceipt` (:func:`verify_receipt`): its signature verifies
   under the origin's registered key. Only verified receipts can be stored.
3. Chain position (sequence, ``prev_root``) is checked by :func:`check_chain`
   against the log head, which the store does inside its write transaction.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import nacl.exceptions
import nacl.signing

from . import schemas
from . import stake as _stake
from .errors import LocalProtocolError, PeerProtocolError
from .jcs import MAX_SAFE_INTEGER, canonical, canonical_parsed_ascii, parse_canonical
from .keys import SigningKey, VerifierKey
from .lifecycle import check_payload as check_lifecycle_payload

__all__ = [
    "DIGEST_ALGORITHM",
    "KNOWN_KINDS",
    "MAX_RECEIPT_BYTES",
    "PROOF_TYPE",
    "RECEIPT_TYPE",
    "SIGNATURE_DOMAIN",
    "Receipt",
    "VerifiedReceipt",
    "build_receipt",
    "check_chain",
    "genesis_root",
    "payload_digest",
    "verify_receipt",
]

RECEIPT_TYPE = "sez.receipt/v1"
PROOF_TYPE = "sez.ed25519/v1"
DIGEST_ALGORITHM = "sha256"
SIGNATURE_DOMAIN = b"sez.receipt/v1\n"
"""Domain separation: a receipt signature can never be mistaken for a note signature."""

MAX_RECEIPT_BYTES = 64 * 1024
"""A transfer receipt is about 900 bytes; 64 KiB leaves room for large attestations
while bounding what one peer message can make us parse."""

KNOWN_KINDS: frozenset[str] = frozenset(
    name.removeprefix("payload.") for name in schemas.schema_names() if name.startswith("payload.")
)
"""Transition kinds with a payload schema in ``schemas/payload.<kind>.json``."""


def _check_watcher(kind: str, payload: Mapping[str, Any]) -> object:
    # ``stake`` is read at call time: stake -> evidence -> receipts is an import cycle.
    return _stake.check_watcher_payload(kind, payload)


def _check_slash(kind: str, payload: Mapping[str, Any]) -> object:
    return _stake.check_slash_payload(kind, payload)


_PAYLOAD_RULES: dict[str, Callable[[str, Mapping[str, Any]], object]] = {
    "watcher.bond": _check_watcher,
    "watcher.unbond": _check_watcher,
    "watcher.slash": _check_slash,
    "lifecycle": check_lifecycle_payload,
}
"""Rules beyond the payload schema, by kind: a watcher request must carry the watcher's own signature; a
slash must carry evidence whose statements and signatures verify from its own bytes (the age window
and the corridor's keys are checked by the stake fold, which knows the policy); a
lifecycle transition must be in the table with its fields and its required signers (their signatures
need the corridor's registered keys and are checked by ``lifecycle.apply``)."""


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def genesis_root(corridor_id: str, origin: str) -> bytes:
    """``SHA-256(JCS({"tag": "sez.genesis/v1", "corridor_id": …, "origin": …}))``: prev_root of sequence 0."""
    return _sha256(canonical({"tag": "sez.genesis/v1", "corridor_id": corridor_id, "origin": origin}))


def payload_digest(payload: Mapping[str, Any]) -> bytes:
    """``SHA-256(JCS(payload))``."""
    return _sha256(canonical(dict(payload)))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_timestamp(value: str) -> None:
    # The schema's pattern bounds each field; this refuses impossible dates (Feb 30).
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError as exc:
        raise PeerProtocolError("bad-timestamp", f"timestamp {value!r} is not a real UTC time") from exc


_ENVELOPE_KEYS = frozenset(schemas.load_schema("receipt")["required"])
_TRANSITION_KEYS = frozenset({"kind", "payload", "payload_sha256"})
_PROOF_KEYS = frozenset({"type", "verificationMethod", "signature"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CORRIDOR = re.compile(r"[A-Z]{3}-[A-Z]{3}")
_ORIGIN = re.compile(r"[!-*,-~]{1,255}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z"
)
_KIND = re.compile(r"[a-z][a-z0-9_.]{0,31}")
_VERIFICATION_METHOD = re.compile(r"did:key:z6Mk[1-9A-HJ-NP-Za-km-z]+#z6Mk[1-9A-HJ-NP-Za-km-z]+")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")
_MAX_DIGEST_SET = 64


def _violation(path: str, rule: str) -> PeerProtocolError:
    return PeerProtocolError("schema-violation", f"receipt: {path} {rule}", schema="receipt", path=path)


def _string(value: Any, pattern: re.Pattern[str], path: str, max_len: int = 1024) -> None:
    if type(value) is not str or len(value) > max_len or pattern.fullmatch(value) is None:
        raise _violation(path, f"must be a string matching {pattern.pattern}")


def _check_envelope(body: dict[str, Any]) -> None:
    """The rules of ``schemas/receipt.json``, written out for the hot path.

    ``fastjsonschema`` takes about 9 µs for the envelope, ten percent of the
    whole ingest budget; these checks take about 3 µs. ``tests/unit/
    test_receipts.py`` checks that this function and the schema (under
    ``jsonschema``) accept and refuse the same mutated receipts.
    """
    if body.keys() != _ENVELOPE_KEYS:
        raise _violation("data", f"must have exactly the keys {sorted(_ENVELOPE_KEYS)}")
    if body["type"] != RECEIPT_TYPE:
        raise _violation("data.type", f"must be {RECEIPT_TYPE!r}")
    if body["digest_algorithm"] != DIGEST_ALGORITHM:
        raise _violation("data.digest_algorithm", f"must be {DIGEST_ALGORITHM!r}")
    _string(body["corridor_id"], _CORRIDOR, "data.corridor_id")
    _string(body["origin"], _ORIGIN, "data.origin", 255)
    sequence = body["sequence"]
    if type(sequence) is not int or not 0 <= sequence <= MAX_SAFE_INTEGER:
        raise _violation("data.sequence", "must be an integer in 0..2**53-1")
    _string(body["timestamp"], _TIMESTAMP, "data.timestamp")
    _string(body["prev_root"], _HEX64, "data.prev_root")
    _string(body["next_root"], _HEX64, "data.next_root")
    for name in ("lawpack_digest_set", "ruleset_digest_set"):
        digests = body[name]
        if type(digests) is not list or len(digests) > _MAX_DIGEST_SET:
            raise _violation(f"data.{name}", f"must be an array of at most {_MAX_DIGEST_SET} digests")
        for index, digest in enumerate(digests):
            _string(digest, _HEX64, f"data.{name}[{index}]")
        if len(set(digests)) != len(digests):
            raise _violation(f"data.{name}", "must have unique items")
    transition = body["transition"]
    if type(transition) is not dict or transition.keys() != _TRANSITION_KEYS:
        raise _violation("data.transition", f"must be an object with exactly {sorted(_TRANSITION_KEYS)}")
    _string(transition["kind"], _KIND, "data.transition.kind")
    if type(transition["payload"]) is not dict:
        raise _violation("data.transition.payload", "must be an object")
    _string(transition["payload_sha256"], _HEX64, "data.transition.payload_sha256")
    proof = body["proof"]
    if type(proof) is not dict or proof.keys() != _PROOF_KEYS:
        raise _violation("data.proof", f"must be an object with exactly {sorted(_PROOF_KEYS)}")
    if proof["type"] != PROOF_TYPE:
        raise _violation("data.proof.type", f"must be {PROOF_TYPE!r}")
    _string(proof["verificationMethod"], _VERIFICATION_METHOD, "data.proof.verificationMethod", 128)
    _string(proof["signature"], _SIGNATURE, "data.proof.signature")


def _stripped_bytes(raw: bytes, body: Mapping[str, Any]) -> bytes:
    """JCS of the receipt without ``proof`` and ``next_root``, cut out of ``raw``.

    ``raw`` is canonical, so its members appear in sorted key order joined by
    commas, and removing two members leaves the canonical form of the rest.
    Neither member is first (``corridor_id`` sorts before both), every key
    before ``proof`` holds a string or an array of hex strings (schema), and a
    quote inside a JSON string is always escaped, so the first occurrence of
    each exact member text is the top-level one. ``test_receipts`` checks this
    against ``canonical(stripped dict)`` on generated receipts.
    """
    proof = body["proof"]
    next_member = b',"next_root":"' + body["next_root"].encode() + b'"'
    # The proof's fields are schema-restricted to characters JSON never escapes.
    proof_member = (
        f',"proof":{{"signature":"{proof["signature"]}","type":"{proof["type"]}",'
        f'"verificationMethod":"{proof["verificationMethod"]}"}}'
    ).encode()
    cut1 = raw.find(next_member)
    cut2 = raw.find(proof_member)
    if cut1 < 0 or cut2 < 0 or cut2 < cut1:
        # Unreachable for schema-valid canonical input; recompute rather than trust it.
        rest = {k: v for k, v in body.items() if k not in ("next_root", "proof")}
        return canonical(rest)
    end1 = cut1 + len(next_member)
    end2 = cut2 + len(proof_member)
    return raw[:cut1] + raw[end1:cut2] + raw[end2:]


_PAYLOAD_TAIL = b'"},"type":"' + RECEIPT_TYPE.encode() + b'"}'


def _payload_bytes(raw: bytes, transition: Mapping[str, Any], *, ascii_input: bool) -> bytes:
    """JCS of the transition's payload, cut out of ``raw``.

    ``raw`` is canonical and its envelope schema-valid, so it ends with the
    ``transition`` member followed by ``type``:
    ``"transition":{"kind":"<kind>","payload":<payload>,"payload_sha256":"<hex>"},"type":"sez.receipt/v1"}``,
    and the payload's own canonical form is the text between. The opening
    text is found by its first occurrence: every member before ``transition``
    holds a fixed key and a schema-restricted value in which a quote can only
    appear escaped (``\\"``), while the searched text has a quote right
    after ``transition``, which therefore cannot lie inside a string. The
    kind is restricted to characters JSON never escapes. This saves the
    payload's re-serialization (about 4 µs); ``test_receipts`` checks the
    payload digest against the ``rfc8785`` reference.
    """
    head = b'"transition":{"kind":"' + transition["kind"].encode() + b'","payload":'
    tail = b',"payload_sha256":"' + transition["payload_sha256"].encode() + _PAYLOAD_TAIL
    start = raw.find(head) + len(head)
    end = len(raw) - len(tail)
    if start < len(head) or end <= start or not raw.endswith(tail) or raw[start] != 0x7B:  # "{"
        # Unreachable for schema-valid canonical input; serialize rather than trust the cut.
        payload = transition["payload"]
        return canonical_parsed_ascii(payload) if ascii_input else canonical(payload)
    return raw[start:end]


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """A well-formed receipt whose digests are correct; its signature is not yet checked.

    Do not construct directly: use :meth:`from_bytes` or :func:`build_receipt`.

    Attributes:
        raw: the receipt's RFC 8785 canonical bytes (what is stored and sent).
        body: the parsed receipt.
        corridor_id, origin, sequence, kind: copied out of ``body``.
        prev_root, next_root: 32-byte digests.
        signature: the 64-byte Ed25519 signature.
        verification_method: the signer's ``did:key:…#…``.
    """

    raw: bytes
    body: Mapping[str, Any]
    corridor_id: str
    origin: str
    sequence: int
    kind: str
    prev_root: bytes
    next_root: bytes
    signature: bytes
    verification_method: str

    @classmethod
    def from_bytes(cls, raw: bytes) -> Receipt:
        """Parse and check a receipt received from outside.

        Checks, in order: size, JSON strictness (no floats, no duplicate keys),
        canonical form, the receipt schema, the payload schema of its kind,
        real timestamp, sorted digest sets, ``payload_sha256``, ``next_root``.

        Raises:
            PeerProtocolError: ``too-large``, ``bad-json``, ``float-refused``,
                ``non-canonical-json``, ``schema-violation``, ``unknown-kind``,
                ``bad-timestamp``, ``unsorted-digest-set``, ``payload-digest-mismatch``,
                ``next-root-mismatch``.
        """
        body = parse_canonical(raw, max_bytes=MAX_RECEIPT_BYTES)
        if type(body) is not dict:
            raise PeerProtocolError("schema-violation", "a receipt must be a JSON object")
        return cls._from_body(raw, body, ascii_input=raw.isascii())

    @classmethod
    def _from_body(cls, raw: bytes, body: dict[str, Any], *, ascii_input: bool) -> Receipt:
        _check_envelope(body)
        transition = body["transition"]
        kind = transition["kind"]
        if kind not in KNOWN_KINDS:
            raise PeerProtocolError("unknown-kind", f"transition kind {kind!r} is not known", kind=kind)
        schemas.validate(f"payload.{kind}", transition["payload"])
        if kind in _PAYLOAD_RULES:
            _PAYLOAD_RULES[kind](kind, transition["payload"])
        _check_timestamp(body["timestamp"])
        for name in ("lawpack_digest_set", "ruleset_digest_set"):
            digests = body[name]
            if len(digests) > 1 and digests != sorted(digests):
                raise PeerProtocolError("unsorted-digest-set", f"{name} must be sorted")
        payload_sha = _sha256(_payload_bytes(raw, transition, ascii_input=ascii_input))
        if payload_sha.hex() != transition["payload_sha256"]:
            raise PeerProtocolError(
                "payload-digest-mismatch",
                "payload_sha256 does not match the payload",
                expected=payload_sha.hex(),
                got=transition["payload_sha256"],
            )
        next_root = _sha256(_stripped_bytes(raw, body))
        if next_root.hex() != body["next_root"]:
            raise PeerProtocolError(
                "next-root-mismatch",
                "next_root does not match the receipt's content",
                expected=next_root.hex(),
                got=body["next_root"],
            )
        proof = body["proof"]
        return cls(
            raw=raw,
            body=body,
            corridor_id=body["corridor_id"],
            origin=body["origin"],
            sequence=body["sequence"],
            kind=kind,
            prev_root=bytes.fromhex(body["prev_root"]),
            next_root=next_root,
            signature=_unb64url(proof["signature"]),
            verification_method=proof["verificationMethod"],
        )

    @property
    def payload(self) -> Mapping[str, Any]:
        """The transition payload."""
        payload: Mapping[str, Any] = self.body["transition"]["payload"]
        return payload

    @property
    def timestamp(self) -> str:
        """``YYYY-MM-DDTHH:MM:SSZ``."""
        value: str = self.body["timestamp"]
        return value


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose signature verified under ``key``. Made only by :func:`verify_receipt`.

    (``node.ingest`` runs :func:`verify_receipt` in worker processes and rebuilds the same object in the
    writing process from the bytes a worker accepted.)
    """

    receipt: Receipt
    key: VerifierKey


@lru_cache(maxsize=1024)
def _nacl_key(public: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public)


@lru_cache(maxsize=1024)
def _verification_method(key: VerifierKey) -> str:
    # Derived from the public key (a base58 encoding, about 7 µs); keys are immutable.
    return key.verification_method


def verify_receipt(receipt: Receipt, key: VerifierKey) -> VerifiedReceipt:
    """Check that ``key`` is the receipt's signer and the signature is valid.

    ``key`` must be the origin's registered key (its name is the origin). Safe
    to call from worker threads: libsodium runs without the GIL.

    Raises:
        PeerProtocolError: ``wrong-origin`` (key is not this origin's),
            ``wrong-key`` (verificationMethod names another key),
            ``bad-signature``.
    """
    if key.name != receipt.origin:
        raise PeerProtocolError(
            "wrong-origin", f"receipt origin {receipt.origin!r} is not {key.name!r}", got=receipt.origin
        )
    if receipt.verification_method != _verification_method(key):
        raise PeerProtocolError(
            "wrong-key",
            f"receipt {receipt.sequence} is signed by {receipt.verification_method}, not the origin's key",
            got=receipt.verification_method,
        )
    try:
        _nacl_key(key.public).verify(SIGNATURE_DOMAIN + receipt.next_root, receipt.signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise PeerProtocolError(
            "bad-signature", f"receipt {receipt.origin}#{receipt.sequence}: signature does not verify"
        ) from exc
    return VerifiedReceipt(receipt, key)


def check_chain(receipt: Receipt, *, sequence: int, prev_root: bytes, corridor_id: str) -> None:
    """Check that ``receipt`` is the next entry of a log whose head is (``sequence``, ``prev_root``).

    Raises:
        PeerProtocolError: ``wrong-corridor``, ``seq-gap`` (sequence is not the
            next expected), ``prev-root-mismatch``.
    """
    if receipt.corridor_id != corridor_id:
        raise PeerProtocolError(
            "wrong-corridor", f"receipt is for corridor {receipt.corridor_id}, log is {corridor_id}"
        )
    if receipt.sequence != sequence:
        raise PeerProtocolError(
            "seq-gap",
            f"receipt sequence {receipt.sequence} is not the next expected {sequence}",
            expected=sequence,
            got=receipt.sequence,
        )
    if receipt.prev_root != prev_root:
        raise PeerProtocolError(
            "prev-root-mismatch",
            f"receipt {receipt.sequence}: prev_root does not chain to the log head",
            expected=prev_root.hex(),
            got=receipt.prev_root.hex(),
        )


def build_receipt(
    *,
    key: SigningKey,
    corridor_id: str,
    sequence: int,
    timestamp: str,
    prev_root: bytes,
    kind: str,
    payload: Mapping[str, Any],
    lawpack_digest_set: Sequence[str] = (),
    ruleset_digest_set: Sequence[str] = (),
) -> Receipt:
    """Build and sign a receipt for the log whose origin is ``key.name``.

    The result goes through the same checks as a receipt from a peer
    (:meth:`Receipt.from_bytes` rules), so a writer cannot produce what a
    follower would refuse.

    Raises:
        PeerProtocolError: the transition is invalid (e.g. ``schema-violation``,
            ``unknown-kind``, ``float-refused``); the message names the problem.
    """
    body: dict[str, Any] = {
        "type": RECEIPT_TYPE,
        "corridor_id": corridor_id,
        "origin": key.name,
        "sequence": sequence,
        "timestamp": timestamp,
        "prev_root": prev_root.hex(),
        "transition": {"kind": kind, "payload": dict(payload), "payload_sha256": ""},
        "lawpack_digest_set": sorted(set(lawpack_digest_set)),
        "ruleset_digest_set": sorted(set(ruleset_digest_set)),
        "digest_algorithm": DIGEST_ALGORITHM,
    }
    try:
        body["transition"]["payload_sha256"] = payload_digest(payload).hex()
        next_root = _sha256(canonical(body))
    except LocalProtocolError as exc:
        raise PeerProtocolError(exc.reason, exc.message) from exc
    body["next_root"] = next_root.hex()
    verifier = key.verifier()
    body["proof"] = {
        "type": PROOF_TYPE,
        "verificationMethod": verifier.verification_method,
        "signature": _b64url(key.sign(SIGNATURE_DOMAIN + next_root)),
    }
    raw = canonical(body)
    return Receipt._from_body(raw, body, ascii_input=False)
