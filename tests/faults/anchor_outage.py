"""Anchoring under an L1 outage: the RPC node hangs, then restarts, while both nodes take transfers.

A PAK-KSA network where both nodes anchor their own log's quorum-final checkpoints on a real anvil
(``tests.integration.anvil``, with ``--state`` so a restart keeps the chain). Each episode, under load
on both nodes:

* **hang** (odd episodes): anvil is SIGSTOPped for ``HANG_SECONDS``: every JSON-RPC call times out
  rather than failing fast, the worst case for a task that waits on the chain;
* **restart** (even episodes): anvil is stopped (SIGTERM, state dumped) and started again after
  ``DOWN_SECONDS``: calls are refused meanwhile.

Checked during the outage: receipts keep being acknowledged and the quorum-final size of both logs
keeps growing (anchoring must never hold up receipts or finality, design §12), and the node reports
the failure (``anchoring.stats.consecutive_failures > 0``). After the outage and once the load
pauses, the network converges (replicas complete, cosigned, quorum-final) and each node's own log is
**anchored at its head** again (the converge time counts both). At the end every acknowledged receipt
is served byte for byte (``lost`` must be 0), the nodes stop cleanly and fsck is clean.

Needs the pinned anvil (``./run anvil-setup``); without it the scenario is skipped.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from node.devnet_chain import anvil_binary
from tests.faults.harness import (
    CORRIDOR,
    AckLoad,
    Tally,
    count_lost,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.anvil import CHAIN_ID, DEV_KEY, DEV_KEY_2, Anvil
from tests.integration.netharness import Network, make_network, wait_until

__all__ = ["anvil_available", "run_anchor_outage"]

HANG_SECONDS = 8.0
DOWN_SECONDS = 5.0
ANCHORED_TIMEOUT = 90.0


def anvil_available() -> str | None:
    """None if the pinned anvil is installed, else why the scenario cannot run."""
    if anvil_binary() is None:
        return "no anvil: run ./run anvil-setup"
    return None


def _anchored_at_head(network: Network) -> bool:
    for node in network.nodes.values():
        status = node.status(CORRIDOR)
        origin, size = status["log"]["origin"], status["log"]["size"]
        if status["anchoring"]["anchored_size"].get(origin, 0) < size:
            return False
    return True


def _final_sizes(network: Network) -> dict[str, int]:
    status = network["PAK"].status(CORRIDOR)
    return {origin: entry["quorum_final_size"] for origin, entry in status["finality"].items()}


def run_anchor_outage(base: Path, *, episodes: int = 4, seed: int = 0, log: Any = print) -> Tally:
    """Run the anchor-outage scenario under ``base``; return its tally."""
    rng = random.Random(seed)
    tally = Tally("anchor-outage")
    chain = Anvil(base / "anvil", state=True)
    chain.start()
    common = {"chain_id": CHAIN_ID, "rpc_url": chain.url, "every_checkpoints": 1, "every_seconds": 1,
              "confirmations": 1, "poll_seconds": 0.2}  # fmt: skip
    network = make_network(
        base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=20,
        anchor={"PAK": {**common, "key": DEV_KEY}, "KSA": {**common, "key": DEV_KEY_2}},
    )  # fmt: skip
    acked: dict[str, dict[str, tuple[int, bytes]]] = {"PAK": {}, "KSA": {}}
    loads: list[AckLoad] = []
    try:
        network.start()
        wait_connected(network)
        wait_until(lambda: _anchored_at_head(network), ANCHORED_TIMEOUT, "the first anchors", network=network)
        for episode in range(1, episodes + 1):
            loads = [AckLoad(network[n], f"{n}-e{episode}", pause=0.01).start() for n in ("PAK", "KSA")]
            time.sleep(rng.uniform(0.5, 2.0))
            final_before = _final_sizes(network)
            acked_before = sum(load.count() for load in loads)
            hang = episode % 2 == 1
            assert chain.process is not None
            if hang:
                os.kill(chain.process.pid, signal.SIGSTOP)
                outage = HANG_SECONDS
            else:
                chain.stop()
                outage = DOWN_SECONDS
            try:
                wait_until(
                    lambda: all(
                        network[n].status(CORRIDOR)["anchoring"]["stats"]["consecutive_failures"] > 0
                        for n in ("PAK", "KSA")
                    ),
                    outage + 60.0, "both nodes to report the anchoring failure", network=network,
                )  # fmt: skip
                deadline = time.monotonic() + outage
                while time.monotonic() < deadline:
                    time.sleep(0.1)
                grown = _final_sizes(network)
                stalled = [o for o, size in grown.items() if size <= final_before.get(o, 0)]
                if stalled:
                    tally.failures.append(
                        f"episode {episode}: finality stalled during the outage for {stalled}"
                    )
                if sum(load.count() for load in loads) <= acked_before:
                    tally.failures.append(f"episode {episode}: no receipt acknowledged during the outage")
            finally:
                if hang:
                    os.kill(chain.process.pid, signal.SIGCONT)
                else:
                    chain.start()
            lifted = time.monotonic()
            for load in loads:
                load.stop()
                acked[load.node.spec.jurisdiction].update(load.acked)
            loads = []
            wait_converged(network)
            wait_until(lambda: _anchored_at_head(network), ANCHORED_TIMEOUT, "anchors at the heads",
                       network=network)  # fmt: skip
            seconds = time.monotonic() - lifted
            tally.converge_seconds.append(seconds)
            tally.faults += 1
            kind = "hang" if hang else "restart"
            log(f"  {kind} {episode}/{episodes}: converged and anchored in {seconds:.2f} s")
        count_lost(tally, network, acked)
        confirmed = {
            n: network[n].status(CORRIDOR)["anchoring"]["stats"]["confirmed"] for n in ("PAK", "KSA")
        }
        stop_and_check(tally, network)
        tally.notes.append(f"anchors confirmed {confirmed}")
    finally:
        for load in loads:
            load.stop()
        if chain.process is not None and chain.process.poll() is None:
            os.kill(chain.process.pid, signal.SIGCONT)
        network.close()
        chain.stop()
    return tally
