"""One corridor as the node runs it: our log, the counterparty's replica, gossip, sync, cosigning.

Theory of operation
-------------------
For a corridor such as PAK-KSA, the PAK node runs one :class:`CorridorService`:

* **Writer.** Our log's :class:`~node.writer.LogWriter`. Each committed batch is
  published on ``/sez/1/<corridor>/receipts`` as :class:`~protocol.wire.ReceiptBatch`
  messages of at most ``MAX_BATCH_RECEIPTS`` receipts, each with the checkpoint
  signed over the whole batch.
* **Replica.** The counterparty's log (:class:`~node.replica.Replica`). Gossip is
  the fast path; correctness comes from sync: a batch that starts beyond the
  replica head, a checkpoint ahead of it, start-up and a periodic timer all wake
  the sync task, which pulls ranges over ``/sez/sync/1`` until the replica reaches
  the best checkpoint the counterparty signed. Every receipt goes through the
  same checks (``Ingestor``) whichever path brought it.
* **Validators** run before gossipsub delivers or forwards anything: decode with
  limits, the right corridor and origin, a valid log signature on the checkpoint,
  and a spot check of the first new receipt; old batches are IGNOREd, invalid ones
  REJECTed. The consumer then verifies every receipt before storing it.
* **Witness.** The node cosigns the counterparty's checkpoints (cosignature/v1)
  under the witness rule (``protocol.witness``): only after checking consistency
  with the last one it cosigned, with that state stored durably first. It then
  publishes the cosignature and records it in its own log as an ``ack`` receipt,
  but only when the counterparty's log grew by receipts other than acks since the
  last ack (otherwise two idle nodes would ack each other's acks forever).
* **Cosignatures of our checkpoints** arriving from the counterparty are verified
  and merged into the stored checkpoint note; our own cosignature of the counterparty's
  checkpoint is merged into the replica's stored note.
* **Quorum finality** (:mod:`node.quorum`): watchers' cosignatures of either log are
  verified against the active watchers' keys, merged, and decide when a checkpoint is
  quorum-final (with the bootstrap rule: bilateral finality while no stake is active).

Every consumer catches only peer faults (logged, counted per peer) and keeps
going; anything else is a bug and brings the daemon down (style rule 14).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any, Final

import trio

from protocol.checkpoints import (
    Checkpoint,
    Cosignature,
    add_signatures,
    cosign,
    open_checkpoint,
    parse_checkpoint,
    verify_cosignatures,
)
from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.evidence import evidence_digest
from protocol.jcs import canonical
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.lifecycle import State, allowed_kinds
from protocol.lifecycle import sign as sign_lifecycle
from protocol.notes import format_note, parse_note
from protocol.quorum import QuorumPolicy
from protocol.receipts import Receipt, verify_receipt
from protocol.stake import DEFAULT_SLASH_POLICY, SlashPolicy
from protocol.sync import NEED_DATA, PROTOCOL_ID, FrameDecoder, frame
from protocol.wire import (
    MAX_BATCH_RECEIPTS,
    MAX_GOSSIP_BYTES,
    MAX_RANGE_RECEIPTS,
    CheckpointAnnouncement,
    CosignatureAnnouncement,
    ErrorResponse,
    GetCheckpoint,
    GetReceipts,
    Message,
    NoteResponse,
    ReceiptBatch,
    ReceiptsResponse,
    decode,
    encode,
)
from protocol.witness import check_witness_rule
from store import LogStore, StoreError

from .anchoring import CorridorAnchors
from .config import JURISDICTION_NAMES, CorridorConfig
from .evidence_pool import EvidencePool
from .fork_resolution import ForkResolver
from .ingest import Ingestor
from .lifecycle import LifecycleTracker, halt_verifier
from .p2p import GossipMessage, P2PHost, Verdict
from .quorum import STAKE_CURRENCY, QuorumCollector
from .recovery import OwnLogRecovery
from .replica import ForkDetected, Outcome, Replica
from .runtime import Kick
from .sync_server import answer
from .sync_session import SYNC_REQUEST_TIMEOUT, SyncSession
from .writer import CommittedBatch, LogWriter

__all__ = ["CorridorService", "CorridorStatistics", "serve_sync_frames", "topic"]

log = logging.getLogger(__name__)

SYNC_INTERVAL: Final = 2.0
"""Anti-entropy: seconds between sync rounds when nothing wakes the sync task earlier."""
SYNC_BACKOFF_MAX: Final = 10.0
ANNOUNCED_KEPT: Final = 64
"""Announced counterparty checkpoints remembered as cosigning targets (about 13 s of announcements)."""
SYNC_IDLE_TIMEOUT: Final = 300.0
"""A served sync stream with no request for this long is closed (followers ask every few seconds)."""
SYNC_FRAME_TIMEOUT: Final = 30.0
"""A request frame must arrive whole within this long of its first byte."""
ANNOUNCE_MIN_GAP: Final = 0.2
"""Seconds between two announcements of our checkpoint: a busy log is announced five times a second."""


def _party_of(config: CorridorConfig) -> str:
    """Our party code when the config does not say: the corridor party whose host our origin names."""
    host = config.origin.split("/", 1)[0]
    for code, name in JURISDICTION_NAMES.items():
        if name == host and code in config.id.split("-"):
            return code
    raise LocalProtocolError("bad-config", f"cannot tell which party of {config.id} writes {config.origin}")


def _policy(config: CorridorConfig) -> tuple[QuorumPolicy, str, timedelta]:
    """The quorum policy, stake currency and unbonding period: the definition's, or the defaults."""
    if config.definition is None:
        return QuorumPolicy(min_watchers=config.min_watchers), STAKE_CURRENCY, timedelta(days=7)
    policy = config.definition["policy"]
    return (
        QuorumPolicy(
            threshold=Fraction(policy["quorum"]),
            min_watchers=policy["min_watchers"],
            require_counterparty=policy.get("require_counterparty", True),
        ),
        policy.get("stake_currency", STAKE_CURRENCY),
        timedelta(seconds=policy.get("unbonding_period_seconds", 7 * 86400)),
    )


