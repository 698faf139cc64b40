"""``sez-watcher run``: follow logs over gossip and sync, cosign under the witness rule (design §6-§7, §13).

Start-up, in order, each step ready before the next (style rule 13):

1. the store (the slashing-protection records, :mod:`watcher.protection`);
2. the libp2p host (allowlist = the followed nodes' peer ids, all kept connected);
3. one :class:`LogFollower` per followed log: the corridor's ``checkpoints`` topic (validated before
   gossipsub delivers or forwards anything) and a cosigning loop;
4. the HTTP API: C2SP ``POST /add-checkpoint``, ``GET /healthz``, ``GET /v1/state``.

Then one JSON line ``{"event": "ready", ...}`` on stdout.

Cosigning one log (the witness rule): a checkpoint newer than the last cosigned one, from gossip or
from a sync round's ``GetCheckpoint``, is checked with a consistency proof fetched over
``/sez/sync/1`` from a connected node of the corridor (rotating on failure). Under the origin's
lock (shared with ``/add-checkpoint``) :func:`~protocol.witness.check_witness_rule` decides and the
new record is persisted; only then is the cosignature published on
``/sez/1/<corridor>/cosignatures``. A validly signed checkpoint refused for equivocation or
inconsistency is kept as evidence.

Shutdown: SIGINT or SIGTERM cancels the root nursery and the process exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.api import problem
from node.corridor import topic
from node.p2p import GossipMessage, P2PHost, Verdict, configure_libp2p_logging, load_or_create_identity
from node.p2p import open_host as open_p2p_host
from node.runtime import Kick, run_foreground
from node.sync_session import SyncSession
from protocol.checkpoints import Checkpoint, add_signatures, cosign, open_checkpoint, parse_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import log_equivocation_from_checkpoints
from protocol.jcs import canonical
from protocol.notes import format_note, parse_note
from protocol.sync import PROTOCOL_ID
from protocol.tlog_witness import (
    MAX_REQUEST_BYTES,
    WitnessResponse,
    handle_add_checkpoint,
    parse_add_checkpoint,
)
from protocol.wire import (
    MAX_GOSSIP_BYTES,
    CheckpointAnnouncement,
    CosignatureAnnouncement,
    ErrorResponse,
    GetCheckpoint,
    GetConsistency,
    NoteResponse,
    ProofResponse,
    decode,
    encode,
)
from protocol.witness import check_witness_rule
from store import LogStore

from .config import FollowedLog, WatcherConfig
from .protection import COSIGNED, EVIDENCE, Protection

__all__ = ["LogFollower", "Watcher", "WatcherStatistics", "build_app", "main_run", "run_daemon"]

log = logging.getLogger(__name__)

ROUND_INTERVAL: Final = 2.0
"""Seconds between cosigning rounds of one log when no gossip wakes it earlier."""
BACKOFF_MAX: Final = 10.0


@dataclass(slots=True)
class WatcherStatistics:
    """Counters of the watcher (``/v1/state``)."""

    cosigned: int = 0
    evidence: int = 0
    sync_failures: int = 0
    forks_reported: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Watcher:
    """The watcher's state shared by gossip, sync and HTTP: the store, keys, and a lock per origin."""

    def __init__(
        self, config: WatcherConfig, store: LogStore, *, now: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.store = store
        self.protection = Protection(store)
        self.key = config.signing_key()
        self.vkey = config.cosigner_key()
        self.log_keys = config.log_keys
        self.locks = {entry.origin: trio.Lock() for entry in config.logs}
        self.stats = WatcherStatistics()
        self._now = now
        self.publish_evidence: Callable[[str, bytes], Awaitable[None]] | None = None
        """Gossips evidence on a corridor's evidence topic (set by :func:`run_watcher`)."""
        self.corridor_of = {entry.origin: entry.corridor for entry in config.logs}

    def now(self) -> int:
        """Unix seconds for cosignature timestamps."""
        return int(self._now())

    async def add_checkpoint(self, body: bytes) -> WitnessResponse:
        """Decide a C2SP add-checkpoint request; persist the new record before returning a 200."""
        try:
            origin: str | None = parse_checkpoint(parse_add_checkpoint(body).checkpoint)[0].origin
        except PeerProtocolError:
            origin = None  # handle_add_checkpoint answers 400 with the reason
        lock = self.locks.get(origin) if origin is not None else None
        if lock is None:
            return self._decide(body)
        async with lock:
            response = self._decide(body)
            if response.new_state is not None:
                note = parse_add_checkpoint(body).checkpoint
                await trio.to_thread.run_sync(self.protection.commit_cosigned, response.new_state, note)
                self.stats.cosigned += 1
            if response.evidence is not None and origin is not None:
                await self.keep_evidence(origin, response.evidence, f"add-checkpoint {response.status}")
        return response

    def _decide(self, body: bytes) -> WitnessResponse:
        return handle_add_checkpoint(
            body,
            log_keys=self.log_keys,
            last_cosigned=self.protection.last,
            witness_key=self.key,
            now=self.now(),
        )

    async def keep_evidence(self, origin: str, note: bytes, reason: str) -> None:
        if await trio.to_thread.run_sync(self.protection.keep_evidence, origin, note, reason):
            self.stats.evidence += 1
            log.warning(
                "kept evidence for %s: %s", origin, reason, extra={"origin": origin, "reason": reason}
            )
            await self._gossip_fork(origin, note)

    def fork_evidence(self, origin: str, note: bytes) -> dict[str, Any] | None:
        """``log-equivocation`` evidence if ``note`` and the checkpoint cosigned for ``origin`` are
        validly log-signed at one size with two roots (design §8: a watcher is a fork detector too)."""
        held = self.protection.last_note(origin)
        key = self.log_keys.get(origin)
        if held is None or key is None:
            return None
        try:
            held_cp, new_cp = open_checkpoint(held, key)[0], open_checkpoint(note, key)[0]
            if held_cp.size != new_cp.size or held_cp.root == new_cp.root:
                return None
            return log_equivocation_from_checkpoints(held, note, key)
        except (PeerProtocolError, LocalProtocolError):
            return None

    async def _gossip_fork(self, origin: str, note: bytes) -> None:
        evidence = self.fork_evidence(origin, note)
        if evidence is None or self.publish_evidence is None:
            return
        self.stats.forks_reported += 1
        log.error("FORK: %s signed two checkpoints of one size; gossiping the evidence", origin,
                  extra={"origin": origin})  # fmt: skip
        await self.publish_evidence(self.corridor_of[origin], canonical(evidence))

    def state(self) -> dict[str, Any]:
        """What this watcher last cosigned per origin (``GET /v1/state``)."""
        logs: dict[str, Any] = {}
        for entry in self.config.logs:
            record = self.protection.record(entry.origin) or {}
            logs[entry.origin] = {
                "corridor": entry.corridor,
                "size": int(record.get("size", 0)),
                "root": bytes(record["root"]).hex() if "root" in record else None,
                "note": bytes(record["note"]).decode() if "note" in record else None,
                "cosigned": self.store.witness_history_count(entry.origin, COSIGNED),
                "evidence": self.store.witness_history_count(entry.origin, EVIDENCE),
            }
        return {
            "watcher": self.config.name,
            "vkey": self.vkey.to_vkey(),
            "logs": logs,
            "stats": {
                "cosigned": self.stats.cosigned,
                "evidence": self.stats.evidence,
                "sync_failures": self.stats.sync_failures,
                "forks_reported": self.stats.forks_reported,
                "rejected": dict(self.stats.rejected),
            },
        }


def build_app(watcher: Watcher) -> Starlette:
    """The watcher's HTTP API (served by hypercorn on trio; in tests through httpx.ASGITransport)."""

    async def add_checkpoint(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_REQUEST_BYTES):
            return problem("too-large", f"the body must be at most {MAX_REQUEST_BYTES} bytes", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return problem("too-large", f"the body must be at most {MAX_REQUEST_BYTES} bytes", 413)
        response = await watcher.add_checkpoint(bytes(body))
        return Response(response.body, status_code=response.status, media_type=response.content_type)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "watcher": watcher.config.name})

    async def state(request: Request) -> Response:
        return JSONResponse(await trio.to_thread.run_sync(watcher.state))

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/state", state, methods=["GET"]),
        ]
    )


