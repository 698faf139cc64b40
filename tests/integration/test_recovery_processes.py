"""Recovery with real processes (design §8 "Recovery"): a node brings its own log back from its counterparty.

(a) **A restored backup that forked, then a two-party resolution.** PAK writes receipts KSA replicates,
    is backed up, writes more, and is restored from the backup while KSA is down: its own-log check
    finds nobody within its deadline, so PAK writes on the old branch. When KSA comes back the fork is
    detected and both halt. Both parties then sign (``sez-node lifecycle sign`` twice) a resolution
    naming KSA's replica of PAK's log as the canonical branch, and KSA records it. PAK sets its orphaned
    receipts aside (listed in the API, kept in its store), re-syncs its own log from KSA, verifies the
    branch root and resumes: new transfers replicate to KSA, not one receipt of the canonical branch is
    lost (the logs compared receipt by receipt), and fsck is clean on both stores.
(b) **A deleted data directory.** PAK's data directory is deleted (keys and config kept) while KSA holds
    its log: PAK restarts, pulls its own log from KSA before writing anything, resumes at the right
    sequence, no fork is detected, and KSA's replica takes its new receipts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoints import open_checkpoint
from store import LogStore
from store.orphans import orphan_receipts, orphan_sets
from tests.integration.netharness import (
    ACTIVATION_RECEIPTS,
    Network,
    _child_env,
    _sez_node_argv,
    fsck_data_dir,
    make_network,
    read_log_http,
    read_log_store,
    transfer,
    wait_stable,
    wait_until,
)
from tests.integration.test_fork_processes import _halted, _provoke, _replicated

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


def _settled(network: Network) -> tuple[int, int] | None:
    """(PAK's log size, KSA's replica of it) once they are equal."""
    pak, ksa = network["PAK"].status(C), network["KSA"].status(C)
    sizes = (pak["log"]["size"], ksa["counterparty"]["size"])
    return sizes if sizes[0] == sizes[1] else None


def _sign(network: Network, party: str, *args: str, stdin: str | None = None) -> str:
    argv = [
        *_sez_node_argv(),
        "lifecycle",
        "sign",
        "--config",
        str(network.specs[party].config),
        "--corridor",
        C,
    ]
    done = subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, text=True, env=_child_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_restored_backup_forks_then_a_two_party_resolution_recovers_it(network: Network) -> None:
    pak, ksa = network["PAK"], network["KSA"]
    pak_dir = network.specs["PAK"].data_dir
    origin = network.specs["PAK"].origin(C)
    network.start()
    for index in range(3):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    wait_until(
        lambda: _replicated(network, ACTIVATION_RECEIPTS + 3), TIMEOUT, "KSA to replicate", network=network
    )
    assert pak.stop() == 0
    backup = pak_dir.parent / "backup"
    shutil.copytree(pak_dir, backup)
    size = len(read_log_store(backup, origin))
    network.start("PAK")
    for index in range(3, 6):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    wait_stable(lambda: _settled(network), TIMEOUT, "KSA to replicate the later ones", network=network)

    # Restore the backup while KSA is down: PAK's own-log check has nobody to ask, and writes on.
    assert ksa.stop() == 0
    assert pak.stop() == 0
    shutil.rmtree(pak_dir)
    shutil.copytree(backup, pak_dir)
    network.start("PAK")
    status = pak.status(C)
    assert status["log"]["size"] == size and status["recovery"]["state"] == "unchecked", status["recovery"]
    assert pak.submit(C, transfer("PAK-after-restore")).status_code == 201
    orphaned = pak.receipt(origin, size)
    network.start("KSA")
    _provoke(network)
    wait_until(lambda: _halted(network, "PAK"), TIMEOUT, "PAK to learn of its fork and halt", network=network)
    assert ksa.receipt(origin, size) != orphaned

    # The resolution: KSA's replica of PAK's log (its latest checkpoint) is the canonical branch.
    cp, _ = open_checkpoint(ksa.checkpoint(origin), network.specs["PAK"].log_key(C))
    branch = ["--branch-origin", origin, "--branch-size", str(cp.size), "--branch-root", cp.root.hex()]
    args = ["--from", "HALTED", "--to", "ACTIVE", "--reason", "PAK restored a backup", *branch]
    both = json.loads(_sign(network, "KSA", "-", stdin=_sign(network, "PAK", *args)))
    wait_until(
        lambda: ksa.http.get(f"/v1/corridors/{C}/lifecycle").json()["state"] == "HALTED",
        TIMEOUT, "KSA's halt receipt", network=network,
    )  # fmt: skip
    response = ksa.http.post(f"/v1/corridors/{C}/transitions", json=both)
    assert response.status_code == 201, response.text

    def recovered() -> dict[str, Any] | None:
        status: dict[str, Any] = pak.status(C)
        done = status["recovery"]["state"] == "ready" and not status["recovery"]["recovering"]
        return status if done and not status["halted"] and status["log"]["size"] >= cp.size else None

    def stuck() -> str:
        lifecycle = pak.http.get(f"/v1/corridors/{C}/lifecycle").json()
        return f"PAK to recover its log onto the canonical branch (PAK: {pak.status(C)}, {lifecycle})"

    status = wait_until(recovered, TIMEOUT, stuck, network=network)
    assert status["recovery"]["orphan_sets"] == 1 and status["recovery"]["orphans"] >= 1
    orphans = pak.http.get(f"/v1/corridors/{C}/orphans").json()
    (record,) = orphans["sets"]
    assert record["from_sequence"] == size and record["recovery"] == 1
    assert [r["sequence"] for r in record["receipts"]] == list(range(size, size + record["count"]))
    assert json.loads(orphaned) == record["receipts"][0]
    assert record["evidence"] and all(len(digest) == 64 for digest in record["evidence"])  # what it settled
    assert f"canonical branch {cp.size} {cp.root.hex()}" in record["reason"]

    # Resumes: new transfers continue the canonical log, and KSA's replica takes them.
    for index in range(3):
        response = pak.submit(C, transfer(f"PAK-resumed-{index}"))
        assert response.status_code == 201, response.text
    final = wait_stable(
        lambda: _settled(network), TIMEOUT, "KSA to replicate PAK's resumed log", network=network
    )
    assert read_log_http(pak, origin, final[0]) == read_log_http(ksa, origin, final[0])
    for node in (pak, ksa):
        node_status = node.status(C)
        assert not node_status["halted"] and node_status["forks"] == [], node_status
    assert pak.stop() == 0 and ksa.stop() == 0
    canonical = read_log_store(network.specs["KSA"].data_dir, origin)
    assert read_log_store(pak_dir, origin) == canonical and len(canonical) == final[0]
    fsck_data_dir(pak_dir, [origin])
    fsck_data_dir(network.specs["KSA"].data_dir, [origin])
    with LogStore(pak_dir, readonly=True) as store:
        (kept,) = orphan_sets(store, origin)
        assert orphan_receipts(store, origin, 1)[0] == (size, orphaned)
        assert kept.count == record["count"]


def test_a_deleted_data_directory_is_recovered_from_the_counterparty(tmp_path: Path) -> None:
    network = make_network(
        tmp_path, ["PAK", "KSA"], corridors=[C], checkpoint_every=1, own_log_check_timeout=30
    )
    try:
        pak, ksa = network["PAK"], network["KSA"]
        origin = network.specs["PAK"].origin(C)
        network.start()
        for index in range(5):
            assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
        size, _ = wait_stable(lambda: _settled(network), TIMEOUT, "KSA to replicate", network=network)
        held = read_log_http(ksa, origin, size)

        assert pak.stop() == 0
        shutil.rmtree(network.specs["PAK"].data_dir)  # the disk is lost; keys and config are kept
        network.start("PAK")  # ready once its own-log check has completed
        status = pak.status(C)
        assert status["recovery"]["state"] == "ready" and status["recovery"]["pulled"] == size, status
        assert status["log"]["size"] >= size
        assert read_log_http(pak, origin, size) == held

        response = pak.submit(C, transfer("PAK-after-recovery"))
        assert response.status_code == 201, response.text
        assert json.loads(response.content)["sequence"] >= size
        final = wait_stable(
            lambda: _settled(network), TIMEOUT, "KSA to take PAK's new receipts", network=network
        )
        assert final[0] > size
        assert read_log_http(pak, origin, final[0]) == read_log_http(ksa, origin, final[0])
        for node in (pak, ksa):
            node_status = node.status(C)
            assert not node_status["halted"] and node_status["forks"] == [], node_status
            assert node_status["recovery"]["orphans"] == 0
        assert pak.stop() == 0 and ksa.stop() == 0
        fsck_data_dir(network.specs["PAK"].data_dir, [origin])
        fsck_data_dir(network.specs["KSA"].data_dir, [origin])
    finally:
        network.close()
