"""Byzantine scenario: an allowed peer attacks PAK over every gossip topic and ``/sez/sync/1``.

The attacker (:mod:`tests.faults.attacker_peer`, a real libp2p process) is one of PAK's configured
peers in PAK-KSA, so its messages reach the validators (a stranger is refused at the connection, see
``tests/integration/test_two_nodes.py``). Its plan, built here from genuine KSA material any peer
of the corridor can read:

* per gossip topic: garbage, an oversized payload (over ``MAX_GOSSIP_BYTES``), a truncated message;
* replayed: a genuine KSA receipt batch and checkpoint PAK already holds (a duplicate is a quiet
  no-op: ignored, not a fault);
* forged signatures: a receipt and a checkpoint of KSA's log signed with a stranger's key; a batch
  mixing a genuine receipt with a forged one;
* receipts for corridors the peer is not party to: a batch of a PAK-UAE log on the PAK-KSA topic,
  and a batch naming a log that is not a party of PAK-KSA;
* on ``/sez/sync/1``: garbage, a length prefix over ``MAX_SYNC_FRAME``, a truncated frame, a request
  for a log this peer may not read, a replayed valid request;
* a flood of ``flood`` garbage messages on the receipts topic.

Meanwhile KSA keeps taking transfers. Checked: PAK stays healthy and serves; every transfer KSA
acknowledged during the attack replicates to PAK; the attacker is blamed (PAK's per-peer fault
counters); KSA is not; PAK's RSS after the flood grew by less than ``RSS_BOUND``; PAK stored
nothing from the attacker (its replica of KSA equals KSA's log); fsck is clean after stop.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from protocol.checkpoints import parse_checkpoint, sign_checkpoint
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.receipts import build_receipt, genesis_root
from protocol.sync import frame
from protocol.wire import (
    MAX_GOSSIP_BYTES,
    MAX_SYNC_FRAME,
    CheckpointAnnouncement,
    GetCheckpoint,
    GetReceipts,
    ReceiptBatch,
    encode,
)
from tests.faults.harness import CORRIDOR, AckLoad, Tally, lost_receipts, stop_and_check, wait_connected
from tests.integration.netharness import (
    Network,
    make_network,
    make_peer_identity,
    transfer,
    wait_stable,
    wait_until,
)

__all__ = ["RSS_BOUND", "run_byzantine"]

RSS_BOUND = 64 * 1024 * 1024
"""Bytes PAK's resident memory may grow by across the attack (caches warming up, not the flood)."""
ATTACK_TIMEOUT = 180.0
SETTLE_TIMEOUT = 60.0


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def build_plan(network: Network, flood: int) -> list[dict[str, Any]]:
    """The attack steps (see the module docstring), from KSA's genuine receipts and checkpoint."""
    ksa = network["KSA"]
    ksa_spec = network.specs["KSA"]
    origin = ksa_spec.origin(CORRIDOR)
    note = ksa.checkpoint(origin)
    cp, _ = parse_checkpoint(note)
    genuine = [ksa.receipt(origin, seq) for seq in range(cp.size)]
    stranger = SigningKey(origin, os.urandom(32))

    def forged_receipt(signer: SigningKey, corridor: str, sequence: int = 0) -> bytes:
        return build_receipt(
            key=signer, corridor_id=corridor, sequence=sequence, timestamp="2026-01-01T00:00:00Z",
            prev_root=genesis_root(corridor, signer.name), kind="transfer",
            payload=transfer(f"forged-{sequence}"),
        ).raw  # fmt: skip

    def batch(receipts: list[bytes], *, corridor: str = CORRIDOR, log: str = origin, start: int = 0) -> bytes:
        return encode(
            ReceiptBatch(
                corridor=corridor, origin=log, start=start, receipts=tuple(receipts), checkpoint=note
            )
        )

    uae = SigningKey("sez.gov.ae/corridor/PAK-UAE", os.urandom(32))
    outsider = SigningKey("sez.example/corridor/PAK-KSA", os.urandom(32))
    replay = batch(genuine)
    plan: list[dict[str, Any]] = []
    for topic in ("receipts", "checkpoints", "cosignatures"):
        plan.append({"gossip": topic, "hex": (b"\xc1 garbage " + os.urandom(64)).hex()})
        plan.append({"gossip": topic, "hex": (b"\xc1" + os.urandom(MAX_GOSSIP_BYTES + 1024)).hex()})
        plan.append({"gossip": topic, "hex": replay[: len(replay) // 2].hex()})  # truncated
    plan += [
        {"gossip": "receipts", "hex": replay.hex()},  # replayed: PAK holds these
        {
            "gossip": "checkpoints",
            "hex": encode(CheckpointAnnouncement(corridor=CORRIDOR, origin=origin, note=note)).hex(),
        },
        {"gossip": "receipts", "hex": batch([forged_receipt(stranger, CORRIDOR)]).hex()},
        {"gossip": "receipts", "hex": batch([genuine[0], forged_receipt(stranger, CORRIDOR, 1)]).hex()},
        {
            "gossip": "checkpoints",
            "hex": encode(
                CheckpointAnnouncement(
                    corridor=CORRIDOR, origin=origin, note=format_note(sign_checkpoint(cp, stranger))
                )
            ).hex(),
        },
        {
            "gossip": "receipts",
            "hex": batch([forged_receipt(uae, "PAK-UAE")], corridor="PAK-UAE", log=uae.name).hex(),
        },
        {"gossip": "receipts", "hex": batch([forged_receipt(outsider, CORRIDOR)], log=outsider.name).hex()},
        {"sync": (b"\x00\x00\x00\x10" + os.urandom(16)).hex()},  # garbage frame
        {"sync": struct.pack(">I", MAX_SYNC_FRAME + 1).hex()},  # oversized length prefix
        {"sync": (struct.pack(">I", 1000) + os.urandom(10)).hex()},  # truncated, then half-closed
        {"sync": frame(GetReceipts(id=1, origin=uae.name, start=0, count=10)).hex()},  # not ours to read
        {"sync": (frame(GetCheckpoint(id=2, origin=origin, size=0)) * 2).hex()},  # replayed request
    ]
    if flood:
        plan.append({"flood": "receipts", "count": flood, "size": 1000})
    return plan


def faults_of(network: Network, name: str, peer: str) -> int:
    """Faults ``name`` counted against ``peer``: gossip (corridor stats) plus streams (p2p metric)."""
    node = network[name]
    gossip = int(node.status(CORRIDOR)["stats"]["peer_faults"].get(peer, 0))
    return gossip + int(node.metric("sez_peer_faults", peer=peer))


def rejected_total(network: Network, name: str) -> int:
    return sum(int(v) for v in network[name].status(CORRIDOR)["stats"]["rejected"].values())


def run_byzantine(base: Path, *, flood: int = 2000, log: Any = print) -> Tally:
    """Run the byzantine scenario under ``base``; return its tally."""
    tally = Tally("byzantine")
    attacker = make_peer_identity(base / "attacker")
    network = make_network(base / "net", ["PAK", "KSA"], corridors=[CORRIDOR],
                           extra_peers={CORRIDOR: {"PAK": [attacker.addr]}})  # fmt: skip
    load: AckLoad | None = None
    try:
        network.start()
        wait_connected(network)
        pak, ksa = network["PAK"], network["KSA"]
        for i in range(5):
            assert ksa.submit(CORRIDOR, transfer(f"KSA-early-{i}", "KSA", "PAK")).status_code == 201
        plan = build_plan(network, flood)
        plan_path = base / "plan.json"
        plan_path.write_text(json.dumps(plan))
        rss_before = rss(pak.pid)
        rejected_before = rejected_total(network, "PAK")
        child = network.child("attacker")
        load = AckLoad(ksa, "KSA-during", pause=0.02).start()
        child.spawn([
            sys.executable, "-m", "tests.faults.attacker_peer", "--key", str(attacker.key_file),
            "--listen", attacker.listen, "--allow", pak.spec.peer_id, "--connect", pak.spec.addr,
            "--corridor", CORRIDOR, "--plan", str(plan_path),
        ], stdin=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + ATTACK_TIMEOUT
        child.read_line(deadline, lambda line: line.startswith("CONNECTED "))
        sync_outcomes = [
            child.read_line(deadline, lambda line: line.startswith(("SYNC ", "MESH-TIMEOUT")))
            for _ in range(5)
        ]
        child.read_line(deadline, lambda line: line.startswith("DONE "))
        load.stop()
        tally.faults = 1
        tally.bad_inputs = len(plan) - (1 if flood else 0) + flood  # the flood step counts as its messages
        log(f"  sync outcomes: {sync_outcomes}")
        blamed = wait_until(lambda: faults_of(network, "PAK", attacker.peer_id), SETTLE_TIMEOUT,
                            "PAK to blame the attacker", network=network)  # fmt: skip
        # The attack is over once PAK's rejection counter stops moving (the flood drained).
        wait_stable(lambda: rejected_total(network, "PAK") + 1, SETTLE_TIMEOUT, "PAK's rejections to settle",
                    stable_for=2.0, network=network)  # fmt: skip
        rss_after = rss(pak.pid)
        tally.bad_inputs_rejected = (
            rejected_total(network, "PAK")
            - rejected_before
            + int(pak.metric("sez_peer_faults", peer=attacker.peer_id))
        )
        ksa_size = ksa.status(CORRIDOR)["log"]["size"]
        start = time.monotonic()
        wait_until(lambda: pak.status(CORRIDOR)["counterparty"]["size"] >= ksa_size, SETTLE_TIMEOUT,
                   f"PAK's replica of KSA to reach {ksa_size}", network=network)  # fmt: skip
        tally.converge_seconds.append(time.monotonic() - start)
        tally.acknowledged = len(load.acked)
        missing = lost_receipts(pak_view_of_ksa(network), load.acked)
        tally.lost = len(missing)
        if missing:
            tally.failures.append(f"PAK's replica lacks acknowledged KSA receipts {missing[:5]}")
        if not pak.healthy():
            tally.failures.append("PAK is not healthy after the attack")
        if faults_of(network, "PAK", ksa.spec.peer_id):
            tally.failures.append("PAK blamed honest KSA")
        growth = rss_after - rss_before
        if growth > RSS_BOUND:
            tally.failures.append(f"PAK's RSS grew by {growth / 2**20:.1f} MiB over the attack")
        tally.notes.append(
            f"attacker blamed {blamed} times; "
            f"PAK RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB; "
            f"honest transfers during the attack {len(load.acked)}; crafted inputs {len(plan) - 1}, "
            f"flood {flood}"
        )
        child.send("QUIT")
        child.close()
        stop_and_check(tally, network)
    finally:
        if load is not None:
            load.stop()
        network.close()
    return tally


class _ReplicaView:
    """Adapter so :func:`lost_receipts` reads KSA's receipts from PAK's replica."""

    def __init__(self, network: Network) -> None:
        self._pak = network["PAK"]
        self.spec = network.specs["KSA"]

    def client(self) -> Any:
        return self._pak.client()


def pak_view_of_ksa(network: Network) -> Any:
    return _ReplicaView(network)
