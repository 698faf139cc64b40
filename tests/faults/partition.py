"""Partition scenario: the link between PAK and KSA cut (or made lossy and slow) and healed, M times.

Each node runs in its own network namespace and reaches the other only through a
:class:`~tests.faults.proxy.LinkProxy` (see that module for why not ``tc netem``, and why not a
proxy on the shared loopback); this needs root. Both nodes take transfers the whole time a partition
lasts: each writer keeps acknowledging receipts in its own log while it cannot replicate. Each round:

1. start a client per node; after a random moment, either **cut** both proxies (every connection
   closed, new ones refused) and wait until both nodes report the peer disconnected (bounded: this
   also proves no connection bypasses the proxy), or make the link **lossy** (every chunk delayed
   ``LOSSY_DELAY`` s, and a connection reset with probability ``LOSSY_DROP`` per chunk);
2. hold the fault for a random 0.5 - ``max_hold`` s under load, then heal;
3. stop the clients and time how long the network takes to converge: each replica complete, both
   logs cosigned by the counterparty and quorum-final at their size.

At the end every acknowledged receipt is read back (``lost`` must be 0), the nodes stop cleanly,
fsck is clean and both stores hold identical copies of both logs.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import (
    CORRIDOR,
    AckLoad,
    Tally,
    count_lost,
    isolate_in_namespaces,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.netharness import make_network, wait_until

__all__ = ["run_partitions"]

LOSSY_DELAY = 0.05
LOSSY_DROP = 0.05
DISCONNECT_TIMEOUT = 30.0


def run_partitions(
    base: Path, *, partitions: int, seed: int, max_hold: float = 3.0, log: Any = print
) -> Tally:
    """Run the partition scenario under ``base``; return its tally."""
    rng = random.Random(seed)
    tally = Tally("partition")
    network = make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=50)
    isolation = isolate_in_namespaces(network, seed)
    proxies = isolation.links
    acked: dict[str, dict[str, tuple[int, bytes]]] = {"PAK": {}, "KSA": {}}
    loads: list[AckLoad] = []
    modes = {"cut": 0, "lossy": 0}
    refused: dict[int, int] = {}
    try:
        network.start()
        wait_connected(network)
        for index in range(1, partitions + 1):
            loads[:] = [AckLoad(network[n], f"{n}-p{index}", pause=0.005).start() for n in ("PAK", "KSA")]
            time.sleep(rng.uniform(0.1, 1.0))
            mode = "cut" if index % 3 else "lossy"
            if mode == "cut":
                for proxy in proxies:
                    proxy.cut()
                wait_until(
                    lambda: not network["PAK"].status(CORRIDOR)["peers"]["connected"]
                    and not network["KSA"].status(CORRIDOR)["peers"]["connected"],
                    DISCONNECT_TIMEOUT, "both nodes to see the partition", network=network,
                )  # fmt: skip
            else:
                for proxy in proxies:
                    proxy.delay, proxy.drop = LOSSY_DELAY, LOSSY_DROP
            time.sleep(rng.uniform(0.5, max_hold))
            for proxy in proxies:
                proxy.heal()
                proxy.delay, proxy.drop = 0.0, 0.0
            for load in loads:
                load.stop()
                acked[load.node.spec.jurisdiction].update(load.acked)
                for code, n in load.refused.items():
                    refused[code] = refused.get(code, 0) + n
            loads.clear()
            seconds = wait_converged(network)
            tally.converge_seconds.append(seconds)
            tally.faults += 1
            modes[mode] += 1
            log(f"  partition {index}/{partitions} ({mode}): converged in {seconds:.2f} s")
        count_lost(tally, network, acked)
        stop_and_check(tally, network)
        dropped = sum(p.connections_dropped for p in proxies)
        dials_refused = sum(p.connections_refused for p in proxies)
        tally.notes.append(
            f"partitions by mode {modes}; proxy resets {dropped}, dials refused while cut {dials_refused}; "
            f"submissions answered other than 201, by status {refused}"
        )
    finally:
        for load in loads:
            load.stop()
        network.close()
        isolation.close()
    return tally
