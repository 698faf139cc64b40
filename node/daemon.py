"""``sez-node run``: the daemon's root nursery (design §13-§15; style rule 13).

Start-up, in order, each step ready before the next:

1. open the store and check our own logs against our latest signed checkpoints
   (a node refuses to start if its store disagrees with what it signed, design §6);
2. the libp2p host (Noise, yamux, allowlist of the configured peers, re-dialling);
3. the ``/sez/sync/1`` server;
4. one :class:`~node.corridor.CorridorService` per corridor (writer, replica, gossip,
   sync, witness);
5. the HTTP API.

Then it prints one JSON line ``{"event": "ready", ...}`` on stdout (peer id,
listen address, HTTP address) for supervisors and tests to wait on.

Shutdown: SIGINT or SIGTERM cancels the root nursery. A batch that is being
committed completes (the writer's commit is shielded), queued submissions are
answered ``shutting-down``, the host closes its connections, and the process
exits 0. Any other exception is a bug: it is logged and the daemon exits non-zero.
"""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from protocol.anchor import AnchorRecord
from protocol.checkpoints import open_checkpoint
from protocol.errors import LocalProtocolError, SezError
from protocol.sync import PROTOCOL_ID
from store import LogStore, StoreError

from .anchoring import finality_fields
from .api import ApiContext, build_app
from .config import NodeConfig
from .corridor import CorridorService, serve_sync_frames
from .evidence_pool import EvidencePool
from .ingest import Ingestor
from .metrics import NodeCollector, build_registry
from .p2p import P2PHost, configure_libp2p_logging, load_or_create_identity, open_host
from .policy_export import corridor_policy
from .recovery import orphans_listing
from .runtime import run_foreground
from .settlement import SETTLE_PROTOCOL_ID, SettlementService, for_corridor, serve_settle_frames

__all__ = ["Daemon", "check_own_logs", "run_daemon"]

log = logging.getLogger(__name__)


def check_own_logs(store: LogStore, config: NodeConfig) -> None:
    """Refuse to start when a log we write disagrees with the latest checkpoint we signed.

    O(log n): the latest checkpoint must verify under our key and its root must equal
    the stored tree's root at its size; the stored head must be at least that size.
    (``sez-node fsck`` recomputes everything from the leaves.)

    Raises:
        LocalProtocolError(store-disagrees): with the origin and what disagrees.
    """
    for corridor in config.corridors:
        try:
            info = store.origin(corridor.origin)
        except StoreError as exc:
            if exc.reason == "unknown-origin":
                continue  # a new log
            raise
        key = config.signing_key(corridor.origin).verifier()
        if info.key != key:
            raise LocalProtocolError(
                "store-disagrees", f"{corridor.origin} is stored under another key than node.signing_key"
            )
        try:
            note = store.checkpoint(corridor.origin)
        except StoreError as exc:
            if exc.reason == "not-found":
                continue
            raise
        try:
            cp, _ = open_checkpoint(note, key)
        except SezError as exc:
            raise LocalProtocolError(
                "store-disagrees", f"{corridor.origin}: latest checkpoint: {exc.message}"
            ) from exc
        head = store.head(corridor.origin)
        if head.size < cp.size or store.root_at(corridor.origin, cp.size) != cp.root:
            raise LocalProtocolError(
                "store-disagrees",
                f"{corridor.origin}: the stored log does not match the checkpoint signed at size {cp.size}; "
                "run `sez-node fsck` and restore the data directory",
            )


