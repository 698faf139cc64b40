"""Crash scenario: nodes and a watcher SIGKILLed at random moments under load, restarted, N times.

One PAK-KSA network (two ``sez-node run`` processes) and one ``sez-watcher run`` following both logs
are started once and reused, so a crash costs one process restart (about 3 s, mostly importing
libp2p). Both nodes take transfers from a background client each (:class:`~tests.faults.harness.AckLoad`)
the whole time. Each round:

1. wait a random moment (0 - ``max_wait`` s) under load, SIGKILL a victim (PAK, KSA and the watcher
   once each in a random order, then at random with the seed), restart it, wait for its ready line;
2. a restarted node must serve every receipt it acknowledged in the last ``RECENT`` sequences, byte
   for byte (the rest are checked at the end); a restarted watcher must not have forgotten what it
   cosigned (its ``/v1/state`` sizes do not shrink: slashing protection survived);
3. every ``converge_every`` crashes the load pauses and the network must converge: both replicas
   complete, both logs cosigned by the counterparty and quorum-final at their size (finality
   resumed); the time is recorded.

At the end: every receipt acknowledged during the whole run is served at its sequence with the same
bytes (``lost`` counts the others and must be 0), the network converges, the nodes stop cleanly
(exit 0 on SIGTERM), fsck of both stores is clean and their copies of both logs are identical.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import httpx

from node.p2p import load_or_create_identity, peer_id_of
from tests.faults.harness import (
    CORRIDOR,
    AckLoad,
    Tally,
    count_lost,
    lost_receipts,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.netharness import ROOT, ChildProcess, Network, free_ports, make_network
from watcher.config import add_followed_log, write_initial_config

__all__ = ["WatcherProcess", "add_watcher", "run_crashes"]

RECENT = 64
"""Acknowledged receipts (by sequence, newest first) read back after each restart."""
WATCHER_READY_TIMEOUT = 30.0


class WatcherProcess:
    """One ``sez-watcher run`` process (a registered child of the network)."""

    def __init__(self, child: ChildProcess, config: Path, http_port: int) -> None:
        self.child = child
        self.config = config
        self.base_url = f"http://127.0.0.1:{http_port}"

    def start(self) -> dict[str, Any]:
        venv = ROOT / ".venv" / "bin" / "sez-watcher"
        argv = [str(venv)] if venv.exists() else ["python", "-m", "watcher.cli"]
        self.child.spawn([*argv, "run", "--config", str(self.config)])
        line = self.child.read_line(time.monotonic() + WATCHER_READY_TIMEOUT, lambda text: '"ready"' in text)
        ready: dict[str, Any] = json.loads(line)
        return ready

    def sizes(self) -> dict[str, int]:
        """origin -> the size of the latest checkpoint the watcher cosigned."""
        response = httpx.get(f"{self.base_url}/v1/state", timeout=10.0)
        response.raise_for_status()
        return {origin: entry["size"] for origin, entry in response.json()["logs"].items()}


def add_watcher(base: Path) -> tuple[Path, int, str]:
    """Write a watcher directory; return (config path, HTTP port, libp2p address) (no logs yet)."""
    p2p_port, http_port = free_ports(2)
    directory = base / "watcher"
    config = write_initial_config(
        directory, "watcher1.example", f"/ip4/127.0.0.1/tcp/{p2p_port}", f"127.0.0.1:{http_port}"
    )
    peer_id = peer_id_of(load_or_create_identity(directory / "identity.key"))
    return config, http_port, f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{peer_id}"


def make_crash_network(base: Path, *, watcher: bool) -> tuple[Network, WatcherProcess | None]:
    if not watcher:
        return make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=50), None
    config, http_port, addr = add_watcher(base)
    network = make_network(
        base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=50,
        extra_peers={CORRIDOR: {"PAK": [addr], "KSA": [addr]}},
    )  # fmt: skip
    for spec in network.specs.values():
        add_followed_log(
            config, corridor=CORRIDOR, origin=spec.origin(CORRIDOR), vkey=spec.log_key(CORRIDOR).to_vkey(),
            peers=[s.addr for s in network.specs.values()],
        )  # fmt: skip
    return network, WatcherProcess(network.child("watcher"), config, http_port)


def run_crashes(
    base: Path,
    *,
    crashes: int,
    seed: int,
    watcher: bool = True,
    converge_every: int = 10,
    max_wait: float = 1.5,
    log: Any = print,
) -> Tally:
    """Run the crash scenario under ``base``; return its tally (``failures`` empty when it passed)."""
    rng = random.Random(seed)
    tally = Tally("crash")
    network, watcher_process = make_crash_network(base, watcher=watcher)
    victims = ["PAK", "KSA", *(["watcher"] if watcher_process else [])]
    loads: list[AckLoad] = []
    acked: dict[str, dict[str, tuple[int, bytes]]] = {"PAK": {}, "KSA": {}}
    phase = 0
    refused: dict[int, int] = {}

    def start_loads() -> None:
        nonlocal phase
        phase += 1
        loads[:] = [AckLoad(network[n], f"{n}-p{phase}", pause=0.005).start() for n in ("PAK", "KSA")]

    def stop_loads() -> None:
        for load in loads:
            load.stop()
            acked[load.node.spec.jurisdiction].update(load.acked)
            for code, n in load.refused.items():
                refused[code] = refused.get(code, 0) + n
        loads.clear()

    try:
        network.start()
        if watcher_process is not None:
            watcher_process.start()
        wait_connected(network)
        start_loads()
        kills = {name: 0 for name in victims}
        first = rng.sample(victims, len(victims))  # every kind of victim early, then at random
        for index in range(1, crashes + 1):
            victim = first[index - 1] if index <= len(first) else rng.choice(victims)
            time.sleep(rng.uniform(0.0, max_wait))  # the random moment under load
            if victim == "watcher":
                assert watcher_process is not None
                before = watcher_process.sizes()
                assert watcher_process.child.kill() == -9
                watcher_process.start()
                after = watcher_process.sizes()
                shrunk = {o: (before[o], after.get(o, 0)) for o in before if after.get(o, 0) < before[o]}
                if shrunk:
                    tally.failures.append(f"crash {index}: the watcher forgot cosigned sizes {shrunk}")
            else:
                node = network[victim]
                assert node.kill() == -9
                node.start()
                for load in loads:
                    if load.node is node:
                        recent = dict(sorted(load.acked.items(), key=lambda kv: kv[1][0])[-RECENT:])
                        missing = lost_receipts(node, recent)
                        if missing:
                            tally.failures.append(f"crash {index}: {victim} lost {missing[:5]}")
            kills[victim] += 1
            tally.faults += 1
            if index % converge_every == 0 or index == crashes:
                stop_loads()
                seconds = wait_converged(network)
                tally.converge_seconds.append(seconds)
                log(f"  crash {index}/{crashes}: converged in {seconds:.2f} s; kills so far {kills}")
                if index < crashes:
                    start_loads()
        stop_loads()
        count_lost(tally, network, acked)
        stop_and_check(tally, network)
        tally.notes.append(
            f"kills by victim {kills}; submissions answered other than 201, by status {refused}"
        )
    finally:
        for load in loads:
            load.stop()
        network.close()
    return tally