class LogFollower:
    """Follows one log: validates its checkpoint gossip, and cosigns newer checkpoints."""

    def __init__(self, watcher: Watcher, entry: FollowedLog, host: P2PHost) -> None:
        self.watcher = watcher
        self.entry = entry
        self.host = host
        self.origin = entry.origin
        self._pending: tuple[Checkpoint, bytes] | None = None
        self._kick = Kick()
        self._rounds = 0
        self._open: tuple[str, Any, SyncSession] | None = None
        """(peer, stream, session) of the long-lived sync stream, while open."""

    # --------------------------------------------------------------- gossip

    def validate(self, peer_id: str, data: bytes) -> Verdict:
        """The checkpoints topic validator for this log (other origins of the corridor: IGNORE)."""
        try:
            message = decode(data, max_bytes=MAX_GOSSIP_BYTES)
            if not isinstance(message, CheckpointAnnouncement):
                raise PeerProtocolError("wrong-topic", f"{message.KIND} message on the checkpoints topic")
            if message.corridor != self.entry.corridor:
                raise PeerProtocolError("wrong-corridor", f"checkpoint for {message.corridor}")
            if message.origin != self.origin:
                return Verdict.IGNORE
            open_checkpoint(message.note, self.entry.key)
        except PeerProtocolError as exc:
            rejected = self.watcher.stats.rejected
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            log.info("gossip from %s rejected: %s: %s", peer_id, exc.reason, exc.message)
            return Verdict.REJECT
        return Verdict.ACCEPT

    def offer(self, message: GossipMessage) -> None:
        """Take a validated announcement of this log (keep the largest pending) and wake the loop."""
        announcement = decode(message.data, max_bytes=MAX_GOSSIP_BYTES)
        if not isinstance(announcement, CheckpointAnnouncement) or announcement.origin != self.origin:
            return
        cp, _ = open_checkpoint(announcement.note, self.entry.key)
        if self._pending is None or cp.size > self._pending[0].size:
            self._pending = (cp, announcement.note)
        self._kick.kick()

    # -------------------------------------------------------------- cosigning

    async def run(self) -> None:
        """Cosigning rounds until cancelled; peer faults and unreachable nodes back off and retry."""
        try:
            await self._rounds_forever()
        finally:
            await self.close_session()

    async def _rounds_forever(self) -> None:
        failures = 0
        while True:
            try:
                await self.round()
                failures = 0
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                failures += 1
                self.watcher.stats.sync_failures += 1
                log.info("round for %s failed: %r", self.origin, exc, extra={"origin": self.origin})
            except PeerProtocolError as exc:
                failures += 1
                self.watcher.stats.sync_failures += 1
                log.warning(
                    "peer fault for %s: %s: %s", self.origin, exc.reason, exc.message,
                    extra={"origin": self.origin, "reason": exc.reason},
                )  # fmt: skip
            delay = ROUND_INTERVAL if failures == 0 else min(BACKOFF_MAX, ROUND_INTERVAL * 2**failures)
            await self._kick.wait(delay)

    async def round(self) -> int | None:
        """One round with a connected node of the corridor; returns the size cosigned, or None.

        The round runs on a long-lived ``/sez/sync/1`` stream to one node (design §13), kept open
        across rounds; any failure closes it, and the next round opens one to the next connected
        node (rotating, so that a faulty node cannot starve the watcher).

        Raises:
            StreamOpenError, trio.BrokenResourceError, trio.TooSlowError: the node is unreachable or slow.
            PeerProtocolError: the node sent something invalid.
        """
        session = await self._session()
        if session is None:
            return None
        try:
            return await self._round(session)
        except BaseException:
            await self.close_session()
            raise

    async def _session(self) -> SyncSession | None:
        """The open session, if its node is still connected; else one to the next connected node."""
        if self._open is not None:
            peer, _, session = self._open
            if self.host.is_connected(peer):
                return session
            await self.close_session()
        peers = [p for p in self.entry.peer_ids if self.host.is_connected(p)]
        if not peers:
            return None
        self._rounds += 1
        peer = peers[self._rounds % len(peers)]
        stream = await self.host.open_stream(peer, PROTOCOL_ID)
        session = SyncSession(stream)
        self._open = (peer, stream, session)
        return session

    async def close_session(self) -> None:
        """Close the long-lived stream, if any (the next round opens one to the next node)."""
        if self._open is None:
            return
        _, stream, _ = self._open
        self._open = None
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await stream.aclose()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("closing the sync stream of %s: %r", self.origin, exc)

    async def _round(self, session: SyncSession) -> int | None:
        candidate, self._pending = self._pending, None
        if candidate is None:
            # No announcement since the last round: catch up with the latest checkpoint the node
            # holds (a lost announcement, an idle log). An announced checkpoint is preferred even
            # when a larger one exists: the writer announces the checkpoints meant to be cosigned
            # (design §6), so that the counterparty and every watcher cosign the same tree sizes
            # and a quorum can form on one of them under load.
            latest = await session.ask(GetCheckpoint(id=session.next_id(), origin=self.origin, size=0))
            if isinstance(latest, NoteResponse):
                candidate = (open_checkpoint(latest.note, self.entry.key)[0], latest.note)
            elif isinstance(latest, ErrorResponse) and latest.reason != "not-found":
                raise PeerProtocolError(latest.reason, f"checkpoint request refused: {latest.message}")
        if candidate is None:
            return None
        cp, note = candidate
        while True:
            last = self.watcher.protection.last(self.origin)
            if last is not None and cp.size < last.size:
                return None  # old news
            proof: list[bytes] = []
            if last is not None and 0 < last.size < cp.size:
                response = await session.ask(
                    GetConsistency(id=session.next_id(), origin=self.origin, old=last.size, new=cp.size)
                )
                if isinstance(response, ErrorResponse) and response.reason == "bad-index":
                    # This node (the counterparty's replica, say) has not reached the announced size
                    # yet: keep the candidate for the next round, with another node or later.
                    if self._pending is None or self._pending[0].size < cp.size:
                        self._pending = (cp, note)
                    self._kick.kick()
                    await self.close_session()
                    return None
                if isinstance(response, ErrorResponse):
                    raise PeerProtocolError(response.reason, f"proof request refused: {response.message}")
                if not isinstance(response, ProofResponse):
                    raise PeerProtocolError("unexpected-response", f"{response.KIND} for a proof")
                proof = list(response.hashes)
            done, size = await self._cosign(last, cp, note, proof)
            if done:
                return size

    async def _cosign(
        self, last: Checkpoint | None, cp: Checkpoint, note: bytes, proof: list[bytes]
    ) -> tuple[bool, int | None]:
        """Check and persist under the origin's lock, then publish. (False, None): ``last`` moved; retry."""
        watcher = self.watcher
        async with watcher.locks[self.origin]:
            if watcher.protection.last(self.origin) != last:
                return False, None  # /add-checkpoint cosigned meanwhile: fetch a proof from the new size
            try:
                decision = check_witness_rule(last if last is None or last.size > 0 else None, cp, proof)
            except PeerProtocolError as exc:
                if exc.reason in ("equivocation", "inconsistent"):
                    await watcher.keep_evidence(self.origin, note, exc.reason)
                raise
            if not decision.cosign:
                return True, None
            line = cosign(cp, watcher.key, watcher.now())
            await trio.to_thread.run_sync(watcher.protection.commit_cosigned, cp, note)
            watcher.stats.cosigned += 1
        cosigned = format_note(add_signatures(parse_note(note), [line]))
        message = CosignatureAnnouncement(
            corridor=self.entry.corridor, origin=self.origin, cosigner=watcher.config.name, note=cosigned
        )
        await self.host.publish(topic(self.entry.corridor, "cosignatures"), encode(message))
        log.info("cosigned %s at %d", self.origin, cp.size, extra={"origin": self.origin, "size": cp.size})
        return True, cp.size


