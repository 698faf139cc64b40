"""What every fault scenario shares: a PAK-KSA network, background load, and the after-fault checks.

* :class:`Tally` holds one scenario's figures (faults injected, bad inputs tried, acknowledged and
  lost receipts, times to converge); the report prints them.
* :class:`AckLoad` submits transfers to one node from a background thread, records every receipt
  the node answered 201 for (acknowledged, durable by contract), and rides through the node being
  down (a transport error means "outcome unknown": the thread waits for the node and goes on).
* :func:`lost_receipts` reads every acknowledged receipt back over HTTP: a receipt is lost when the
  node no longer serves the same bytes at its sequence.
* :func:`wait_converged` waits until each node holds the other's whole log, both logs are
  cosigned by the counterparty up to their size and quorum-final at that size (finality resumed),
  and returns how long that took.
* :func:`fsck_all` stops nothing; it runs fsck on stopped nodes' stores (read-only).

The network reuses ``tests.integration.netharness`` (real ``sez-node run`` processes, real libp2p,
LMDB and HTTP); :func:`isolate_in_namespaces` runs each node in its own network namespace, joined
only by :class:`~tests.faults.proxy.LinkProxy` objects (the partition switches).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.proxy import LinkProxy, NetNamespace
from tests.integration.netharness import (
    Network,
    NodeProcess,
    fsck_data_dir,
    read_log_store,
    transfer,
    wait_until,
)

__all__ = [
    "CORRIDOR",
    "AckLoad",
    "Isolation",
    "Tally",
    "converged_state",
    "count_lost",
    "fsck_all",
    "isolate_in_namespaces",
    "lost_receipts",
    "stop_and_check",
    "wait_connected",
    "wait_converged",
]

CORRIDOR = "PAK-KSA"
CONVERGE_TIMEOUT = 90.0
"""Seconds the network may take to converge after a fault is lifted (redial backoff, catch-up,
cosigning, and a 2-core machine shared with other work)."""
CONNECT_TIMEOUT = 60.0
RETRY_PAUSE = 0.2
"""Seconds a load thread waits before retrying a node that did not answer."""


@dataclass
class Tally:
    """One scenario's figures."""

    scenario: str
    faults: int = 0
    """Faults injected (crashes, partitions, skewed starts, disk-full episodes, attacks)."""
    bad_inputs: int = 0
    """Crafted bad inputs sent (byzantine scenario)."""
    bad_inputs_rejected: int = 0
    acknowledged: int = 0
    """Receipts answered 201 during the scenario (each one checked after the faults)."""
    lost: int = 0
    """Acknowledged receipts not served with the same bytes at their sequence afterwards."""
    converge_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Checks that failed (empty: the scenario passed)."""

    @property
    def ok(self) -> bool:
        return not self.failures and self.lost == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "faults": self.faults,
            "bad_inputs": self.bad_inputs,
            "bad_inputs_rejected": self.bad_inputs_rejected,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "converge_seconds": [round(s, 3) for s in self.converge_seconds],
            "notes": self.notes,
            "failures": self.failures,
            "ok": self.ok,
        }


class AckLoad:
    """Transfers submitted to ``node`` by one background thread until :meth:`stop`.

    ``acked`` maps transfer id -> (sequence, receipt bytes) for each 201. A transport error or a
    5xx/503 leaves the outcome unknown (``unknown``); the thread pauses and retries with a new id.
    ``refused`` counts 4xx answers other than the expected ones (a bug unless a scenario expects them).
    """

    def __init__(self, node: NodeProcess, prefix: str, *, pause: float = 0.0) -> None:
        self.node = node
        self.prefix = prefix
        self.pause = pause
        self.acked: dict[str, tuple[int, bytes]] = {}
        self.unknown: set[str] = set()
        self.refused: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"load-{prefix}")

    def start(self) -> AckLoad:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"load thread {self.prefix} did not stop in {timeout:g} s"

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, n: int, timeout: float) -> None:
        """Block until at least ``n`` submissions are acknowledged (bounded)."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.prefix}: {self.count()} acknowledged, wanted {n} in {timeout:g} s"
                )
            time.sleep(0.02)

    def _run(self) -> None:
        sender, receiver = ("PAK", "KSA") if self.node.spec.jurisdiction == "PAK" else ("KSA", "PAK")
        client: httpx.Client | None = None
        try:
            while not self._stop.is_set():
                tid = f"{self.prefix}-{self._counter}"
                self._counter += 1
                if client is None:
                    client = self.node.client()
                    client.timeout = httpx.Timeout(10.0)
                try:
                    response = self.node.submit(
                        CORRIDOR, transfer(tid, sender, receiver, self._counter), client=client
                    )
                except httpx.HTTPError:
                    self.unknown.add(tid)
                    client.close()
                    client = None
                    self._stop.wait(RETRY_PAUSE)
                    continue
                if response.status_code == 201:
                    with self._lock:
                        self.acked[tid] = (json.loads(response.content)["sequence"], response.content)
                else:
                    self.unknown.add(tid)
                    with self._lock:
                        self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
                    self._stop.wait(RETRY_PAUSE)
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            if client is not None:
                client.close()


