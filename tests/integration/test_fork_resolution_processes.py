"""A fork resolved by quorum with real processes (issue 5, design §8): watchers on both branches slashed.

PAK and KSA run as ``sez-node run`` processes (libp2p over TCP, LMDB, HTTP; ``netharness.py``). Five
watchers, whose keys the test holds, are bonded on PAK's log and become active. A byzantine peer process
(``byzantine_peer.py``, allowed by KSA) then plays two parts on the cosignature gossip:

1. the five watchers cosign PAK's checkpoint at size ``n`` (branch A), which becomes quorum-final;
2. a byzantine PAK (the test holds PAK's log key) signs another checkpoint at size ``n`` (branch B), and
   watchers 0 and 1 cosign it too.

Both nodes detect the fork (checkpoint-form log equivocation) and halt; both detect that watchers 0 and 1
cosigned both branches and slash them (``watcher.slash`` receipts, removed from the set); KSA, whose log
is not the forked one, recomputes the stake under the certificate's ledger, finds that branch A and only A
holds a quorum (watchers 2..4 and KSA's cosignature), and writes HALTED -> ACTIVE with a quorum
resolution that PAK verifies from its own copy of the logs. Both end ACTIVE on the same history: a new
transfer is written by PAK and replicated by KSA, and KSA's replica of PAK's log has PAK's root.

``test_no_branch_with_a_quorum_stays_halted_until_both_parties_sign``: the same fork with no watchers;
the corridor stays HALTED, the lifecycle status says why, and the two-party resolution made with
``sez-node lifecycle sign`` by each party (the CLI, on each node's folder) and submitted to one node
brings both back to ACTIVE.

Every wait is bounded and polls the API; every process is stopped, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoints import Checkpoint, add_signatures, cosign, parse_checkpoint, sign_checkpoint
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import format_note, parse_note
from protocol.stake import BOND_REQUEST, sign_request
from protocol.wire import CosignatureAnnouncement, encode
from tests.integration.netharness import (
    Network,
    PeerIdentity,
    _child_env,
    _sez_node_argv,
    make_network,
    make_peer_identity,
    transfer,
    wait_stable,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

C = "PAK-KSA"
TIMEOUT = 45.0
BYZANTINE = Path(__file__).with_name("byzantine_peer.py")
W = [SigningKey(f"w{i}.example", bytes([60 + i]) * 32) for i in range(5)]
WV = [w.verifier(ALG_COSIGNATURE_V1) for w in W]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Network, PeerIdentity]]:
    byzantine = make_peer_identity(tmp_path / "byzantine")
    network = make_network(
        tmp_path / "net", ["PAK", "KSA"], corridors=[C], checkpoint_every=1,
        extra_peers={C: {"KSA": [byzantine.addr]}},
    )  # fmt: skip
    try:
        yield network, byzantine
    finally:
        network.close()


@contextlib.contextmanager
def publishing(network: Network, byzantine: PeerIdentity, name: str, messages: list[bytes]) -> Iterator[None]:
    """Publish ``messages`` on the cosignature topic from the byzantine peer, connected to KSA.

    The peer stays up (so gossipsub can deliver) while the caller waits for the effect, then quits.
    """
    path = byzantine.key_file.parent / f"{name}.json"
    path.write_text(json.dumps([{"topic": "cosignatures", "hex": m.hex()} for m in messages]))
    ksa = network["KSA"]
    child = network.child(name)
    child.spawn(
        [sys.executable, str(BYZANTINE), "--key", str(byzantine.key_file), "--listen", byzantine.listen,
         "--allow", ksa.spec.peer_id, "--connect", ksa.spec.addr, "--corridor", C, "--messages", str(path)],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        line = child.read_line(
            time.monotonic() + TIMEOUT, lambda s: s.startswith(("PUBLISHED", "MESH-", "CONNECT-"))
        )
        assert line.startswith("PUBLISHED"), f"{line}\n{child.stderr_tail()}"
        yield
        child.send("QUIT")
        child.wait()
    finally:
        child.close()


def announcement(origin: str, note: bytes, cosigner: str) -> bytes:
    return encode(CosignatureAnnouncement(corridor=C, origin=origin, cosigner=cosigner, note=note))


def bond(i: int) -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST, "watcher": WV[i].to_vkey(), "amount": "1000", "currency": "USD",
        "corridors": [C], "collateral_ref": f"escrow-{i}", "timestamp": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return sign_request(request, W[i])


def watchers(network: Network, node: str) -> dict[str, dict[str, Any]]:
    response = network[node].http.get(f"/v1/corridors/{C}/watchers")
    response.raise_for_status()
    return {w["vkey"]: w for w in response.json()["watchers"]}


def evidence_kinds(network: Network, node: str) -> list[str]:
    response = network[node].http.get(f"/v1/corridors/{C}/evidence")
    response.raise_for_status()
    return sorted(e["kind"] for e in response.json()["evidence"])


def lifecycle(network: Network, node: str) -> dict[str, Any]:
    response = network[node].http.get(f"/v1/corridors/{C}/lifecycle")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def settle(network: Network) -> int:
    """Wait until PAK's log is quiet, replicated by KSA and cosigned by KSA at its head; its size."""
    pak, ksa = network["PAK"], network["KSA"]
    origin = network.specs["PAK"].origin(C)

    def snapshot() -> tuple[int, int] | None:
        size = pak.status(C)["log"]["size"]
        counterparty = ksa.status(C)["counterparty"]
        if counterparty["size"] != size or counterparty["cosigned_size"] != size:
            return None
        ksa.checkpoint(origin, size)  # KSA stores PAK's checkpoint at that size
        return size, ksa.status(C)["log"]["size"]

    return wait_stable(snapshot, TIMEOUT, "PAK's log to settle at KSA", network=network)[0]