async def _consume(
    channel: trio.MemoryReceiveChannel[GossipMessage], followers: dict[str, LogFollower]
) -> None:
    async with channel:
        async for message in channel:
            try:
                announcement = decode(message.data, max_bytes=MAX_GOSSIP_BYTES)
                if isinstance(announcement, CheckpointAnnouncement) and announcement.origin in followers:
                    followers[announcement.origin].offer(message)
            except PeerProtocolError as exc:
                log.info("gossip from %s dropped: %s: %s", message.origin, exc.reason, exc.message)


def _corridor_validator(followers: list[LogFollower]) -> Callable[[str, bytes], Verdict]:
    """One validator per corridor topic: ACCEPT if a follower accepts; REJECT if one rejects."""

    def validate(peer_id: str, data: bytes) -> Verdict:
        verdicts = [follower.validate(peer_id, data) for follower in followers]
        if Verdict.ACCEPT in verdicts:
            return Verdict.ACCEPT
        if Verdict.REJECT in verdicts:
            return Verdict.REJECT
        return Verdict.IGNORE

    return validate


async def run_watcher(
    config: WatcherConfig, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Start everything in order, report readiness, and run until cancelled."""
    with LogStore(config.data_dir) as store:
        watcher = Watcher(config, store)
        identity = load_or_create_identity(config.identity_key_file)
        peers = sorted({addr for entry in config.logs for addr in entry.peers})
        allow = sorted({pid for entry in config.logs for pid in entry.peer_ids})
        async with open_p2p_host(identity, listen_addr=config.listen, allowlist=allow, peers=peers) as host:
            followers = {entry.origin: LogFollower(watcher, entry, host) for entry in config.logs}

            async def publish_evidence(corridor: str, data: bytes) -> None:
                await host.publish(topic(corridor, "evidence"), data)

            watcher.publish_evidence = publish_evidence
            http = HypercornConfig()
            http.bind = [f"{config.http_host}:{config.http_port}"]
            http.accesslog = None
            http.errorlog = logging.getLogger("hypercorn.error")
            http.graceful_timeout = 2.0
            async with trio.open_nursery() as nursery:
                for corridor in config.corridors:
                    members = [f for f in followers.values() if f.entry.corridor == corridor]
                    host.set_topic_validator(topic(corridor, "checkpoints"), _corridor_validator(members))
                    channel = await host.subscribe(topic(corridor, "checkpoints"))
                    nursery.start_soon(_consume, channel, followers)
                for follower in followers.values():
                    nursery.start_soon(follower.run)
                bound = await nursery.start(serve, build_app(watcher), http)
                ready = {
                    "event": "ready",
                    "name": config.name,
                    "vkey": watcher.vkey.to_vkey(),
                    "peer_id": host.peer_id,
                    "listen": host.listen_addr,
                    "http": bound[0] if bound else f"http://{config.http_host}:{config.http_port}",
                    "logs": sorted(followers),
                }
                log.info(
                    "watcher ready",
                    extra={"watcher": config.name, "peer_id": host.peer_id, "http": ready["http"]},
                )
                task_status.started(ready)


async def run_daemon(config: WatcherConfig) -> int:
    """Run the watcher until SIGINT/SIGTERM; return the exit status."""
    configure_libp2p_logging()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            ready = await nursery.start(run_watcher, config)
            print(json.dumps(ready), flush=True)
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped cleanly")
    return 0


def main_run(config: WatcherConfig) -> int:
    """Entry point of ``sez-watcher run``: operator errors end in one line and exit 1; bugs propagate."""
    return run_foreground("sez-watcher", run_daemon, config)
