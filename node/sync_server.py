"""Answers ``/sez/sync/1`` requests from the store (design §13).

:func:`answer` is synchronous and side-effect free: one request in, one
response out. Every store or argument failure becomes an
:class:`~protocol.wire.ErrorResponse` with the stable reason, so a bad request
from a peer costs it an error answer, never the session or the daemon. The
stream loop that calls it lives with the p2p layer.

Bounds: a range answer holds at most :data:`~protocol.wire.MAX_RANGE_RECEIPTS`
receipts and at most :data:`RANGE_BYTES` of them, so that the frame stays under
:data:`~protocol.wire.MAX_SYNC_FRAME`; the follower asks again from where it
stopped.
"""

from __future__ import annotations

import logging
from typing import Final

from protocol.errors import SezError
from protocol.wire import (
    MAX_RANGE_RECEIPTS,
    MAX_SYNC_FRAME,
    ErrorResponse,
    GetCheckpoint,
    GetConsistency,
    GetInclusion,
    GetReceipts,
    Message,
    NoteResponse,
    ProofResponse,
    ReceiptsResponse,
)
from store import LogStore

__all__ = ["RANGE_BYTES", "answer"]

log = logging.getLogger(__name__)

RANGE_BYTES: Final = MAX_SYNC_FRAME - 64 * 1024
"""Receipt bytes in one range answer: the frame limit less room for the envelope."""


def answer(store: LogStore, request: Message, *, allowed_origins: frozenset[str] | None = None) -> Message:
    """The response to one sync request.

    Args:
        store: where the logs are.
        request: a decoded request (other message kinds get ``unexpected-request``).
        allowed_origins: origins this peer may read (None: all stored logs).
    """
    request_id = getattr(request, "id", 0)
    origin = getattr(request, "origin", None)
    if allowed_origins is not None and origin not in allowed_origins:
        return ErrorResponse(
            id=request_id, reason="unknown-origin", message=f"no log {origin!r} for this peer"
        )
    try:
        if isinstance(request, GetCheckpoint):
            note = store.checkpoint(request.origin, request.size or None)
            return NoteResponse(id=request.id, note=note)
        if isinstance(request, GetReceipts):
            return _range(store, request)
        if isinstance(request, GetConsistency):
            hashes = store.consistency_proof(request.origin, request.old, request.new)
            return ProofResponse(id=request.id, hashes=tuple(hashes))
        if isinstance(request, GetInclusion):
            hashes = store.inclusion_proof(request.origin, request.index, request.size)
            return ProofResponse(id=request.id, hashes=tuple(hashes))
    except SezError as exc:
        return ErrorResponse(id=request_id, reason=exc.reason, message=exc.message[:512])
    return ErrorResponse(
        id=request_id, reason="unexpected-request", message=f"{request.KIND} is not a request"
    )


def _range(store: LogStore, request: GetReceipts) -> ReceiptsResponse:
    count = min(request.count, MAX_RANGE_RECEIPTS)
    raws = store.receipts(request.origin, request.start, request.start + count)
    kept: list[bytes] = []
    total = 0
    for raw in raws:
        total += len(raw) + 5
        if total > RANGE_BYTES and kept:
            break
        kept.append(raw)
    return ReceiptsResponse(id=request.id, origin=request.origin, start=request.start, receipts=tuple(kept))
