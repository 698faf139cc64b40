"""L1 anchoring inside the node (design §10): the anchoring task, anchor gossip, API and finality.

Theory of operation
-------------------
Each corridor has one :class:`CorridorAnchors`, whatever its config:

* **Our anchors** (only with an ``anchor`` table in the corridor's config): an
  :class:`~anchor.task.Anchorer` runs in the corridor's nursery. It reads our log's quorum-final
  checkpoint from the :class:`~node.quorum.QuorumCollector` (the ``quorum/<origin>`` witness state)
  and the store, never the writer, so receipt production and finality never wait on it; records
  persist in the store's ``anchors`` database (:class:`store.anchors.AnchorStore`) and each change is
  gossiped on ``/sez/1/<corridor>/anchors`` (a wire ``anchor`` message carrying the record's
  canonical JSON).
* **The counterparty's anchors** arrive by gossip. The validator (pure, quick) decodes the record,
  checks corridor and origin and the log's signature on the anchored checkpoint, and IGNOREs our
  own. The consumer stores a record that is not ``confirmed`` as it is (it counts for nothing), and a
  ``confirmed`` one only after verifying it from the chain itself (:func:`protocol.anchor.verify_anchor`)
  when this node has an RPC node for the same chain; otherwise (or while the RPC node is down) a
  confirmed record is not stored, so ``anchored`` is never claimed on someone else's word.
* **Reading**: ``GET /v1/corridors/{id}/anchors``, the finality endpoint's ``anchored`` /
  ``anchored_size`` (a receipt is anchored once a confirmed anchor covers a checkpoint at or
  beyond it), and proof bundles with ``?anchor=1`` (the proof is made against the anchored
  checkpoint, and the record rides with the receipt in the bundle's ``extra``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from anchor.backend import RpcUnavailable
from anchor.evm import EvmBackend, JsonRpc, load_anchor_key
from anchor.task import Anchorer, AnchorPolicy
from protocol.anchor import AnchorRecord, AnchorState, verify_anchor
from protocol.checkpoints import open_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey
from protocol.wire import MAX_GOSSIP_BYTES, AnchorAnnouncement, decode, encode
from store import LogStore, StoreError
from store.anchors import AnchorStore

from .config import AnchorConfig
from .p2p import GossipMessage, P2PHost, Verdict
from .quorum import QuorumCollector

if TYPE_CHECKING:
    from .corridor import CorridorService

__all__ = ["CorridorAnchors", "anchor_metrics", "anchors_topic", "finality_fields"]

log = logging.getLogger(__name__)

VERIFY_TIMEOUT: Final = 15.0
"""Seconds to verify a gossiped confirmed anchor from the chain; past it the record is dropped."""
REPUBLISH_SECONDS: Final = 30.0
"""Our newest confirmed anchor is gossiped again this often: gossip has no delivery guarantee and a
counterparty that was down when it changed state would otherwise never learn of it."""


def anchors_topic(corridor_id: str) -> str:
    """``/sez/1/<corridor>/anchors`` (design §13)."""
    return f"/sez/1/{corridor_id}/anchors"


class _Finals:
    """Our log's quorum-final checkpoints, for the anchorer (``anchor.task.FinalCheckpoints``)."""

    def __init__(self, store: LogStore, quorum: QuorumCollector, origin: str) -> None:
        self.store, self.quorum, self.origin = store, quorum, origin

    def latest_final(self) -> tuple[int, bytes] | None:
        size = self.quorum.final_size(self.origin)
        if size == 0:
            return None
        try:
            return size, self.store.checkpoint(self.origin, size)
        except StoreError as exc:
            if exc.reason == "not-found":
                return None
            raise

    def checkpoints_between(self, low: int, high: int) -> int:
        return sum(1 for size in self.store.checkpoint_sizes(self.origin) if low < size <= high)