def lost_receipts(node: NodeProcess, acked: dict[str, tuple[int, bytes]]) -> list[str]:
    """Transfer ids whose acknowledged receipt ``node`` no longer serves byte for byte at its sequence."""
    origin = node.spec.origin(CORRIDOR)
    lost = []
    with node.client() as client:
        for tid, (sequence, raw) in sorted(acked.items(), key=lambda item: item[1][0]):
            response = client.get(f"/v1/logs/{origin}/receipts/{sequence}")
            if response.status_code != 200 or response.content != raw:
                lost.append(tid)
    return lost


def wait_connected(network: Network, timeout: float = CONNECT_TIMEOUT) -> None:
    pak, ksa = network["PAK"], network["KSA"]
    # "in", not "==": a watcher or an attacker may be among the corridor's connected peers too.
    wait_until(
        lambda: ksa.spec.peer_id in pak.status(CORRIDOR)["peers"]["connected"]
        and pak.spec.peer_id in ksa.status(CORRIDOR)["peers"]["connected"],
        timeout, "PAK and KSA to connect", network=network,
    )  # fmt: skip


def converged_state(network: Network) -> tuple[int, int] | None:
    """(PAK size, KSA size) when each node holds the other's whole log, both logs are cosigned by the
    counterparty up to their size, each is quorum-final at that size on both nodes, and nothing is
    queued; else None."""
    p, k = network["PAK"].status(CORRIDOR), network["KSA"].status(CORRIDOR)
    p_origin, k_origin = p["log"]["origin"], k["log"]["origin"]
    p_size, k_size = p["log"]["size"], k["log"]["size"]
    ok = (
        p_size == k["counterparty"]["size"] == k["counterparty"]["known_size"]
        and k_size == p["counterparty"]["size"] == p["counterparty"]["known_size"]
        and p["counterparty_cosigned_size"] == p_size > 0
        and k["counterparty_cosigned_size"] == k_size > 0
        and p["writer"]["queued"] == k["writer"]["queued"] == 0
    )
    if not ok:
        return None
    for status in (p, k):
        finality = status["finality"]
        if (
            finality[p_origin]["quorum_final_size"] != p_size
            or finality[k_origin]["quorum_final_size"] != k_size
        ):
            return None
    return (p_size, k_size)


