"""Replication benchmark (issue 3): HTTP submit on one node to the durable replica on the other.

Starts real ``sez-node run`` processes on loopback (2 nodes: PAK and KSA on PAK-KSA; 4 nodes: PAK, KSA,
UAE and CHN on PAK-KSA, PAK-UAE and PAK-CHN), drives transfers into each corridor from the non-PAK party
at a paced rate through ``POST /v1/corridors/{id}/transitions`` (batches of ``--batch`` transitions per
request), and measures, per receipt:

* the acknowledgement time (the HTTP 201: the receipt is durable on the writer), and
* the first time PAK's replica of that log holds it (PAK's status API, polled every 10 ms).

Propagation latency = replica time - acknowledgement time; replica lag is what is acknowledged and
not yet replicated. It prints the sustained submit and replication rates and the latency
percentiles per corridor, then a JSON summary line. Timing figures are reported, never asserted.

    python -m tests.bench replication --nodes 2 --rate 1000 --duration 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.integration.netharness import Network, make_network, transfer, wait_until

__all__ = ["main", "run"]

POLL_SECONDS = 0.01
COUNTRY = {"PAK": "PAK", "KSA": "SAU", "UAE": "ARE", "CHN": "CHN"}


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Submitter(threading.Thread):
    """Posts batches to one node's corridor at a paced rate; records the ack time of every sequence."""

    def __init__(self, base_url: str, token: str, corridor: str, writer: str, rate: float, batch: int,
                 duration: float) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.base_url, self.token, self.corridor, self.writer = base_url, token, corridor, writer
        self.rate, self.batch, self.duration = rate, batch, duration
        self.acks: dict[int, float] = {}
        self.errors = 0
        self.behind = 0.0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        interval = self.batch / self.rate
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30, trust_env=False) as client:
            start = time.monotonic()
            n = 0
            while (now := time.monotonic()) - start < self.duration:
                due = start + n * interval
                if due > now:
                    time.sleep(due - now)
                else:
                    self.behind = max(self.behind, now - due)
                body = {"transitions": [
                    {"kind": "transfer", "payload": transfer(f"{self.writer}-{n}-{i}", COUNTRY[self.writer],
                                                             "PAK", amount=n * self.batch + i)}
                    for i in range(self.batch)
                ]}  # fmt: skip
                response = client.post(f"/v1/corridors/{self.corridor}/transitions", json=body)
                acked = time.monotonic()
                if response.status_code != 201:
                    self.errors += 1
                else:
                    for receipt in response.json()["receipts"]:
                        self.acks[receipt["sequence"]] = acked
                n += 1


class _ReplicaWatcher(threading.Thread):
    """Polls the hub's status and records when each corridor's replica first reached each size."""

    def __init__(self, base_url: str, corridors: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.corridors = list(corridors)
        self.seen: dict[str, list[tuple[float, int]]] = {c: [] for c in corridors}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5, trust_env=False) as client:
            while not self.stop.is_set():
                for corridor in self.corridors:
                    try:
                        size = client.get(f"/v1/corridors/{corridor}/status").json()["counterparty"]["size"]
                    except (httpx.HTTPError, KeyError, ValueError):
                        continue
                    history = self.seen[corridor]
                    if not history or size > history[-1][1]:
                        history.append((time.monotonic(), size))
                time.sleep(POLL_SECONDS)

    def replicated_at(self, corridor: str, sequence: int) -> float | None:
        for moment, size in self.seen[corridor]:
            if size > sequence:
                return moment
        return None


def run(nodes: int, rate: float, duration: float, batch: int, base: Path) -> dict[str, Any]:
    """Run one configuration and return its figures."""
    parties = ["PAK", "KSA"] if nodes == 2 else ["PAK", "KSA", "UAE", "CHN"]
    corridors = [f"PAK-{other}" for other in parties[1:]]
    network: Network = make_network(base, parties, corridors=corridors)
    try:
        network.start()
        hub = network["PAK"]
        for corridor in corridors:
            wait_until(
                lambda c=corridor: hub.status(c)["peers"]["connected"], 30, f"PAK connected in {corridor}"
            )
        watcher = _ReplicaWatcher(hub.spec.base_url, corridors)
        submitters = [
            _Submitter(network[c.split("-")[1]].spec.base_url, network[c.split("-")[1]].spec.token, c,
                       c.split("-")[1], rate, batch, duration)
            for c in corridors
        ]  # fmt: skip
        watcher.start()
        began = time.monotonic()
        for submitter in submitters:
            submitter.start()
        for submitter in submitters:
            submitter.join()
        submitted_for = time.monotonic() - began
        for corridor, submitter in zip(corridors, submitters, strict=True):
            total = len(submitter.acks)
            wait_until(lambda c=corridor, t=total: hub.status(c)["counterparty"]["size"] >= t, 60,
                       f"replica of {corridor} reaches {total}")  # fmt: skip
        drained_for = time.monotonic() - began
        time.sleep(POLL_SECONDS * 3)
        watcher.stop.set()
        watcher.join()
        figures: dict[str, Any] = {"nodes": nodes, "rate_per_corridor": rate, "batch": batch, "corridors": {}}
        for corridor, submitter in zip(corridors, submitters, strict=True):
            latencies = []
            for sequence, acked in submitter.acks.items():
                replicated = watcher.replicated_at(corridor, sequence)
                if replicated is not None:
                    latencies.append(max(0.0, replicated - acked))
            figures["corridors"][corridor] = {
                "acknowledged": len(submitter.acks),
                "errors": submitter.errors,
                "submit_rate": round(len(submitter.acks) / submitted_for, 1),
                "replicated_rate": round(len(submitter.acks) / drained_for, 1),
                "p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
                "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
                "max_ms": round(1000 * max(latencies, default=float("nan")), 1),
                "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
                "submitter_max_behind_ms": round(1000 * submitter.behind, 1),
            }
        for name in parties:
            assert network[name].stop() == 0, f"{name} did not stop cleanly"
        return figures
    finally:
        network.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tests.bench replication [--nodes 2 4] [--rate R] [--duration S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench replication", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4], choices=[2, 4])
    parser.add_argument("--rate", type=float, default=1000.0, help="receipts/s submitted per corridor")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of submission")
    parser.add_argument("--batch", type=int, default=50, help="transitions per HTTP request (max 512)")
    parser.add_argument("--dir", type=Path, help="keep the nodes' folders here (default: a temporary one)")
    args = parser.parse_args(argv)
    results = []
    for nodes in args.nodes:
        base = (
            args.dir / f"{nodes}-nodes" if args.dir else Path(tempfile.mkdtemp(prefix=f"sez-bench-{nodes}-"))
        )
        figures = run(nodes, args.rate, args.duration, args.batch, base)
        results.append(figures)
        print(f"\n{nodes} nodes, {args.rate:.0f} receipts/s per corridor, {args.batch} per request:")
        for corridor, row in figures["corridors"].items():
            print(
                f"  {corridor}: acknowledged {row['acknowledged']} ({row['errors']} errors), "
                f"submit {row['submit_rate']}/s, replicated {row['replicated_rate']}/s, "
                f"propagation p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, max {row['max_ms']} ms"
            )
    print(json.dumps({"benchmark": "replication", "results": results}))
    return 0
