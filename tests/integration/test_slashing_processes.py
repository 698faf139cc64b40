"""A watcher slashed across two ``sez-node run`` processes (issue 5, design §7).

PAK and KSA run as real processes (libp2p over TCP on 127.0.0.1, LMDB, HTTP; ``netharness.py``). A
watcher bond and then a ``watcher.slash`` carrying a watcher-rollback are submitted to PAK, which
verifies the evidence before writing it; KSA replicates PAK's log and its own stake fold re-verifies
the evidence and applies the same penalty. Forged evidence is refused by PAK and nothing is written.
Every wait is bounded and polls the API; every process is stopped, also on failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoints import Checkpoint, cosign
from protocol.evidence import evidence_digest, watcher_rollback
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import SignedNote
from protocol.stake import BOND_REQUEST, sign_request
from tests.integration.netharness import Network, make_network, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C = "PAK-KSA"
SETTLE_TIMEOUT = 60.0
W = SigningKey("watcher-slashed", bytes([91]) * 32)
WV = W.verifier(ALG_COSIGNATURE_V1)
REPORTER = SigningKey("reporter", bytes([92]) * 32).verifier().to_vkey()


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    net = make_network(tmp_path / "net", ["PAK", "KSA"], corridors=[C])
    try:
        net.start()
        yield net
    finally:
        net.close()


def rollback_of(origin: str) -> dict[str, Any]:
    t = int(time.time()) - 120

    def note(size: int, root: int, at: int) -> SignedNote:
        cp = Checkpoint(origin=origin, size=size, root=bytes([root]) * 32)
        return SignedNote(text=cp.body(), signatures=(cosign(cp, W, at),))

    return watcher_rollback(note(9, 1, t), note(4, 2, t + 30), WV)


def watcher_entry(network: Network, node: str) -> dict[str, Any] | None:
    response = network[node].http.get(f"/v1/corridors/{C}/watchers")
    response.raise_for_status()
    for watcher in response.json()["watchers"]:
        if watcher["vkey"] == WV.to_vkey():
            return dict(watcher)
    return None


def test_a_slash_is_verified_written_and_applied_by_both_nodes(network: Network) -> None:
    pak = network["PAK"]
    origin = network.specs["PAK"].origin(C)
    request = {
        "type": BOND_REQUEST,
        "watcher": WV.to_vkey(),
        "amount": "6400",
        "currency": "USD",
        "corridors": [C],
        "collateral_ref": "escrow-91",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    bonded = pak.submit(C, sign_request(request, W), kind="watcher.bond")
    assert bonded.status_code == 201, bonded.text

    # Forged evidence (the rollback blamed on another watcher) is refused, and nothing is written.
    size = pak.status(C)["log"]["size"]
    forged = {
        **rollback_of(origin),
        "watcher": SigningKey("x", bytes(32)).verifier(ALG_COSIGNATURE_V1).to_vkey(),
    }
    refused = pak.submit(C, {"evidence": forged, "reporter": REPORTER}, kind="watcher.slash")
    assert refused.status_code == 422 and refused.json()["type"] == "urn:sez:problem:wrong-signer", (
        refused.text
    )
    assert pak.http.get(f"/v1/corridors/{C}/evidence").json()["evidence"] == []
    assert all(
        b'"watcher.slash"' not in pak.receipt(origin, seq)
        for seq in range(size, pak.status(C)["log"]["size"])
    )

    evidence = rollback_of(origin)
    slashed = pak.submit(C, {"evidence": evidence, "reporter": REPORTER}, kind="watcher.slash")
    assert slashed.status_code == 201, slashed.text
    listed = pak.http.get(f"/v1/corridors/{C}/evidence").json()["evidence"]
    assert [item["digest"] for item in listed] == [evidence_digest(evidence).hex()]

    for node in ("PAK", "KSA"):  # KSA applies it from its replica of PAK's log
        entry = wait_until(
            lambda node=node: (e := watcher_entry(network, node)) is not None and e["slashed"] == 3200 and e,
            SETTLE_TIMEOUT,
            f"{node} to apply the slash",
            network=network,
        )
        assert entry["bonded"] + entry["pending"] == 3200 and not entry["removed"]
        assert [s["digest"] for s in entry["slashes"]] == [evidence_digest(evidence).hex()]
        rewards = network[node].http.get(f"/v1/corridors/{C}/watchers").json()["rewards"]
        assert rewards == {REPORTER: 50}
    assert pak.healthy() and network["KSA"].healthy()