def topic(corridor_id: str, kind: str) -> str:
    """The gossip topic ``/sez/1/<corridor>/<kind>`` (design §13)."""
    return f"/sez/1/{corridor_id}/{kind}"


@dataclass(slots=True)
class CorridorStatistics:
    """Counters of one corridor service (exported on /metrics and in the status)."""

    gossip_batches_applied: int = 0
    gossip_batches_duplicate: int = 0
    gossip_gaps: int = 0
    sync_rounds: int = 0
    sync_receipts: int = 0
    sync_failures: int = 0
    cosigned: int = 0
    acks_written: int = 0
    cosignatures_received: int = 0
    watcher_cosignatures_received: int = 0
    quorum_final: int = 0
    forks: int = 0
    peer_faults: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)


class CorridorService:
    """Runs one corridor for this node.

    Args:
        store: the node's store.
        config: the corridor's configuration.
        key: our signing key (any name; it is re-keyed under our origin).
        host: the started p2p host.
        ingestor: shared receipt verifier.
        now: unix-seconds clock (cosignature timestamps).
    """

    def __init__(
        self,
        *,
        store: LogStore,
        config: CorridorConfig,
        key: SigningKey,
        host: P2PHost,
        ingestor: Ingestor,
        now: Callable[[], float] = time.time,
        own_log_check_timeout: float = 15.0,
    ) -> None:
        if not config.party:
            config = dataclasses.replace(config, party=_party_of(config))
        self.id = config.id
        self.config = config
        self.store = store
        self.host = host
        self.origin = config.origin
        self.key = SigningKey(config.origin, key.seed)
        self.counterparty_origin = config.counterparty_origin
        self.counterparty_key = config.counterparty_key
        self.counterparty_cosigner = config.counterparty_key.with_alg(ALG_COSIGNATURE_V1)
        self.party = config.party
        self.log_keys = {self.origin: self.key.verifier(), self.counterparty_origin: self.counterparty_key}
        self.lifecycle = LifecycleTracker(
            store, config.id, (self.origin, self.counterparty_origin),
            {config.party: self.key.verifier(), config.counterparty_party: config.counterparty_key},
            definition=config.definition, verify_evidence=halt_verifier(self.log_keys),
        )  # fmt: skip
        self.evidence: EvidencePool | None = None
        """The node's evidence pool (set by the daemon): stores and verifies gossiped evidence."""
        self.writer = LogWriter(
            store, config.id, self.key, on_batch=self._publish_batch,
            gate=functools.partial(self.lifecycle.gate, self.origin),
        )  # fmt: skip
        self.replica = Replica(store, config.id, config.counterparty_key, ingestor)
        self.stats = CorridorStatistics()
        self._now = now
        self._replica_lock = trio.Lock()
        self._sync_kick = Kick()
        self._cosign_kick = Kick()
        self._last_cosign_time = 0.0
        self._announce_kick = Kick()
        self._announced_size = -1
        self._announced_at = 0.0
        self._announced_notes: dict[int, bytes] = {}
        """The counterparty's latest announced checkpoints by size: what we cosign (watchers too)."""
        self._cosign_target_at = 0.0
        self._cosigned_ours: int | None = None
        cosigners = {
            self.origin: self.counterparty_cosigner,
            self.counterparty_origin: self.key.verifier(ALG_COSIGNATURE_V1),
        }
        policy, currency, unbonding = _policy(config)
        slash_policy = (
            SlashPolicy.from_policy(config.definition["policy"])
            if config.definition
            else DEFAULT_SLASH_POLICY
        )
        self.quorum = QuorumCollector(
            store, config.id, cosigners, policy=policy, stake_currency=currency,
            unbonding_period=unbonding, now=now, slash_policy=slash_policy, log_keys=self.log_keys,
            halted=self.lifecycle.halted,
        )  # fmt: skip
        self.forks = ForkResolver(self)
        """Watchers on both branches of a fork, their slashes, and the quorum resolution (design §8)."""
        self.lifecycle.verify_quorum = self.forks.verify_quorum
        self.lifecycle.fork_status = self.forks.status
        self.anchors = CorridorAnchors(
            store=store, corridor_id=config.id, origin=self.origin, log_keys=self.log_keys,
            quorum=self.quorum, host=host, config=config.anchor,
        )  # fmt: skip
        self.recovery = OwnLogRecovery(
            store=store, corridor_id=config.id, key=self.key.verifier(), lifecycle=self.lifecycle,
            host=host, ingestor=ingestor, peer_ids=config.peer_ids, check_timeout=own_log_check_timeout,
            on_reset=self._own_log_reset, on_ready=self._own_log_ready,
        )  # fmt: skip
        """Own-log check at start and recovery onto a resolution's branch (design §8; node.recovery)."""

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every task of the corridor until cancelled."""
        host = self.host
        host.set_topic_validator(topic(self.id, "receipts"), self._validate_receipts)
        host.set_topic_validator(topic(self.id, "checkpoints"), self._validate_checkpoint)
        host.set_topic_validator(topic(self.id, "cosignatures"), self._validate_cosignature)
        host.set_topic_validator(topic(self.id, "evidence"), self._validate_evidence)
        receipts = await host.subscribe(topic(self.id, "receipts"), buffer=1024)
        checkpoints = await host.subscribe(topic(self.id, "checkpoints"))
        cosignatures = await host.subscribe(topic(self.id, "cosignatures"))
        evidence = await host.subscribe(topic(self.id, "evidence"))
        async with trio.open_nursery() as nursery:
            await nursery.start(self.writer.run)
            nursery.start_soon(self._consume, receipts, self._on_receipts)
            nursery.start_soon(self._consume, checkpoints, self._on_checkpoint)
            nursery.start_soon(self._consume, cosignatures, self._on_cosignature)
            nursery.start_soon(self._consume, evidence, self._on_evidence)
            nursery.start_soon(self._sync_loop)
            nursery.start_soon(self._cosign_loop)
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._finality_catch_up_loop)
            nursery.start_soon(self.forks.run)
            await nursery.start(self.anchors.run)  # optional L1 anchoring; never blocks the rest
            await nursery.start(self.recovery.run)
            task_status.started()

    def _own_log_reset(self, size: int) -> None:
        """Our log was cut back to, or recovered up to, ``size`` (``node.recovery``): drop what cached it.

        The writer reads the head from the store for every batch; the lifecycle tracker, the quorum
        collector and the announce/cosigned figures here keep positions in our log and start again.
        Runs in a worker thread (it may write the quorum record).
        """
        self.lifecycle.forget(self.origin)
        self.quorum.forget(self.origin, size)
        self._announced_size = -1
        self._cosigned_ours = None

    def _fault(self, peer: str, where: str, exc: SezError) -> None:
        self.stats.peer_faults[peer] = self.stats.peer_faults.get(peer, 0) + 1
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        log.warning(
            "peer fault on %s from %s: %s: %s", where, peer, exc.reason, exc.message,
            extra={"corridor": self.id, "peer": peer, "reason": exc.reason},
        )  # fmt: skip

    async def _consume(
        self, channel: trio.MemoryReceiveChannel[GossipMessage], handle: Callable[[GossipMessage], Any]
    ) -> None:
        async with channel:
            async for message in channel:
                try:
                    await handle(message)
                except ForkDetected as exc:
                    await self.on_fork(exc.evidence, f"gossip from {message.origin}")
                except (PeerProtocolError, StoreError) as exc:
                    self._fault(message.origin, message.topic, exc)

    # -------------------------------------------------------------------- forks

    def _validate_evidence(self, peer_id: str, data: bytes) -> Verdict:
        """Evidence gossip: forward only what verifies and is new; a forgery is the sender's fault."""
        if self.evidence is None:
            return Verdict.IGNORE
        try:
            if len(data) > MAX_GOSSIP_BYTES:
                raise PeerProtocolError("too-large", f"evidence of {len(data)} bytes")
            _, new = self.evidence.add(self.id, data)
        except (PeerProtocolError, LocalProtocolError, StoreError) as exc:
            self._count_rejection(peer_id, exc)
            return Verdict.REJECT
        return Verdict.ACCEPT if new else Verdict.IGNORE

    async def _on_evidence(self, message: GossipMessage) -> None:
        evidence = json.loads(message.data)
        if evidence.get("kind") == "log-equivocation":
            await self.on_fork(evidence, f"evidence gossip from {message.origin}")
        elif evidence.get("kind") == "watcher-equivocation":
            await self.forks.on_watcher_evidence(message.data)

    async def on_fork(self, evidence: dict[str, Any], where: str) -> None:
        """Verified-or-not ``log-equivocation`` evidence reached us: verify, keep, gossip, halt.

        Evidence that does not verify is logged and dropped (a detector's claim is not a fork).
        """
        if self.evidence is None:
            log.error("fork evidence from %s but no evidence pool", where, extra={"corridor": self.id})
            return
        try:
            _, new = await trio.to_thread.run_sync(self.evidence.add, self.id, evidence)
        except (PeerProtocolError, LocalProtocolError) as exc:
            self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
            log.warning("fork evidence from %s refused: %s: %s", where, exc.reason, exc.message,
                        extra={"corridor": self.id, "reason": exc.reason})  # fmt: skip
            return
        digest = evidence_digest(evidence).hex()
        if self.lifecycle.note_fork(digest, evidence):
            self.stats.forks += 1
            log.error(
                "FORK: %s signed conflicting statements (evidence %s, from %s); corridor %s halts",
                evidence.get("origin"), digest, where, self.id,
                extra={"corridor": self.id, "origin": evidence.get("origin"), "evidence": digest},
            )  # fmt: skip
        if new:
            await self.host.publish(topic(self.id, "evidence"), canonical(evidence))
        await self._record_halt(evidence, digest)

    async def _record_halt(self, evidence: dict[str, Any], digest: str) -> None:
        """Write ACTIVE -> HALTED with the evidence into our log (once; other states are left alone).

        Not for a fork of our own log: our log is the one in question, and a halt receipt would extend
        a branch that may lose (each one a new conflicting receipt, hence new evidence and another
        halt, for as long as the fork lasts). The corridor is halted here all the same (the evidence
        is held: ``effective_state``); the counterparty records the halt and the resolution, and our
        recovery follows the branch it names.
        """
        if self.lifecycle.state().state != State.ACTIVE:
            return
        if evidence.get("origin") == self.origin:
            log.warning(
                "fork of our own log %s: halted; the counterparty records the halt and its resolution",
                self.origin, extra={"corridor": self.id, "evidence": digest},
            )  # fmt: skip
            return
        payload = sign_lifecycle(
            {
                "corridor_id": self.id, "from": "ACTIVE", "to": "HALTED",
                "reason": f"log equivocation of {evidence.get('origin')}",
                "evidence": {"type": "log-equivocation", "digest_sha256": digest, "body": evidence},
            },
            {self.party: self.key},
        )  # fmt: skip
        try:
            await self.writer.submit("lifecycle", payload)
        except SezError as exc:  # already recorded, the state moved on, or our log is being checked
            log.info("halt not recorded: %s: %s", exc.reason, exc.message, extra={"corridor": self.id})

    async def _own_log_ready(self) -> None:
        """The recovery released the writer: announce our (new) head; record a halt refused meanwhile.

        Every unresolved fork is tried, in digest order, until one halt is recorded: the evidence seen
        last while the writer was held may be an already-settled spelling of an earlier fork (the
        halt for the new one would then wait for the next piece of evidence to arrive).
        """
        self._announce_kick.kick()
        for digest, evidence in sorted(self.lifecycle.unresolved_forks().items()):
            if self.lifecycle.state().state != State.ACTIVE:
                break
            await self._record_halt(evidence, digest)

    # --------------------------------------------------------------- validators

    def _validate_receipts(self, peer_id: str, data: bytes) -> Verdict:
        try:
            return self._check_receipt_batch(data)
        except (PeerProtocolError, StoreError) as exc:
            self._count_rejection(peer_id, exc)
            return Verdict.REJECT

    def _count_rejection(self, peer_id: str, exc: SezError) -> None:
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        self.stats.peer_faults[peer_id] = self.stats.peer_faults.get(peer_id, 0) + 1
        log.info(
            "gossip from %s rejected: %s: %s", peer_id, exc.reason, exc.message,
            extra={"corridor": self.id, "peer": peer_id, "reason": exc.reason},
        )  # fmt: skip

    def _check_receipt_batch(self, data: bytes) -> Verdict:
        """Cheap checks before gossipsub delivers or forwards a batch; raises on an invalid one."""
        batch = decode(data, max_bytes=MAX_GOSSIP_BYTES)
        if not isinstance(batch, ReceiptBatch):
            raise PeerProtocolError("wrong-topic", f"{batch.KIND} message on the receipts topic")
        if batch.corridor != self.id:
            raise PeerProtocolError("wrong-corridor", f"batch for corridor {batch.corridor} on {self.id}")
        if batch.origin == self.origin:
            return Verdict.IGNORE  # our own batch coming back
        if batch.origin != self.counterparty_origin:
            raise PeerProtocolError("unknown-origin", f"{batch.origin!r} writes no log in {self.id}")
        if not batch.receipts:
            raise PeerProtocolError("bad-batch", "empty receipt batch")
        cp, _ = open_checkpoint(batch.checkpoint, self.counterparty_key)
        end = batch.start + len(batch.receipts)
        if cp.size < end:
            raise PeerProtocolError(
                "bad-batch", f"checkpoint size {cp.size} does not cover receipts up to {end}"
            )
        held = self.store.head(self.counterparty_origin).size
        if end <= held:
            return Verdict.IGNORE  # old news: do not forward it again
        offset = max(0, held - batch.start)
        receipt = Receipt.from_bytes(batch.receipts[offset])
        if receipt.sequence != batch.start + offset:
            raise PeerProtocolError(
                "seq-gap", f"receipt at position {batch.start + offset} carries sequence {receipt.sequence}"
            )
        verify_receipt(receipt, self.counterparty_key)
        return Verdict.ACCEPT

    def _validate_checkpoint(self, peer_id: str, data: bytes) -> Verdict:
        try:
            message = decode(data, max_bytes=MAX_GOSSIP_BYTES)
            if not isinstance(message, CheckpointAnnouncement):
                raise PeerProtocolError("wrong-topic", f"{message.KIND} message on the checkpoints topic")
            self._check_corridor_origin(message.corridor, message.origin)
            if message.origin == self.origin:
                return Verdict.IGNORE
            open_checkpoint(message.note, self.counterparty_key)
        except PeerProtocolError as exc:
            self._count_rejection(peer_id, exc)
            return Verdict.REJECT
        return Verdict.ACCEPT

    def _check_corridor_origin(self, corridor: str, origin: str) -> None:
        if corridor != self.id:
            raise PeerProtocolError("wrong-corridor", f"message for corridor {corridor} on {self.id}")
        if origin not in (self.origin, self.counterparty_origin):
            raise PeerProtocolError("unknown-origin", f"{origin!r} writes no log in {self.id}")

    def _validate_cosignature(self, peer_id: str, data: bytes) -> Verdict:
        try:
            message = decode(data, max_bytes=MAX_GOSSIP_BYTES)
            if not isinstance(message, CosignatureAnnouncement):
                raise PeerProtocolError("wrong-topic", f"{message.KIND} message on the cosignatures topic")
            self._check_corridor_origin(message.corridor, message.origin)
            cp, note = parse_checkpoint(message.note)
            if cp.origin != message.origin:
                raise PeerProtocolError("wrong-origin", f"checkpoint of {cp.origin!r} for {message.origin!r}")
            if (
                message.origin == self.origin
                and message.cosigner == self.counterparty_origin
                and not verify_cosignatures(note, cp, [self.counterparty_cosigner])
            ):
                raise PeerProtocolError("bad-cosignature", "no counterparty cosignature on the note")
            # A watcher's announcement is accepted here (and relayed): whether its lines count depends on
            # the stake ledger, which the consumer checks (QuorumCollector.on_watcher_note).
        except PeerProtocolError as exc:
            self._count_rejection(peer_id, exc)
            return Verdict.REJECT
        return Verdict.ACCEPT

    # ---------------------------------------------------------------- consumers

    async def _on_receipts(self, message: GossipMessage) -> None:
        batch = decode(message.data, max_bytes=MAX_GOSSIP_BYTES)
        assert isinstance(batch, ReceiptBatch)
        async with self._replica_lock:
            outcome = await trio.to_thread.run_sync(
                self.replica.apply, batch.start, batch.receipts, batch.checkpoint
            )
        if outcome is Outcome.GAP:
            self.stats.gossip_gaps += 1
            self._sync_kick.kick()
        elif outcome is Outcome.DUPLICATE:
            self.stats.gossip_batches_duplicate += 1
        else:
            self.stats.gossip_batches_applied += 1
            self._cosign_kick.kick()

    async def _on_checkpoint(self, message: GossipMessage) -> None:
        announcement = decode(message.data, max_bytes=MAX_GOSSIP_BYTES)
        assert isinstance(announcement, CheckpointAnnouncement)
        async with self._replica_lock:
            cp = await trio.to_thread.run_sync(self.replica.note_checkpoint, announcement.note)
        if announcement.origin == self.counterparty_origin and cp.size not in self._announced_notes:
            self._announced_notes[cp.size] = announcement.note
            while len(self._announced_notes) > ANNOUNCED_KEPT:
                del self._announced_notes[min(self._announced_notes)]
            self._cosign_target_at = time.monotonic()
        if cp.size > self.replica.status().size:
            self._sync_kick.kick()
        self._cosign_kick.kick()

    async def _on_cosignature(self, message: GossipMessage) -> None:
        announcement = decode(message.data, max_bytes=MAX_GOSSIP_BYTES)
        assert isinstance(announcement, CosignatureAnnouncement)
        if announcement.cosigner in (self.origin, self.counterparty_origin):
            if announcement.origin != self.origin or announcement.cosigner != self.counterparty_origin:
                return  # our own cosignature coming back, or a party cosigning its own log
            cp, note = parse_checkpoint(announcement.note)
            if not verify_cosignatures(note, cp, [self.counterparty_cosigner]):
                raise PeerProtocolError("bad-cosignature", "no valid counterparty cosignature on the note")
            await trio.to_thread.run_sync(self._merge_cosignature, cp, note)
            self.stats.cosignatures_received += 1
            await self._evaluate(self.origin, cp.size)
            return
        # A watcher's cosignature: counted (and stored) only for active watchers' verified lines.
        where = f"cosignature gossip from {message.origin}"
        if await self.forks.on_watcher_note(announcement.origin, announcement.note, where):
            return  # another branch of a log: a fork (kept as its certificate, never merged)
        decision = await trio.to_thread.run_sync(
            self.quorum.on_watcher_note, announcement.origin, announcement.note
        )
        await self.forks.after_merge(announcement.origin, announcement.note, where)
        self.stats.watcher_cosignatures_received += 1
        if decision is not None and decision.final:
            self.stats.quorum_final += 1

    async def _finality_catch_up_loop(self) -> None:
        """Decide again on each log's latest stored checkpoint when it is not final yet.

        Decisions are taken when a cosignature arrives. One taken while the corridor was halted says
        ``halted``, and after the resolution (or our own log's recovery) no new cosignature may come
        for checkpoints every watcher has cosigned already: without this, finality would resume only
        with the next receipt. Each round reads and parses each log's latest checkpoint; a decision
        is taken only when that checkpoint is not final yet.
        """
        while True:
            await trio.sleep(SYNC_INTERVAL)
            if self.lifecycle.halted():
                continue
            for origin in (self.origin, self.counterparty_origin):
                try:
                    latest = await trio.to_thread.run_sync(self.quorum.latest_undecided, origin)
                    if latest is not None:
                        await self._evaluate(origin, latest)
                except StoreError as exc:
                    log.warning(
                        "finality catch-up of %s failed: %s", origin, exc, extra={"corridor": self.id}
                    )

    async def _evaluate(self, origin: str, size: int) -> None:
        decision = await trio.to_thread.run_sync(self.quorum.on_party_cosigned, origin, size)
        if decision is not None and decision.final:
            self.stats.quorum_final += 1

    def _merge_cosignature(self, cp: Checkpoint, note: Any) -> None:
        """Add the counterparty's verified cosignature line (one, the latest) to our stored note.

        Only lines with the counterparty cosigner's name *and* key ID are taken, and
        ``verify_cosignatures`` has checked every such line; anything else a peer put in
        the note (lines of unknown keys, padding) is dropped, never stored.
        """
        key_id = self.counterparty_cosigner.key_id
        lines = [
            sig for sig in note.signatures if sig.name == self.counterparty_origin and sig.key_id == key_id
        ]
        if not lines:
            return
        latest = max(lines, key=lambda sig: Cosignature.from_note_signature(sig).timestamp)
        self.quorum.merge(self.origin, cp, note, [latest])
        self._cosigned_ours = max(self._cosigned_ours or 0, cp.size)

    # ------------------------------------------------------------------ publish

    async def _publish_batch(self, batch: CommittedBatch) -> None:
        raws = [r.raw for r in batch.receipts]
        for offset in range(0, len(raws), MAX_BATCH_RECEIPTS):
            piece = raws[offset : offset + MAX_BATCH_RECEIPTS]
            message = ReceiptBatch(
                corridor=self.id, origin=self.origin, start=batch.start + offset,
                receipts=tuple(piece), checkpoint=batch.checkpoint,
            )  # fmt: skip
            await self.host.publish(topic(self.id, "receipts"), encode(message))
        self._announce_kick.kick()

    async def _announce(self, size: int, note: bytes) -> None:
        message = CheckpointAnnouncement(corridor=self.id, origin=self.origin, note=note)
        await self.host.publish(topic(self.id, "checkpoints"), encode(message))
        self._announced_size = size
        self._announced_at = time.monotonic()

    async def _announce_loop(self) -> None:
        """Announce our latest checkpoint when the log grew, at most every ``ANNOUNCE_MIN_GAP`` seconds.

        Watchers learn of new checkpoints from these announcements, so they set the floor of the
        time to quorum finality: a batch wakes this loop at once (``_announce_kick``); a burst of
        batches is announced once per gap; ``checkpoint_interval`` is the fallback when no batch
        wakes it (a lost wake-up, or our log's size restored after a restart).
        """
        while True:
            await self._announce_kick.wait(self.config.checkpoint_interval)
            gap = ANNOUNCE_MIN_GAP - (time.monotonic() - self._announced_at)
            if gap > 0:
                await trio.sleep(gap)
            size = self.store.head(self.origin).size
            if size in (self._announced_size, 0):
                continue
            await self._announce(size, self.store.checkpoint(self.origin))

    # --------------------------------------------------------------------- sync

    async def _sync_loop(self) -> None:
        """Pull the counterparty's log until the replica reaches its latest checkpoint; repeat."""
        failures = 0
        while True:
            try:
                with trio.fail_after(SYNC_REQUEST_TIMEOUT * 4):
                    await self.sync_once()
                failures = 0
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                failures += 1
                self.stats.sync_failures += 1
                log.info("sync round for %s failed: %r", self.id, exc, extra={"corridor": self.id})
            except ForkDetected as exc:
                failures += 1
                await self.on_fork(exc.evidence, "sync")
            except (PeerProtocolError, StoreError) as exc:
                failures += 1
                self.stats.sync_failures += 1
                self._fault("sync", "sync", exc)
            delay = SYNC_INTERVAL if failures == 0 else min(SYNC_BACKOFF_MAX, SYNC_INTERVAL * 2**failures)
            await self._sync_kick.wait(delay)

    async def sync_once(self) -> int:
        """One sync round with a connected counterparty peer; returns the receipts added.

        Raises:
            StreamOpenError, trio.BrokenResourceError: the peer is unreachable or hung up.
            PeerProtocolError: the peer sent something invalid.
        """
        peers = [p for p in self.config.peer_ids if self.host.is_connected(p)]
        if not peers:
            return 0
        self.stats.sync_rounds += 1
        # Rotate through the connected peers round by round, so that one configured peer that does not
        # serve sync (or serves it badly) cannot starve the replica.
        peer = peers[self.stats.sync_rounds % len(peers)]
        stream = await self.host.open_stream(peer, PROTOCOL_ID)
        added = 0
        async with stream:
            session = SyncSession(stream)
            latest = await session.ask(
                GetCheckpoint(id=session.next_id(), origin=self.counterparty_origin, size=0)
            )
            if isinstance(latest, ErrorResponse):
                if latest.reason == "not-found":
                    return 0  # the counterparty has not written anything yet
                raise PeerProtocolError(latest.reason, f"checkpoint request refused: {latest.message}")
            assert isinstance(latest, NoteResponse)
            async with self._replica_lock:
                await trio.to_thread.run_sync(self.replica.note_checkpoint, latest.note)
            while (status := self.replica.status()).lag > 0:
                response = await session.ask(
                    GetReceipts(
                        id=session.next_id(), origin=self.counterparty_origin, start=status.size,
                        count=min(MAX_RANGE_RECEIPTS, status.lag),
                    )
                )  # fmt: skip
                if isinstance(response, ErrorResponse):
                    raise PeerProtocolError(response.reason, f"range request refused: {response.message}")
                assert isinstance(response, ReceiptsResponse)
                if not response.receipts:
                    raise PeerProtocolError("empty-range", "peer signed a checkpoint it cannot serve")
                async with self._replica_lock:
                    await trio.to_thread.run_sync(self.replica.apply, response.start, response.receipts, None)
                added += len(response.receipts)
                self.stats.sync_receipts += len(response.receipts)
        if added:
            self._cosign_kick.kick()
        return added

    # ------------------------------------------------------------------ witness

    async def _cosign_loop(self) -> None:
        while True:
            await self._cosign_kick.wait(self.config.checkpoint_interval)
            try:
                await self.cosign_latest()
            except (PeerProtocolError, StoreError) as exc:
                # A checkpoint we must not cosign (rollback, equivocation): keep it as evidence (issue 5).
                self._fault("witness", "witness", exc)

    def _choose_cosign_target(self, last_size: int) -> tuple[bytes, bool] | None:
        """The checkpoint note to cosign next, and whether it was announced (then cosigned at once).

        The counterparty's largest *announced* checkpoint that the replica holds: the writer
        announces the checkpoints meant to be cosigned, and watchers cosign those too, so that a
        quorum forms on one tree size even under load (cosigners picking each their own latest size
        would rarely meet). Without a fresh announcement (gossip lost, an idle log) the latest stored
        checkpoint, at the configured cadence.
        """
        held = self.replica.status().size
        sizes = [size for size in self._announced_notes if last_size < size <= held]
        if sizes:
            return self._announced_notes[max(sizes)], True
        ahead = any(size > held for size in self._announced_notes)
        if ahead and time.monotonic() - self._cosign_target_at < 2 * self.config.checkpoint_interval:
            return None  # the replica is about to reach an announced size: wait rather than cosign another
        try:
            return self.store.checkpoint(self.counterparty_origin), False
        except StoreError as exc:
            if exc.reason == "not-found":
                return None
            raise

    async def cosign_latest(self, *, force: bool = False) -> int | None:
        """Cosign the counterparty's checkpoint chosen by :meth:`_choose_cosign_target` if the cadence
        and the witness rule allow.

        Returns the size cosigned, or None.
        """
        state = self.store.witness_state(self.counterparty_origin)
        chosen = self._choose_cosign_target(int(state["size"]) if state is not None else 0)
        if chosen is None:
            return None
        note, announced = chosen
        cp, _ = open_checkpoint(note, self.counterparty_key)
        last = None
        if state is not None:
            last = Checkpoint(origin=self.counterparty_origin, size=state["size"], root=state["root"])
            grown = cp.size - last.size
            due = time.monotonic() - self._last_cosign_time >= self.config.checkpoint_interval
            if grown <= 0 or not (force or announced or grown >= self.config.checkpoint_every or due):
                return None
        proof = (
            self.store.consistency_proof(self.counterparty_origin, last.size, cp.size)
            if last is not None and last.size > 0
            else []
        )
        if last is not None and last.size == 0:
            last = None  # consistency from the empty tree is trivial
        decision = check_witness_rule(last, cp, proof)
        if not decision.cosign:
            return None
        acked = state.get("acked_size", 0) if state else 0
        line = cosign(cp, self.key, int(self._now()))
        record = {"size": cp.size, "root": cp.root, "note": note, "acked_size": acked}
        await trio.to_thread.run_sync(self.store.set_witness_state, self.counterparty_origin, record)
        self._last_cosign_time = time.monotonic()
        self.stats.cosigned += 1
        cosigned = format_note(add_signatures(parse_note(note), [line]))
        message = CosignatureAnnouncement(
            corridor=self.id, origin=self.counterparty_origin, cosigner=self.origin, note=cosigned
        )
        await self.host.publish(topic(self.id, "cosignatures"), encode(message))
        # Our cosignature on the replica's stored note: it is the "counterparty" cosignature of their log.
        merge = functools.partial(self.quorum.merge, self.counterparty_origin, cp, parse_note(note), [line])
        await trio.to_thread.run_sync(merge)
        await self._evaluate(self.counterparty_origin, cp.size)
        may_ack = self.writer.gate is None or "ack" in allowed_kinds(
            await trio.to_thread.run_sync(self.lifecycle.effective_state)
        )
        if may_ack and await trio.to_thread.run_sync(self._grew_by_more_than_acks, acked, cp.size):
            try:
                await self.writer.submit(
                    "ack", {"origin": self.counterparty_origin, "size": cp.size, "root": cp.root.hex()}
                )
            except LocalProtocolError as exc:
                if exc.reason not in ("corridor-state", "recovering"):
                    raise
                # The lifecycle moved (a halt, a suspension) between the check and the write: no ack.
                log.info("ack not written: %s", exc.message, extra={"corridor": self.id})
                return cp.size
            record["acked_size"] = cp.size
            await trio.to_thread.run_sync(self.store.set_witness_state, self.counterparty_origin, record)
            self.stats.acks_written += 1
        return cp.size

    def _grew_by_more_than_acks(self, start: int, end: int) -> bool:
        """True if the counterparty's receipts ``start``..``end`` include any kind but ``ack``."""
        for seq in range(end - 1, start - 1, -1):  # newest first: traffic is usually non-ack
            kind = json.loads(self.store.receipt(self.counterparty_origin, seq))["transition"]["kind"]
            if kind != "ack":
                return True
        return False

    # ------------------------------------------------------------------- status

    _STATUS_SCAN_LIMIT: Final = 4096
    """Checkpoints scanned (newest first) once, at the first status request, for the counterparty's
    latest cosignature; afterwards merges keep the figure current."""

    def _find_cosigned_ours(self) -> int:
        for count, size in enumerate(reversed(self.store.checkpoint_sizes(self.origin))):
            if count >= self._STATUS_SCAN_LIMIT:
                break
            _, note = parse_checkpoint(self.store.checkpoint(self.origin, size))
            if any(sig.name == self.counterparty_origin for sig in note.signatures):
                return size
        return 0

    def status(self) -> dict[str, Any]:
        """JSON-ready corridor status (API ``/v1/corridors/{id}/status``)."""
        head = self.store.head(self.origin)
        replica = self.replica.status()
        state = self.store.witness_state(self.counterparty_origin) or {}
        if self._cosigned_ours is None:
            self._cosigned_ours = self._find_cosigned_ours()
        cosigned_ours = self._cosigned_ours
        return {
            "corridor": self.id,
            "log": {"origin": self.origin, "size": head.size, "root": head.root.hex()},
            "counterparty": {
                "origin": self.counterparty_origin,
                "size": replica.size,
                "known_size": replica.target,
                "lag": replica.lag,
                "cosigned_size": state.get("size", 0),
                "acked_size": state.get("acked_size", 0),
            },
            "counterparty_cosigned_size": cosigned_ours,
            "lifecycle": str(self.lifecycle.state().state),
            "halted": self.lifecycle.halted(),
            "forks": sorted(self.lifecycle.unresolved_forks()),
            "recovery": self.recovery.status(),
            "finality": self.quorum.status(),
            "stake": self.quorum.watchers(),
            "anchoring": self.anchors.status(),
            "peers": {
                "configured": list(self.config.peer_ids),
                "connected": [p for p in self.config.peer_ids if self.host.is_connected(p)],
            },
            "writer": dataclasses.asdict(self.writer.statistics()),
            "stats": {
                "gossip_batches_applied": self.stats.gossip_batches_applied,
                "gossip_gaps": self.stats.gossip_gaps,
                "sync_rounds": self.stats.sync_rounds,
                "sync_receipts": self.stats.sync_receipts,
                "sync_failures": self.stats.sync_failures,
                "cosigned": self.stats.cosigned,
                "acks_written": self.stats.acks_written,
                "cosignatures_received": self.stats.cosignatures_received,
                "watcher_cosignatures_received": self.stats.watcher_cosignatures_received,
                "quorum_final": self.stats.quorum_final,
                "peer_faults": dict(self.stats.peer_faults),
                "rejected": dict(self.stats.rejected),
            },
        }