class CorridorAnchors:
    """Anchors of one corridor's two logs (see the module docstring).

    Args:
        store: the node's store.
        corridor_id, origin: the corridor and our log.
        log_keys: origin -> the log's verifier key, for both logs of the corridor.
        quorum: the corridor's quorum collector (our quorum-final size).
        host: the p2p host (gossip).
        config: the corridor's ``anchor`` table, or None (anchoring off: gossip is still followed).

    Raises:
        LocalProtocolError(bad-anchor-key): the configured key file is unusable (at construction).
    """

    def __init__(
        self,
        *,
        store: LogStore,
        corridor_id: str,
        origin: str,
        log_keys: Mapping[str, VerifierKey],
        quorum: QuorumCollector,
        host: P2PHost,
        config: AnchorConfig | None,
    ) -> None:
        self.store = AnchorStore(store)
        self.corridor_id = corridor_id
        self.origin = origin
        self.log_keys = dict(log_keys)
        self.host = host
        self.config = config
        self.rejected: dict[str, int] = {}
        self.received = 0
        self.rpc: JsonRpc | None = None
        self.backend: EvmBackend | None = None
        self.anchorer: Anchorer | None = None
        if config is not None:
            # httpx logs every request at INFO: one line per RPC call would drown the node's own log.
            logging.getLogger("httpx").setLevel(logging.WARNING)
            account = load_anchor_key(config.key_file)
            self.rpc = JsonRpc(config.rpc_url)
            self.backend = EvmBackend(self.rpc, account, config.chain_id)
            self.anchorer = Anchorer(
                corridor_id=corridor_id, origin=origin, backend=self.backend, ledger=self.store,
                source=_Finals(store, quorum, origin),
                policy=AnchorPolicy(
                    every_checkpoints=config.every_checkpoints, every_seconds=float(config.every_seconds),
                    confirmations=config.confirmations, poll_interval=config.poll_seconds,
                    stuck_after=config.stuck_seconds,
                ),
                on_record=self._on_own_record,
            )  # fmt: skip
        self._anchored = {origin: self._scan_anchored(origin) for origin in self.log_keys}

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the anchors topic and, when configured, run the anchorer; until cancelled."""
        topic = anchors_topic(self.corridor_id)
        self.host.set_topic_validator(topic, self.validate)
        channel = await self.host.subscribe(topic)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._consume, channel)
                if self.anchorer is not None:
                    await nursery.start(self.anchorer.run)
                    nursery.start_soon(self._republish_loop)
                task_status.started()
        finally:
            if self.rpc is not None:
                with trio.move_on_after(1) as cleanup:
                    cleanup.shield = True
                    await self.rpc.aclose()

    def _note_stored(self, record: AnchorRecord) -> None:
        """Keep ``anchored_size`` current after ``record`` was stored (a rescan only on a downgrade)."""
        current = self._anchored.get(record.origin, 0)
        if record.state is AnchorState.CONFIRMED:
            self._anchored[record.origin] = max(current, record.size)
        elif record.size == current:
            self._anchored[record.origin] = self._scan_anchored(record.origin)

    async def _on_own_record(self, record: AnchorRecord) -> None:
        self._note_stored(record)
        await self._publish(record)

    async def _publish(self, record: AnchorRecord) -> None:
        message = AnchorAnnouncement(corridor=self.corridor_id, record=record.to_bytes())
        await self.host.publish(anchors_topic(self.corridor_id), encode(message))

    async def _republish_loop(self) -> None:
        while True:
            await trio.sleep(REPUBLISH_SECONDS)
            confirmed = [
                r
                for r in await trio.to_thread.run_sync(self.store.anchors, self.corridor_id, self.origin)
                if r.state is AnchorState.CONFIRMED
            ]
            if confirmed:
                await self._publish(confirmed[-1])

    # ---------------------------------------------------------------- gossip

    def _check(self, data: bytes) -> AnchorRecord | None:
        """Decode and check a gossiped record; None for our own. Raises PeerProtocolError."""
        message = decode(data, max_bytes=MAX_GOSSIP_BYTES)
        if not isinstance(message, AnchorAnnouncement):
            raise PeerProtocolError("wrong-topic", f"{message.KIND} message on the anchors topic")
        record = AnchorRecord.from_bytes(message.record)
        if message.corridor != self.corridor_id or record.corridor_id != self.corridor_id:
            raise PeerProtocolError(
                "wrong-corridor", f"anchor for {record.corridor_id} on {self.corridor_id}"
            )
        if record.origin == self.origin:
            return None
        key = self.log_keys.get(record.origin)
        if key is None:
            raise PeerProtocolError(
                "unknown-origin", f"{record.origin!r} writes no log in {self.corridor_id}"
            )
        open_checkpoint(record.checkpoint.encode(), key)
        return record

    def validate(self, peer_id: str, data: bytes) -> Verdict:
        """The anchors topic's gossip validator (pure, quick)."""
        try:
            return Verdict.ACCEPT if self._check(data) is not None else Verdict.IGNORE
        except PeerProtocolError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            log.info(
                "anchor gossip from %s rejected: %s: %s", peer_id, exc.reason, exc.message,
                extra={"corridor": self.corridor_id, "peer": peer_id, "reason": exc.reason},
            )  # fmt: skip
            return Verdict.REJECT

    async def _consume(self, channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async with channel:
            async for message in channel:
                try:
                    await self.receive(message.data)
                except (PeerProtocolError, StoreError) as exc:
                    self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
                    log.warning(
                        "anchor from %s not stored: %s: %s", message.origin, exc.reason, exc.message,
                        extra={"corridor": self.corridor_id, "peer": message.origin, "reason": exc.reason},
                    )  # fmt: skip

    async def receive(self, data: bytes) -> bool:
        """Store a counterparty's anchor record (a confirmed one only once verified from the chain).

        Returns True if stored.

        Raises:
            PeerProtocolError: the record is invalid, or the chain contradicts it.
        """
        record = self._check(data)
        if record is None:
            return False
        self.received += 1
        held = await trio.to_thread.run_sync(self.store.anchor, self.corridor_id, record.origin, record.size)
        if held == record:
            return False  # a duplicate (a republication): quietly nothing to do
        if (
            held is not None
            and held.state is AnchorState.CONFIRMED
            and record.state is not AnchorState.CONFIRMED
            and await self._still_confirmed(held)
        ):
            # A downgrade (the counterparty saw a reorg, or someone replays an old state) is believed only
            # if the chain no longer bears out the confirmed record we verified.
            return False
        if record.state is AnchorState.CONFIRMED:
            backend = self.backend
            if backend is None or backend.chain_id != record.chain_id:
                log.info(
                    "confirmed anchor of %s at %d not stored: no RPC node for chain %d here",
                    record.origin, record.size, record.chain_id, extra={"corridor": self.corridor_id},
                )  # fmt: skip
                return False
            try:
                with trio.fail_after(VERIFY_TIMEOUT):
                    view = await backend.view(record.tx_hash)
            except (RpcUnavailable, trio.TooSlowError) as exc:
                log.warning("cannot verify anchor of %s at %d now: %r", record.origin, record.size, exc,
                            extra={"corridor": self.corridor_id})  # fmt: skip
                return False
            assert self.config is not None
            verify_anchor(
                record, tx=view.tx, receipt=view.receipt, block=view.block, head=view.head,
                confirmations=self.config.confirmations, log_key=self.log_keys[record.origin],
            )  # fmt: skip
        await trio.to_thread.run_sync(self.store.put_anchor, record)
        self._note_stored(record)
        return True

    async def _still_confirmed(self, record: AnchorRecord) -> bool:
        """True if ``record`` verifies from the chain now, or the chain cannot be asked (keep it)."""
        if self.backend is None or self.config is None:
            return True
        try:
            with trio.fail_after(VERIFY_TIMEOUT):
                view = await self.backend.view(record.tx_hash)
        except (RpcUnavailable, trio.TooSlowError):
            return True
        try:
            verify_anchor(
                record, tx=view.tx, receipt=view.receipt, block=view.block, head=view.head,
                confirmations=self.config.confirmations,
            )  # fmt: skip
        except PeerProtocolError:
            return False
        return True

    # ---------------------------------------------------------------- reading

    def records(self) -> list[AnchorRecord]:
        """Every stored record of the corridor (both logs)."""
        return self.store.anchors(self.corridor_id)

    def anchored_size(self, origin: str) -> int:
        """The largest size of ``origin`` covered by a confirmed anchor stored here (0 if none).

        Kept in memory (every store write through this object refreshes it): the finality endpoint
        asks on every request.
        """
        return self._anchored.get(origin, 0)

    def _scan_anchored(self, origin: str) -> int:
        return max(
            (
                r.size
                for r in self.store.anchors(self.corridor_id, origin)
                if r.state is AnchorState.CONFIRMED
            ),
            default=0,
        )

    def covering(self, origin: str, sequence: int) -> AnchorRecord | None:
        """The smallest confirmed anchor of ``origin`` covering receipt ``sequence``, or None."""
        for record in self.store.anchors(self.corridor_id, origin):
            if record.state is AnchorState.CONFIRMED and record.size > sequence:
                return record
        return None

    def status(self) -> dict[str, Any]:
        """JSON-ready anchoring status (corridor status and ``/anchors``)."""
        out: dict[str, Any] = {
            "enabled": self.anchorer is not None,
            "anchored_size": {origin: self.anchored_size(origin) for origin in self.log_keys},
            "gossip": {"received": self.received, "rejected": dict(self.rejected)},
        }
        if self.anchorer is not None and self.config is not None:
            out["chain_id"] = self.config.chain_id
            out["sender"] = self.anchorer.backend.sender
            out["stats"] = dataclasses.asdict(self.anchorer.statistics())
        return out

    def listing(self) -> dict[str, Any]:
        """``GET /v1/corridors/{id}/anchors``."""
        return {
            "corridor": self.corridor_id,
            "anchoring": self.status(),
            "anchors": [record.to_json() for record in self.records()],
        }


def finality_fields(anchors: CorridorAnchors | None, origin: str, sequence: int) -> dict[str, Any]:
    """The finality endpoint's anchoring fields for one receipt."""
    size = anchors.anchored_size(origin) if anchors is not None else 0
    return {"anchored": sequence < size, "anchored_size": size}


def anchor_metrics(services: Mapping[str, CorridorService]) -> Iterator[Metric]:
    """Anchoring figures for ``/metrics``: anchored size per log; the anchorer's counters per corridor."""
    anchored = GaugeMetricFamily(
        "sez_anchored_size", "largest log size covered by a confirmed L1 anchor",
        labels=["corridor", "origin"],
    )  # fmt: skip
    counters = {
        name: CounterMetricFamily(f"sez_anchor_{name}", text, labels=["corridor"])
        for name, text in (
            ("submitted", "anchor transactions submitted (new anchors)"),
            ("confirmed", "anchors confirmed"),
            ("reorged", "anchors whose block left the chain"),
            ("bumped", "stuck anchor transactions replaced with higher fees"),
            ("rpc_failures", "anchoring rounds that failed on the RPC node"),
        )
    }
    failing = GaugeMetricFamily(
        "sez_anchor_rpc_consecutive_failures", "anchoring rounds failed in a row (0: RPC node healthy)",
        labels=["corridor"],
    )  # fmt: skip
    for corridor_id, service in services.items():
        for origin in service.anchors.log_keys:
            anchored.add_metric([corridor_id, origin], service.anchors.anchored_size(origin))
        anchorer = service.anchors.anchorer
        if anchorer is None:
            continue
        stats = anchorer.statistics()
        for name, family in counters.items():
            family.add_metric([corridor_id], getattr(stats, name))
        failing.add_metric([corridor_id], stats.consecutive_failures)
    yield anchored
    yield from counters.values()
    yield failing
