"""The ``c2sp.org/tlog-proof@v1`` bundle: an offline-verifiable proof that a leaf is in a log.

Format (c2sp.org/tlog-proof "Format"), every line ending in ``\\n``::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>          (optional; omitted when there is none)
    index <decimal leaf index>
    <base64 proof hash>                 (zero or more, leaf's sibling first)

    <the signed checkpoint, verbatim, cosignatures included>

This is the light client's input (design §11): with the log's key and the
corridor's cosigner keys, :func:`verify_tlog_proof` shows that the leaf hash is
in the tree the log signed. The ``extra`` field is not authenticated ("MUST NOT
implicitly trust"); sez-node puts in it what the light client needs to rebuild
the leaf hash (the receipt), which it then checks itself.

Theory of operation
-------------------
:class:`TlogProof` is the value, :meth:`TlogProof.encode` its only encoder and
:meth:`TlogProof.decode` its strict decoder: canonical base64 only, decimal
without leading zeros, no empty ``extra``, the checkpoint a well-formed signed
checkpoint, and at most :data:`MAX_PROOF_BUNDLE_BYTES`. ``decode(b).encode() == b``
for every accepted ``b``. Decoding checks shape only; :func:`verify_tlog_proof`
checks meaning, cheap steps first.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .checkpoints import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    Checkpoint,
    parse_checkpoint,
    require_origin,
    verify_cosignatures,
    verify_log_signature,
)
from .errors import LocalProtocolError, PeerProtocolError
from .keys import VerifierKey
from .notes import MAX_NOTE_BYTES, SignedNote
from .proofs import verify_inclusion

__all__ = [
    "HEADER",
    "MAX_EXTRA_BYTES",
    "MAX_PROOF_BUNDLE_BYTES",
    "MAX_PROOF_HASHES",
    "ParsedTlogProof",
    "TlogProof",
    "parse_tlog_proof",
    "verify_tlog_proof",
]

HEADER = b"c2sp.org/tlog-proof@v1\n"
"""The bundle's first line ("MUST be the string ``c2sp.org/tlog-proof@v1``")."""

MAX_PROOF_HASHES = 64
"""Most inclusion-proof hashes: an RFC 6962 audit path in a tree of under 2**64 leaves has at most 64."""

MAX_EXTRA_BYTES = 64 * 1024
"""Largest ``extra`` payload (decoded), 64 KiB.

It carries one receipt (about 1 kB, a few kB with a large payload) and
optionally its anchor record; 64 KiB leaves room and still bounds memory.
"""

_EXTRA_PREFIX = b"extra "
_INDEX_PREFIX = b"index "
_HASH_LINE_LEN = 45
"""A proof line: 44 base64 characters of a 32-byte hash and a newline."""

MAX_PROOF_BUNDLE_BYTES = (
    len(HEADER)
    + len(_EXTRA_PREFIX)
    + 4 * ((MAX_EXTRA_BYTES + 2) // 3)
    + 1
    + len(_INDEX_PREFIX)
    + 20
    + 1
    + MAX_PROOF_HASHES * _HASH_LINE_LEN
    + 1
    + MAX_NOTE_BYTES
)
"""Largest encoded bundle: every part at its own limit. Checked before anything is decoded."""

_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,19}")
"""ASCII decimal, no leading zero, at most 20 digits (checked before ``int()``)."""


def _b64decode_canonical(text: bytes) -> bytes | None:
    """Standard padded base64 in its one canonical spelling, else None.

    ``binascii`` directly: what ``base64.b64decode(text, validate=True)`` and ``base64.b64encode``
    call, without their argument conversions (it runs for every line of a bundle).
    """
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return raw if binascii.b2a_base64(raw, newline=False) == text else None


