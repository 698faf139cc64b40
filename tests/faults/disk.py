"""Full-disk scenario: PAK's data directory on a tiny tmpfs fills up, then space returns.

PAK's ``data`` directory is a tmpfs of ``FIRST_SIZE_KB`` (mounted before the node starts; root only:
without root the scenario is skipped, since the node has no LMDB map-size setting to shrink instead).
Each episode:

1. submit transfers to PAK until it refuses ``REFUSALS`` in a row; every refusal must be
   ``503`` with the problem type ``urn:sez:problem:io`` (a store failure is the server's, never the
   client's fault), and the daemon must keep running;
2. while full: ``/healthz`` answers, the status and every acknowledged receipt are still served;
3. space returns (``mount -o remount,size=...`` grows the tmpfs by ``STEP_KB``) and the next
   submissions are acknowledged again.

After the last episode the tmpfs grows to ``FINAL_SIZE_KB``, the network must converge (both
replicas complete, cosigned, quorum-final), every acknowledged receipt is served byte for byte
(``lost`` must be 0), the nodes stop cleanly and fsck is clean.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.faults.harness import (
    CORRIDOR,
    Tally,
    count_lost,
    lost_receipts,
    stop_and_check,
    wait_connected,
    wait_converged,
)
from tests.integration.netharness import make_network, transfer

__all__ = ["disk_available", "run_disk_full"]

FIRST_SIZE_KB = 2048
STEP_KB = 1024
FINAL_SIZE_KB = 65536
REFUSALS = 5
MAX_SUBMISSIONS = 20000
RECOVERY_SUBMISSIONS = 20


def disk_available() -> bool:
    """Mounting a tmpfs needs root."""
    return os.geteuid() == 0


def _mount(directory: Path, size_kb: int, *, remount: bool) -> None:
    options = f"remount,size={size_kb}k" if remount else f"size={size_kb}k"
    argv = (
        ["mount", "-o", options, str(directory)]
        if remount
        else ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)]
    )
    subprocess.run(argv, check=True, capture_output=True)


def run_disk_full(
    base: Path, *, episodes: int = 2, first_size_kb: int = FIRST_SIZE_KB, log: Any = print
) -> Tally:
    """Run the full-disk scenario under ``base``; return its tally."""
    tally = Tally("disk-full")
    network = make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR], checkpoint_every=50)
    data = network.specs["PAK"].data_dir
    data.mkdir(parents=True)
    _mount(data, first_size_kb, remount=False)
    acked: dict[str, tuple[int, bytes]] = {}
    counter = 0
    try:
        network.start()
        wait_connected(network)
        pak = network["PAK"]
        size_kb = first_size_kb
        with pak.client() as client:

            def submit() -> httpx.Response:
                nonlocal counter
                counter += 1
                tid = f"PAK-disk-{counter}"
                response = pak.submit(CORRIDOR, transfer(tid, amount=counter), client=client)
                if response.status_code == 201:
                    acked[tid] = (int(response.json()["sequence"]), response.content)
                return response

            for episode in range(1, episodes + 1):
                in_a_row = 0
                refusal: httpx.Response | None = None
                for _ in range(MAX_SUBMISSIONS):
                    response = submit()
                    if response.status_code == 201:
                        in_a_row = 0
                        continue
                    refusal = response
                    in_a_row += 1
                    problem = response.json()
                    if response.status_code != 503 or problem.get("type") != "urn:sez:problem:io":
                        tally.failures.append(f"episode {episode}: refusal {response.status_code} {problem}")
                        break
                    if in_a_row >= REFUSALS:
                        break
                if refusal is None or in_a_row < REFUSALS:
                    tally.failures.append(
                        f"episode {episode}: the disk never filled ({len(acked)} acknowledged)"
                    )
                    break
                tally.faults += 1
                if not pak.running or not pak.healthy():
                    tally.failures.append(f"episode {episode}: PAK stopped serving on a full disk")
                    break
                pak.status(CORRIDOR)
                missing = lost_receipts(pak, acked)
                if missing:
                    tally.failures.append(f"episode {episode}: reads failed while full for {missing[:5]}")
                log(f"  disk-full episode {episode}: full at {size_kb} KiB after {len(acked)} acknowledged; "
                    f"refusal: {refusal.json()['detail'][:120]}")  # fmt: skip
                size_kb = FINAL_SIZE_KB if episode == episodes else size_kb + STEP_KB
                _mount(data, size_kb, remount=True)
                statuses = [submit().status_code for _ in range(RECOVERY_SUBMISSIONS)]
                if any(code != 201 for code in statuses):
                    tally.failures.append(f"episode {episode}: after space returned: {statuses}")
        tally.converge_seconds.append(wait_converged(network))
        count_lost(tally, network, {"PAK": acked})
        stop_and_check(tally, network)
    finally:
        network.close()
        subprocess.run(["umount", str(data)], check=False, capture_output=True)
    return tally
