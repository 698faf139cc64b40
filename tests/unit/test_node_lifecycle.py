"""The corridor lifecycle as a node enforces it: a real writer, real LMDB stores, both logs merged."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from node.config import CorridorConfig
from node.corridor import CorridorService
from node.ingest import Ingestor
from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.evidence import evidence_digest, log_equivocation_from_receipts
from protocol.keys import SigningKey
from protocol.lifecycle import activation, definition_digest, sign
from protocol.receipts import Receipt, build_receipt
from store import LogStore
from tests.unit.test_witness_acks import KSA, KSA_KEY, PAK, PAK_KEY, RecordingHost, replicate, transfer

CORRIDOR = "PAK-KSA"
DEFINITION = json.loads((Path(__file__).resolve().parents[2] / "configs/corridors/PAK-KSA.json").read_text())
DEF_HEX = definition_digest(DEFINITION).hex()
PARTIES = {"PAK": PAK_KEY, "KSA": KSA_KEY}
STRANGER = SigningKey("stranger.example", bytes([77]) * 32)


def service(store: LogStore, own: SigningKey, other: SigningKey, party: str, ingest: Ingestor) -> Any:
    config = CorridorConfig(
        id=CORRIDOR, origin=own.name, counterparty_origin=other.name, counterparty_key=other.verifier(),
        peers=(), checkpoint_every=1, checkpoint_interval=1, party=party, definition=DEFINITION,
    )  # fmt: skip
    fake: Any = RecordingHost()
    return CorridorService(store=store, config=config, key=own, host=fake, ingestor=ingest)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    with (
        LogStore(tmp_path / "pak") as pak_store,
        LogStore(tmp_path / "ksa") as ksa_store,
        Ingestor(pak_store, workers=0) as pak_ingest,
        Ingestor(ksa_store, workers=0) as ksa_ingest,
    ):
        pak = service(pak_store, PAK_KEY, KSA_KEY, "PAK", pak_ingest)
        ksa = service(ksa_store, KSA_KEY, PAK_KEY, "KSA", ksa_ingest)
        async with trio.open_nursery() as nursery:
            await nursery.start(pak.writer.run)
            await nursery.start(ksa.writer.run)
            yield pak, ksa
            nursery.cancel_scope.cancel()


def unsigned(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "signatures"}


async def refused(corridor: Any, kind: str, payload: dict[str, Any], reason: str) -> SezError:
    before = corridor.store.head(corridor.origin).size
    with pytest.raises((LocalProtocolError, PeerProtocolError)) as info:
        await corridor.writer.submit(kind, payload)
    assert info.value.reason == reason, info.value
    assert corridor.store.head(corridor.origin).size == before  # nothing stored
    return info.value


async def test_draft_refuses_business_and_activation_opens_it(pair: Any) -> None:
    pak, ksa = pair
    error = await refused(pak, "transfer", transfer(1), "corridor-state")
    assert error.details["state"] == "DRAFT" and "DRAFT" in error.message
    await refused(pak, "attestation", {"subject": "x"}, "schema-violation")  # schema first, then state
    to_pending, to_active = activation(CORRIDOR, PARTIES, DEF_HEX)
    await pak.writer.submit("lifecycle", to_pending)
    assert pak.lifecycle.state().state == "PENDING"
    await refused(pak, "transfer", transfer(1), "corridor-state")
    await pak.writer.submit("lifecycle", to_active)
    assert pak.lifecycle.status()["state"] == "ACTIVE"
    await pak.writer.submit("transfer", transfer(1))
    await refused(pak, "lifecycle", to_active, "already-recorded")

    # KSA learns the state from PAK's log (its replica) and accepts business too. It may record the
    # same transitions in its own log (once): the merge counts each once.
    await refused(ksa, "transfer", transfer(2), "corridor-state")
    replicate(pak.store, ksa, PAK)
    assert ksa.lifecycle.state().state == "ACTIVE"
    await ksa.writer.submit("transfer", transfer(2))
    await ksa.writer.submit_many([("lifecycle", to_pending), ("lifecycle", to_active)])
    await refused(ksa, "lifecycle", to_pending, "already-recorded")
    replicate(ksa.store, pak, KSA)
    assert len(pak.lifecycle.status()["history"]) == 2
    history = ksa.lifecycle.status()["history"]
    assert [(h["from"], h["to"], h["signers"]) for h in history] == [
        ("DRAFT", "PENDING", ["KSA", "PAK"]), ("PENDING", "ACTIVE", ["KSA", "PAK"]),
    ]  # fmt: skip


async def test_one_batch_may_activate_and_transact(pair: Any) -> None:
    pak, _ = pair
    steps = [("lifecycle", p) for p in activation(CORRIDOR, PARTIES, DEF_HEX)] + [("transfer", transfer(1))]
    receipts = await pak.writer.submit_many(steps)
    assert [r.sequence for r in receipts] == [0, 1, 2]
    assert pak.lifecycle.state().state == "ACTIVE"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: sign(unsigned(p), {"PAK": PAK_KEY}), "missing-signature"),
        (lambda p: sign(unsigned(p), {"PAK": PAK_KEY, "KSA": STRANGER}), "unknown-signer"),
        (lambda p: {**p, "reason": "edited after signing"}, "bad-signature"),
        (lambda p: activation(CORRIDOR, PARTIES, DEF_HEX)[1], "illegal-transition"),  # PENDING -> ACTIVE now
        (lambda p: {**p, "to": "ACTIVE"}, "illegal-transition"),
        (lambda p: sign({**unsigned(p), "definition_digest": "00" * 32}, PARTIES), "definition-mismatch"),
    ],
    ids=["one-party", "wrong-key", "forged", "not-from-draft", "illegal", "other-definition"],
)
async def test_bad_transitions_are_refused_with_the_reason(pair: Any, make: Any, reason: str) -> None:
    pak, _ = pair
    to_pending = activation(CORRIDOR, PARTIES, DEF_HEX)[0]
    error = await refused(pak, "lifecycle", make(copy.deepcopy(to_pending)), reason)
    assert pak.lifecycle.state().state == "DRAFT", error


async def test_suspension_stops_business_until_the_same_party_resumes(pair: Any) -> None:
    pak, ksa = pair
    for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
        await pak.writer.submit("lifecycle", payload)
    suspend = sign(
        {"corridor_id": CORRIDOR, "from": "ACTIVE", "to": "SUSPENDED", "reason": "audit", "authority": "KSA"},
        {"KSA": KSA_KEY},
    )
    replicate(pak.store, ksa, PAK)
    await ksa.writer.submit("lifecycle", suspend)  # KSA records it in its own log
    replicate(ksa.store, pak, KSA)
    assert pak.lifecycle.state().state == "SUSPENDED"
    error = await refused(pak, "transfer", transfer(3), "corridor-state")
    assert error.details["state"] == "SUSPENDED"
    resume_by_pak = sign(
        {"corridor_id": CORRIDOR, "from": "SUSPENDED", "to": "ACTIVE", "reason": "done", "authority": "PAK"},
        {"PAK": PAK_KEY},
    )
    await refused(pak, "lifecycle", resume_by_pak, "wrong-authority")
    resume = sign(
        {"corridor_id": CORRIDOR, "from": "SUSPENDED", "to": "ACTIVE", "reason": "done", "authority": "KSA"},
        {"KSA": KSA_KEY},
    )
    await pak.writer.submit("lifecycle", resume)  # PAK may record KSA's signed resumption
    await pak.writer.submit("transfer", transfer(3))
    assert [h["to"] for h in pak.lifecycle.status()["history"]] == [
        "PENDING",
        "ACTIVE",
        "SUSPENDED",
        "ACTIVE",
    ]


async def test_a_forged_transition_in_the_counterpartys_log_is_reported_not_applied(pair: Any) -> None:
    pak, ksa = pair
    for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
        await ksa.writer.submit("lifecycle", payload)
    # KSA's writer would refuse a forged suspension: write it with the gate off, as a rogue node could.
    forged = sign(
        {"corridor_id": CORRIDOR, "from": "ACTIVE", "to": "SUSPENDED", "reason": "x", "authority": "PAK"},
        {"PAK": STRANGER},
    )
    gate, ksa.writer.gate = ksa.writer.gate, None
    await ksa.writer.submit("lifecycle", forged)
    ksa.writer.gate = gate
    replicate(ksa.store, pak, KSA)
    status = pak.lifecycle.status()
    assert status["state"] == "ACTIVE"
    assert [(r["origin"], r["sequence"], r["reason"]) for r in status["rejected"]] == [
        (KSA, 2, "unknown-signer")
    ]


async def test_a_fork_seen_halts_admission_before_any_halt_receipt(pair: Any) -> None:
    """Fork evidence held while the logs still say ACTIVE: business is refused as HALTED at once; the
    ACTIVE -> HALTED transition itself (with verified evidence) is still admitted and recorded."""
    pak, _ = pair
    for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
        await pak.writer.submit("lifecycle", payload)
    await pak.writer.submit("transfer", transfer(1))
    head = pak.store.head(pak.origin).size
    fork = receipt_fork(pak.store.receipt(pak.origin, head - 1))
    evidence = log_equivocation_from_receipts(pak.store.receipt(pak.origin, head - 1), fork)
    digest = evidence_digest(evidence).hex()
    assert pak.lifecycle.note_fork(digest, evidence)
    assert pak.lifecycle.state().state == "ACTIVE" and pak.lifecycle.effective_state() == "HALTED"
    error = await refused(pak, "transfer", transfer(2), "corridor-state")
    assert error.details["state"] == "HALTED"
    halt = sign(
        {"corridor_id": CORRIDOR, "from": "ACTIVE", "to": "HALTED", "reason": "fork",
         "evidence": {"type": "log-equivocation", "digest_sha256": digest, "body": evidence}},
        {"KSA": KSA_KEY},
    )  # fmt: skip
    await pak.writer.submit("lifecycle", halt)
    status = pak.lifecycle.status()
    assert (status["state"], status["halt_evidence"], status["forks"]) == ("HALTED", digest, [digest])


def receipt_fork(raw: bytes) -> bytes:
    """Another receipt of PAK's log at the same sequence and prev_root: what a restored backup signs."""
    original = Receipt.from_bytes(raw)
    payload = dict(original.payload)
    payload["transfer_id"] = "forked"
    return build_receipt(
        key=PAK_KEY, corridor_id=CORRIDOR, sequence=original.sequence, timestamp=original.timestamp,
        prev_root=original.prev_root, kind=original.kind, payload=payload,
    ).raw  # fmt: skip