def fork_note(network: Network, size: int) -> bytes:
    """Branch B: PAK's log key signs another root at ``size``."""
    spec = network.specs["PAK"]
    key = SigningKey(spec.origin(C), spec.key.seed)
    return format_note(sign_checkpoint(Checkpoint(origin=spec.origin(C), size=size, root=b"\xbb" * 32), key))


def cosigned_by(note: bytes, indices: range | list[int]) -> bytes:
    cp, parsed = parse_checkpoint(note)
    lines = [cosign(cp, W[i], int(time.time())) for i in indices]
    return format_note(add_signatures(parse_note(format_note(parsed)), lines))


def halted(network: Network, node: str) -> dict[str, Any] | None:
    status: dict[str, Any] = network[node].status(C)
    return status if status["halted"] and status["forks"] else None


def test_watchers_on_both_branches_are_slashed_and_the_quorum_branch_wins(
    setup: tuple[Network, PeerIdentity],
) -> None:
    network, byzantine = setup
    pak, ksa = network["PAK"], network["KSA"]
    origin = network.specs["PAK"].origin(C)
    # Bonds while KSA is down: one checkpoint covers all five, KSA's cosignature makes them final together.
    network.start("PAK")
    for i in range(5):
        response = pak.submit(C, bond(i), kind="watcher.bond")
        assert response.status_code == 201, response.text
    network.start("KSA")
    for node in ("PAK", "KSA"):
        wait_until(
            lambda node=node: sum(w["active"] for w in watchers(network, node).values()) == 5,
            TIMEOUT, f"{node} to count five active watchers", network=network,
        )  # fmt: skip
    assert pak.submit(C, transfer("before-fork")).status_code == 201
    size = settle(network)

    # Branch A: every watcher cosigns PAK's checkpoint at `size`; it becomes quorum-final at KSA.
    note_a = cosigned_by(ksa.checkpoint(origin, size), range(5))
    with publishing(network, byzantine, "cosign-a", [announcement(origin, note_a, "watchers")]):
        wait_until(
            lambda: ksa.status(C)["finality"][origin]["quorum_final_size"] >= size,
            TIMEOUT, "branch A to be quorum-final at KSA", network=network,
        )  # fmt: skip

    # Branch B: PAK's key signs another root at `size`; watchers 0 and 1 cosign it as well.
    note_b = cosigned_by(fork_note(network, size), [0, 1])
    with publishing(network, byzantine, "cosign-b", [announcement(origin, note_b, "w")]):
        wait_until(
            lambda: "log-equivocation" in evidence_kinds(network, "KSA"),
            TIMEOUT, "KSA to hold the fork evidence", network=network,
        )  # fmt: skip
    # Both halt (briefly: KSA resolves as soon as the slashes are in its log), then both resolve.
    equivocators = {WV[0].to_vkey(), WV[1].to_vkey()}
    for node in ("KSA", "PAK"):
        state = wait_until(
            lambda node=node: (lc := lifecycle(network, node))["state"] == "ACTIVE"
            and lc["history"][-1]["from"] == "HALTED" and lc,
            TIMEOUT, f"{node} to halt on the fork and resolve it by quorum", network=network,
        )  # fmt: skip
        moves = [(t["from"], t["to"]) for t in state["history"]]
        assert moves[-2:] == [("ACTIVE", "HALTED"), ("HALTED", "ACTIVE")], moves
        assert state["history"][-1]["reason"].startswith("quorum resolution"), state["history"][-1]
        assert state["forks"] == [] and state["effective_state"] == "ACTIVE"
        assert not network[node].status(C)["halted"]
        evidence = network[node].http.get(f"/v1/corridors/{C}/evidence").json()["evidence"]
        assert evidence_kinds(network, node) == [
            "log-equivocation", "watcher-equivocation", "watcher-equivocation"
        ]  # fmt: skip
        assert {e["offender"] for e in evidence if e["kind"] == "watcher-equivocation"} == equivocators
        entries = wait_until(
            lambda node=node: (e := watchers(network, node)) and all(e[v]["removed"] for v in equivocators)
            and e,
            TIMEOUT, f"{node} to apply the slashes", network=network,
        )  # fmt: skip
        assert all(entries[v]["slashed"] == 1000 and not entries[v]["active"] for v in equivocators)
        assert all(entries[v]["active"] for v in set(entries) - equivocators)
    fork = lifecycle(network, "KSA")["fork"]
    assessment = fork["assessment"]
    assert assessment["decision"]["branch"]["size"] == size
    assert set(assessment["slashed"]) == equivocators
    branches = {b["source"]: b for b in assessment["branches"]}
    assert branches["held"]["quorum"] and branches["held"]["cosigners"] == sorted(
        WV[i].to_vkey() for i in (2, 3, 4)
    )
    (kept,) = [b for s, b in branches.items() if s.startswith("kept:")]
    assert not kept["quorum"] and kept["cosigners"] == [] and kept["root"] == (b"\xbb" * 32).hex()
    assert fork["kept_branches"][origin] == [{"size": size, "root": (b"\xbb" * 32).hex()}]

    # Both carry on from the canonical branch: one history.
    assert pak.submit(C, transfer("after-resolution")).status_code == 201
    final = settle(network)
    assert final > size
    assert ksa.checkpoint(origin, final).split(b"\n")[:3] == pak.checkpoint(origin, final).split(b"\n")[:3]
    assert pak.healthy() and ksa.healthy()


