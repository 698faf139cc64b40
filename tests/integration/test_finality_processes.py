"""Quorum finality with real processes: a PAK-KSA pair of ``sez-node run`` and four ``sez-watcher run``.

The four watchers are bonded through the CLI flow (``sez-watcher bond`` piped into ``sez-node submit``,
on PAK's log) while KSA is still down, so that one checkpoint covers all four bonds; KSA then starts and
cosigns it, and the bonds become final by bilateral (bootstrap) finality. (Bonded one checkpoint at a
time, the first final bond would make its single watcher the whole active set, and with
``min_watchers = 3`` nothing could become final after it: see ``node.quorum``.) With all four watchers
cosigning, PAK's new checkpoints become quorum-final; with one stopped (SIGTERM), 3 of 4 equal stakes
still are. With two stopped, 2 of 4 are not more than 2/3 and fewer than ``min_watchers``: new
checkpoints do not become final. Then watcher 1 unbonds while watcher 4 comes back: three watchers
cosign but only two count, 2000 of the 3000 still active: not final. Each "not final" is read from the
node's record of its decision on a checkpoint covering the new receipt, never after a fixed sleep.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.netharness import (
    ACTIVATION_RECEIPTS,
    Network,
    _child_env,
    _sez_node_argv,
    transfer,
    wait_until,
)
from tests.integration.test_watcher_process import WatcherProcess, _watcher_argv
from tests.integration.watched import make_watched_network

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

C = "PAK-KSA"
TIMEOUT = 90.0
WATCHERS = 4


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Network, list[WatcherProcess]]]:
    network, folders = make_watched_network(tmp_path, WATCHERS, corridor=C)
    watchers = [WatcherProcess(network.child(f.name), f.config, f.http_port) for f in folders]
    try:
        yield network, watchers
    finally:
        network.close()
        for watcher in watchers:
            watcher.http.close()


def _watcher_request_through_cli(network: Network, watcher: WatcherProcess, action: str) -> None:
    """``sez-watcher bond|unbond ... | sez-node submit --config PAK --corridor C -``."""
    argv = [*_watcher_argv(), action, "--config", str(watcher.config), "--corridor", C]
    if action == "bond":
        argv += [
            "--amount",
            "1000",
            "--currency",
            "USD",
            "--collateral-ref",
            f"escrow-{watcher.config.parent.name}",
        ]
    request = subprocess.run(argv, capture_output=True, text=True, check=True, env=_child_env(), timeout=60)
    submit = subprocess.run(
        [*_sez_node_argv(), "submit", "--config", str(network["PAK"].spec.config), "--corridor", C, "-"],
        input=request.stdout, capture_output=True, text=True, check=False, env=_child_env(), timeout=60,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr


def _finality(network: Network, origin: str) -> dict[str, Any]:
    status = network["PAK"].status(C)
    result: dict[str, Any] = status["finality"][origin]
    result["head"] = status["log"]["size"]
    result["cosigned"] = status["counterparty_cosigned_size"]
    return result


def _grow_until_decided(network: Network, origin: str, label: str, cosigners: int) -> dict[str, Any]:
    """Submit a transfer, then wait for the decision on a checkpoint covering it with ``cosigners`` counted.

    The decision is the node's own record of the figures (``last_decision``): waiting for it, not for
    time, is what makes a "not final" outcome a result rather than a race.
    """
    assert network["PAK"].submit(C, transfer(label)).status_code == 201
    head = network["PAK"].status(C)["log"]["size"]

    def decided() -> dict[str, Any] | None:
        finality = _finality(network, origin)
        decision = finality["last_decision"]
        if not decision or decision["size"] < head:
            return None
        # Decided with everything in: final, or the counterparty's and the expected watchers' lines counted.
        complete = "counterparty" not in decision["missing"] and decision["cosigners"] >= cosigners
        return finality if decision["final"] or complete else None

    return wait_until(decided, TIMEOUT, f"a decision on PAK's checkpoint >= {head}", network=network)


def test_three_of_four_by_stake_finalize_two_do_not(setup: tuple[Network, list[WatcherProcess]]) -> None:
    """4 and 3 of 4 (by stake) finalize; 2 of 4 do not; an unbonded watcher's cosignature never counts."""
    network, watchers = setup
    network.start("PAK")
    for watcher in watchers:
        assert watcher.start()["event"] == "ready"
    pak = network["PAK"]
    origin = network.specs["PAK"].origin(C)

    for watcher in watchers:
        _watcher_request_through_cli(network, watcher, "bond")
    assert pak.status(C)["log"]["size"] == ACTIVATION_RECEIPTS + WATCHERS
    network.start("KSA")
    # Bootstrap: KSA's cosignature of PAK's checkpoint at size >= 4 makes the bonds final and active.
    wait_until(
        lambda: (f := _finality(network, origin))["active_watchers"] == WATCHERS and f,
        TIMEOUT, "the four bonds to become final (bilateral bootstrap)", network=network,
    )  # fmt: skip
    ledger = pak.http.get(f"/v1/corridors/{C}/watchers").json()
    assert ledger["active"] == 4000 and all(w["active"] for w in ledger["watchers"])

    # All four watchers cosign: a new checkpoint becomes quorum-final.
    after = _grow_until_decided(network, origin, "PAK-4of4", cosigners=4)
    assert after["last_decision"]["final"] and after["quorum_final_size"] >= after["last_decision"]["size"]
    answer = pak.http.get(f"/v1/logs/{origin}/receipts/{after['head'] - 1}/finality").json()
    assert answer["receipt_signed"] and answer["counterparty_cosigned"] and answer["quorum_final"], answer

    # Three of four (3000 of 4000 > 2/3, three keys): still final.
    assert watchers[3].child.stop() == 0  # SIGTERM
    after = _grow_until_decided(network, origin, "PAK-3of4", cosigners=3)
    decision = after["last_decision"]
    assert decision["final"] and decision["cosigning_stake"] == 3000 and decision["active_stake"] == 4000, (
        after
    )

    # Two of four (2000 of 4000, two keys): the counterparty still cosigns, nothing new becomes final.
    assert watchers[2].child.stop() == 0
    final_before = _finality(network, origin)["quorum_final_size"]
    after = _grow_until_decided(network, origin, "PAK-2of4", cosigners=2)
    decision = after["last_decision"]
    assert not decision["final"] and set(decision["missing"]) == {"stake", "watchers"}, after
    assert decision["cosigning_stake"] == 2000 and after["quorum_final_size"] == final_before
    answer = pak.http.get(f"/v1/logs/{origin}/receipts/{after['head'] - 1}/finality").json()
    assert answer["counterparty_cosigned"] and not answer["quorum_final"], answer

    # Watcher 1 unbonds while watcher 4 comes back: three watchers cosign, but the unbonded stake
    # stops counting at once: 2000 of the 3000 still active is not more than 2/3.
    _watcher_request_through_cli(network, watchers[0], "unbond")
    assert watchers[3].start()["event"] == "ready"
    wait_until(
        lambda: (f := _finality(network, origin))["active_stake"] == 3000 and f,
        TIMEOUT, "the unbond to take watcher 1's stake out at once", network=network,
    )  # fmt: skip
    after = _grow_until_decided(network, origin, "PAK-unbonded", cosigners=2)
    decision = after["last_decision"]
    assert not decision["final"] and decision["active_stake"] == 3000, after
    assert decision["cosigning_stake"] == 2000 and decision["cosigners"] == 2, after
    unbonded = next(
        w for w in pak.http.get(f"/v1/corridors/{C}/watchers").json()["watchers"] if not w["active"]
    )
    assert unbonded["unbonding_since"] and unbonded["bonded"] == 1000
    for watcher in (watchers[0], watchers[1], watchers[3]):
        assert watcher.child.stop() == 0
