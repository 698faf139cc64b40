"""Light clients against real processes (issue 8): ``sez-node policy export``, ``sez-node proof``,
``sez-light verify`` and ``sez-light follow`` as separate OS processes, against ``sez-node run``.

1. Two nodes (PAK, KSA on PAK-KSA) and four bonded watchers (the fixture and bonding flow of
   ``test_finality_processes``): the policy both nodes export is the same, a bundle of a quorum-final
   receipt from ``sez-node proof`` verifies under it with ``sez-light verify`` (JSON and tlog-policy
   forms); with two watchers stopped, a new receipt is refused as ``not-final`` by ``sez-node proof``,
   and its bundle taken with ``--size`` is rejected by ``sez-light verify``; ``sez-light follow --once``
   accepts both logs.
2. A forked log: PAK's data directory is copied while PAK is stopped; PAK then writes receipts A and
   ``sez-light follow`` trusts that checkpoint; PAK is stopped, its data directory restored from the
   copy, restarted and fed different receipts B. The same log key now signs checkpoints that do not
   extend the one the follower holds: ``follow`` exits 3 and writes evidence holding both signed
   checkpoints, for the same size (``checkpoint-fork``) and for a larger one (``inconsistent-checkpoints``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.light_follow import open_followed_checkpoint
from protocol.policy import TrustPolicy, parse_policy
from tests.integration.netharness import (
    ACTIVATION_RECEIPTS,
    Network,
    _child_env,
    _sez_node_argv,
    make_network,
    transfer,
    wait_until,
)
from tests.integration.test_finality_processes import (  # noqa: F401 - setup is a fixture
    WATCHERS,
    _finality,
    _watcher_request_through_cli,
    setup,
)
from tests.integration.test_watcher_process import WatcherProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

C = "PAK-KSA"
TIMEOUT = 90.0
SEZ_LIGHT = Path(sys.executable).parent / "sez-light"


def run(*argv: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, env=_child_env(), timeout=timeout
    )


def sez_node(*argv: object) -> subprocess.CompletedProcess[str]:
    return run(*_sez_node_argv(), *argv)


def export(network: Network, jurisdiction: str, out: Path, fmt: str = "json") -> TrustPolicy:
    config = network.specs[jurisdiction].config
    done = sez_node("policy", "export", "--config", config, "--corridor", C, "--format", fmt, "--out", out)
    assert done.returncode == 0, done.stderr
    return parse_policy(out.read_bytes())


def test_bundles_from_a_running_network_verify(
    setup: tuple[Network, list[WatcherProcess]],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    network, watchers = setup
    network.start("PAK")
    for watcher in watchers:
        assert watcher.start()["event"] == "ready"
    pak = network["PAK"]
    origin = network.specs["PAK"].origin(C)
    for watcher in watchers:
        _watcher_request_through_cli(network, watcher, "bond")
    network.start("KSA")
    wait_until(
        lambda: _finality(network, origin)["active_watchers"] == WATCHERS, TIMEOUT,
        "the four bonds to become final (bilateral bootstrap)", network=network,
    )  # fmt: skip
    for index in range(3):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    head = pak.status(C)["log"]["size"]
    wait_until(
        lambda: _finality(network, origin)["quorum_final_size"] >= head, TIMEOUT,
        f"PAK's log to be quorum-final at size >= {head}", network=network,
    )  # fmt: skip

    # The policy: the same from both parties, in both forms; four watchers of 1000 each.
    policy_json = tmp_path / "policy.json"
    policy = export(network, "PAK", policy_json)
    assert not policy.bootstrap and sorted(w.stake for w in policy.watchers) == [1000] * WATCHERS
    ksa_policy = tmp_path / "policy-ksa.txt"
    wait_until(
        lambda: export(network, "KSA", ksa_policy, "tlog-policy").to_json() == policy.to_json(), TIMEOUT,
        "KSA to export the same policy as PAK", network=network,
    )  # fmt: skip
    assert ksa_policy.read_text().startswith("# Trust policy of sez corridor PAK-KSA")

    # A quorum-final receipt: sez-node proof takes the quorum-final checkpoint; sez-light verifies it.
    bundle = tmp_path / "bundle.txt"
    config = network.specs["PAK"].config
    proof = ["proof", "--config", config, "--corridor", C, "--origin", origin]
    done = sez_node(*proof, "--sequence", head - 1, "--out", bundle)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["quorum_final"] is True and printed["checkpoint_quorum_final"] is True
    assert printed["size"] == printed["quorum_final_size"] >= head
    for policy_file in (policy_json, ksa_policy):
        verified = run(SEZ_LIGHT, "verify", bundle, "--policy", policy_file)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        verdict = verified.stdout.splitlines()[-1]
        assert verdict.startswith(f"VERIFIED: receipt {origin}#{head - 1} (transfer)")
        assert "ok   quorum: " in verified.stdout
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(pak.receipt(origin, head - 1))
    assert run(SEZ_LIGHT, "verify", bundle, "--policy", policy_json, "--receipt", receipt).returncode == 0
    receipt.write_bytes(pak.receipt(origin, head - 2))
    other = run(SEZ_LIGHT, "verify", bundle, "--policy", policy_json, "--receipt", receipt)
    assert other.returncode == 1 and other.stderr.startswith("REJECTED: receipt-mismatch: "), other.stderr

    # sez-light follow: both logs, once.
    followed = run(SEZ_LIGHT, "follow", "--node", pak.spec.base_url, "--policy", policy_json,
                   "--state", tmp_path / "state", "--once")  # fmt: skip
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert followed.stdout.count("trusting first checkpoint") == 2

    # Two of four watchers stop: a new receipt is cosigned by KSA but not quorum-final.
    for watcher in watchers[2:]:
        assert watcher.child.stop() == 0
    assert pak.submit(C, transfer("PAK-late")).status_code == 201
    late = pak.status(C)["log"]["size"]
    wait_until(
        lambda: _finality(network, origin)["cosigned"] >= late, TIMEOUT,
        "KSA to cosign PAK's new checkpoint", network=network,
    )  # fmt: skip
    refused = sez_node(*proof, "--sequence", late - 1, "--out", tmp_path / "late.txt")
    assert refused.returncode == 1
    assert refused.stderr.startswith("sez-node: not-final: "), refused.stderr
    assert not (tmp_path / "late.txt").exists()
    taken = sez_node(*proof, "--sequence", late - 1, "--size", late, "--out", tmp_path / "late.txt")
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["quorum_final"] is False
    rejected = run(SEZ_LIGHT, "verify", tmp_path / "late.txt", "--policy", policy_json)
    assert rejected.returncode == 1
    assert rejected.stderr.startswith(("REJECTED: insufficient-stake: ", "REJECTED: too-few-watchers: "))


def test_follow_catches_a_forked_log(tmp_path: Path) -> None:
    network = make_network(tmp_path / "net", ["PAK", "KSA"], corridors=[C], checkpoint_every=1)
    try:
        pak = network["PAK"]
        spec = network.specs["PAK"]
        origin = spec.origin(C)
        network.start("PAK")  # KSA stays down: PAK writes its own log alone
        for index in range(2):
            assert pak.submit(C, transfer(f"common-{index}")).status_code == 201
        assert pak.stop() == 0
        backup = tmp_path / "backup"
        shutil.copytree(spec.data_dir, backup)

        pak.start()
        for index in range(3):
            assert pak.submit(C, transfer(f"A-{index}")).status_code == 201
        policy_file = tmp_path / "policy.json"
        export(network, "PAK", policy_file)
        state = tmp_path / "state"
        follow = [SEZ_LIGHT, "follow", "--node", spec.base_url, "--policy", policy_file, "--origin", origin]
        trusted = run(*follow, "--state", state, "--once")
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        size = ACTIVATION_RECEIPTS + 5
        assert f"trusting first checkpoint: size {size}" in trusted.stdout
        state_copy = tmp_path / "state-copy"
        shutil.copytree(state, state_copy)

        # Restore the earlier copy of the data directory and write different receipts.
        assert pak.stop() == 0
        shutil.rmtree(spec.data_dir)
        shutil.copytree(backup, spec.data_dir)
        pak.start()
        for index in range(3):
            assert pak.submit(C, transfer(f"B-{index}", amount=7)).status_code == 201
        assert pak.status(C)["log"]["size"] == size

        same_size = run(*follow, "--state", state, "--once")
        assert same_size.returncode == 3, same_size.stdout + same_size.stderr
        assert "ALARM: checkpoint-fork: " in same_size.stdout
        [evidence_file] = (state / "evidence").iterdir()
        evidence = json.loads(evidence_file.read_text())
        policy = parse_policy(policy_file.read_bytes())
        old = open_followed_checkpoint(evidence["old"]["checkpoint"].encode(), policy, origin)
        new = open_followed_checkpoint(evidence["new"]["checkpoint"].encode(), policy, origin)
        assert old.checkpoint.size == new.checkpoint.size == size
        assert old.checkpoint.root != new.checkpoint.root  # both signed by PAK's log key

        assert pak.submit(C, transfer("B-3", amount=7)).status_code == 201
        larger = run(*follow, "--state", state_copy, "--once")
        assert larger.returncode == 3, larger.stdout + larger.stderr
        assert "ALARM: inconsistent-checkpoints: " in larger.stdout
        assert (
            f"old {size}/{old.checkpoint.root.hex()}" in larger.stdout and f"new {size + 1}/" in larger.stdout
        )
        [evidence_file] = (state_copy / "evidence").iterdir()
        assert json.loads(evidence_file.read_text())["reason"] == "inconsistent-checkpoints"
    finally:
        network.close()
