"""Anchoring benchmark (issue 7): receipt ingest and finality with L1 anchoring on vs off, in one run.

Each round starts a fresh PAK-KSA pair of real ``sez-node run`` processes on loopback (bilateral
finality: no watchers, ``checkpoint_every = 1``) and a real anvil node (a block a second, besides one
per transaction), once with anchoring **off** and once **on** (both nodes anchor every quorum-final
checkpoint: ``every_checkpoints = 1``, ``every_seconds = 1``, 2 confirmations, a round every 0.5 s: far
more anchoring work than a real corridor would do). anvil runs in the "off" rounds too, so that the
ratio is what anchoring costs the nodes, not what an EVM node on the same 2 cores costs. Rounds
alternate off, on, off, on... so that drift of the machine's load hits both sides alike.

In each round:

1. **ingest**: ``--receipts`` transfers are posted to PAK in batches of ``--batch`` through the HTTP
   batch API (each answered 201 once durable); rate = receipts / wall time of the posting;
2. **finality**: then ``--samples`` times, one transfer is posted and PAK's finality endpoint is polled
   every 10 ms until ``quorum_final`` (latency from the 201 to the first final answer, so +-10 ms);
3. the CPU time of the two node processes and their children (``/proc``) over the ingest, per
   receipt: much less sensitive than wall-clock rates to other load on a shared machine;
4. with anchoring on, the anchors confirmed during the round are counted (to show it was working).

Printed: per round the figures, then the means of off and on and the ratios on/off (ingest rate:
1.0 means no cost; finality latency: 1.0 means no delay). Reported, never asserted.

    python -m tests.bench anchoring [--receipts 3000] [--batch 100] [--samples 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.anvil import CHAIN_ID, DEV_KEY, DEV_KEY_2, Anvil, anvil_binary
from tests.integration.netharness import Network, make_network, transfer, wait_until

__all__ = ["main", "run"]

C = "PAK-KSA"
POLL_SECONDS = 0.01
TIMEOUT = 120.0


def _cpu_seconds(root_pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``root_pids`` and all their descendants (Linux /proc).

    The nodes' verification workers are live child processes, which the parent's own counters omit.
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    wanted = set(root_pids)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return sum(stats[pid][1] for pid in wanted if pid in stats)


_TICKS = os.sysconf("SC_CLK_TCK")


def _round(base: Path, *, anchoring: bool, receipts: int, batch: int, samples: int) -> dict[str, Any]:
    # anvil runs in both kinds of round (idle but mining a block a second when anchoring is off), so the
    # ratio measures what anchoring costs the nodes, not what a local EVM node costs the machine.
    chain: Anvil | None = Anvil(base, block_time=1).start()
    assert chain is not None
    anchor = None
    if anchoring:
        common = {"chain_id": CHAIN_ID, "rpc_url": chain.url, "every_checkpoints": 1, "every_seconds": 1,
                  "confirmations": 2, "poll_seconds": 0.5}  # fmt: skip
        anchor = {"PAK": {**common, "key": DEV_KEY}, "KSA": {**common, "key": DEV_KEY_2}}
    network: Network | None = None
    try:
        network = make_network(base / "net", ["PAK", "KSA"], corridors=[C], checkpoint_every=1, anchor=anchor)
        network.start("PAK", "KSA")
        pak = network["PAK"]
        origin = network.specs["PAK"].origin(C)
        # Warm-up: one receipt final (connections up, first checkpoint cosigned).
        assert pak.submit(C, transfer("warm-up")).status_code == 201
        wait_until(lambda: pak.status(C)["finality"][origin]["quorum_final_size"] >= 1, TIMEOUT, "warm-up")
        pids = [network[name].pid for name in ("PAK", "KSA")]
        cpu_start = _cpu_seconds(pids)
        started = time.perf_counter()
        for offset in range(0, receipts, batch):
            items = [{"kind": "transfer", "payload": transfer(f"t-{offset + i}")}
                     for i in range(min(batch, receipts - offset))]  # fmt: skip
            response = pak.http.post(f"/v1/corridors/{C}/transitions", json={"transitions": items})
            assert response.status_code == 201, response.text
        ingest_seconds = time.perf_counter() - started
        cpu_ingest = _cpu_seconds(pids) - cpu_start
        latencies = []
        for index in range(samples):
            response = pak.submit(C, transfer(f"sample-{index}"))
            t0 = time.perf_counter()
            assert response.status_code == 201, response.text
            sequence = response.json()["sequence"]
            url = f"/v1/logs/{origin}/receipts/{sequence}/finality"
            deadline = t0 + TIMEOUT
            while not pak.http.get(url).json()["quorum_final"]:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"receipt {sequence} not final after {TIMEOUT} s")
                time.sleep(POLL_SECONDS)
            latencies.append(time.perf_counter() - t0)
        cpu_round = _cpu_seconds(pids) - cpu_start
        wall_round = time.perf_counter() - started
        anchoring_status = pak.status(C)["anchoring"]
        return {
            "anchoring": anchoring,
            "ingest_rate": receipts / ingest_seconds,
            "cpu_ms_per_receipt": 1000 * cpu_ingest / receipts,
            "cpu_share": cpu_round / wall_round,
            "finality_median": statistics.median(latencies),
            "finality_max": max(latencies),
            "anchors_confirmed": (anchoring_status.get("stats") or {}).get("confirmed", 0),
            "anchored_size": anchoring_status["anchored_size"][origin],
        }
    finally:
        if network is not None:
            network.close()
        if chain is not None:
            chain.stop()


def run(
    *, receipts: int, batch: int, samples: int, rounds: int, base: Path, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run ``rounds`` pairs of rounds (off, on) and return the summary (also printed through ``out``)."""
    results: list[dict[str, Any]] = []
    for index in range(rounds):
        for anchoring in (False, True):
            result = _round(base / f"r{index}-{'on' if anchoring else 'off'}", anchoring=anchoring,
                            receipts=receipts, batch=batch, samples=samples)  # fmt: skip
            results.append(result)
            side = "on " if anchoring else "off"
            out(
                f"round {index} anchoring {side}: ingest {result['ingest_rate']:8.0f}/s"
                f"  finality median {result['finality_median'] * 1000:6.0f} ms"
                f"  max {result['finality_max'] * 1000:6.0f} ms"
                f"  node CPU {result['cpu_ms_per_receipt']:.2f} ms/receipt"
                f"  anchors confirmed {result['anchors_confirmed']}"
            )

    def mean(anchoring: bool, key: str) -> float:
        return statistics.fmean(r[key] for r in results if r["anchoring"] is anchoring)

    summary = {
        "receipts": receipts,
        "rounds": rounds,
        "ingest_rate_off": mean(False, "ingest_rate"),
        "ingest_rate_on": mean(True, "ingest_rate"),
        "finality_median_off": mean(False, "finality_median"),
        "finality_median_on": mean(True, "finality_median"),
        "cpu_ms_per_receipt_off": mean(False, "cpu_ms_per_receipt"),
        "cpu_ms_per_receipt_on": mean(True, "cpu_ms_per_receipt"),
        "anchors_confirmed_on": sum(r["anchors_confirmed"] for r in results if r["anchoring"]),
        "rounds_detail": results,
    }
    summary["ingest_ratio_on_off"] = summary["ingest_rate_on"] / summary["ingest_rate_off"]
    summary["finality_ratio_on_off"] = summary["finality_median_on"] / summary["finality_median_off"]
    summary["cpu_ratio_on_off"] = summary["cpu_ms_per_receipt_on"] / summary["cpu_ms_per_receipt_off"]
    out(
        f"ingest: off {summary['ingest_rate_off']:.0f}/s, on {summary['ingest_rate_on']:.0f}/s, "
        f"ratio on/off {summary['ingest_ratio_on_off']:.3f}"
    )
    out(
        f"finality median: off {summary['finality_median_off'] * 1000:.0f} ms, on "
        f"{summary['finality_median_on'] * 1000:.0f} ms, ratio on/off {summary['finality_ratio_on_off']:.3f}"
    )
    out(
        "nodes' CPU per receipt ingested (PAK + KSA with workers): "
        f"off {summary['cpu_ms_per_receipt_off']:.3f} ms, on {summary['cpu_ms_per_receipt_on']:.3f} ms, "
        f"ratio on/off {summary['cpu_ratio_on_off']:.3f}"
    )
    out(f"anchors confirmed with anchoring on: {summary['anchors_confirmed_on']}")
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench anchoring", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--receipts", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="keep the nodes' folders here")
    parser.add_argument("--summary", type=Path, default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    if anvil_binary() is None:
        print("anvil is not installed: run `./run anvil-setup`")
        return 2
    with tempfile.TemporaryDirectory(prefix="sez-bench-anchoring-") as tmp:
        base = args.dir or Path(tmp)
        summary = run(
            receipts=args.receipts, batch=args.batch, samples=args.samples, rounds=args.rounds, base=base
        )
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0
