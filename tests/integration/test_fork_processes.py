"""A fork with real processes: PAK restored from an old backup signs a receipt that conflicts with its past.

PAK writes receipts that KSA replicates; PAK is stopped, its data directory copied (the backup), PAK
writes more that KSA replicates, then PAK is restored from the backup and started again: its log is
shorter than what it signed before, and its next transfer re-uses a sequence KSA already holds with
another receipt. KSA's replica detects the equivocation, builds ``log-equivocation`` evidence,
gossips it and halts the corridor; PAK verifies the evidence about its own log and halts too. Both
then refuse transfers with the state named, show the evidence, and stop finality.
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

    # Restore the old backup: PAK's log is back at `size`, and its next receipt re-uses sequence `size`.
    assert pak.stop() == 0
    shutil.rmtree(pak_dir)
    shutil.copytree(backup, pak_dir)
    network.start("PAK")
    assert pak.status(C)["log"]["size"] == size
    # Its next receipt (an ack it writes at once, or this transfer) is another receipt at `size`.
    pak.submit(C, transfer("PAK-after-restore"))
    assert pak.receipt(origin, size) != held

    ksa_status = wait_until(
        lambda: _halted(network, "KSA"), TIMEOUT, "KSA to detect the fork and halt", network=network
    )
    pak_status = wait_until(
        lambda: _halted(network, "PAK"), TIMEOUT, "PAK to learn of its fork and halt", network=network
    )
    assert ksa_status["forks"] == pak_status["forks"] and len(ksa_status["forks"]) == 1
    digest = ksa_status["forks"][0]
    for node in (pak, ksa):
        evidence = node.http.get(f"/v1/corridors/{C}/evidence").json()["evidence"]
        assert [(e["digest"], e["kind"], e["offender"]) for e in evidence] == [
            (digest, "log-equivocation", origin)
        ]
        refused = node.submit(C, transfer(f"after-halt-{node.spec.jurisdiction}"))
        assert refused.status_code == 409 and "HALTED" in refused.json()["detail"], refused.text
    # KSA recorded the halt in its own log, with the evidence: the lifecycle says HALTED and why.
    lifecycle = wait_until(
        lambda: (lc := ksa.http.get(f"/v1/corridors/{C}/lifecycle").json())["state"] == "HALTED" and lc,
        TIMEOUT, "KSA's halt receipt", network=network,
    )  # fmt: skip
    assert lifecycle["halt_evidence"] == digest and lifecycle["history"][-1]["to"] == "HALTED"
