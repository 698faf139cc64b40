"""The anchoring task: anchors a corridor's quorum-final checkpoints on an L1 chain (design §10).

Theory of operation
-------------------
One :class:`Anchorer` runs per anchored corridor, as one trio task in the corridor's nursery. Each
round (:meth:`Anchorer.step`) it

1. follows every anchor still in flight (and the newest confirmed ones, for deep reorgs) through
   the state machine of :mod:`protocol.anchor`, persisting each change before it tells anyone
   (``on_record``, which the node uses to gossip the record):

   * ``submitted``/``resubmitted``: mined → ``included``; no block after ``stuck_after`` seconds →
     ``bumped`` (same nonce, fees raised by ``fee_bump_percent``, at least the current suggestion);
     the transaction vanished (a pool flushed, a node restarted without its state) → sent again;
     more than ``max_attempts`` transactions → ``abandoned``;
   * ``included``: the including block is no longer the chain's block at that height, or the
     receipt is gone → ``reorged``; ``confirmations`` deep → verified from the chain with
     :func:`protocol.anchor.verify_anchor` → ``confirmed``; otherwise ``deepened``;
   * ``reorged``: a new transaction (fresh nonce, current fees) → ``resubmitted``;

2. submits a new anchor when our log's quorum-final checkpoint grew past the newest anchor by
   ``every_checkpoints`` checkpoints, or ``every_seconds`` passed since the last submission, and no
   anchor is waiting for its first block.

The task never blocks receipts or finality: it only reads the quorum-final checkpoint through
``source``. An RPC node that cannot be reached (:class:`~anchor.backend.RpcUnavailable`) ends the
round; the task backs off exponentially (``RETRY_BASE`` to ``RETRY_MAX`` seconds), logs it and counts
it in :meth:`Anchorer.statistics`, and tries again; nothing stored changes on a failed call, so a
restarted RPC node (or a restarted daemon, which reloads the records) resumes where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

import trio

from protocol.anchor import (
    MAX_ATTEMPTS,
    PENDING_STATES,
    AnchorEvent,
    AnchorRecord,
    AnchorState,
    advance,
    checkpoint_digest,
    verify_anchor,
)
from protocol.errors import PeerProtocolError

from .backend import AnchorBackend, ChainView, Fees, RpcUnavailable

__all__ = ["AnchorLedger", "AnchorPolicy", "AnchorStatistics", "Anchorer", "FinalCheckpoints"]

log = logging.getLogger(__name__)

RETRY_BASE: Final = 1.0
RETRY_MAX: Final = 30.0
WATCH_CONFIRMED: Final = 4
"""Confirmed anchors (newest first) still watched for a reorg deeper than the confirmations."""
RECHECK_CONFIRMED: Final = 10.0
"""Seconds between two checks of a confirmed anchor: deep reorgs are rare, RPC calls are not free."""


class AnchorLedger(Protocol):
    """Where anchor records persist (the node's store)."""

    def anchors(self, corridor_id: str) -> list[AnchorRecord]:
        """Every record of the corridor, oldest checkpoint first."""

    def put_anchor(self, record: AnchorRecord) -> None:
        """Durably store (or replace) the record of ``record.key()``."""


class FinalCheckpoints(Protocol):
    """Our log's quorum-final checkpoints (the node's quorum collector and store)."""

    def latest_final(self) -> tuple[int, bytes] | None:
        """(size, signed note) of our log's largest quorum-final checkpoint, or None."""

    def checkpoints_between(self, low: int, high: int) -> int:
        """How many checkpoints our log signed with ``low < size <= high``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorPolicy:
    """How often to anchor and when an anchor counts (per corridor config)."""

    every_checkpoints: int = 10
    every_seconds: float = 600.0
    confirmations: int = 6
    stuck_after: float = 60.0
    """Seconds without a block before a transaction's fees are bumped."""
    fee_bump_percent: int = 25
    """Replacement transactions need more than +10 % on both fees in geth and anvil."""
    max_attempts: int = 10
    poll_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class AnchorStatistics:
    """Counters of one anchorer (status API and /metrics)."""

    submitted: int
    confirmed: int
    reorged: int
    bumped: int
    abandoned: int
    rpc_failures: int
    consecutive_failures: int
    last_error: str | None
    anchored_size: int
    """The largest size of our log covered by a confirmed anchor."""


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Anchorer:
    """Anchors one corridor's log (see the module docstring).

    Args:
        corridor_id, origin: the corridor and our log in it.
        backend: the chain.
        ledger: where records persist.
        source: our log's quorum-final checkpoints.
        policy: cadence, confirmations, fee bumping.
        on_record: awaited after each persisted change (gossip); its failures are logged, never fatal.
        wall_clock: unix seconds, for the records' ``updated`` field.
    """

    def __init__(
        self,
        *,
        corridor_id: str,
        origin: str,
        backend: AnchorBackend,
        ledger: AnchorLedger,
        source: FinalCheckpoints,
        policy: AnchorPolicy,
        on_record: Callable[[AnchorRecord], Awaitable[None]] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.corridor_id = corridor_id
        self.origin = origin
        self.backend = backend
        self.ledger = ledger
        self.source = source
        self.policy = policy
        self._on_record = on_record
        self._wall = wall_clock
        self._sent_at: dict[str, float] = {}
        self._last_submit = -float("inf")
        self._counts = dict.fromkeys(
            ("submitted", "confirmed", "reorged", "bumped", "abandoned", "rpc_failures"), 0
        )
        self._failures = 0
        self._last_error: str | None = None
        self._records: dict[int, AnchorRecord] | None = None
        """Our records by size: loaded from the ledger once, then kept in step with every save."""
        self._checked_at: dict[int, float] = {}
        self._chain_checked = False

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run rounds until cancelled; never raises on an unreachable or misbehaving RPC node."""
        task_status.started()
        while True:
            with trio.move_on_after(self.policy.poll_interval * 10 + 30):  # optional work: bounded
                await self.step_reporting()
            delay = (
                self.policy.poll_interval
                if self._failures == 0
                else min(RETRY_MAX, RETRY_BASE * 2 ** (self._failures - 1))
            )
            await trio.sleep(delay)

    async def step_reporting(self) -> bool:
        """One round; on an RPC failure count it, log it and return False (never raises it)."""
        try:
            await self.step()
        except RpcUnavailable as exc:
            self._chain_checked = False
            self._failures += 1
            self._counts["rpc_failures"] += 1
            self._last_error = f"{exc.reason}: {exc.message}"
            log.warning(
                "anchoring %s: RPC failed (%d in a row): %s", self.corridor_id, self._failures,
                self._last_error, extra={"corridor": self.corridor_id, "reason": exc.reason},
            )  # fmt: skip
            return False
        if self._failures:
            log.info(
                "anchoring %s: RPC reachable again", self.corridor_id, extra={"corridor": self.corridor_id}
            )
        self._failures = 0
        return True

    async def step(self) -> None:
        """Follow anchors in flight, then maybe submit a new one.

        Raises:
            RpcUnavailable: the RPC node failed; whatever was persisted before stays valid.
        """
        if not self._chain_checked:  # once, then again after any failure (the node may have changed)
            await self.backend.check_chain()
            self._chain_checked = True
        records = await trio.to_thread.run_sync(self._own_records)
        confirmed = [r for r in records if r.state is AnchorState.CONFIRMED][-WATCH_CONFIRMED:]
        for record in records:
            if record.state is AnchorState.ABANDONED:
                continue
            if record.state is AnchorState.CONFIRMED:
                due = trio.current_time() - self._checked_at.get(record.size, -RECHECK_CONFIRMED)
                if record not in confirmed or due < RECHECK_CONFIRMED:
                    continue
                self._checked_at[record.size] = trio.current_time()
            await self._follow(record)
        await self._maybe_submit()

    def _own_records(self) -> list[AnchorRecord]:
        """Our log's records, oldest first (the ledger also holds the counterparty's, from gossip)."""
        if self._records is None:
            loaded = [r for r in self.ledger.anchors(self.corridor_id) if r.origin == self.origin]
            self._records = {r.size: r for r in loaded}
        return [self._records[size] for size in sorted(self._records)]

    # ---------------------------------------------------------------- following

    async def _save(self, record: AnchorRecord, event: str) -> AnchorRecord:
        await trio.to_thread.run_sync(self.ledger.put_anchor, record)
        if self._records is not None:
            self._records[record.size] = record
        log.info(
            "anchor of %s at %d: %s -> %s (tx %s)", record.origin, record.size, event, record.state,
            record.tx_hash, extra={"corridor": self.corridor_id, "state": str(record.state)},
        )  # fmt: skip
        if self._on_record is not None:
            try:
                await self._on_record(record)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.warning("anchor record not published: %r", exc, extra={"corridor": self.corridor_id})
        return record

    async def _follow(self, record: AnchorRecord) -> None:
        now = _utc(self._wall())
        if record.state in PENDING_STATES:
            await self._follow_pending(record, now)
        elif record.state in (AnchorState.INCLUDED, AnchorState.CONFIRMED):
            await self._follow_included(record, now)
        elif record.state is AnchorState.REORGED:
            await self._resubmit(record, now)

    @staticmethod
    def _included(view: ChainView) -> tuple[int, str] | None:
        receipt, block = view.receipt, view.block
        if receipt is None or block is None or receipt.get("blockNumber") is None:
            return None
        if str(block.get("hash", "")).lower() != str(receipt.get("blockHash", "")).lower():
            return None  # the block at that height is another one: the receipt is stale
        return int(receipt["blockNumber"], 16), str(receipt["blockHash"]).lower()

    async def _follow_pending(self, record: AnchorRecord, now: str) -> None:
        current_known = True
        for tx_hash in reversed(record.attempts):  # the newest first; an older one may have won the nonce
            view = await self.backend.view(tx_hash)
            included = self._included(view)
            if included is not None:
                number, block_hash = included
                record = await self._save(
                    advance(record, AnchorEvent.INCLUDED, now=now, tx_hash=tx_hash, block_number=number,
                            block_hash=block_hash, confirmations=view.head - number + 1),
                    "included",
                )  # fmt: skip
                await self._follow_included(record, now, view)
                return
            if tx_hash == record.tx_hash:
                current_known = view.tx is not None
        if not current_known:
            # The node no longer knows our transaction (a reorg dropped it, or it restarted without its
            # pool) and no earlier attempt was mined: send it again with the next free nonce.
            await self._replace(record, now, fresh_nonce=True)
            return
        sent = self._sent_at.setdefault(record.tx_hash, trio.current_time())
        if trio.current_time() - sent >= self.policy.stuck_after:
            await self._replace(record, now, fresh_nonce=False)

    async def _replace(self, record: AnchorRecord, now: str, *, fresh_nonce: bool) -> None:
        if len(record.attempts) >= min(self.policy.max_attempts, MAX_ATTEMPTS):
            self._counts["abandoned"] += 1
            await self._save(advance(record, AnchorEvent.ABANDONED, now=now), "abandoned")
            return
        old = Fees(record.max_fee_per_gas, record.max_priority_fee_per_gas).bumped(
            self.policy.fee_bump_percent
        )
        suggested = await self.backend.suggest_fees()
        fees = Fees(
            max(old.max_fee_per_gas, suggested.max_fee_per_gas),
            max(old.max_priority_fee_per_gas, suggested.max_priority_fee_per_gas),
        )
        nonce = await self.backend.next_nonce() if fresh_nonce else record.nonce
        sent = await self.backend.send_anchor(record.digest, nonce=nonce, fees=fees)
        self._sent_at[sent.tx_hash] = trio.current_time()
        self._counts["bumped"] += 1
        changes = {
            "tx_hash": sent.tx_hash, "nonce": sent.nonce, "max_fee_per_gas": fees.max_fee_per_gas,
            "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
        }  # fmt: skip
        await self._save(advance(record, AnchorEvent.BUMPED, now=now, **changes), "bumped")

    async def _follow_included(self, record: AnchorRecord, now: str, view: ChainView | None = None) -> None:
        if view is None:
            view = await self.backend.view(record.tx_hash)
        included = self._included(view)
        if included != (record.block_number, record.block_hash):
            self._counts["reorged"] += 1
            record = await self._save(advance(record, AnchorEvent.REORGED, now=now), "reorged")
            await self._resubmit(record, now)
            return
        if record.state is AnchorState.CONFIRMED:
            return
        depth = view.head - (record.block_number or 0) + 1
        if depth >= self.policy.confirmations:
            try:
                verify_anchor(
                    record, tx=view.tx, receipt=view.receipt, block=view.block, head=view.head,
                    confirmations=self.policy.confirmations,
                )  # fmt: skip
            except PeerProtocolError as exc:
                # The chain does not support our own record: treat it as gone and anchor again.
                log.error(
                    "own anchor of %s at %d fails verification: %s: %s", record.origin, record.size,
                    exc.reason, exc.message, extra={"corridor": self.corridor_id, "reason": exc.reason},
                )  # fmt: skip
                self._counts["reorged"] += 1
                await self._save(advance(record, AnchorEvent.REORGED, now=now), "reorged")
                return
            self._counts["confirmed"] += 1
            await self._save(
                advance(record, AnchorEvent.CONFIRMED, now=now, confirmations=depth), "confirmed"
            )
        elif depth != record.confirmations:
            await self._save(advance(record, AnchorEvent.DEEPENED, now=now, confirmations=depth), "deepened")

    async def _resubmit(self, record: AnchorRecord, now: str) -> None:
        nonce = await self.backend.next_nonce()
        fees = await self.backend.suggest_fees()
        sent = await self.backend.send_anchor(record.digest, nonce=nonce, fees=fees)
        self._sent_at[sent.tx_hash] = trio.current_time()
        changes = {
            "tx_hash": sent.tx_hash, "nonce": nonce, "max_fee_per_gas": fees.max_fee_per_gas,
            "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
        }  # fmt: skip
        await self._save(advance(record, AnchorEvent.RESUBMITTED, now=now, **changes), "resubmitted")

    # --------------------------------------------------------------- submitting

    async def _maybe_submit(self) -> None:
        final = await trio.to_thread.run_sync(self.source.latest_final)
        if final is None:
            return
        size, note = final
        records = await trio.to_thread.run_sync(self._own_records)
        live = [r for r in records if r.state is not AnchorState.ABANDONED]
        if any(r.state in PENDING_STATES or r.state is AnchorState.REORGED for r in live):
            return  # one transaction waiting for its first block at a time
        last = max((r.size for r in live), default=0)
        if size <= last:
            return
        # Every growth of the final size is at least one new final checkpoint: count only when N > 1.
        due = self.policy.every_checkpoints == 1
        due = due or trio.current_time() - self._last_submit >= self.policy.every_seconds
        if not due:
            grown = await trio.to_thread.run_sync(self.source.checkpoints_between, last, size)
            if grown < self.policy.every_checkpoints:
                return
        await self.submit(size, note)

    async def submit(self, size: int, note: bytes) -> AnchorRecord:
        """Send an anchor of our checkpoint (``size``, ``note``) now and persist it as ``submitted``.

        Raises:
            RpcUnavailable: nothing was stored (a transaction may still have reached the node's pool;
                it is then harmless: the next anchor uses the next nonce).
        """
        digest = checkpoint_digest(note)
        fees = await self.backend.suggest_fees()
        nonce = await self.backend.next_nonce()
        sent = await self.backend.send_anchor(digest, nonce=nonce, fees=fees)
        self._sent_at[sent.tx_hash] = self._last_submit = trio.current_time()
        self._counts["submitted"] += 1
        record = AnchorRecord(
            corridor_id=self.corridor_id, origin=self.origin, size=size, checkpoint_sha256=digest.hex(),
            checkpoint=note.decode("utf-8"), chain_id=self.backend.chain_id, sender=self.backend.sender,
            tx_hash=sent.tx_hash, nonce=nonce, max_fee_per_gas=fees.max_fee_per_gas,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas, attempts=(sent.tx_hash,),
            state=AnchorState.SUBMITTED, updated=_utc(self._wall()),
        )  # fmt: skip
        return await self._save(record, "submitted")

    # ---------------------------------------------------------------- reporting

    def statistics(self) -> AnchorStatistics:
        """Counters, the last RPC error and the anchored size (status API, /metrics)."""
        anchored = max(
            (r.size for r in self._own_records() if r.state is AnchorState.CONFIRMED),
            default=0,
        )  # fmt: skip
        return AnchorStatistics(
            consecutive_failures=self._failures, last_error=self._last_error, anchored_size=anchored,
            **self._counts,
        )  # fmt: skip
