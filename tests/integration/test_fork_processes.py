"""A fork with real processes: PAK restored from an old backup signs a receipt that conflicts with its past.

PAK writes receipts that KSA replicates; PAK is stopped, its data directory copied (the backup), PAK
writes more that KSA replicates, then PAK is restored from the backup and started again while KSA is
down: its log is shorter than what it signed before, and its next transfer re-uses a sequence KSA
already holds with another receipt. KSA's replica detects the equivocation, builds
``log-equivocation`` evidence, gossips it and halts the corridor; PAK verifies the evidence about
its own log and halts too. Both then refuse transfers with the state named, show the evidence, and
stop finality.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netharness import (
    ACTIVATION_RECEIPTS,
    Network,
    make_network,
    read_log_store,
    transfer,
    wait_stable,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C = "PAK-KSA"
TIMEOUT = 60.0


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    network = make_network(tmp_path, ["PAK", "KSA"], corridors=[C], checkpoint_every=1)
    try:
        yield network
    finally:
        network.close()


def _replicated(network: Network, size: int) -> bool:
    return bool(network["KSA"].status(C)["counterparty"]["size"] >= size)


def _halted(network: Network, party: str) -> dict[str, Any] | None:
    status: dict[str, Any] = network[party].status(C)
    return status if status["halted"] and status["forks"] else None


def _provoke(network: Network) -> dict[str, Any]:
    """Until KSA halts, PAK writes a transfer about once a second: the gossip of its batches (once
    the mesh with the restarted KSA formed) carries receipts that conflict with the ones KSA holds.
    Returns KSA's halted status."""
    polls = 0

    def halted_or_write() -> dict[str, Any] | None:
        nonlocal polls
        status = _halted(network, "KSA")
        if status is None and polls % 20 == 0:
            network["PAK"].submit(C, transfer(f"PAK-on-the-old-branch-{polls}"))  # refused once PAK halts
        polls += 1
        return status

    return wait_until(halted_or_write, TIMEOUT, "KSA to detect the fork and halt", network=network)


def test_restored_backup_that_signs_a_conflicting_receipt_halts_the_corridor(network: Network) -> None:
    pak, ksa = network["PAK"], network["KSA"]
    pak_dir = network.specs["PAK"].data_dir
    origin = network.specs["PAK"].origin(C)
    network.start()
    for index in range(3):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    size = ACTIVATION_RECEIPTS + 3
    wait_until(
        lambda: _replicated(network, size), TIMEOUT, "KSA to replicate PAK's first receipts", network=network
    )

    assert pak.stop() == 0
    backup = pak_dir.parent / "backup"
    shutil.copytree(pak_dir, backup)
    size = len(read_log_store(backup, origin))  # the transfers, and whatever acks PAK wrote meanwhile
    network.start("PAK")
    for index in range(3, 6):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    wait_until(
        lambda: _replicated(network, size + 3), TIMEOUT, "KSA to replicate the later ones", network=network
    )
    held = ksa.receipt(origin, size)

    # Restore the old backup while KSA is down (with KSA up, PAK's own-log check would pull its later
    # receipts back from KSA before writing: node.recovery): PAK's log is back at `size`, its own-log
    # check finds nobody within its deadline, and its next receipt re-uses sequence `size`.
    assert ksa.stop() == 0
    assert pak.stop() == 0
    shutil.rmtree(pak_dir)
    shutil.copytree(backup, pak_dir)
    network.start("PAK")
    assert pak.status(C)["log"]["size"] == size
    assert pak.submit(C, transfer("PAK-after-restore")).status_code == 201
    network.start("KSA")
    assert pak.receipt(origin, size) != held

    _provoke(network)
    wait_until(lambda: _halted(network, "PAK"), TIMEOUT, "PAK to learn of its fork and halt", network=network)
    # PAK wrote on its old branch until it halted, so KSA may hold the fork spelt more than one way (the
    # conflicting receipts, the conflicting checkpoints): every spelling reaches both nodes.
    forks = wait_stable(
        lambda: (f := ksa.status(C)["forks"]) == pak.status(C)["forks"] and f,
        TIMEOUT, "both nodes to hold the same fork evidence", network=network,
    )  # fmt: skip
    for node in (pak, ksa):
        evidence = node.http.get(f"/v1/corridors/{C}/evidence").json()["evidence"]
        assert sorted((e["digest"], e["kind"], e["offender"]) for e in evidence) == [
            (digest, "log-equivocation", origin) for digest in forks
        ]
        refused = node.submit(C, transfer(f"after-halt-{node.spec.jurisdiction}"))
        assert refused.status_code == 409 and "HALTED" in refused.json()["detail"], refused.text
    # KSA recorded the halt in its own log, with the evidence: the lifecycle says HALTED and why.
    lifecycle = wait_until(
        lambda: (lc := ksa.http.get(f"/v1/corridors/{C}/lifecycle").json())["state"] == "HALTED" and lc,
        TIMEOUT, "KSA's halt receipt", network=network,
    )  # fmt: skip
    assert lifecycle["halt_evidence"] in forks and lifecycle["history"][-1]["to"] == "HALTED"
