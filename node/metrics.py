"""Prometheus metrics of a running node, read from the services' counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .anchoring import anchor_metrics

if TYPE_CHECKING:
    from .corridor import CorridorService
    from .p2p import P2PHost

__all__ = ["NodeCollector", "build_registry"]

_STAT_COUNTERS = (
    "gossip_batches_applied", "gossip_gaps", "sync_rounds", "sync_receipts", "sync_failures",
    "cosigned", "acks_written",
)  # fmt: skip


class NodeCollector(Collector):
    """Exports log sizes, replica lag, gossip and sync counters, peer faults and connections."""

    def __init__(
        self, services: Callable[[], Mapping[str, CorridorService]], host: Callable[[], P2PHost | None]
    ):
        self._services = services
        self._host = host

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "sez_log_size", "receipts in a log held by this node", labels=["corridor", "origin", "role"]
        )
        lag = GaugeMetricFamily(
            "sez_replica_lag", "receipts the writer signed that the replica lacks", labels=["corridor"]
        )
        counters = {
            name: CounterMetricFamily(f"sez_{name}", help_text, labels=["corridor"])
            for name, help_text in (
                ("gossip_batches_applied", "receipt batches applied from gossip"),
                ("gossip_gaps", "gossip batches that started beyond the replica (sync repaired them)"),
                ("sync_rounds", "sync rounds run"),
                ("sync_receipts", "receipts pulled by sync"),
                ("sync_failures", "sync rounds that failed"),
                ("cosigned", "counterparty checkpoints cosigned"),
                ("acks_written", "ack receipts written"),
                ("receipts_written", "receipts written to our log"),
            )
        }
        rejected = CounterMetricFamily(
            "sez_rejected", "inputs refused, by reason", labels=["corridor", "reason"]
        )
        for corridor_id, service in self._services().items():
            replica = service.replica.status()
            size.add_metric([corridor_id, service.origin, "own"], service.store.head(service.origin).size)
            size.add_metric([corridor_id, replica.origin, "replica"], replica.size)
            lag.add_metric([corridor_id], replica.lag)
            stats = service.stats
            for name in _STAT_COUNTERS:
                counters[name].add_metric([corridor_id], getattr(stats, name))
            counters["receipts_written"].add_metric([corridor_id], service.writer.statistics().receipts)
            for reason, count in stats.rejected.items():
                rejected.add_metric([corridor_id, reason], count)
        yield size
        yield lag
        yield from counters.values()
        yield rejected
        yield from anchor_metrics(self._services())
        host = self._host()
        if host is not None:
            p2p = host.statistics()
            yield GaugeMetricFamily(
                "sez_peers_connected", "connected libp2p peers", value=p2p.connected_peers
            )
            yield CounterMetricFamily(
                "sez_connections_refused", "connections refused by the peer allowlist",
                value=p2p.refused_inbound + p2p.refused_outbound,
            )  # fmt: skip
            faults = CounterMetricFamily("sez_peer_faults", "protocol faults by peer", labels=["peer"])
            for peer, count in p2p.peer_faults.items():
                faults.add_metric([peer], count)
            yield faults


def build_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry holding only the node's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
