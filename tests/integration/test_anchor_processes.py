"""Anchoring with real processes: a PAK-KSA pair of ``sez-node run``, both anchoring on a real anvil.

PAK and KSA each anchor their own log's quorum-final checkpoints (bilateral finality: no watchers)
with their own key. The test checks, through the HTTP API and the chain itself: PAK's anchor is
confirmed and verifies from the chain; the finality endpoint says ``anchored``; a proof bundle with
``?anchor=1`` carries the record and verifies as a light client would; KSA received PAK's anchor by
gossip and, having verified it from the chain, reports PAK's receipt anchored too. Then the RPC
node is stopped: receipts and finality go on, the failure is reported in the status, and after
anvil restarts (with its state) anchoring resumes and confirms the new checkpoint.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.anchor import AnchorRecord, join_bundle_extra, split_bundle_extra, verify_anchor
from protocol.errors import PeerProtocolError
from protocol.light import verify_receipt_bundle
from protocol.tlog_proof import TlogProof
from tests.bench import anchoring as bench
from tests.integration.anvil import CHAIN_ID, DEV_KEY, DEV_KEY_2, Anvil, require_anvil
from tests.integration.netharness import ROOT, Network, _child_env, make_network, transfer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

C = "PAK-KSA"
TIMEOUT = 60.0
CONFIRMATIONS = 2


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Network, Anvil]]:
    require_anvil()
    chain = Anvil(tmp_path, state=True)
    chain.start()
    common = {"chain_id": CHAIN_ID, "rpc_url": chain.url, "every_checkpoints": 1, "every_seconds": 1,
              "confirmations": CONFIRMATIONS, "poll_seconds": 0.2}  # fmt: skip
    network = make_network(
        tmp_path / "net", ["PAK", "KSA"], corridors=[C], checkpoint_every=1,
        anchor={"PAK": {**common, "key": DEV_KEY}, "KSA": {**common, "key": DEV_KEY_2}},
    )  # fmt: skip
    try:
        yield network, chain
    finally:
        network.close()
        chain.stop()


def _anchors(network: Network, name: str) -> dict[str, Any]:
    response = network[name].http.get(f"/v1/corridors/{C}/anchors")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _confirmed(
    network: Network, name: str, origin: str, chain: Anvil, min_size: int = 1
) -> AnchorRecord | None:
    """The newest confirmed anchor of ``origin`` that ``name`` holds (mining a block per poll)."""
    chain.mine()
    records = [AnchorRecord.from_json(r) for r in _anchors(network, name)["anchors"]]
    done = [r for r in records if r.origin == origin and r.state == "confirmed" and r.size >= min_size]
    return done[-1] if done else None


def _verify_on_chain(chain: Anvil, record: AnchorRecord, log_key: Any) -> None:
    receipt = chain.call("eth_getTransactionReceipt", record.tx_hash)
    verify_anchor(
        record, tx=chain.call("eth_getTransactionByHash", record.tx_hash), receipt=receipt,
        block=chain.call("eth_getBlockByNumber", receipt["blockNumber"], False),
        head=int(chain.call("eth_blockNumber"), 16), confirmations=CONFIRMATIONS, log_key=log_key,
    )  # fmt: skip


def _light(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "sez-light"), *args], capture_output=True, text=True, timeout=60,
        check=False, env=_child_env(),
    )  # fmt: skip


def test_two_nodes_anchor_on_anvil(setup: tuple[Network, Anvil], tmp_path: Path) -> None:
    network, chain = setup
    network.start("PAK", "KSA")
    pak, ksa = network["PAK"], network["KSA"]
    origin = network.specs["PAK"].origin(C)
    log_key = network.specs["PAK"].log_key(C)
    for index in range(3):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201

    record = wait_until(lambda: _confirmed(network, "PAK", origin, chain), TIMEOUT,
                        "PAK's first anchor to be confirmed", network=network)  # fmt: skip
    _verify_on_chain(chain, record, log_key)
    finality = pak.http.get(f"/v1/logs/{origin}/receipts/0/finality").json()
    assert finality["quorum_final"] and finality["anchored"] and finality["anchored_size"] >= 1, finality
    assert pak.metric("sez_anchored_size", corridor=C, origin=origin) >= record.size
    status = pak.status(C)["anchoring"]
    assert status["enabled"] and status["chain_id"] == CHAIN_ID and status["stats"]["confirmed"] >= 1

    # A proof bundle with the anchor: proven against the anchored checkpoint, record in extra.
    response = pak.http.get(f"/v1/logs/{origin}/proof/0", params={"anchor": "1"})
    assert response.status_code == 200, response.text
    bundle = TlogProof.decode(response.content)
    assert bundle.extra is not None
    _, carried = split_bundle_extra(bundle.extra)
    assert carried is not None and carried.state == "confirmed"
    verdict = verify_receipt_bundle(response.content, log_key)
    assert verdict.checkpoint.size == carried.size and any("anchor record" in c for c in verdict.checks)
    _verify_on_chain(chain, carried, log_key)
    # sez-light verify --rpc: the bundle under the exported policy, then its anchor on the chain itself.
    policy = tmp_path / "policy.json"
    policy.write_bytes(pak.http.get(f"/v1/corridors/{C}/policy").content)
    anchored = tmp_path / "anchored.bundle"
    anchored.write_bytes(response.content)
    done = _light(
        "verify", str(anchored), "--policy", str(policy), "--rpc", chain.url, "--confirmations", "2"
    )
    assert done.returncode == 0 and "ANCHORED:" in done.stdout, done.stdout + done.stderr
    # A record naming another transaction (the digest still matches): the chain says no.
    nowhere = "0x" + "ab" * 32
    forged = dataclasses.replace(carried, tx_hash=nowhere, attempts=(nowhere,))
    forged_bundle = tmp_path / "forged.bundle"
    receipt_only, _ = split_bundle_extra(bundle.extra)
    forged_bundle.write_bytes(
        TlogProof(index=bundle.index, proof=bundle.proof, checkpoint=bundle.checkpoint,
                  extra=join_bundle_extra(receipt_only, forged)).encode()
    )  # fmt: skip
    done = _light("verify", str(forged_bundle), "--policy", str(policy), "--rpc", chain.url)
    assert done.returncode == 1 and done.stderr.startswith("REJECTED: anchor-tx-missing"), (
        done.stdout + done.stderr
    )
    # A receipt beyond every confirmed anchor has no anchored bundle.
    head = pak.status(C)["log"]["size"]
    missing = pak.http.get(f"/v1/logs/{origin}/proof/{head - 1}", params={"anchor": "1"})
    if missing.status_code != 200:
        assert missing.json()["type"] == "urn:sez:problem:not-found"

    # KSA got PAK's anchor by gossip, verified it from the chain, and counts PAK's receipt anchored.
    wait_until(lambda: _confirmed(network, "KSA", origin, chain), TIMEOUT,
               "KSA to store PAK's confirmed anchor", network=network)  # fmt: skip
    assert ksa.http.get(f"/v1/logs/{origin}/receipts/0/finality").json()["anchored"]
    # KSA anchors its own log too (its acks), with its own key.
    ksa_origin = network.specs["KSA"].origin(C)
    ksa_record = wait_until(lambda: _confirmed(network, "KSA", ksa_origin, chain), TIMEOUT,
                            "KSA's own anchor", network=network)  # fmt: skip
    assert ksa_record.sender != record.sender
    # A bundle whose anchor record anchors another checkpoint fails offline, with its reason.
    receipt_bytes, _ = split_bundle_extra(bundle.extra)
    swapped = TlogProof(index=bundle.index, proof=bundle.proof, checkpoint=bundle.checkpoint,
                        extra=join_bundle_extra(receipt_bytes, ksa_record))  # fmt: skip
    with pytest.raises(PeerProtocolError) as info:
        verify_receipt_bundle(swapped.encode(), log_key)
    assert info.value.reason == "anchor-digest-mismatch"

    # The RPC node goes away: receipts and finality go on; the failure is reported, not fatal.
    anchored_before = pak.status(C)["anchoring"]["anchored_size"][origin]
    chain.stop()
    for index in range(3, 6):
        assert pak.submit(C, transfer(f"PAK-{index}")).status_code == 201
    head = pak.status(C)["log"]["size"]
    wait_until(lambda: pak.status(C)["finality"][origin]["quorum_final_size"] >= head, TIMEOUT,
               "PAK's new checkpoint to be final while the RPC node is down", network=network)  # fmt: skip
    wait_until(lambda: pak.status(C)["anchoring"]["stats"]["consecutive_failures"] > 0, TIMEOUT,
               "the RPC failure to be reported", network=network)  # fmt: skip
    stats = pak.status(C)["anchoring"]["stats"]
    assert stats["last_error"].startswith("rpc-unavailable") and pak.healthy()
    assert pak.status(C)["anchoring"]["anchored_size"][origin] == anchored_before

    # anvil comes back with its state: anchoring resumes and anchors the new final checkpoint.
    chain.start()
    later = wait_until(
        lambda: _confirmed(network, "PAK", origin, chain, head), TIMEOUT * 2,
        f"an anchor at size >= {head} after the RPC node returned", network=network,
    )  # fmt: skip
    _verify_on_chain(chain, later, log_key)
    assert pak.http.get(f"/v1/logs/{origin}/receipts/{head - 1}/finality").json()["anchored"]


def test_anchoring_benchmark_smoke(tmp_path: Path) -> None:
    """``python -m tests.bench anchoring`` runs end to end on a few receipts (behaviour, never timing)."""
    require_anvil()
    lines: list[str] = []
    summary = bench.run(receipts=60, batch=30, samples=1, rounds=1, base=tmp_path, out=lines.append)
    for key in ("ingest_rate_off", "ingest_rate_on", "ingest_ratio_on_off", "finality_median_off",
                "finality_median_on", "finality_ratio_on_off", "anchors_confirmed_on"):  # fmt: skip
        assert summary[key] >= 0, key
    assert [r["anchoring"] for r in summary["rounds_detail"]] == [False, True]
    assert any("ratio on/off" in line for line in lines)
