"""Evidence in the store, the node's evidence pool, and the API: ``watcher.slash`` and the evidence list."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import trio

from node.api import ApiContext, build_app
from node.evidence_pool import EvidencePool
from node.quorum import QuorumCollector
from node.writer import LogWriter
from protocol.checkpoints import Checkpoint, cosign
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import (
    evidence_digest,
    log_equivocation_from_receipts,
    verify_evidence,
    watcher_equivocation,
    watcher_rollback,
)
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import SignedNote
from protocol.quorum import QuorumPolicy
from protocol.receipts import Receipt, build_receipt, genesis_root
from protocol.stake import BOND_REQUEST, sign_request
from store import LogStore
from store.evidence import EvidenceStore
from tests.unit.test_api import KEY, ORIGIN, TOKEN, FakeStatus, assert_problem, submit
from tests.unit.test_evidence import log_fork_receipts

KSA = "sez.gov.sa/corridor/PAK-KSA"
KSA_KEY = SigningKey(KSA, bytes([2]) * 32)
LOG_KEYS = {"PAK-KSA": {ORIGIN: KEY.verifier(), KSA: KSA_KEY.verifier()}}
W = SigningKey("watcher-7", bytes([77]) * 32)
WV = W.verifier(ALG_COSIGNATURE_V1)
REPORTER = SigningKey("reporter", bytes([78]) * 32).verifier().to_vkey()


def note(size: int, root: int, t: int) -> SignedNote:
    cp = Checkpoint(origin=ORIGIN, size=size, root=bytes([root]) * 32)
    return SignedNote(text=cp.body(), signatures=(cosign(cp, W, t),))


def fresh_equivocation(roots: tuple[int, int] = (1, 2)) -> dict[str, Any]:
    t = int(time.time()) - 60
    return watcher_equivocation(note(7, roots[0], t), note(7, roots[1], t), WV)


def fresh_rollback() -> dict[str, Any]:
    t = int(time.time()) - 120
    return watcher_rollback(note(9, 3, t), note(4, 4, t + 30), WV)


def bond_payload(amount: int = 6400) -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST,
        "watcher": WV.to_vkey(),
        "amount": str(amount),
        "currency": "USD",
        "corridors": ["PAK-KSA"],
        "collateral_ref": "escrow-7",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    return sign_request(request, W)


class Finality:
    """The daemon's FinalitySource, for one corridor's real QuorumCollector."""

    def __init__(self, quorum: QuorumCollector) -> None:
        self.quorum = quorum

    def receipt_finality(self, origin: str, sequence: int) -> dict[str, Any]:
        return self.quorum.finality(origin, sequence)

    def corridor_watchers(self, corridor_id: str) -> dict[str, Any]:
        return self.quorum.watchers()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, LogStore]]:
    with LogStore(tmp_path / "data") as store:
        writer = LogWriter(store, "PAK-KSA", KEY)
        quorum = QuorumCollector(
            store,
            "PAK-KSA",
            {ORIGIN: KSA_KEY.verifier(ALG_COSIGNATURE_V1), KSA: KEY.verifier(ALG_COSIGNATURE_V1)},
            policy=QuorumPolicy(min_watchers=1),
            log_keys=LOG_KEYS["PAK-KSA"],
        )
        context = ApiContext(
            store=store,
            writers={"PAK-KSA": writer},
            token=TOKEN,
            status=FakeStatus(),
            finality=Finality(quorum),
            evidence=EvidencePool(store, LOG_KEYS),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            transport = httpx.ASGITransport(app=build_app(context))
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
                yield http, store
            nursery.cancel_scope.cancel()


def slash(evidence: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "watcher.slash", "payload": {"evidence": evidence, "reporter": REPORTER}}


async def test_a_verified_slash_is_written_listed_and_applied(
    node: tuple[httpx.AsyncClient, LogStore],
) -> None:
    client, _ = node
    assert (await submit(client, {"kind": "watcher.bond", "payload": bond_payload()})).status_code == 201
    evidence = fresh_rollback()
    response = await submit(client, slash(evidence))
    assert response.status_code == 201, response.text
    assert Receipt.from_bytes(response.content).kind == "watcher.slash"

    listed = (await client.get("/v1/corridors/PAK-KSA/evidence")).json()
    spec = (await client.get("/openapi.json")).json()
    schema = {**spec["components"]["schemas"]["EvidenceList"], "components": spec["components"]}
    jsonschema.validate(listed, schema)
    assert [item["digest"] for item in listed["evidence"]] == [evidence_digest(evidence).hex()]
    assert listed["evidence"][0]["offender"] == WV.to_vkey()
    assert listed["evidence"][0]["evidence"] == evidence

    # The same evidence again (the other party may write it too): written, stored once, applied once.
    assert (await submit(client, slash(evidence))).status_code == 201
    assert len((await client.get("/v1/corridors/PAK-KSA/evidence")).json()["evidence"]) == 1
    watchers = (await client.get("/v1/corridors/PAK-KSA/watchers")).json()
    (watcher,) = watchers["watchers"]
    assert watcher["pending"] == 3200 and watcher["slashed"] == 3200 and not watcher["removed"]
    assert [s["kind"] for s in watcher["slashes"]] == ["watcher-rollback"]
    assert watchers["rewards"] == {REPORTER: 50} and watchers["slashed"] == 3200
    assert watchers["rejected_slashes"] == []

    assert (await submit(client, slash(fresh_equivocation()))).status_code == 201
    (watcher,) = (await client.get("/v1/corridors/PAK-KSA/watchers")).json()["watchers"]
    assert watcher["pending"] == 0 and watcher["removed"] and not watcher["active"]


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (log_fork_receipts(), "kind-not-accepted"),
        (
            {**fresh_equivocation(), "watcher": SigningKey("w", bytes(32)).verifier(4).to_vkey()},
            "wrong-signer",
        ),
        ({**fresh_equivocation(), "cosigned": fresh_equivocation()["cosigned"][::-1]}, "non-canonical-order"),
        ({"type": "sez.evidence/v1", "kind": "nothing"}, "unknown-evidence-kind"),
    ],
    ids=["log-equivocation", "blames-another", "unordered", "unknown-kind"],
)
async def test_a_slash_whose_evidence_fails_is_refused_and_changes_nothing(
    node: tuple[httpx.AsyncClient, LogStore], evidence: dict[str, Any], reason: str
) -> None:
    client, store = node
    assert_problem(await submit(client, slash(evidence)), 422, reason)
    assert store.head(ORIGIN).size == 0
    assert (await client.get("/v1/corridors/PAK-KSA/evidence")).json()["evidence"] == []


async def test_stale_evidence_is_refused_by_the_node(node: tuple[httpx.AsyncClient, LogStore]) -> None:
    client, store = node
    old = int(time.time()) - 15 * 24 * 3600
    evidence = watcher_equivocation(note(7, 1, old), note(7, 2, old), WV)
    assert_problem(await submit(client, slash(evidence)), 422, "evidence-expired")
    batch = {
        "transitions": [
            {
                "kind": "attestation",
                "payload": {"subject": "s", "attestation_type": "licence", "digest_sha256": "ab" * 32},
            },
            slash(evidence),
        ]
    }
    assert_problem(await submit(client, batch), 422, "evidence-expired")
    assert store.head(ORIGIN).size == 0  # the batch is refused whole


async def test_without_an_evidence_pool_no_slash_and_no_list(tmp_path: Path) -> None:
    with LogStore(tmp_path / "data") as store:
        writer = LogWriter(store, "PAK-KSA", KEY)
        app = build_app(
            ApiContext(store=store, writers={"PAK-KSA": writer}, token=TOKEN, status=FakeStatus())
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node"
        ) as client:
            assert_problem(await submit(client, slash(fresh_equivocation())), 422, "kind-not-allowed")
            assert_problem(await client.get("/v1/corridors/PAK-KSA/evidence"), 404, "not-found")


async def test_evidence_of_an_unknown_corridor(node: tuple[httpx.AsyncClient, LogStore]) -> None:
    client, _ = node
    assert_problem(await client.get("/v1/corridors/PAK-UAE/evidence"), 404, "unknown-corridor")
    response = await client.post("/v1/corridors/PAK-KSA/transitions", json=slash(fresh_equivocation()))
    assert_problem(response, 401, "unauthorized")


# --------------------------------------------------------------------------- pool and store


def test_the_pool_verifies_keeps_once_and_reloads(tmp_path: Path) -> None:
    clock = [time.time()]
    with LogStore(tmp_path / "data") as store:
        pool = EvidencePool(store, LOG_KEYS, now=lambda: clock[0])
        evidence = fresh_equivocation()
        verified, new = pool.add("PAK-KSA", evidence)
        assert new and verified is not None and verified.offender == WV.to_vkey()
        assert pool.add("PAK-KSA", evidence) == (None, False)  # a duplicate is quiet
        with pytest.raises(PeerProtocolError) as info:
            pool.add("PAK-KSA", {**fresh_equivocation((3, 4)), "watcher": KEY.verifier().to_vkey()})
        assert info.value.reason == "bad-vkey"
        with pytest.raises(LocalProtocolError) as local:
            pool.add("PAK-UAE", evidence)
        assert local.value.reason == "unknown-corridor"
        clock[0] += 1
        pool.add("PAK-KSA", log_fork_receipts_now())
        listed = pool.list_evidence("PAK-KSA")["evidence"]
        assert [item["kind"] for item in listed] == ["watcher-equivocation", "log-equivocation"]
    with LogStore(tmp_path / "data", readonly=True) as again:
        records = EvidenceStore(again).list("PAK-KSA")
        assert [r.digest for r in records] == [item["digest"] for item in listed]
        assert EvidenceStore(again).get(bytes.fromhex(records[0].digest)) == records[0]
        assert EvidenceStore(again).get(b"\0" * 32) is None
        assert EvidenceStore(again).list("PAK-UAE") == []


def test_a_read_only_store_without_evidence_reads_as_empty(tmp_path: Path) -> None:
    with LogStore(tmp_path / "data"):
        pass
    with LogStore(tmp_path / "data", readonly=True) as store:
        assert EvidenceStore(store).list("PAK-KSA") == []


def log_fork_receipts_now() -> dict[str, Any]:
    """A log equivocation of our own log, dated now (the shared fixture's receipts are from 2026-11-27)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payloads = [{"subject": s, "attestation_type": "licence", "digest_sha256": "ab" * 32} for s in ("a", "b")]
    receipts = [
        build_receipt(
            key=KEY,
            corridor_id="PAK-KSA",
            sequence=0,
            timestamp=stamp,
            prev_root=genesis_root("PAK-KSA", ORIGIN),
            kind="attestation",
            payload=p,
        ).raw
        for p in payloads
    ]
    body = log_equivocation_from_receipts(*receipts)
    verify_evidence(body, log_keys=LOG_KEYS["PAK-KSA"], now=int(time.time()), window=60, max_skew=5)
    return body