def cli(network: Network, party: str, *args: str) -> str:
    """``sez-node ARGS --config <party>/node.toml --corridor C`` (a real CLI process); its stdout."""
    config = ["--config", str(network.specs[party].config), "--corridor", C]
    argv = [*_sez_node_argv(), *args[:2], *config, *args[2:]] if args[0] == "lifecycle" else [
        *_sez_node_argv(), args[0], *config, *args[1:]
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_child_env(), check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def test_no_branch_with_a_quorum_stays_halted_until_both_parties_sign(
    setup: tuple[Network, PeerIdentity], tmp_path: Path
) -> None:
    network, byzantine = setup
    pak, ksa = network["PAK"], network["KSA"]
    origin = network.specs["PAK"].origin(C)
    network.start()
    assert pak.submit(C, transfer("before-fork")).status_code == 201
    size = settle(network)
    head = parse_checkpoint(ksa.checkpoint(origin, size))[0]

    with publishing(network, byzantine, "fork", [announcement(origin, fork_note(network, size), "w")]):
        for node in ("PAK", "KSA"):
            wait_until(lambda node=node: halted(network, node), TIMEOUT, f"{node} to halt", network=network)
    # No watcher is bonded: no branch can hold a quorum, and the status says so; nothing resolves.
    reason = wait_until(
        lambda: (lc := lifecycle(network, "KSA"))["state"] == "HALTED"
        and (lc["fork"]["assessment"] or {}).get("reason"),
        TIMEOUT, "KSA to assess the fork", network=network,
    )  # fmt: skip
    assert "two-party" in reason, reason
    assert lifecycle(network, "PAK")["state"] == "HALTED"

    # The way out: the operators read the branches from the status, both parties sign a two-party
    # resolution naming branch A with `sez-node lifecycle sign`, and KSA submits it with `sez-node submit`.
    branches = lifecycle(network, "KSA")["fork"]["assessment"]["branches"]
    (held,) = [b for b in branches if b["source"] == "held"]
    assert (held["size"], held["root"], held["quorum"]) == (size, head.root.hex(), False)
    first, both = tmp_path / "resolution.json", tmp_path / "resolution-signed.json"
    cli(network, "PAK", "lifecycle", "sign", "--from", "HALTED", "--to", "ACTIVE",
        "--reason", "two-party resolution: the branch KSA replicated", "--branch-origin", held["origin"],
        "--branch-size", str(held["size"]), "--branch-root", held["root"], "--out", str(first))  # fmt: skip
    cli(network, "KSA", "lifecycle", "sign", str(first), "--out", str(both))
    signed = json.loads(both.read_text())["payload"]
    assert sorted(s["party"] for s in signed["signatures"]) == ["KSA", "PAK"]
    assert signed["resolution"] == {"method": "two-party", "branch": {"origin": origin, "size": size,
                                                                      "root": head.root.hex()}}  # fmt: skip
    cli(network, "KSA", "submit", str(both))
    for node in ("KSA", "PAK"):
        wait_until(
            lambda node=node: lifecycle(network, node)["state"] == "ACTIVE" and not halted(network, node),
            TIMEOUT, f"{node} to resume after the two-party resolution", network=network,
        )  # fmt: skip
    assert pak.submit(C, transfer("after-resolution")).status_code == 201
    assert settle(network) > size
