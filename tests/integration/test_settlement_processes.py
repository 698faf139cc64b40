"""Bilateral settlement between two ``sez-node run`` processes, PAK and KSA (issue 9).

Real OS processes, libp2p over TCP on 127.0.0.1, LMDB stores, the HTTP API and the ``sez-node`` CLI
(``netharness.py``). No watchers: the corridor runs on bilateral bootstrap finality. Every wait is
bounded and polls a state; every process is stopped also on failure.

1. Random transfers both ways are written into both logs (amounts far above 2**53 among them).
2. Once the transfers are quorum-final on both nodes, ``sez-node settle --corridor PAK-KSA`` (PAK
   proposes over ``/sez/settle/1``, KSA recomputes from its own replica and countersigns): the printed
   statement equals a plain reference sum, and both logs end up holding the same co-signed statement as
   a ``settlement`` receipt (``sez-node settlements`` on either node shows both copies).
3. A second ``sez-node settle`` with no new transfer is refused ``nothing-to-settle``.
4. A peer allowed in KSA's corridor config (``settle_peer.py``), holding PAK's log key as a PAK
   operator would, sends KSA crafted proposals over real libp2p: the settled window again
   (``window-already-settled``), a tampered statement (``statement-digest-mismatch``), a statement over
   a fresh window whose figures differ from KSA's replica, validly signed (``statement-mismatch`` with
   the differing figures), and a window ending beyond the final size (``window-not-final``). KSA
   writes nothing for any of them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoints import parse_checkpoint
from protocol.keys import SigningKey
from protocol.receipts import Receipt
from protocol.settlement import (
    Flow,
    LogWindow,
    SettlementStatement,
    build_statement,
    sign_statement,
    verify_statement,
)
from tests.integration.netharness import (
    ROOT,
    ChildProcess,
    Network,
    NodeProcess,
    make_network,
    make_peer_identity,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C = "PAK-KSA"
PEER = Path(__file__).with_name("settle_peer.py")
CONNECT_TIMEOUT = 30.0
FINAL_TIMEOUT = 60.0
CLI_TIMEOUT = 90.0


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Network, Any]]:
    peer = make_peer_identity(tmp_path / "settle-peer")
    made = make_network(
        tmp_path / "net", ["PAK", "KSA"], corridors=[C], extra_peers={C: {"KSA": [peer.addr]}}
    )
    try:
        yield made, peer
    finally:
        made.close()


def sez_node(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *argv],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
        cwd=ROOT,
    )


def transfer(n: int, sender: str, receiver: str, currency: str, amount: int) -> dict[str, Any]:
    return {
        "transfer_id": f"T-{n}",
        "sender": {"entity_id": f"acct-{sender}-{n}", "jurisdiction": sender},
        "receiver": {"entity_id": f"acct-{receiver}-{n}", "jurisdiction": receiver},
        "currency": currency,
        "amount": str(amount),
    }


def write_traffic(pak: NodeProcess, ksa: NodeProcess, seed: int, count: int) -> dict[str, list[int]]:
    """``count`` random transfers both ways into both logs; the reference sums [PAK->KSA, KSA->PAK]."""
    rnd = random.Random(seed)
    sums: dict[str, list[int]] = {}
    batches: dict[str, list[dict[str, Any]]] = {"PAK": [], "KSA": []}
    for n in range(count):
        sender, receiver = rnd.choice([("PAK", "KSA"), ("PAK", "SAU"), ("KSA", "PAK"), ("SAU", "PAK")])
        currency = rnd.choice(["USD", "SAR", "PKR"])
        amount = rnd.choice([rnd.randrange(10**6), rnd.randrange(10**35), 2**53 + 1])
        payload = transfer(n, sender, receiver, currency, amount)
        batches[rnd.choice(["PAK", "KSA"])].append({"kind": "transfer", "payload": payload})
        entry = sums.setdefault(currency, [0, 0])
        entry[0 if sender == "PAK" else 1] += amount
    for node, batch in ((pak, batches["PAK"]), (ksa, batches["KSA"])):
        response = node.http.post(f"/v1/corridors/{C}/transitions", json={"transitions": batch})
        assert response.status_code == 201, response.text
    return sums


def final_on_both(network: Network, origin: str, size: int) -> bool:
    """True once receipt ``size - 1`` of ``origin`` is quorum-final on both nodes."""
    for node in (network["PAK"], network["KSA"]):
        response = node.http.get(f"/v1/logs/{origin}/receipts/{size - 1}/finality")
        if response.status_code != 200 or not response.json()["quorum_final"]:
            return False
    return True


def listed(node: NodeProcess) -> list[dict[str, Any]]:
    """``GET /v1/corridors/C/settlements`` of ``node``."""
    response = node.http.get(f"/v1/corridors/{C}/settlements")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["settlements"]
    return result


def settlements_cli(network: Network, jurisdiction: str) -> list[dict[str, Any]]:
    """``sez-node settlements`` against ``jurisdiction``'s node."""
    result = sez_node("settlements", "--config", str(network.specs[jurisdiction].config), "--corridor", C)
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)["settlements"]
    return found