def _bad(message: str, **details: object) -> PeerProtocolError:
    return PeerProtocolError("bad-proof-bundle", message, **details)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlogProof:
    """A ``c2sp.org/tlog-proof@v1`` bundle.

    Attributes:
        index: zero-based leaf index, 0 <= index <= 2**64 - 1 (``< size`` is checked
            by :func:`verify_tlog_proof`, which knows the size).
        proof: the RFC 6962 audit path, 32-byte hashes from the leaf's sibling up to
            the root's child, at most :data:`MAX_PROOF_HASHES`.
        checkpoint: the full signed checkpoint note bytes, verbatim (cosignatures
            included); must parse as a checkpoint.
        extra: optional opaque, unauthenticated data; None when absent, never
            empty, at most :data:`MAX_EXTRA_BYTES`.

    Raises:
        LocalProtocolError(bad-proof-bundle): on construction with a bad field.
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if type(self.index) is not int or not 0 <= self.index <= MAX_TREE_SIZE:
            raise LocalProtocolError("bad-proof-bundle", f"index {self.index!r} is not a uint64")
        if not isinstance(self.proof, tuple) or len(self.proof) > MAX_PROOF_HASHES:
            raise LocalProtocolError(
                "bad-proof-bundle", f"proof must be a tuple of at most {MAX_PROOF_HASHES} hashes"
            )
        if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in self.proof):
            raise LocalProtocolError("bad-proof-bundle", "every proof hash must be 32 bytes")
        if self.extra is not None and (
            not isinstance(self.extra, bytes) or not self.extra or len(self.extra) > MAX_EXTRA_BYTES
        ):
            raise LocalProtocolError("bad-proof-bundle", f"extra must be None or 1..{MAX_EXTRA_BYTES} bytes")
        if not isinstance(self.checkpoint, bytes):
            raise LocalProtocolError("bad-proof-bundle", "checkpoint must be the signed note's bytes")
        try:
            parse_checkpoint(self.checkpoint)
        except PeerProtocolError as exc:
            raise LocalProtocolError(
                "bad-proof-bundle", f"checkpoint is not a signed checkpoint: {exc.reason}"
            ) from exc

    def encode(self) -> bytes:
        """The canonical bundle bytes (c2sp.org/tlog-proof "Format")."""
        parts = [HEADER]
        if self.extra is not None:
            parts.append(_EXTRA_PREFIX + base64.b64encode(self.extra) + b"\n")
        parts.append(_INDEX_PREFIX + str(self.index).encode("ascii") + b"\n")
        parts.extend(base64.b64encode(h) + b"\n" for h in self.proof)
        parts.append(b"\n")
        parts.append(self.checkpoint)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> TlogProof:
        """Parse a bundle, refusing anything but the canonical encoding.

        Raises:
            PeerProtocolError: ``proof-bundle-too-large`` (over
                :data:`MAX_PROOF_BUNDLE_BYTES`); ``bad-proof-bundle`` (wrong
                header, bad or empty ``extra``, missing or non-canonical
                ``index``, a proof line that is not the canonical base64 of 32
                bytes, more than :data:`MAX_PROOF_HASHES` lines, no empty line
                before the checkpoint); or any reason of
                :func:`protocol.checkpoints.parse_checkpoint` for the checkpoint.
        """
        parsed = parse_tlog_proof(data)
        try:
            return cls(
                index=parsed.index, proof=parsed.proof, checkpoint=parsed.checkpoint_bytes, extra=parsed.extra
            )
        except LocalProtocolError as exc:  # unreachable if the checks above are complete; never leak Local
            raise PeerProtocolError(exc.reason, exc.message, **exc.details) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedTlogProof:
    """A decoded bundle whose checkpoint is parsed too (signatures not verified).

    What a verifier needs from one parse of the bundle: :meth:`TlogProof.decode` would parse the
    checkpoint note twice (its constructor re-checks), and the verifier a third time; parsing a note
    with a dozen signature lines costs about as much as one Ed25519 verification.
    Made only by :func:`parse_tlog_proof`; every part was checked by its own parser.
    """

    index: int
    proof: tuple[bytes, ...]
    extra: bytes | None
    checkpoint_bytes: bytes
    checkpoint: Checkpoint
    note: SignedNote


def _next_line(data: bytes, pos: int) -> tuple[bytes, int]:
    """The line of ``data`` that starts at ``pos``, without its newline, and the position after it.

    Raises:
        PeerProtocolError(bad-proof-bundle): no newline follows (``verify_bundle`` reports a bundle cut
            short from this message).
    """
    end = data.find(b"\n", pos)
    if end < 0:
        raise _bad("bundle ends inside a line", offset=pos)
    return data[pos:end], end + 1


def parse_tlog_proof(data: bytes) -> ParsedTlogProof:
    """Parse a bundle as :meth:`TlogProof.decode` does (same checks, same reasons), checkpoint included.

    Raises:
        PeerProtocolError: as :meth:`TlogProof.decode`.
    """
    data = bytes(data)
    if len(data) > MAX_PROOF_BUNDLE_BYTES:
        raise PeerProtocolError(
            "proof-bundle-too-large",
            f"bundle of {len(data)} bytes exceeds MAX_PROOF_BUNDLE_BYTES={MAX_PROOF_BUNDLE_BYTES}",
            size=len(data),
        )
    if not data.startswith(HEADER):
        raise _bad("bundle does not start with the c2sp.org/tlog-proof@v1 line")
    # Lines are read one by one, so the first fault in reading order is the one reported.
    line, pos = _next_line(data, len(HEADER))
    extra: bytes | None = None
    if line.startswith(_EXTRA_PREFIX):
        extra = _b64decode_canonical(line[len(_EXTRA_PREFIX) :])
        if not extra:
            raise _bad("extra line is empty or not canonical standard base64")
        if len(extra) > MAX_EXTRA_BYTES:
            raise _bad(f"extra data exceeds MAX_EXTRA_BYTES={MAX_EXTRA_BYTES}", size=len(extra))
        line, pos = _next_line(data, pos)
    if not line.startswith(_INDEX_PREFIX):
        raise _bad("missing index line")
    digits = line[len(_INDEX_PREFIX) :]
    if _DECIMAL.fullmatch(digits) is None or int(digits) > MAX_TREE_SIZE:
        raise _bad("index is not a uint64 in decimal without leading zeros", index=digits[:40].hex())
    index = int(digits)
    proof: list[bytes] = []
    line, pos = _next_line(data, pos)
    while line:  # up to the empty line before the checkpoint
        if len(proof) == MAX_PROOF_HASHES:
            raise _bad(f"more than MAX_PROOF_HASHES={MAX_PROOF_HASHES} proof lines")
        node = _b64decode_canonical(line)
        if node is None or len(node) != HASH_SIZE:
            raise _bad("proof line is not the canonical base64 of a 32-byte hash", position=len(proof))
        proof.append(node)
        line, pos = _next_line(data, pos)
    checkpoint = data[pos:]
    cp, note = parse_checkpoint(checkpoint)
    return ParsedTlogProof(
        index=index, proof=tuple(proof), extra=extra, checkpoint_bytes=checkpoint, checkpoint=cp, note=note
    )


def verify_tlog_proof(
    bundle: TlogProof,
    leaf_hash: bytes,
    log_key: VerifierKey,
    cosigners: Iterable[VerifierKey] = (),
) -> Checkpoint:
    """Verify that ``leaf_hash`` is at ``bundle.index`` in the tree the log signed.

    Checks, cheapest first: the checkpoint's shape; its origin is the log key's
    name; the RFC 6962 inclusion proof (``protocol.proofs.verify_inclusion``,
    which binds the index to the tree size and the proof length to both); the
    log's signature; then the cosignatures of ``cosigners`` that are present.

    This does not decide finality: whether the valid cosignatures reach the
    corridor's quorum is for the policy, from
    ``verify_cosignatures(parse_note(bundle.checkpoint), cp, cosigners)``.

    Args:
        bundle: a decoded bundle.
        leaf_hash: the 32-byte RFC 6962 leaf hash the caller computed itself
            (``SHA-256(0x00 || next_root)`` for a receipt, design §5).
        log_key: the log's type-0x01 key (name = origin).
        cosigners: trusted type-0x04 keys; their lines must verify if present.

    Returns:
        The verified checkpoint.

    Raises:
        PeerProtocolError: checkpoint reasons (``bad-note``, ``bad-checkpoint``,
            ...), ``wrong-origin``, ``bad-index``, ``bad-proof-length``,
            ``root-mismatch`` (:class:`~protocol.errors.RootMismatchError`),
            ``bad-log-signature``, ``missing-log-signature``, ``bad-cosignature``.
        LocalProtocolError: ``bad-leaf-hash`` (not 32 bytes), or a bad key list.
    """
    if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
        raise LocalProtocolError("bad-leaf-hash", "leaf hash must be 32 bytes")
    cp, note = parse_checkpoint(bundle.checkpoint)
    require_origin(cp, log_key)
    verify_inclusion(bundle.index, cp.size, leaf_hash, list(bundle.proof), cp.root)
    verify_log_signature(note, cp, log_key)
    verify_cosignatures(note, cp, cosigners)
    return cp
