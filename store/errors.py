"""Store errors: never a peer's fault."""

from __future__ import annotations

from protocol.errors import SezError

__all__ = ["StoreError"]


class StoreError(SezError):
    """A storage failure or a request the store cannot satisfy.

    Reasons: ``unknown-origin``, ``key-mismatch``, ``not-found``, ``bad-index``,
    ``corrupt`` (stored data fails its own checks: run fsck), ``io`` (LMDB error).
    """

    status_hint = 404
