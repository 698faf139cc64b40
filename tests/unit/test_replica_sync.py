"""Replication without the network: a writer's store answers sync requests; a replica applies them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.ingest import Ingestor
from node.replica import ForkDetected, Outcome, Replica
from node.sync_server import answer
from protocol import mmr
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.errors import PeerProtocolError
from protocol.evidence import verify_evidence
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.proofs import verify_consistency, verify_inclusion
from protocol.receipts import build_receipt, genesis_root, verify_receipt
from protocol.wire import (
    ErrorResponse,
    GetCheckpoint,
    GetConsistency,
    GetInclusion,
    GetReceipts,
    NoteResponse,
    ProofResponse,
    ReceiptsResponse,
)
from store import LogStore
from store.fsck import fsck

ORIGIN = "sez.gov.sa/corridor/PAK-KSA"
KEY = SigningKey(ORIGIN, bytes(range(32)))
FORGER = SigningKey(ORIGIN, bytes(range(1, 33)))


def receipts(n: int, key: SigningKey = KEY, start_amount: int = 0) -> list[Any]:
    prev = genesis_root("PAK-KSA", ORIGIN)
    out = []
    for i in range(n):
        payload = {
            "transfer_id": f"sa-{i}", "sender": {"entity_id": "a", "jurisdiction": "SAU"},
            "receiver": {"entity_id": "b", "jurisdiction": "PAK"}, "currency": "SAR",
            "amount": str(start_amount + i),
        }  # fmt: skip
        r = build_receipt(key=key, corridor_id="PAK-KSA", sequence=i, timestamp="2026-11-27T10:00:00Z",
                          prev_root=prev, kind="transfer", payload=payload)  # fmt: skip
        out.append(r)
        prev = r.next_root
    return out


def note(size: int, root: bytes, key: SigningKey = KEY) -> bytes:
    return format_note(sign_checkpoint(Checkpoint(origin=ORIGIN, size=size, root=root), key))


@pytest.fixture
def writer_store(tmp_path: Path) -> Iterator[LogStore]:
    with LogStore(tmp_path / "writer") as store:
        store.register_origin(ORIGIN, "PAK-KSA", KEY.verifier())
        chain = receipts(300)
        for start in range(0, 300, 100):
            store.append(
                ORIGIN, [verify_receipt(r, KEY.verifier()) for r in chain[start : start + 100]],
                sign=lambda cp: note(cp.size, cp.root),
            )  # fmt: skip
        yield store


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    with LogStore(tmp_path / "replica") as store, Ingestor(store, workers=2) as ingestor:
        yield Replica(store, "PAK-KSA", KEY.verifier(), ingestor)


def test_answers_match_the_store(writer_store: LogStore) -> None:
    latest = answer(writer_store, GetCheckpoint(id=1, origin=ORIGIN, size=0))
    assert isinstance(latest, NoteResponse) and latest.note == writer_store.checkpoint(ORIGIN)
    at_100 = answer(writer_store, GetCheckpoint(id=2, origin=ORIGIN, size=100))
    assert isinstance(at_100, NoteResponse) and at_100.note == writer_store.checkpoint(ORIGIN, 100)
    rng = answer(writer_store, GetReceipts(id=3, origin=ORIGIN, start=290, count=50))
    assert isinstance(rng, ReceiptsResponse) and rng.receipts == tuple(
        writer_store.receipts(ORIGIN, 290, 300)
    )
    proof = answer(writer_store, GetConsistency(id=4, origin=ORIGIN, old=100, new=300))
    assert isinstance(proof, ProofResponse)
    verify_consistency(
        100, 300, writer_store.root_at(ORIGIN, 100), writer_store.root_at(ORIGIN), list(proof.hashes)
    )
    incl = answer(writer_store, GetInclusion(id=5, origin=ORIGIN, index=7, size=300))
    assert isinstance(incl, ProofResponse)
    leaf = mmr.hash_leaf(receipts(8)[7].next_root)
    verify_inclusion(7, 300, leaf, list(incl.hashes), writer_store.root_at(ORIGIN))


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (GetCheckpoint(id=1, origin="nowhere", size=0), "unknown-origin"),
        (GetCheckpoint(id=1, origin=ORIGIN, size=150), "not-found"),
        (GetConsistency(id=1, origin=ORIGIN, old=200, new=100), "bad-index"),
        (GetConsistency(id=1, origin=ORIGIN, old=1, new=301), "bad-index"),
        (GetInclusion(id=1, origin=ORIGIN, index=300, size=300), "bad-index"),
        (NoteResponse(id=1, note=b"x"), "unexpected-request"),
    ],
)
def test_bad_requests_get_error_answers(writer_store: LogStore, request_: Any, reason: str) -> None:
    response = answer(writer_store, request_)
    assert isinstance(response, ErrorResponse)
    assert response.reason == reason


def test_origins_a_peer_may_not_read(writer_store: LogStore) -> None:
    response = answer(
        writer_store, GetCheckpoint(id=1, origin=ORIGIN, size=0), allowed_origins=frozenset({"x"})
    )
    assert isinstance(response, ErrorResponse) and response.reason == "unknown-origin"


def test_replica_converges_through_sync_alone(writer_store: LogStore, replica: Replica) -> None:
    latest = answer(writer_store, GetCheckpoint(id=1, origin=ORIGIN, size=0))
    assert isinstance(latest, NoteResponse)
    replica.note_checkpoint(latest.note)
    assert replica.status().lag == 300
    start = 0
    while replica.status().lag:
        rng = answer(writer_store, GetReceipts(id=2, origin=ORIGIN, start=start, count=64))
        assert isinstance(rng, ReceiptsResponse)
        assert replica.apply(rng.start, rng.receipts, None) is Outcome.APPENDED
        start += len(rng.receipts)
    assert replica.store.root_at(ORIGIN) == writer_store.root_at(ORIGIN)
    assert replica.store.checkpoint(ORIGIN) == writer_store.checkpoint(ORIGIN)
    assert fsck(replica.store).ok


def test_gossip_batches_duplicates_and_gaps(writer_store: LogStore, replica: Replica) -> None:
    raws = writer_store.receipts(ORIGIN, 0, 300)
    cp100, cp200 = writer_store.checkpoint(ORIGIN, 100), writer_store.checkpoint(ORIGIN, 200)
    assert replica.apply(100, raws[100:200], cp200) is Outcome.GAP
    assert replica.status().size == 0 and replica.status().target == 200
    assert replica.apply(0, raws[:100], cp100) is Outcome.APPENDED
    assert replica.apply(0, raws[:100], cp100) is Outcome.DUPLICATE
    assert replica.apply(50, raws[50:200], cp200) is Outcome.APPENDED  # overlap then new
    assert replica.status().size == 200
    assert replica.store.checkpoint_sizes(ORIGIN) == [100, 200]


def test_forged_and_conflicting_input_changes_nothing(writer_store: LogStore, replica: Replica) -> None:
    raws = writer_store.receipts(ORIGIN, 0, 100)
    replica.apply(0, raws[:50], None)
    forged = receipts(60, FORGER)
    with pytest.raises(PeerProtocolError) as info:
        replica.apply(50, [r.raw for r in forged[50:60]], None)
    assert info.value.reason in {"wrong-key", "prev-root-mismatch"}
    with pytest.raises(PeerProtocolError) as info:  # a forger's receipt where one is held: not a fork
        replica.apply(40, [r.raw for r in forged[40:60]], None)
    assert info.value.reason == "conflicting-receipt" and not isinstance(info.value, ForkDetected)
    other_history = receipts(60, KEY, start_amount=1000)  # validly signed by the writer, different content
    with pytest.raises(ForkDetected) as fork:
        replica.apply(40, [r.raw for r in other_history[40:60]], None)
    assert fork.value.reason == "log-equivocation" and fork.value.details["sequence"] == 40
    verified = verify_evidence(
        fork.value.evidence, log_keys={ORIGIN: KEY.verifier()}, now=2_000_000_000, window=2**40, max_skew=0
    )
    assert (verified.kind, verified.offender) == ("log-equivocation", ORIGIN)
    with pytest.raises(PeerProtocolError) as info:
        replica.apply(50, raws[50:60], note(60, b"\x00" * 32, FORGER))
    assert info.value.reason == "missing-log-signature"  # same name, other key: no line verifies
    with pytest.raises(PeerProtocolError) as info:
        replica.apply(50, raws[50:60], note(55, writer_store.root_at(ORIGIN, 55)))
    assert info.value.reason == "bad-batch"
    with pytest.raises(PeerProtocolError) as info:
        replica.apply(50, raws[50:60], note(60, b"\x11" * 32))  # signed by the writer, wrong root
    assert info.value.reason == "checkpoint-conflict"
    assert replica.status().size == 50  # the conflicting checkpoint refused the whole batch
    # A checkpoint the writer signed at a size whose signed checkpoint is held, with another root: a fork.
    replica.apply(50, raws[50:60], note(60, writer_store.root_at(ORIGIN, 60)))
    with pytest.raises(ForkDetected) as fork:
        replica.note_checkpoint(note(60, b"\x22" * 32))
    verified = verify_evidence(
        fork.value.evidence, log_keys={ORIGIN: KEY.verifier()}, now=2_000_000_000, window=2**40, max_skew=0
    )
    assert verified.offender == ORIGIN and replica.status().size == 60
    assert fsck(replica.store).ok