def wait_converged(network: Network, timeout: float = CONVERGE_TIMEOUT) -> float:
    """Seconds until :func:`converged_state` holds (bounded; raises AssertionError with the tails)."""
    start = time.monotonic()
    memo: dict[str, Any] = {}

    def check() -> tuple[int, int] | None:
        memo["PAK"] = network["PAK"].status(CORRIDOR)
        memo["KSA"] = network["KSA"].status(CORRIDOR)
        return converged_state(network)

    def describe() -> str:
        brief = {
            name: {
                key: status.get(key)
                for key in ("log", "counterparty", "counterparty_cosigned_size", "finality")
            }
            for name, status in memo.items()
        }
        return f"replicas complete, cosigned and quorum-final; last statuses {json.dumps(brief)}"

    wait_until(check, timeout, describe, network=network, interval=0.05)
    return time.monotonic() - start


@dataclass
class Isolation:
    """Each node in its own network namespace; the only paths are :class:`LinkProxy` objects."""

    namespaces: dict[str, NetNamespace]
    links: list[LinkProxy]
    """Between nodes: the partition switches (cut, delay, drop)."""
    http: list[LinkProxy]
    """From this process to each node's HTTP API (never cut)."""

    def close(self) -> None:
        """After the processes stopped: end the proxies and delete the namespaces."""
        for proxy in [*self.links, *self.http]:
            proxy.close()
        for namespace in self.namespaces.values():
            namespace.close()


def isolate_in_namespaces(network: Network, seed: int = 0) -> Isolation:
    """Before the nodes start: put each node in a namespace of its own (root only, see
    :mod:`tests.faults.proxy`) and connect them through proxies.

    In node X's namespace, ``127.0.0.1:<Y's p2p port>`` is a proxy to Y's real listener, so the
    configured address and the address libp2p learns from Y both go through it. In this process's
    namespace, ``127.0.0.1:<X's HTTP port>`` is a proxy to X's API, so the harness works unchanged.
    """
    tag = f"sez{os.getpid() % 100000}"
    isolation = Isolation({}, [], [])
    try:
        for name, spec in network.specs.items():
            namespace = NetNamespace(f"{tag}{name.lower()}")
            isolation.namespaces[name] = namespace
            spec.launcher = namespace.exec_prefix
            isolation.http.append(LinkProxy(spec.http_port, port=spec.http_port, target_ns=namespace))
        for index, name in enumerate(network.specs):
            for other, other_spec in network.specs.items():
                if other != name:
                    isolation.links.append(
                        LinkProxy(
                            other_spec.p2p_port,
                            port=other_spec.p2p_port,
                            listen_ns=isolation.namespaces[name],
                            target_ns=isolation.namespaces[other],
                            seed=seed + index,
                        )
                    )
    except BaseException:
        isolation.close()
        raise
    return isolation


def fsck_all(network: Network) -> None:
    """fsck every (stopped) node's store (both logs present and clean); both hold identical copies."""
    origins = [spec.origin(CORRIDOR) for spec in network.specs.values()]
    copies: dict[str, dict[str, list[bytes]]] = {}
    for name, spec in network.specs.items():
        fsck_data_dir(spec.data_dir, origins)
        copies[name] = {origin: read_log_store(spec.data_dir, origin) for origin in origins}
    first, *others = copies.values()
    for other in others:
        for origin in origins:
            assert other[origin] == first[origin], f"the stored copies of {origin} differ"


def count_lost(tally: Tally, network: Network, acked: dict[str, dict[str, tuple[int, bytes]]]) -> None:
    """Add each node's acknowledged receipts to ``tally`` and read every one back (``lost``)."""
    for name, receipts in acked.items():
        tally.acknowledged += len(receipts)
        missing = lost_receipts(network[name], receipts)
        tally.lost += len(missing)
        if missing:
            tally.failures.append(f"{name} lost acknowledged receipts {missing[:10]}")


def stop_and_check(tally: Tally, network: Network) -> None:
    """Stop every node with SIGTERM (each must exit 0), then fsck the stores (:func:`fsck_all`)."""
    statuses = {name: node.stop() for name, node in network.nodes.items()}
    if any(code != 0 for code in statuses.values()):
        tally.failures.append(f"exit statuses on SIGTERM {statuses}")
    fsck_all(network)
