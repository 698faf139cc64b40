"""Fork resolution as a node runs it (node/fork_resolution.py): real writers, real LMDB stores, a fake host.

PAK and KSA corridor services; five watchers bonded on PAK's log and final; branch A (PAK's checkpoint at
``n``) cosigned by all five and KSA, quorum-final at KSA. A byzantine PAK signs branch B at ``n``, which
watchers 0 and 1 cosign too. KSA: keeps B, halts, slashes 0 and 1 once each, judges both branches under
one ledger and writes the quorum resolution; PAK folds it from its replica of KSA's log, verifying the
certificate against its own copy of the logs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from node.evidence_pool import EvidencePool
from node.ingest import Ingestor
from node.lifecycle_cli import _new_payload
from protocol.checkpoints import Checkpoint, add_signatures, cosign, parse_checkpoint, sign_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import log_equivocation_from_receipts
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.lifecycle import activation, check_payload
from protocol.lifecycle import sign as sign_lifecycle
from protocol.notes import format_note
from protocol.receipts import build_receipt
from protocol.stake import BOND_REQUEST, SlashPolicy, sign_request
from store import LogStore
from tests.unit.test_node_lifecycle import CORRIDOR, DEF_HEX, DEFINITION, PARTIES, service
from tests.unit.test_witness_acks import KSA, KSA_KEY, PAK, PAK_KEY, replicate, transfer

W = [SigningKey(f"w{i}.example", bytes([60 + i]) * 32) for i in range(5)]
WV = [w.verifier(ALG_COSIGNATURE_V1) for w in W]
ROOT_B = b"\xbb" * 32


def bond(i: int) -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST, "watcher": WV[i].to_vkey(), "amount": "1000", "currency": "USD",
        "corridors": [CORRIDOR], "collateral_ref": f"escrow-{i}", "timestamp": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return sign_request(request, W[i])


def cosigned_by(note: bytes, indices: range | list[int]) -> bytes:
    cp, parsed = parse_checkpoint(note)
    return format_note(add_signatures(parsed, [cosign(cp, W[i], int(time.time())) for i in indices]))


def kinds(store: LogStore, origin: str) -> list[str]:
    size = store.head(origin).size
    return [json.loads(raw)["transition"]["kind"] for raw in store.receipts(origin, 0, size)]


@pytest.fixture
async def forked(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, int, bytes]]:
    """PAK and KSA with branch A quorum-final at KSA at size ``n``; yields (pak, ksa, n, note_b)."""
    with (
        LogStore(tmp_path / "pak") as pak_store,
        LogStore(tmp_path / "ksa") as ksa_store,
        Ingestor(pak_store, workers=0) as pak_ingest,
        Ingestor(ksa_store, workers=0) as ksa_ingest,
    ):
        pak = service(pak_store, PAK_KEY, KSA_KEY, "PAK", pak_ingest)
        ksa = service(ksa_store, KSA_KEY, PAK_KEY, "KSA", ksa_ingest)
        policies = {CORRIDOR: SlashPolicy.from_policy(DEFINITION["policy"])}
        for node in (pak, ksa):
            node.evidence = EvidencePool(node.store, {CORRIDOR: node.log_keys}, policies=policies)
        async with trio.open_nursery() as nursery:
            await nursery.start(pak.writer.run)
            await nursery.start(ksa.writer.run)
            for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
                await pak.writer.submit("lifecycle", payload)
            for i in range(5):
                await pak.writer.submit("watcher.bond", bond(i))
            replicate(pak.store, ksa, PAK)
            assert await ksa.cosign_latest(force=True)  # bilateral finality: the bonds become final
            assert sum(s.active for s in ksa.quorum.ledger().watchers.values()) == 5
            await pak.writer.submit("transfer", transfer(1))
            replicate(pak.store, ksa, PAK)
            size = await ksa.cosign_latest(force=True)
            assert size is not None
            note_a = cosigned_by(ksa.store.checkpoint(PAK, size), range(5))
            decision = ksa.quorum.on_watcher_note(PAK, note_a)
            assert decision is not None and decision.final
            byzantine = SigningKey(PAK, PAK_KEY.seed)
            note_b = format_note(sign_checkpoint(Checkpoint(origin=PAK, size=size, root=ROOT_B), byzantine))
            yield pak, ksa, size, cosigned_by(note_b, [0, 1])
            nursery.cancel_scope.cancel()


async def test_watchers_on_both_branches_are_slashed_once_and_the_quorum_branch_wins(forked: Any) -> None:
    pak, ksa, size, note_b = forked
    before = ksa.store.head(KSA).size
    assert await ksa.forks.on_watcher_note(PAK, note_b, "test")
    assert ksa.lifecycle.state().state == "HALTED"
    written = kinds(ksa.store, KSA)[before:]
    assert sorted(written) == ["lifecycle", "watcher.slash", "watcher.slash"]
    removed = {v for v, s in ksa.quorum.ledger().watchers.items() if s.removed}
    assert removed == {WV[0].to_vkey(), WV[1].to_vkey()}
    # The other branch's certificate is kept durably, never merged into our checkpoint.
    assert list(ksa.forks.branches(PAK)) == [f"{size}:{ROOT_B.hex()}"]
    assert parse_checkpoint(ksa.store.checkpoint(PAK, size))[0].root != ROOT_B

    # The same note again, and the same evidence from the gossip: nothing more is written.
    published = len(ksa.host.published)
    head = ksa.store.head(KSA).size
    assert await ksa.forks.on_watcher_note(PAK, note_b, "test again")
    for evidence in ksa.forks.watchers_on_both(PAK, size):
        await ksa.forks.on_watcher_evidence(
            json.dumps(evidence, separators=(",", ":"), sort_keys=True).encode()
        )
    assert ksa.store.head(KSA).size == head
    assert len(ksa.host.published) == published  # known evidence is not gossiped again

    # Judged under one ledger: A (watchers 2..4 and KSA) holds the quorum, B nothing.
    assessment = ksa.forks.assess()
    assert assessment is not None and "payload" in assessment, assessment
    branches = {b["source"]: b for b in assessment["branches"]}
    assert branches["held"]["quorum"] and branches["held"]["cosigners"] == sorted(
        WV[i].to_vkey() for i in (2, 3, 4)
    )
    assert not branches[f"kept:{size}:{ROOT_B.hex()}"]["quorum"]
    ledger = assessment["ledger"]
    assert ledger[PAK]["size"] == size - 1 and ledger[KSA]["size"] == ksa.store.head(KSA).size

    # A forged resolution (B named with A's certificate) is refused by our own writer: nothing is written.
    forged = json.loads(json.dumps(assessment["payload"]))
    forged["resolution"]["branch"]["root"] = ROOT_B.hex()
    with pytest.raises(PeerProtocolError) as caught:
        await ksa.writer.submit("lifecycle", sign_lifecycle(forged, {"KSA": ksa.key}))
    assert caught.value.reason == "branch-mismatch"
    assert ksa.store.head(KSA).size == head

    assert await ksa.forks.resolve_once()
    state = ksa.lifecycle.state()
    assert state.state == "ACTIVE" and state.settled_evidence
    assert not ksa.lifecycle.halted() and not await ksa.forks.resolve_once()
    status = ksa.lifecycle.status()["fork"]
    assert status["assessment"]["decision"]["branch"]["root"] != ROOT_B.hex()
    assert status["kept_branches"] == {PAK: [{"size": size, "root": ROOT_B.hex()}]}

    # PAK reads KSA's log: it verifies the certificate against its own copy and resumes too.
    replicate(ksa.store, pak, KSA)
    assert pak.lifecycle.state().state == "ACTIVE"
    assert pak.lifecycle.status()["rejected"] == []
    await pak.writer.submit("transfer", transfer(2))


async def test_a_node_that_holds_another_prefix_refuses_the_resolution(forked: Any, tmp_path: Path) -> None:
    _, ksa, size, note_b = forked
    assert await ksa.forks.on_watcher_note(PAK, note_b, "test")
    assert await ksa.forks.resolve_once()
    # A third store whose copy of PAK's log differs below the fork point cannot judge: the payload is
    # rejected with the reason, and its lifecycle stays where its logs put it.
    with LogStore(tmp_path / "other") as store, Ingestor(store, workers=0) as ingest:
        other = service(store, PAK_KEY, KSA_KEY, "PAK", ingest)
        async with trio.open_nursery() as nursery:
            await nursery.start(other.writer.run)
            for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
                await other.writer.submit("lifecycle", payload)
            for i in range(size):  # another history from sequence 2 on, as long as the named prefix
                await other.writer.submit("transfer", transfer(100 + i))
            replicate(ksa.store, other, KSA)
            rejected = other.lifecycle.status()["rejected"]
            assert [r["reason"] for r in rejected] == ["ledger-mismatch"], rejected
            # This copy is PAK's own log, halted on verified evidence that it forked: recovery is still
            # pointed at the named branch (it pulls what its own key signed, then the merge judges the
            # resolution like everyone's). Nothing is named for the other origin.
            assert other.lifecycle.state().state == "HALTED"
            payload = other.lifecycle.resolution_for(PAK)
            assert payload is not None and payload["resolution"]["method"] == "quorum"
            assert payload["resolution"]["branch"]["origin"] == PAK
            assert other.lifecycle.resolution_for(KSA) is None
            nursery.cancel_scope.cancel()


async def test_a_fork_seen_in_receipts_resolves_to_the_quorum_final_branch(forked: Any) -> None:
    # A restored backup of PAK signs another receipt where A has the transfer: no other branch's cosigned
    # checkpoint exists, and A's quorum-final checkpoint past the fork point is the certificate.
    pak, ksa, size, _ = forked
    held = ksa.store.receipt(PAK, size - 1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    other = build_receipt(
        key=PAK_KEY, corridor_id=CORRIDOR, sequence=size - 1, timestamp=now,
        prev_root=bytes.fromhex(json.loads(ksa.store.receipt(PAK, size - 2))["next_root"]),
        kind="transfer", payload=transfer(999),
    )  # fmt: skip
    await ksa.on_fork(log_equivocation_from_receipts(held, other.raw), "test")
    assert ksa.lifecycle.state().state == "HALTED" and ksa.forks.branches(PAK) == {}
    assessment = ksa.forks.assess()
    assert assessment is not None and "payload" in assessment, assessment
    assert assessment["ledger"][PAK]["size"] == size - 1 and assessment["slashed"] == []
    assert assessment["decision"]["branch"]["size"] == size
    assert await ksa.forks.resolve_once()
    replicate(ksa.store, pak, KSA)
    assert ksa.lifecycle.state().state == pak.lifecycle.state().state == "ACTIVE"
    assert pak.lifecycle.status()["rejected"] == []


async def test_without_watchers_on_both_branches_no_slash_and_no_quorum_means_two_party(
    tmp_path: Path,
) -> None:
    with LogStore(tmp_path / "ksa") as store, Ingestor(store, workers=0) as ingest:
        ksa = service(store, KSA_KEY, PAK_KEY, "KSA", ingest)
        ksa.evidence = EvidencePool(store, {CORRIDOR: ksa.log_keys})
        pak_store_dir = tmp_path / "pak"
        with LogStore(pak_store_dir) as pak_store, Ingestor(pak_store, workers=0) as pak_ingest:
            pak = service(pak_store, PAK_KEY, KSA_KEY, "PAK", pak_ingest)
            async with trio.open_nursery() as nursery:
                await nursery.start(pak.writer.run)
                await nursery.start(ksa.writer.run)
                for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
                    await pak.writer.submit("lifecycle", payload)
                await pak.writer.submit("transfer", transfer(1))
                replicate(pak.store, ksa, PAK)
                size = ksa.store.head(PAK).size
                note_b = format_note(
                    sign_checkpoint(
                        Checkpoint(origin=PAK, size=size, root=ROOT_B), SigningKey(PAK, PAK_KEY.seed)
                    )
                )
                # A note not signed by PAK's key is no fork: nothing happens.
                stranger = format_note(
                    sign_checkpoint(
                        Checkpoint(origin=PAK, size=size, root=ROOT_B), SigningKey(PAK, bytes(32))
                    )
                )
                assert not await ksa.forks.on_watcher_note(PAK, stranger, "test")
                assert ksa.lifecycle.state().state == "ACTIVE" and ksa.forks.branches(PAK) == {}
                assert await ksa.forks.on_watcher_note(PAK, note_b, "test")
                assert ksa.lifecycle.state().state == "HALTED"
                assert "watcher.slash" not in kinds(ksa.store, KSA)
                assessment = ksa.forks.assess()
                assert assessment is not None and "payload" not in assessment
                assert "two-party" in assessment["reason"]
                assert not await ksa.forks.resolve_once()
                nursery.cancel_scope.cancel()


def test_lifecycle_sign_builds_a_two_party_resolution_from_its_flags() -> None:
    flags = {"corridor": CORRIDOR, "from_state": "HALTED", "to_state": "ACTIVE", "reason": "two parties",
             "definition": None, "authority": None, "branch_origin": PAK, "branch_size": 7,
             "branch_root": "ab" * 32}  # fmt: skip
    payload = _new_payload(argparse.Namespace(**flags))
    assert payload["resolution"] == {
        "method": "two-party",
        "branch": {"origin": PAK, "size": 7, "root": "ab" * 32},
    }
    signed = sign_lifecycle(payload, {"PAK": PAK_KEY, "KSA": KSA_KEY})
    check_payload("lifecycle", signed)  # a complete HALTED -> ACTIVE two-party resolution
    with pytest.raises(LocalProtocolError) as caught:
        _new_payload(argparse.Namespace(**{**flags, "branch_root": None}))
    assert caught.value.reason == "usage"


async def test_the_forked_party_records_no_halt_in_its_own_log(forked: Any) -> None:
    """A halt receipt in the forked log would extend a branch that may lose (and make new evidence)."""
    pak, _, size, _ = forked
    held = pak.store.receipt(PAK, size - 1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    other = build_receipt(
        key=PAK_KEY, corridor_id=CORRIDOR, sequence=size - 1, timestamp=now,
        prev_root=bytes.fromhex(json.loads(pak.store.receipt(PAK, size - 2))["next_root"]),
        kind="transfer", payload=transfer(999),
    )  # fmt: skip
    head = pak.store.head(PAK).size
    await pak.on_fork(log_equivocation_from_receipts(held, other.raw), "test")
    assert pak.lifecycle.halted() and pak.lifecycle.state().state == "ACTIVE"  # halted, not recorded
    assert pak.store.head(PAK).size == head
