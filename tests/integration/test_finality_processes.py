"""Quorum finality with real processes: a PAK-KSA pair of ``sez-node run`` and four ``sez-watcher run``.

The four watchers are bonded through the CLI flow (``sez-watcher bond`` piped into ``sez-node submit``,
on PAK's log) while KSA is still down, so that one checkpoint covers all four bonds; KSA then starts and
cosigns it, and the bonds become final by bilateral (bootstrap) finality. (Bonded one checkpoint at a
time, the first final bond would make its single watcher the whole active set, and with
``min_watchers = 3`` nothing could become final after it: see ``node.quorum``.) With all four watchers
cosigning, PAK's new checkpoints become quorum-final. With two of them stopped (SIGTERM), 2 of 4 equal
stakes are not more than 2/3 and fewer than ``min_watchers``: new checkpoints do not become final.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.p2p import load_or_create_identity, peer_id_of
from tests.integration.netharness import (
    Network,
    _child_env,
    _sez_node_argv,
    free_ports,
    make_network,
    transfer,
    wait_until,
)
from tests.integration.test_watcher_process import WatcherProcess, _watcher_argv
from watcher.config import add_followed_log, write_initial_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

C = "PAK-KSA"
TIMEOUT = 90.0
WATCHERS = 4


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Network, list[WatcherProcess]]]:
    ports = free_ports(2 * WATCHERS)
    configs, addrs = [], []
    for i in range(WATCHERS):
        p2p_port, http_port = ports[2 * i], ports[2 * i + 1]
        directory = tmp_path / f"watcher{i + 1}"
        config = write_initial_config(
            directory, f"w{i + 1}.example", f"/ip4/127.0.0.1/tcp/{p2p_port}", f"127.0.0.1:{http_port}"
        )
        peer_id = peer_id_of(load_or_create_identity(directory / "identity.key"))
        addrs.append(f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{peer_id}")
        configs.append((config, http_port))
    network = make_network(
        tmp_path / "net", ["PAK", "KSA"], corridors=[C], checkpoint_every=1,
        extra_peers={C: {"PAK": addrs, "KSA": addrs}},
    )  # fmt: skip
    watchers = []
    for i, (config, http_port) in enumerate(configs):
        for spec in network.specs.values():
            add_followed_log(
                config, corridor=C, origin=spec.origin(C), vkey=spec.log_key(C).to_vkey(),
                peers=[s.addr for s in network.specs.values()],
            )  # fmt: skip
        watchers.append(WatcherProcess(network.child(f"watcher{i + 1}"), config, http_port))
    try:
        yield network, watchers
    finally:
        network.close()
        for watcher in watchers:
            watcher.http.close()


def _bond_through_cli(network: Network, watcher: WatcherProcess) -> None:
    """``sez-watcher bond ... | sez-node submit --config PAK --corridor C -``."""
    bond = subprocess.run(
        [*_watcher_argv(), "bond", "--config", str(watcher.config), "--corridor", C, "--amount", "1000",
         "--currency", "USD", "--collateral-ref", f"escrow-{watcher.config.parent.name}"],
        capture_output=True, text=True, check=True, env=_child_env(), timeout=60,
    )  # fmt: skip
    submit = subprocess.run(
        [*_sez_node_argv(), "submit", "--config", str(network["PAK"].spec.config), "--corridor", C, "-"],
        input=bond.stdout, capture_output=True, text=True, check=False, env=_child_env(), timeout=60,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr


def _finality(network: Network, origin: str) -> dict[str, Any]:
    status = network["PAK"].status(C)
    result: dict[str, Any] = status["finality"][origin]
    result["head"] = status["log"]["size"]
    result["cosigned"] = status["counterparty_cosigned_size"]
    return result


def test_four_watchers_finalize_two_do_not(setup: tuple[Network, list[WatcherProcess]]) -> None:
    network, watchers = setup
    network.start("PAK")
    for watcher in watchers:
        assert watcher.start()["event"] == "ready"
    pak = network["PAK"]
    origin = network.specs["PAK"].origin(C)

    for watcher in watchers:
        _bond_through_cli(network, watcher)
    assert pak.status(C)["log"]["size"] == WATCHERS
    network.start("KSA")
    # Bootstrap: KSA's cosignature of PAK's checkpoint at size >= 4 makes the bonds final and active.
    wait_until(
        lambda: (f := _finality(network, origin))["active_watchers"] == WATCHERS and f,
        TIMEOUT, "the four bonds to become final (bilateral bootstrap)", network=network,
    )  # fmt: skip
    ledger = pak.http.get(f"/v1/corridors/{C}/watchers").json()
    assert ledger["active"] == 4000 and all(w["active"] for w in ledger["watchers"])

    # All four watchers cosign: new checkpoints become quorum-final.
    for index in range(3):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    head = pak.status(C)["log"]["size"]
    wait_until(
        lambda: (f := _finality(network, origin))["quorum_final_size"] >= head and f,
        TIMEOUT, f"PAK's log to be quorum-final at size >= {head}", network=network,
    )  # fmt: skip
    answer = pak.http.get(f"/v1/logs/{origin}/receipts/{head - 1}/finality").json()
    assert answer["receipt_signed"] and answer["counterparty_cosigned"] and answer["quorum_final"], answer

    # Two of four stop: the counterparty still cosigns, but nothing new becomes final.
    for watcher in watchers[2:]:
        assert watcher.child.stop() == 0  # SIGTERM
    final_before = _finality(network, origin)["quorum_final_size"]
    for index in range(3, 6):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    new_head = pak.status(C)["log"]["size"]
    wait_until(
        lambda: (f := _finality(network, origin))["cosigned"] >= new_head and f,
        TIMEOUT, "KSA to cosign PAK's new checkpoints", network=network,
    )  # fmt: skip
    time.sleep(3.0)  # time for the two remaining watchers' cosignatures to arrive
    after = _finality(network, origin)
    assert after["quorum_final_size"] == final_before < new_head, after
    answer = pak.http.get(f"/v1/logs/{origin}/receipts/{new_head - 1}/finality").json()
    assert answer["counterparty_cosigned"] and not answer["quorum_final"], answer
    for watcher in watchers[:2]:
        assert watcher.child.stop() == 0
