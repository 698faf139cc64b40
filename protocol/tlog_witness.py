"""C2SP tlog-witness ``add-checkpoint``, sans-I/O: request bytes in, decision out (c2sp.org/tlog-witness).

The HTTP layer (the watcher daemon) reads the body, looks up what the witness last cosigned for the
origin, calls :func:`handle_add_checkpoint`, **persists** ``new_state`` atomically with the lookup
(the spec's race: check and update must be one step), and only then sends ``status``,
``content_type`` and ``body``. Checks, in the spec's order, each with its status code:

====  ==========================================================================================
400   the body is malformed (old size line, proof lines, blank line, checkpoint), or old > size
404   the checkpoint's origin is not a log this witness follows
403   no signature on the checkpoint verifies under a trusted key of that origin
409   old size is not the size last cosigned (body: that size, ``text/x.tlog.size``), or the old
      size equals the checkpoint size but the root differs from the one cosigned
422   the consistency proof does not verify (or is not empty for old size 0)
200   cosignature/v1 line(s) of the witness key; ``new_state`` is the checkpoint to persist
====  ==========================================================================================

A validly signed checkpoint that is refused with 409 (different root at a cosigned size) or 422
is returned in ``evidence`` (the spec: "might be proof of log misbehavior"): the watcher keeps it.

Issue 4's matrix lists "422 for … a same-size different root"; the spec says 409 for that case and
this module follows the spec, since any C2SP log or tool must be able to use our watchers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from .checkpoints import Checkpoint, cosign, parse_checkpoint, verify_log_signature
from .errors import PeerProtocolError
from .keys import SigningKey, VerifierKey
from .witness import check_witness_rule

__all__ = [
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "AddCheckpointRequest",
    "WitnessResponse",
    "handle_add_checkpoint",
    "parse_add_checkpoint",
]

MAX_PROOF_LINES: Final = 63
"""The spec: a client MUST NOT send more than 63 consistency proof lines."""
MAX_REQUEST_BYTES: Final = 256 * 1024
"""63 proof lines and a checkpoint note of at most 128 KiB fit well within this."""
TLOG_SIZE_TYPE: Final = "text/x.tlog.size"
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    """A parsed add-checkpoint body."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes


@dataclass(frozen=True, slots=True)
class WitnessResponse:
    """What to answer, and what to persist first (``new_state``) or keep (``evidence``)."""

    status: int
    content_type: str
    body: bytes
    new_state: Checkpoint | None = None
    evidence: bytes | None = None


def _plain(status: int, text: str) -> WitnessResponse:
    return WitnessResponse(status, "text/plain; charset=utf-8", (text.rstrip("\n") + "\n").encode())


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse ``old <size>\\n``, up to 63 base64 hash lines, an empty line, then the checkpoint.

    Raises:
        PeerProtocolError(bad-request): with what is wrong (answer 400).
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise PeerProtocolError("bad-request", f"body over {MAX_REQUEST_BYTES} bytes")
    head, sep, checkpoint = body.partition(b"\n\n")
    if not sep:
        raise PeerProtocolError("bad-request", "no empty line before the checkpoint")
    lines = head.split(b"\n")
    first = lines[0]
    if not first.startswith(b"old ") or not _DECIMAL.fullmatch(first[4:]):
        raise PeerProtocolError("bad-request", "the first line must be 'old <decimal size>'")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PeerProtocolError("bad-request", "a proof line is not base64") from exc
        if len(node) != 32 or base64.b64encode(node) != line:
            raise PeerProtocolError("bad-request", "a proof line is not one canonical base64 SHA-256 hash")
        proof.append(node)
    if len(proof) > MAX_PROOF_LINES:
        raise PeerProtocolError("bad-request", f"more than {MAX_PROOF_LINES} proof lines")
    return AddCheckpointRequest(int(first[4:]), tuple(proof), checkpoint)


def handle_add_checkpoint(
    body: bytes,
    *,
    log_keys: Mapping[str, VerifierKey],
    last_cosigned: Callable[[str], Checkpoint | None],
    witness_key: SigningKey,
    now: int,
) -> WitnessResponse:
    """Decide an add-checkpoint request (see the module docstring for the order and codes).

    Args:
        body: the request body.
        log_keys: origin -> the log's trusted key (type 0x01, name = origin).
        last_cosigned: origin -> the checkpoint this witness last cosigned (None: never).
        witness_key: the watcher's signing key (cosignatures use its type-0x04 identity).
        now: unix seconds for the cosignature timestamp.
    """
    try:
        request = parse_add_checkpoint(body)
        cp, note = parse_checkpoint(request.checkpoint)
    except PeerProtocolError as exc:
        return _plain(400, f"{exc.reason}: {exc.message}")
    key = log_keys.get(cp.origin)
    if key is None:
        return _plain(404, f"unknown origin {cp.origin!r}")
    try:
        verify_log_signature(note, cp, key)
    except PeerProtocolError as exc:
        return _plain(403, f"{exc.reason}: no valid signature from a trusted key")
    if request.old_size > cp.size:
        return _plain(400, f"old size {request.old_size} is larger than the checkpoint size {cp.size}")
    last = last_cosigned(cp.origin)
    last_size = last.size if last is not None else 0
    if request.old_size != last_size:
        return WitnessResponse(409, TLOG_SIZE_TYPE, f"{last_size}\n".encode())
    if last is not None and last.size == 0:
        last = None
    if last is None and request.proof:
        return WitnessResponse(422, "text/plain; charset=utf-8", b"the proof must be empty for old size 0\n",
                               evidence=request.checkpoint)  # fmt: skip
    try:
        decision = check_witness_rule(last, cp, request.proof)
    except PeerProtocolError as exc:
        status = 409 if exc.reason == "equivocation" else 422
        body_text = f"{exc.reason}: {exc.message}\n".encode()
        if status == 409:
            return WitnessResponse(
                409, TLOG_SIZE_TYPE, f"{last_size}\n".encode(), evidence=request.checkpoint
            )
        return WitnessResponse(status, "text/plain; charset=utf-8", body_text, evidence=request.checkpoint)
    line = cosign(cp, witness_key, now)
    return WitnessResponse(
        200,
        "text/plain; charset=utf-8",
        line.to_line().encode(),
        new_state=cp if decision.cosign else None,
    )
