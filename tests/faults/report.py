"""The fault-injection report: run every scenario, print the figures, exit 1 if any check failed.

    python -m tests.faults report [--crashes N] [--partitions M] [--seed S] [--json FILE]
                                  [--flood F] [--forks K] [--losses L] [--only NAME ...] [--dir D]

Scenarios (one module each in ``tests/faults``): ``crash`` (N SIGKILLs of nodes and a watcher under
load), ``partition`` (M cuts or lossy links, healed; needs root for network namespaces),
``clock-skew`` (a node 600 s ahead, then one 120 s behind), ``disk-full`` (a tiny tmpfs fills and
grows back; needs root), ``byzantine`` (an allowed peer's bad inputs and a flood), ``anchor-outage``
(the L1 RPC node hangs, then restarts, under load; needs anvil), ``fork`` (a node restored from an old
backup forks its log; halted, resolved by quorum, recovered), ``disk-loss`` (a node's data directory
deleted; it recovers its own log from its counterparty). A scenario that
cannot run here is reported as skipped, with the reason. Printed per scenario and in total: faults
injected, bad inputs tried (and counted as rejected by the node), acknowledged receipts, receipts
lost (must be 0), time to converge after a fault (p50 / max).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.anchor_outage import anvil_available, run_anchor_outage
from tests.faults.byzantine import run_byzantine
from tests.faults.crash import run_crashes
from tests.faults.disk import disk_available, run_disk_full
from tests.faults.fork import run_disk_losses, run_forks
from tests.faults.harness import Tally
from tests.faults.partition import run_partitions
from tests.faults.proxy import netns_available
from tests.faults.skew import run_skew

__all__ = ["SCENARIOS", "add_report_command", "format_table", "run_report"]

SCENARIOS = (
    "crash",
    "partition",
    "clock-skew",
    "disk-full",
    "byzantine",
    "anchor-outage",
    "fork",
    "disk-loss",
)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _converge(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def format_table(tallies: list[Tally], skipped: dict[str, str]) -> str:
    """The report's table: one row per scenario and a total row."""
    header = (
        "scenario",
        "faults",
        "bad inputs (rejected)",
        "acknowledged",
        "lost",
        "converge s p50 / max",
        "result",
    )
    rows = [header]
    for t in tallies:
        rows.append((
            t.scenario, str(t.faults), f"{t.bad_inputs} ({t.bad_inputs_rejected})" if t.bad_inputs else "-",
            str(t.acknowledged), str(t.lost), _converge(t.converge_seconds), "ok" if t.ok else "FAILED",
        ))  # fmt: skip
    every = [s for t in tallies for s in t.converge_seconds]
    rows.append((
        "total", str(sum(t.faults for t in tallies)),
        f"{sum(t.bad_inputs for t in tallies)} ({sum(t.bad_inputs_rejected for t in tallies)})",
        str(sum(t.acknowledged for t in tallies)), str(sum(t.lost for t in tallies)), _converge(every),
        "ok" if all(t.ok for t in tallies) else "FAILED",
    ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.insert(len(lines) - 1, lines[1])
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    for t in tallies:
        for note in t.notes:
            lines.append(f"{t.scenario}: {note}")
        for failure in t.failures:
            lines.append(f"{t.scenario} FAILED: {failure}")
    return "\n".join(lines)


def _guarded(name: str, run: Callable[[], Tally]) -> Tally:
    """Run one scenario; an exception (a failed wait, a crashed daemon) becomes a failure of it."""
    try:
        return run()
    except Exception as exc:
        tally = Tally(name)
        tally.failures.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
        traceback.print_exc(file=sys.stderr)
        return tally


def run_report(
    base: Path,
    *,
    crashes: int,
    partitions: int,
    seed: int,
    flood: int,
    forks: int = 3,
    losses: int = 4,
    only: tuple[str, ...] = SCENARIOS,
    log: Callable[[str], None] = print,
) -> tuple[list[Tally], dict[str, str]]:
    """Run the chosen scenarios under ``base``; return their tallies and the skipped ones' reasons."""
    tallies: list[Tally] = []
    skipped: dict[str, str] = {}
    for name in only:
        started = time.monotonic()
        log(f"== {name}")
        if name == "crash":
            tallies.append(
                _guarded(name, lambda: run_crashes(base / "crash", crashes=crashes, seed=seed, log=log))
            )
        elif name == "partition":
            if not netns_available():
                skipped[name] = "needs root and `ip netns` (each node in its own network namespace)"
                continue
            tallies.append(_guarded(
                name, lambda: run_partitions(base / "partition", partitions=partitions, seed=seed, log=log)
            ))  # fmt: skip
        elif name == "clock-skew":
            ahead = _guarded(name, lambda: run_skew(base / "skew-ahead", skew=600.0, log=log))
            behind = _guarded(name, lambda: run_skew(base / "skew-behind", skew=-120.0, log=log))
            for field in ("faults", "acknowledged", "lost"):
                setattr(ahead, field, getattr(ahead, field) + getattr(behind, field))
            ahead.converge_seconds += behind.converge_seconds
            ahead.notes += behind.notes
            ahead.failures += behind.failures
            tallies.append(ahead)
        elif name == "disk-full":
            if not disk_available():
                skipped[name] = "needs root to mount a small tmpfs"
                continue
            tallies.append(_guarded(name, lambda: run_disk_full(base / "disk", log=log)))
        elif name == "byzantine":
            tallies.append(_guarded(name, lambda: run_byzantine(base / "byzantine", flood=flood, log=log)))
        elif name == "anchor-outage":
            missing = anvil_available()
            if missing is not None:
                skipped[name] = missing
                continue
            tallies.append(_guarded(name, lambda: run_anchor_outage(base / "anchor", seed=seed, log=log)))
        elif name == "fork":
            tallies.append(_guarded(name, lambda: run_forks(base / "fork", forks=forks, seed=seed, log=log)))
        elif name == "disk-loss":
            tallies.append(_guarded(
                name, lambda: run_disk_losses(base / "disk-loss", losses=losses, seed=seed, log=log)
            ))  # fmt: skip
        else:
            raise ValueError(f"unknown scenario {name!r}")
        log(f"   ({time.monotonic() - started:.0f} s)")
    return tallies, skipped


def add_report_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="run the fault scenarios and print the figures")
    parser.add_argument(
        "--crashes", type=int, default=100, help="SIGKILLs in the crash scenario (default 100)"
    )
    parser.add_argument("--partitions", type=int, default=20, help="partitions to heal (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument(
        "--flood", type=int, default=5000, help="garbage messages in the flood (default 5000)"
    )
    parser.add_argument("--forks", type=int, default=3, help="forks provoked and resolved (default 3)")
    parser.add_argument("--losses", type=int, default=4, help="data directories deleted (default 4)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--dir", type=Path, help="keep the nodes' folders here (default: a temporary folder)")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    started = time.monotonic()

    def log(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="sez-faults-") as scratch:
        base = args.dir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        tallies, skipped = run_report(
            base, crashes=args.crashes, partitions=args.partitions, seed=seed, flood=args.flood,
            forks=args.forks, losses=args.losses,
            only=tuple(args.only), log=log,
        )  # fmt: skip
    elapsed = time.monotonic() - started
    print()
    print(format_table(tallies, skipped))
    print(f"seed {seed}; {elapsed:.0f} s")
    if args.json:
        summary: dict[str, Any] = {
            "seed": seed,
            "seconds": round(elapsed, 1),
            "scenarios": [t.to_json() for t in tallies],
            "skipped": skipped,
            "lost": sum(t.lost for t in tallies),
            "ok": all(t.ok for t in tallies),
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if all(t.ok for t in tallies) else 1
