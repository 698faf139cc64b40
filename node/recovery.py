"""Recovering our own log from the counterparty's replica of it (design §8 "Recovery").

Theory of operation
-------------------
The counterparty keeps a verified replica of our log and serves it over ``/sez/sync/1`` (our own
origin is among the logs a corridor peer may read). Two situations make our store wrong about our
own log, and :class:`OwnLogRecovery` handles both, for one corridor:

* **Our log is shorter than what we signed** (a lost data directory, a restored backup): at start,
  and whenever a counterparty peer (re)connects, we ask the counterparty for its latest checkpoint of
  our log. If it is larger than our head and its receipts extend ours (its receipt at our last
  sequence is the one we hold: every receipt commits to its predecessor, so the whole prefix is
  equal), we pull our own receipts before writing anything. Until this **own-log check** has
  completed the writer is held (:meth:`~node.lifecycle.LifecycleTracker.hold`: every submission is
  refused with ``recovering``, HTTP 503). The check waits for a counterparty at most
  ``own_log_check_timeout`` seconds; then writing proceeds with a logged warning, so that a fresh
  network (or a node whose counterparty is down) still starts. Once the counterparty answered, a
  pull in progress is never abandoned for that deadline (it is shielded; each request is bounded).
  If the counterparty's copy does *not* extend ours, the logs have forked: that is logged loudly and
  left to fork detection (the replica raises the evidence and the corridor halts).
* **Our log is on the losing branch of a fork**: the corridor's lifecycle holds a HALTED -> ACTIVE
  resolution whose ``branch`` names our origin, and our log disagrees with it (shorter than
  ``branch.size``, or another root at that size). A guard on the lifecycle gate refuses our writer at
  once (so that it never extends the losing branch, even before this task wakes). Then: find the
  first sequence where our log differs from the counterparty's copy (bisection over single
  receipts, O(log n) requests), set our tail aside from there (:func:`store.orphans.set_aside`, one
  transaction, never deleted), drop every cache that held the old tail (``on_reset``), pull the
  canonical receipts (verified under our own key, chained, appended through the normal store path,
  in batches, the counterparty's checkpoint checked with the last batch), and check that our root at
  ``branch.size`` is ``branch.root``. If it is not, the recovery **fails loudly and the writer stays
  held** (an operator must look). Otherwise the hold ends and our writer continues at the right
  sequence.

Every received receipt goes through the same checks as any other (the ``Ingestor``: under our
registered key, ``check_chain`` inside ``LogStore.append``): the counterparty cannot make us store
anything we did not sign.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from protocol.checkpoints import Checkpoint, open_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey
from protocol.lifecycle import signing_digest
from protocol.sync import PROTOCOL_ID
from protocol.wire import (
    MAX_RANGE_RECEIPTS,
    ErrorResponse,
    GetCheckpoint,
    GetReceipts,
    NoteResponse,
    ReceiptsResponse,
)
from store import LogStore, StoreError
from store.orphans import open_orphans, orphan_receipts, orphan_sets, set_aside

from .ingest import Ingestor
from .lifecycle import LifecycleTracker
from .p2p import P2PHost
from .runtime import Kick
from .sync_session import SyncSession
from .writer import utc_timestamp

__all__ = ["HOLD_CHECK", "HOLD_PULL", "HOLD_RECOVERY", "OwnLogRecovery", "orphans_listing"]

log = logging.getLogger(__name__)

HOLD_CHECK: Final = "own-log-check"
HOLD_RECOVERY: Final = "recovery"
HOLD_PULL: Final = "own-log-pull"
POLL: Final = 1.0
"""Seconds between looks at the peers (a reconnection re-runs the own-log check) and the lifecycle."""
RETRY: Final = 0.5
"""Seconds between attempts while a counterparty is unreachable or not ready."""

_RETRYABLE = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


class _RecoveryFailed(Exception):
    """The canonical branch could not be reached with what the counterparty serves: stay held."""


class OwnLogRecovery:
    """The own-log check and fork recovery of one corridor's log (see the module docstring).

    Holds the writer from construction until the first own-log check completes or times out (if a
    counterparty peer is configured: with none there is nobody to ask).

    Args:
        store: the node's store.
        corridor_id: the corridor.
        key: our log's registered verifier key (its name is our origin).
        lifecycle: the corridor's tracker (holds, guards, the resolution).
        host: the p2p host (connected peers, streams).
        ingestor: verifies pulled receipts under our registered key and appends them (as for any log).
        peer_ids: the counterparty's configured peer ids.
        check_timeout: seconds the start-up check waits for a counterparty.
        on_reset: called in a worker thread after our log was cut back or grew by recovery, with the
            new size: every cache holding our log's head must be dropped.
        on_ready: awaited each time a check or recovery ended and released the writer (the corridor
            then records what was refused meanwhile, e.g. a halt).
    """

    def __init__(
        self,
        *,
        store: LogStore,
        corridor_id: str,
        key: VerifierKey,
        lifecycle: LifecycleTracker,
        host: P2PHost,
        ingestor: Ingestor,
        peer_ids: Sequence[str],
        check_timeout: float,
        on_reset: Callable[[int], None],
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.corridor_id = corridor_id
        self.origin = key.name
        self.key = key
        self.lifecycle = lifecycle
        self.host = host
        self._ingestor = ingestor
        self.peer_ids = tuple(peer_ids)
        self.check_timeout = check_timeout
        self._on_reset = on_reset
        self._on_ready = on_ready
        self.state = "checking"
        """``checking`` (the own-log check runs), ``ready``, ``unchecked`` (no counterparty answered
        in time), ``diverged`` (its copy of our log is another branch), ``recovering``, ``failed``."""
        self.pulled = 0
        self.last_error = ""
        self._agreed: set[str] = set()
        self._failed: set[str] = set()
        self._turn = -1
        self._kick = Kick()
        open_orphans(store)  # now, while nothing else writes (see store.orphans)
        if self.peer_ids:  # with no counterparty peer configured there is nobody to check with
            lifecycle.hold(HOLD_CHECK, "the own-log check with the counterparty has not completed")
        else:
            self.state = "unchecked"
        lifecycle.guards.append(self._guard)

    # ------------------------------------------------------------------ guard

    def _mismatch(self) -> dict[str, Any] | None:
        """The resolution naming our origin that our log disagrees with, or None."""
        payload = self.lifecycle.resolution_for(self.origin)
        if payload is None:
            return None
        digest = signing_digest(payload).hex()
        if digest in self._agreed:
            return None
        branch = payload["resolution"]["branch"]
        size, root = int(branch["size"]), str(branch["root"])
        head = self.store.head(self.origin)
        if head.size >= size and self.store.root_at(self.origin, size).hex() == root:
            self._agreed.add(digest)  # appends never change the root at a smaller size
            return None
        return payload

    def _guard(self) -> str | None:
        """The lifecycle gate's guard (runs with every writer batch): hold while we disagree."""
        payload = self._mismatch()
        if payload is None:
            return None
        branch = payload["resolution"]["branch"]
        return f"our log disagrees with the canonical branch (size {branch['size']}) a resolution named"

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """JSON-ready (corridor status ``recovery``)."""
        sets = orphan_sets(self.store, self.origin)
        held = self.lifecycle.hold_reason()
        return {
            "state": self.state,
            "recovering": held is not None,
            "held": held,
            "pulled": self.pulled,
            "orphan_sets": len(sets),
            "orphans": sum(s.count for s in sets),
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The start-up check, then watch for reconnections and resolutions until cancelled."""
        task_status.started()
        if self.peer_ids:
            await self._own_log_check(initial=True)
        connected = self._connected()
        while True:
            await self._kick.wait(POLL)
            payload = await trio.to_thread.run_sync(self._mismatch)
            if payload is not None and signing_digest(payload).hex() not in self._failed:
                await self._recover(payload)
                continue
            now = self._connected()
            if now - connected and payload is None:
                await self._own_log_check(initial=False)
            connected = now

    def _connected(self) -> set[str]:
        return {peer for peer in self.peer_ids if self.host.is_connected(peer)}

    async def _wait_peer(self) -> str:
        """A connected corridor peer, a different one on each call (in turn).

        The corridor's peers include its watchers, which serve no log: trying the same first peer
        again after a failure would never reach the counterparty.
        """
        while True:
            peers = sorted(self._connected())
            if peers:
                self._turn += 1
                return peers[self._turn % len(peers)]
            await trio.sleep(RETRY)

    # ------------------------------------------------------------ own-log check

    async def _own_log_check(self, *, initial: bool) -> None:
        """Pull our own receipts the counterparty holds beyond our head.

        The first check runs under the hold set at construction (nothing is written before it ends);
        a re-check after a reconnection holds the writer only while it pulls.
        """
        self.state = "checking"
        started = time.monotonic()
        try:
            with trio.move_on_after(self.check_timeout) as scope:
                while True:
                    peer = await self._wait_peer()
                    try:
                        self.state = await self._check_with(peer)
                        break
                    except (*_RETRYABLE, PeerProtocolError, StoreError) as exc:
                        self.last_error = f"own-log check: {exc!r}"
                        log.info(
                            "own-log check with %s failed: %r", peer, exc,
                            extra={"corridor": self.corridor_id},
                        )  # fmt: skip
                        await trio.sleep(RETRY)
            if scope.cancelled_caught:
                self.state = "unchecked"
                log.warning(
                    "own-log check: no counterparty answered within %.0f s; writing %s without it",
                    self.check_timeout, self.origin, extra={"corridor": self.corridor_id},
                )  # fmt: skip
            else:
                log.info(
                    "own-log check of %s done in %.1f s: %s", self.origin, time.monotonic() - started,
                    self.state, extra={"corridor": self.corridor_id},
                )  # fmt: skip
        finally:
            if initial:
                self.lifecycle.release(HOLD_CHECK)
        await self._ready()

    async def _ready(self) -> None:
        if self._on_ready is not None and self.lifecycle.hold_reason() is None:
            await self._on_ready()

    async def _check_with(self, peer: str) -> str:
        stream = await self.host.open_stream(peer, PROTOCOL_ID)
        async with stream:
            session = SyncSession(stream)
            theirs = await self._latest(session)
            if theirs is None:
                return "ready"  # the counterparty holds none of our log (a fresh network)
            cp, note = theirs
            head = await trio.to_thread.run_sync(self.store.head, self.origin)
            if cp.size <= head.size:
                return "ready"
            if head.size > 0:
                (raw,) = await self._fetch(session, head.size - 1, 1)
                ours = await trio.to_thread.run_sync(self.store.receipt, self.origin, head.size - 1)
                if raw != ours:
                    log.error(
                        "own-log check: the counterparty's copy of %s (size %d) is another branch than ours "
                        "(size %d) at sequence %d: the log has forked", self.origin, cp.size, head.size,
                        head.size - 1, extra={"corridor": self.corridor_id, "origin": self.origin},
                    )  # fmt: skip
                    return "diverged"
            log.warning(
                "own-log check: the counterparty holds %s up to %d, we hold %d: pulling our own receipts",
                self.origin, cp.size, head.size, extra={"corridor": self.corridor_id},
            )  # fmt: skip
            self.lifecycle.hold(HOLD_PULL, "pulling our own receipts from the counterparty")
            try:
                with trio.CancelScope(shield=True):  # never leave a half-pulled log for the deadline
                    # From the head read now: our writer may have written since the comparison (a
                    # re-check runs unheld), and then the chain check refuses the pull (a fork).
                    await self._pull(session, self.store.head(self.origin).size, cp.size, note)
            finally:
                self.lifecycle.release(HOLD_PULL)
            return "ready"

    # ----------------------------------------------------------------- recovery

    async def _recover(self, payload: dict[str, Any]) -> None:
        """Bring our log onto the resolution's branch; on failure stay held (see module docstring)."""
        digest = signing_digest(payload).hex()
        branch = payload["resolution"]["branch"]
        why = f"recovering our log to the canonical branch (size {branch['size']})"
        self.lifecycle.hold(HOLD_RECOVERY, why)
        self.state = "recovering"
        log.warning(
            "our log %s disagrees with the canonical branch (size %s, root %s): recovering it",
            self.origin, branch["size"], branch["root"], extra={"corridor": self.corridor_id},
        )  # fmt: skip
        while True:
            peer = await self._wait_peer()
            try:
                await self._recover_with(peer, payload)
                break
            except _RecoveryFailed as exc:
                self._failed.add(digest)
                self.state = "failed"
                self.last_error = str(exc)
                log.critical(
                    "RECOVERY FAILED for %s: %s; the writer stays held", self.origin, exc,
                    extra={"corridor": self.corridor_id, "origin": self.origin},
                )  # fmt: skip
                return
            except (*_RETRYABLE, PeerProtocolError, StoreError) as exc:
                self.last_error = f"recovery: {exc!r}"
                log.info(
                    "recovery with %s failed, retrying: %r", peer, exc, extra={"corridor": self.corridor_id}
                )
                await trio.sleep(RETRY)
        self._agreed.add(digest)
        self.state = "ready"
        self.lifecycle.release(HOLD_RECOVERY)
        await self._ready()
        log.warning(
            "our log %s is back on the canonical branch: size %d", self.origin,
            self.store.head(self.origin).size, extra={"corridor": self.corridor_id},
        )  # fmt: skip

    async def _recover_with(self, peer: str, payload: dict[str, Any]) -> None:
        digest = signing_digest(payload).hex()
        branch = payload["resolution"]["branch"]
        size, root = int(branch["size"]), str(branch["root"])
        stream = await self.host.open_stream(peer, PROTOCOL_ID)
        async with stream:
            session = SyncSession(stream)
            theirs = await self._latest(session)
            if theirs is None or theirs[0].size < size:
                held = 0 if theirs is None else theirs[0].size
                raise PeerProtocolError(
                    "branch-not-held", f"the counterparty holds {held} of our log, the branch has {size}"
                )
            cp, note = theirs
            head = await trio.to_thread.run_sync(self.store.head, self.origin)
            # The first sequence where the logs differ. Equal at i means equal below i (each receipt
            # commits to its predecessor), so bisection finds it in O(log n) single-receipt requests.
            lo, hi = 0, min(head.size, cp.size)
            while lo < hi:
                mid = (lo + hi) // 2
                (raw,) = await self._fetch(session, mid, 1)
                ours = await trio.to_thread.run_sync(self.store.receipt, self.origin, mid)
                if raw == ours:
                    lo = mid + 1
                else:
                    hi = mid
            evidence = tuple(sorted(self.lifecycle.state().settled_evidence))
            with trio.CancelScope(shield=True):  # set aside, then pull: never stop half-way on a cancel
                _, orphan = await trio.to_thread.run_sync(
                    lambda: set_aside(
                        self.store, self.origin, lo, at=utc_timestamp(), evidence=evidence,
                        reason=f"fork resolution {digest}: canonical branch {size} {root}",
                    )
                )  # fmt: skip
                if orphan is not None:
                    log.warning(
                        "set aside receipts %d..%d of %s (orphan set %d; kept for audit, never deleted)",
                        orphan.from_sequence, orphan.old_size - 1, self.origin, orphan.recovery,
                        extra={"corridor": self.corridor_id},
                    )  # fmt: skip
                await trio.to_thread.run_sync(self._on_reset, lo)
                await self._pull(session, lo, cp.size, note)
            ours_root = await trio.to_thread.run_sync(self.store.root_at, self.origin, size)
            if ours_root.hex() != root:
                raise _RecoveryFailed(
                    f"after re-sync our root at size {size} is {ours_root.hex()}, the branch says {root}"
                )

    # ------------------------------------------------------------------ pulling

    async def _latest(self, session: SyncSession) -> tuple[Checkpoint, bytes] | None:
        """The counterparty's latest checkpoint of our log (verified under our key), or None."""
        answer = await session.ask(GetCheckpoint(id=session.next_id(), origin=self.origin, size=0))
        if isinstance(answer, ErrorResponse):
            if answer.reason == "not-found":
                return None
            raise PeerProtocolError(answer.reason, f"checkpoint of our log refused: {answer.message}")
        if not isinstance(answer, NoteResponse):
            raise PeerProtocolError("unexpected-response", f"{answer.KIND} for a checkpoint request")
        cp, _ = open_checkpoint(answer.note, self.key)
        return cp, answer.note

    async def _fetch(self, session: SyncSession, start: int, count: int) -> list[bytes]:
        request = GetReceipts(id=session.next_id(), origin=self.origin, start=start, count=count)
        answer = await session.ask(request)
        if isinstance(answer, ErrorResponse):
            raise PeerProtocolError(answer.reason, f"range of our log refused: {answer.message}")
        if not isinstance(answer, ReceiptsResponse) or answer.start != start or not answer.receipts:
            raise PeerProtocolError("empty-range", f"no receipts of our log from {start}")
        return list(answer.receipts[:count])

    async def _pull(self, session: SyncSession, start: int, end: int, note: bytes) -> None:
        """Append our receipts ``start``..``end`` from the counterparty, verified, in batches."""
        seq = start
        while seq < end:
            raws = await self._fetch(session, seq, min(MAX_RANGE_RECEIPTS, end - seq))
            last = seq + len(raws) == end
            ingest = functools.partial(self._ingestor.ingest, checkpoint=note if last else None)
            await trio.to_thread.run_sync(ingest, self.origin, raws)
            seq += len(raws)
            self.pulled += len(raws)
        await trio.to_thread.run_sync(self._on_reset, end)


def orphans_listing(store: LogStore, origin: str, corridor_id: str) -> dict[str, Any]:
    """JSON-ready orphans of ``origin`` (API ``/v1/corridors/{id}/orphans``): each set with its receipts."""
    sets = []
    for orphan in orphan_sets(store, origin):
        entry = orphan.to_json()
        entry["receipts"] = [json.loads(raw) for _, raw in orphan_receipts(store, origin, orphan.recovery)]
        sets.append(entry)
    return {"corridor": corridor_id, "origin": origin, "count": sum(s["count"] for s in sets), "sets": sets}