class Daemon:
    """The running node: what the API's status and /metrics read."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.services: dict[str, CorridorService] = {}
        self.host: P2PHost | None = None
        self.settlements: dict[str, SettlementService] = {}

    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        """Status of one corridor (API)."""
        return self._service(corridor_id).status()

    def corridor_lifecycle(self, corridor_id: str) -> dict[str, Any]:
        """Lifecycle state and history of one corridor (API)."""
        return self._service(corridor_id).lifecycle.status()

    def _service(self, corridor_id: str) -> CorridorService:
        service = self.services.get(corridor_id)
        if service is None:
            raise LocalProtocolError(
                "unknown-corridor", f"this node is not a party to corridor {corridor_id!r}"
            )
        return service

    def receipt_finality(self, origin: str, sequence: int) -> dict[str, Any]:
        """Finality of one receipt of either log of one of our corridors (API)."""
        for service in self.services.values():
            if origin in (service.origin, service.counterparty_origin):
                return {
                    **service.quorum.finality(origin, sequence),
                    **finality_fields(service.anchors, origin, sequence),
                }
        raise LocalProtocolError("unknown-origin", f"no corridor of this node has the log {origin!r}")

    def corridor_anchors(self, corridor_id: str) -> dict[str, Any]:
        """The anchor records and anchoring status of one corridor (API)."""
        return self._service(corridor_id).anchors.listing()

    def covering_anchor(self, origin: str, sequence: int) -> AnchorRecord | None:
        """The smallest confirmed anchor covering receipt ``sequence`` of ``origin`` (API proofs)."""
        for service in self.services.values():
            if origin in (service.origin, service.counterparty_origin):
                return service.anchors.covering(origin, sequence)
        raise LocalProtocolError("unknown-origin", f"no corridor of this node has the log {origin!r}")

    def corridor_orphans(self, corridor_id: str) -> dict[str, Any]:
        """Our log's receipts set aside by recoveries, with their records (API; never deleted)."""
        service = self._service(corridor_id)
        return orphans_listing(service.store, service.origin, corridor_id)

    def corridor_watchers(self, corridor_id: str) -> dict[str, Any]:
        """The stake ledger of one corridor (API)."""
        return self._service(corridor_id).quorum.watchers()

    def corridor_policy(self, corridor_id: str) -> dict[str, Any]:
        """The trust policy of one corridor, JSON-ready (API; ``schemas/policy.json``)."""
        return corridor_policy(self._service(corridor_id)).to_json_value()

    def allowed_origins(self, peer_id: str) -> frozenset[str]:
        """The logs a peer may read over sync: those of the corridors it is configured for."""
        return frozenset(
            origin
            for corridor in self.config.corridors
            if peer_id in corridor.peer_ids
            for origin in (corridor.origin, corridor.counterparty_origin)
        )

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED) -> None:
        """Start everything in order, report readiness, and run until cancelled."""
        config = self.config
        with LogStore(config.data_dir) as store, Ingestor(store) as ingestor:
            check_own_logs(store, config)
            token = config.api_token()
            identity = load_or_create_identity(config.identity_key_file)
            peers = sorted({addr for corridor in config.corridors for addr in corridor.peers})
            allow = sorted({pid for corridor in config.corridors for pid in corridor.peer_ids})
            async with open_host(identity, listen_addr=config.listen, allowlist=allow, peers=peers) as host:
                self.host = host
                host.set_stream_handler(PROTOCOL_ID, serve_sync_frames(store, self.allowed_origins))
                for corridor in config.corridors:
                    self.services[corridor.id] = CorridorService(
                        store=store, config=corridor, key=config.signing_key(corridor.origin),
                        host=host, ingestor=ingestor, own_log_check_timeout=config.own_log_check_timeout,
                    )  # fmt: skip
                self.settlements = {cid: for_corridor(svc) for cid, svc in self.services.items()}
                host.set_stream_handler(SETTLE_PROTOCOL_ID, serve_settle_frames(lambda: self.settlements))
                evidence = EvidencePool(
                    store,
                    {cid: svc.log_keys for cid, svc in self.services.items()},
                    policies={cid: svc.quorum.slash_policy for cid, svc in self.services.items()},
                )
                for service in self.services.values():
                    service.evidence = evidence
                registry = build_registry(NodeCollector(lambda: self.services, lambda: self.host))
                app = build_app(
                    ApiContext(
                        store=store,
                        writers={cid: svc.writer for cid, svc in self.services.items()},
                        token=token,
                        status=self,
                        finality=self,
                        policy=self,
                        anchors=self,
                        registry=registry,
                        settlements=self.settlements,
                        evidence=evidence,
                    )
                )
                http = HypercornConfig()
                http.bind = [f"{config.http_host}:{config.http_port}"]
                http.accesslog = None
                http.errorlog = logging.getLogger("hypercorn.error")
                http.graceful_timeout = 2.0
                async with trio.open_nursery() as nursery:
                    for service in self.services.values():
                        await nursery.start(service.run)
                    bound = await nursery.start(serve, app, http)
                    ready = {
                        "event": "ready",
                        "jurisdiction": config.jurisdiction,
                        "peer_id": host.peer_id,
                        "listen": host.listen_addr,
                        "http": bound[0] if bound else f"http://{config.http_host}:{config.http_port}",
                        "corridors": sorted(self.services),
                    }
                    log.info("node ready", extra={k: str(v) for k, v in ready.items() if k != "event"})
                    task_status.started(ready)


async def run_daemon(config: NodeConfig) -> int:
    """Run the daemon until SIGINT/SIGTERM; return the exit status."""
    configure_libp2p_logging()
    daemon = Daemon(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            ready = await nursery.start(daemon.run)
            print(json.dumps(ready), flush=True)
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped cleanly")
    return 0


def main_run(config: NodeConfig) -> int:
    """Entry point of ``sez-node run`` after the configuration loaded.

    Operator-facing failures (a store that disagrees with our checkpoints, a port in
    use, an unreadable key) end in one line on stderr and exit status 1; anything
    else is a bug and propagates with its traceback.
    """
    return run_foreground("sez-node", run_daemon, config)