def serve_sync_frames(
    store: LogStore,
    allowed_for: Callable[[str], frozenset[str]],
    *,
    idle_timeout: float = SYNC_IDLE_TIMEOUT,
    frame_timeout: float = SYNC_FRAME_TIMEOUT,
) -> Callable[..., Any]:
    """The ``/sez/sync/1`` stream handler: answer framed requests until the peer closes.

    Requests are independent; the answers to everything that arrived in one read are
    written together. A peer reads only the logs of the corridors it is configured
    for (``allowed_for(peer_id)``). A peer fault (bad frame) ends the session: the p2p
    layer's guard logs it, counts it against the peer and resets the stream.

    A stream costs the server a task and a buffer, so neither may be held for free: a stream
    with no request for ``idle_timeout`` seconds is closed (a follower that stays connected asks
    every round, far more often), and a frame must arrive whole within ``frame_timeout`` of its
    first byte (a peer trickling one frame a byte at a time cannot pin the stream).
    """

    async def handler(stream: Any) -> None:
        allowed = allowed_for(stream.peer_id)
        decoder = FrameDecoder()
        partial_since: float | None = None
        while True:
            if partial_since is None:
                deadline, why = trio.current_time() + idle_timeout, f"idle for {idle_timeout:.0f} s"
            else:
                deadline, why = partial_since + frame_timeout, f"frame incomplete after {frame_timeout:.0f} s"
            with trio.move_on_at(deadline) as waited:
                data = await stream.receive_some(65536)
            if waited.cancelled_caught:
                log.info("sync stream from %s closed: %s", stream.peer_id, why,
                         extra={"peer": str(stream.peer_id), "reason": "sync-timeout"})  # fmt: skip
                return
            if not data:
                return
            decoder.receive_data(data)
            out = bytearray()
            while (request := decoder.next_message()) is not NEED_DATA:
                assert isinstance(request, Message)
                respond = functools.partial(answer, store, request, allowed_origins=allowed)
                out += frame(await trio.to_thread.run_sync(respond))
            if decoder.buffered == 0:
                partial_since = None
            elif partial_since is None or out:  # a new frame has begun
                partial_since = trio.current_time()
            if out:
                await stream.send_all(bytes(out))

    return handler
