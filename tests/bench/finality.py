"""Finality benchmark (issue 4): a checkpoint's signing to quorum finality, with W watcher processes.

For each watcher count W it starts real processes on loopback: ``sez-node run`` for PAK and KSA on PAK-KSA
(``checkpoint_every = 1``: every commit signs a checkpoint) and W ``sez-watcher run`` following both logs.
The W watchers are bonded with equal stake through the CLI flow (``sez-watcher bond ... | sez-node submit``
on PAK's log) while KSA is still down, so that one checkpoint covers every bond; KSA then starts, cosigns
it, and the bonds become final by the bootstrap (bilateral) rule, so that the quorum rule applies from then
on (W >= ``min_watchers`` = 3). As ``tests/integration/test_finality_processes.py`` does.

Then, ``--samples`` times: one transfer is submitted to PAK; T0 is when its 201 arrives (the checkpoint
covering it was signed in the same commit); PAK's ``/v1/logs/{origin}/receipts/{seq}/finality`` is polled
every 10 ms until ``quorum_final`` (T1). Latency = T1 - T0 (so figures are +-10 ms). Before each submit
the client pauses a random time in [0, ``--jitter``) s: the node announces its checkpoint to the watchers
once per ``checkpoint_interval`` (1 s), and back-to-back samples would lock onto that cycle's phase.

Cosignatures verified per second are reported two ways: the watcher cosignatures PAK received and checked
during the samples (status counter ``watcher_cosignatures_received``, a load figure, not a capacity), and
an in-process micro-benchmark of ``protocol.checkpoints.verify_cosignatures`` on a note carrying W
cosignatures, beside the raw pynacl Ed25519 verify rate measured in the same run. Timings are reported,
never asserted.

    python -m tests.bench finality --watchers 4 16 --samples 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nacl.signing

from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint, verify_cosignatures
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from tests.integration.netharness import (
    ROOT,
    ChildProcess,
    Network,
    _child_env,
    _sez_node_argv,
    transfer,
    wait_until,
)
from tests.integration.watched import make_watched_network

__all__ = ["main", "run"]

C = "PAK-KSA"
POLL_SECONDS = 0.01
READY_TIMEOUT = 180.0
"""Seconds for all W watchers (started together) to print their ready lines: 16 interpreters importing
libp2p at once on 2 cores take far longer than one."""
SETUP_TIMEOUT = 180.0
SAMPLE_TIMEOUT = 60.0
CLI_TIMEOUT = 120.0
BOND_AMOUNT = "1000"
NUDGE_SECONDS = 5.0
"""While the bonds are not all active after this long, a filler transfer makes a new checkpoint."""


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _watcher_argv() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "sez-watcher"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "watcher.cli"]


class _Watcher:
    """One ``sez-watcher run`` process (a registered child of the network)."""

    def __init__(self, child: ChildProcess, config: Path) -> None:
        self.child = child
        self.config = config

    def spawn(self) -> None:
        self.child.spawn([*_watcher_argv(), "run", "--config", str(self.config)])

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        line = self.child.read_line(deadline, lambda text: '"ready"' in text)
        ready: dict[str, Any] = json.loads(line)
        return ready


def _setup(base: Path, watchers: int) -> tuple[Network, list[_Watcher]]:
    """Write the node and watcher directories (nothing started)."""
    network, folders = make_watched_network(base, watchers, corridor=C)
    result = [_Watcher(network.child(f.name), f.config) for f in folders]
    return network, result


def _bond_line(watcher: _Watcher) -> str:
    """``sez-watcher bond ...``: the bond transition (JSON) on stdout."""
    bond = subprocess.run(
        [*_watcher_argv(), "bond", "--config", str(watcher.config), "--corridor", C, "--amount", BOND_AMOUNT,
         "--currency", "USD", "--collateral-ref", f"escrow-{watcher.config.parent.name}"],
        capture_output=True, text=True, check=False, env=_child_env(), timeout=CLI_TIMEOUT,
    )  # fmt: skip
    if bond.returncode != 0:
        raise RuntimeError(f"sez-watcher bond failed ({bond.returncode}): {bond.stderr[-2000:]}")
    return bond.stdout


def _submit_bond(network: Network, text: str) -> None:
    """``... | sez-node submit --config PAK --corridor C -``."""
    submit = subprocess.run(
        [*_sez_node_argv(), "submit", "--config", str(network["PAK"].spec.config), "--corridor", C, "-"],
        input=text, capture_output=True, text=True, check=False, env=_child_env(), timeout=CLI_TIMEOUT,
    )  # fmt: skip
    if submit.returncode != 0:
        raise RuntimeError(f"sez-node submit failed ({submit.returncode}): {submit.stderr[-2000:]}")


def _sequence(body: dict[str, Any]) -> int:
    if "receipts" in body:
        return int(body["receipts"][0]["sequence"])
    return int(body["sequence"])


def micro_verify(watchers: int, seconds: float = 1.0) -> dict[str, float]:
    """Cosignatures/s of ``verify_cosignatures`` on a note of ``watchers`` lines; raw Ed25519 verifies/s."""
    origin = "sez.gov.pk/corridor/PAK-KSA"
    log = SigningKey(origin, os.urandom(32))
    cp = Checkpoint(origin=origin, size=123_456, root=os.urandom(32))
    keys = [SigningKey(f"w{i + 1}.example", os.urandom(32)) for i in range(watchers)]
    stamp = int(time.time())
    note = add_signatures(sign_checkpoint(cp, log), [cosign(cp, key, stamp) for key in keys])
    verifiers = [key.verifier(ALG_COSIGNATURE_V1) for key in keys]
    assert len(verify_cosignatures(note, cp, verifiers)) == watchers
    notes = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        verify_cosignatures(note, cp, verifiers)
        notes += 1
    cosig_rate = notes * watchers / elapsed
    # Raw reference: pynacl verify of a message of the size a cosignature covers.
    signer = nacl.signing.SigningKey(os.urandom(32))
    message = b"cosignature/v1\ntime 1795000000\n" + cp.body().encode()
    signed = signer.sign(message)
    verify_key = signer.verify_key
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            verify_key.verify(signed)
        count += 100
    raw_rate = count / elapsed
    return {
        "notes_per_s": round(notes / elapsed, 1),
        "cosignatures_per_s": round(cosig_rate, 1),
        "raw_ed25519_per_s": round(raw_rate, 1),
        "ratio": round(cosig_rate / raw_rate, 3),
    }


def run(watchers: int, samples: int, base: Path, jitter: float = 1.0) -> dict[str, Any]:
    """Run one configuration and return its figures."""
    network, procs = _setup(base, watchers)
    setup_began = time.monotonic()
    try:
        network.start("PAK")
        for proc in procs:  # concurrently: each start is seconds of imports
            proc.spawn()
        deadline = time.monotonic() + READY_TIMEOUT
        for proc in procs:
            ready = proc.wait_ready(deadline)
            if ready.get("event") != "ready":
                raise RuntimeError(f"unexpected ready line of {proc.child.name}: {ready}")
        watchers_ready = time.monotonic() - setup_began
        pak = network["PAK"]
        origin = network.specs["PAK"].origin(C)

        with ThreadPoolExecutor(max_workers=4) as pool:
            bonds = list(pool.map(_bond_line, procs))
            list(pool.map(lambda text: _submit_bond(network, text), bonds))
        network.start("KSA")

        nudges = [time.monotonic()]

        def active() -> dict[str, Any] | None:
            status = pak.status(C)
            fin = status["finality"][origin]
            stake = status["stake"]["active"]
            if fin["active_watchers"] == watchers and stake == watchers * int(BOND_AMOUNT):
                return fin
            if time.monotonic() - nudges[-1] > NUDGE_SECONDS:
                # Stalled: KSA may have cosigned a checkpoint covering only some bonds (its replica
                # caught up in steps), making >= min_watchers active, and the watchers' cosignatures of
                # the last checkpoint came while they were not active yet. A new checkpoint unblocks it.
                pak.submit(C, transfer(f"PAK-nudge-{len(nudges)}"))
                nudges.append(time.monotonic())
            return None

        wait_until(active, SETUP_TIMEOUT, f"the {watchers} bonds to become active", network=network)
        setup_seconds = time.monotonic() - setup_began
        nudged = len(nudges) - 1

        # One warm-up transfer (not counted): the first quorum round after activation.
        warm = pak.submit(C, transfer("PAK-warmup"))
        if warm.status_code != 201:
            raise RuntimeError(f"warm-up submit: {warm.status_code} {warm.text}")
        warm_seq = _sequence(warm.json())
        wait_until(
            lambda: pak.http.get(f"/v1/logs/{origin}/receipts/{warm_seq}/finality").json()["quorum_final"],
            SAMPLE_TIMEOUT, "the warm-up transfer to become quorum-final", network=network,
        )  # fmt: skip

        before = pak.status(C)["stats"]
        latencies: list[float] = []
        pace = random.Random(watchers)
        measured_began = time.monotonic()
        with pak.client() as client:
            for index in range(samples):
                if jitter > 0:
                    time.sleep(pace.uniform(0, jitter))
                response = pak.submit(C, transfer(f"PAK-{index}"), client=client)
                t0 = time.monotonic()
                if response.status_code != 201:
                    raise RuntimeError(f"submit {index}: {response.status_code} {response.text}")
                seq = _sequence(response.json())
                url = f"/v1/logs/{origin}/receipts/{seq}/finality"
                limit = t0 + SAMPLE_TIMEOUT
                while True:
                    answer = client.get(url)
                    now = time.monotonic()
                    if answer.status_code == 200 and answer.json()["quorum_final"]:
                        latencies.append(now - t0)
                        break
                    if now > limit:
                        raise RuntimeError(f"receipt {seq} not quorum-final after {SAMPLE_TIMEOUT:g} s")
                    time.sleep(POLL_SECONDS)
        measured_seconds = time.monotonic() - measured_began
        after = pak.status(C)["stats"]
        received = after["watcher_cosignatures_received"] - before["watcher_cosignatures_received"]
        figures: dict[str, Any] = {
            "watchers": watchers,
            "jitter_s": jitter,
            "samples": len(latencies),
            "p50_ms": round(1000 * _percentile(latencies, 0.50), 1),
            "p90_ms": round(1000 * _percentile(latencies, 0.90), 1),
            "max_ms": round(1000 * max(latencies), 1),
            "mean_ms": round(1000 * statistics.fmean(latencies), 1),
            "within_1s": sum(1 for value in latencies if value <= 1.0),
            "setup_s": round(setup_seconds, 1),
            "setup_nudges": nudged,
            "watchers_ready_s": round(watchers_ready, 1),
            "measured_s": round(measured_seconds, 2),
            "watcher_cosignatures_received": received,
            "watcher_cosignatures_per_s": round(received / measured_seconds, 1),
            "counterparty_cosignatures_received": (
                after["cosignatures_received"] - before["cosignatures_received"]
            ),
            "quorum_final_decisions": after["quorum_final"] - before["quorum_final"],
        }
        return figures
    finally:
        network.close()  # watchers first, then the nodes: SIGTERM, then SIGKILL after a bound


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tests.bench finality [--watchers 4 16] [--samples N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench finality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--watchers", type=int, nargs="+", default=[4, 16], help="watcher processes (>= 3)")
    parser.add_argument("--samples", type=int, default=20, help="transfers timed per watcher count")
    parser.add_argument(
        "--jitter", type=float, default=1.0,
        help="random pause in [0, J) s before each submit (0: back to back; see README)",
    )  # fmt: skip
    parser.add_argument("--micro-seconds", type=float, default=1.0, help="length of each micro-benchmark")
    parser.add_argument("--dir", type=Path, help="keep the folders here (default: a temporary one)")
    args = parser.parse_args(argv)
    if any(w < 3 for w in args.watchers) or args.samples < 1:
        parser.error("--watchers must each be >= 3 (min_watchers) and --samples >= 1")
    results = []
    for watchers in args.watchers:
        base = (
            args.dir / f"{watchers}-watchers" if args.dir
            else Path(tempfile.mkdtemp(prefix=f"sez-bench-finality-{watchers}-"))
        )  # fmt: skip
        figures = run(watchers, args.samples, base, args.jitter)
        figures["micro"] = micro_verify(watchers, args.micro_seconds)
        results.append(figures)
        micro = figures["micro"]
        print(
            f"\n{watchers} watchers, {figures['samples']} samples, jitter {args.jitter:g} s "
            f"(setup {figures['setup_s']} s, {figures['setup_nudges']} nudges, "
            f"watchers ready after {figures['watchers_ready_s']} s):"
        )
        print(
            f"  checkpoint -> quorum-final: p50 {figures['p50_ms']} ms, p90 {figures['p90_ms']} ms, "
            f"max {figures['max_ms']} ms, mean {figures['mean_ms']} ms; "
            f"{figures['within_1s']}/{figures['samples']} within 1 s"
        )
        print(
            f"  watcher cosignatures received and checked by PAK: {figures['watcher_cosignatures_received']} "
            f"in {figures['measured_s']} s = {figures['watcher_cosignatures_per_s']}/s (load, not capacity)"
        )
        print(
            f"  verify_cosignatures on a note of {watchers} cosignatures: {micro['cosignatures_per_s']:,.0f} "
            f"cosignatures/s ({micro['notes_per_s']:,.0f} notes/s); raw Ed25519 verify "
            f"{micro['raw_ed25519_per_s']:,.0f}/s; ratio {micro['ratio']}"
        )
    print(json.dumps({"benchmark": "finality", "results": results}, sort_keys=True))
    return 0