def propose(child: ChildProcess, statement: SettlementStatement) -> dict[str, Any]:
    child.send(f"PROPOSE {statement.to_bytes().hex()}")
    line = child.read_line(
        time.monotonic() + CONNECT_TIMEOUT, lambda text: text.startswith(("ANSWER", "ERROR"))
    )
    assert line.startswith("ANSWER "), line
    answer: dict[str, Any] = json.loads(line.removeprefix("ANSWER "))
    return answer


def test_settle_between_two_processes_and_refusals_over_libp2p(network: tuple[Network, Any]) -> None:
    net, peer = network
    pak, ksa = net["PAK"], net["KSA"]
    pak_spec, ksa_spec = net.specs["PAK"], net.specs["KSA"]
    pak_origin, ksa_origin = pak_spec.origin(C), ksa_spec.origin(C)
    keys = {pak_origin: pak_spec.log_key(C), ksa_origin: ksa_spec.log_key(C)}
    net.start()
    wait_until(
        lambda: pak.status(C)["peers"]["connected"] == [ksa_spec.peer_id]
        and ksa_spec.peer_id in pak.status(C)["peers"]["connected"]
        and pak_spec.peer_id in ksa.status(C)["peers"]["connected"],
        CONNECT_TIMEOUT, "PAK and KSA to connect", network=net,
    )  # fmt: skip

    # 1. Traffic both ways, then wait until it is quorum-final on both nodes.
    sums = write_traffic(pak, ksa, seed=20261127, count=120)
    heads = {pak_origin: pak.status(C)["log"]["size"], ksa_origin: ksa.status(C)["log"]["size"]}
    for origin, size in heads.items():
        wait_until(lambda o=origin, s=size: final_on_both(net, o, s), FINAL_TIMEOUT,
                   f"{origin} to be final at {size} on both nodes", network=net)  # fmt: skip

    # 2. sez-node settle on PAK: KSA countersigns; both logs carry the same statement.
    result = sez_node("settle", "--config", str(pak_spec.config), "--corridor", C)
    assert result.returncode == 0, result.stderr + net.tails()
    settled = json.loads(result.stdout)
    statement = verify_statement(settled["statement"], keys)
    assert {p.currency: [p.a_to_b.gross, p.b_to_a.gross] for p in statement.positions} == sums
    assert any(p.a_to_b.gross > 2**53 and p.b_to_a.gross > 2**53 for p in statement.positions)
    windows = {w.origin: w for w in statement.windows}
    assert windows[pak_origin].from_size == windows[ksa_origin].from_size == 0
    assert (
        windows[pak_origin].to_size >= heads[pak_origin] and windows[ksa_origin].to_size >= heads[ksa_origin]
    )
    assert settled["receipt"]["origin"] == pak_origin
    assert settled["receipt"]["transition"] == {
        "kind": "settlement", "payload": settled["statement"],
        "payload_sha256": settled["receipt"]["transition"]["payload_sha256"],
    }  # fmt: skip
    digest = statement.digest().hex()
    both = [(pak_origin, digest), (ksa_origin, digest)]
    for node in (pak, ksa):
        wait_until(lambda n=node: [(s["origin"], s["statement_digest"]) for s in listed(n)] == both,
                   FINAL_TIMEOUT, "both nodes to list the settlement in both logs", network=net)  # fmt: skip
    for jurisdiction in ("PAK", "KSA"):
        copies = settlements_cli(net, jurisdiction)
        assert [(s["origin"], s["statement_digest"]) for s in copies] == both
        assert [s["statement"] for s in copies] == [settled["statement"]] * 2
    ksa_sequence = next(s["sequence"] for s in listed(ksa) if s["origin"] == ksa_origin)
    assert json.loads(ksa.receipt(ksa_origin, ksa_sequence))["transition"]["payload"] == settled["statement"]

    # 3. Nothing new: refused locally, nothing sent.
    again = sez_node("settle", "--config", str(pak_spec.config), "--corridor", C)
    assert again.returncode == 1 and again.stderr.startswith("sez-node: nothing-to-settle:"), again.stderr

    # 4. Crafted proposals from an allowed peer over real libp2p, signed with PAK's log key.
    child = net.child("settle-peer")
    child.spawn([sys.executable, str(PEER), "--key", str(peer.key_file), "--listen", peer.listen,
                 "--allow", ksa_spec.peer_id, "--connect", ksa_spec.addr, "--corridor", C],
                stdin=subprocess.PIPE)  # fmt: skip
    assert child.read_line(time.monotonic() + CONNECT_TIMEOUT, lambda t: t.startswith("CONNECTED")) == (
        f"CONNECTED {ksa_spec.peer_id}"
    )
    pak_key = SigningKey(pak_origin, pak_spec.key.seed)

    def signed(value: SettlementStatement) -> SettlementStatement:
        bare = replace(value, signatures=())
        return bare.with_signature(sign_statement(bare, pak_key))

    answer = propose(child, signed(statement))
    assert answer["kind"] == "settle-refused" and answer["reason"] == "window-already-settled", answer

    tampered = json.loads(signed(statement).to_bytes())
    tampered["positions"][0]["a_to_b"]["count"] += 1
    child.send(f"PROPOSE {json.dumps(tampered, separators=(',', ':'), sort_keys=True).encode().hex()}")
    line = child.read_line(time.monotonic() + CONNECT_TIMEOUT, lambda t: t.startswith(("ANSWER", "ERROR")))
    assert json.loads(line.removeprefix("ANSWER "))["reason"] == "statement-digest-mismatch", line

    # A fresh window of PAK's log (KSA's stays put), final on KSA: the test nets it from KSA's replica
    # with the protocol's own netting, then proposes figures that differ, validly signed by PAK.
    write_traffic(pak, ksa, seed=7, count=10)
    head = pak.status(C)["log"]["size"]
    # KSA's latest checkpoint of PAK's log once it covers the new traffic (not before it replicated it).
    cp = wait_until(
        lambda: (latest := parse_checkpoint(ksa.checkpoint(pak_origin))[0]).size >= head and latest,
        FINAL_TIMEOUT, f"KSA to hold a checkpoint of {pak_origin} at {head}", network=net,
    )  # fmt: skip
    wait_until(lambda: final_on_both(net, pak_origin, cp.size), FINAL_TIMEOUT,
               f"{pak_origin} to be final at {cp.size}", network=net)  # fmt: skip
    old = windows[pak_origin]
    fresh = [
        LogWindow(
            origin=pak_origin, from_size=old.to_size, from_root=old.to_root, to_size=cp.size, to_root=cp.root
        ),
        replace(
            windows[ksa_origin], from_size=windows[ksa_origin].to_size, from_root=windows[ksa_origin].to_root
        ),
    ]
    receipts = [Receipt.from_bytes(ksa.receipt(pak_origin, n)) for n in range(old.to_size, cp.size)]
    honest = build_statement(
        corridor_id=C, windows=fresh, receipts=receipts, settled=statement.windows,
        final={pak_origin: {cp.size: cp.root}, ksa_origin: {fresh[1].to_size: fresh[1].to_root}},
    )  # fmt: skip
    assert honest.positions, "the fresh window holds transfers"
    first = honest.positions[0]
    way = "a_to_b" if first.a_to_b.count else "b_to_a"  # a gross over no transfer is refused earlier
    flow: Flow = getattr(first, way)
    changed = replace(first, **{way: Flow(gross=flow.gross + 10**20, count=flow.count)})
    lie = signed(replace(honest, positions=(changed, *honest.positions[1:])))
    answer = propose(child, lie)
    assert answer["reason"] == "statement-mismatch", answer
    assert {
        "field": f"positions[{first.currency}].{way}.gross",
        "proposed": str(flow.gross + 10**20),
        "computed": str(flow.gross),
    } in answer["details"]["differences"], answer

    beyond = signed(replace(honest, windows=(replace(fresh[0], to_size=cp.size + 1000), fresh[1])))
    answer = propose(child, beyond)
    assert answer["reason"] == "window-not-final" and answer["details"]["origin"] == pak_origin, answer

    # KSA wrote nothing for any refused proposal.
    assert [s["origin"] for s in listed(ksa)] == [pak_origin, ksa_origin]
    child.send("QUIT")
    assert pak.healthy() and ksa.healthy()
