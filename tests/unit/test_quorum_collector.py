"""Quorum finality in the node (design §7): bonds, bootstrap finality, watcher quorum, unbond, junk.

Stores, writers, replicas and the corridor services are real; the p2p host is the recording fake of
``test_witness_acks`` and gossip is delivered by calling the consumers with what the other side published.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node.api import ApiContext, build_app
from node.ingest import Ingestor
from node.p2p import GossipMessage
from node.quorum import state_key
from node.writer import LogWriter
from protocol.checkpoints import add_signatures, cosign, parse_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import NoteSignature, format_note, parse_note
from protocol.stake import BOND_REQUEST, UNBOND_REQUEST, check_watcher_payload, sign_request
from protocol.wire import CosignatureAnnouncement, encode
from store import LogStore
from tests.unit.test_witness_acks import (
    KSA,
    KSA_KEY,
    PAK,
    PAK_KEY,
    RecordingHost,
    replicate,
    service,
    transfer,
)
from watcher.cli import main as watcher_cli
from watcher.config import write_initial_config

WATCHERS = [SigningKey(f"w{i}.example", bytes([40 + i]) * 32) for i in range(1, 5)]
STRANGER = SigningKey("w9.example", bytes([99]) * 32)
STAMP = 1_800_000_000


def vkey(key: SigningKey) -> str:
    return key.verifier(ALG_COSIGNATURE_V1).to_vkey()


def bond(key: SigningKey, amount: str = "100") -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST, "watcher": vkey(key), "amount": amount, "currency": "USD",
        "corridors": ["PAK-KSA"], "collateral_ref": f"escrow-{key.name}", "timestamp": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    return sign_request(request, key)


def unbond(key: SigningKey) -> dict[str, Any]:
    request = {
        "type": UNBOND_REQUEST, "watcher": vkey(key), "corridors": ["PAK-KSA"],
        "timestamp": "2026-01-02T00:00:00Z",
    }  # fmt: skip
    return sign_request(request, key)


def message(data: bytes) -> GossipMessage:
    return GossipMessage(
        topic="/sez/1/PAK-KSA/cosignatures", data=data, origin="peer", msg_id=hashlib.sha256(data).digest()
    )


def announcement(origin: str, cosigner: str, note: bytes) -> GossipMessage:
    return message(
        encode(CosignatureAnnouncement(corridor="PAK-KSA", origin=origin, cosigner=cosigner, note=note))
    )


def watcher_note(
    store: LogStore, origin: str, size: int, *keys: SigningKey, extra: tuple[NoteSignature, ...] = ()
) -> bytes:
    """The log's checkpoint at ``size`` with the cosignature lines of ``keys`` (and any ``extra`` lines)."""
    cp, note = parse_checkpoint(store.checkpoint(origin, size))
    log_lines = tuple(s for s in note.signatures if s.name == origin)
    lines = [cosign(cp, key, STAMP + i) for i, key in enumerate(keys)]
    bare = parse_note(format_note(type(note)(text=note.text, signatures=log_lines)))
    return format_note(add_signatures(bare, [*lines, *extra]))


async def deliver_party_cosignatures(host: RecordingHost, target: Any) -> None:
    """Hand everything ``host`` published on the cosignatures topic to ``target``'s consumer."""
    for data in host.cosignatures():
        await target._on_cosignature(message(data))
    host.published.clear()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, RecordingHost, RecordingHost]]:
    with (
        LogStore(tmp_path / "pak") as pak_store,
        LogStore(tmp_path / "ksa") as ksa_store,
        Ingestor(pak_store, workers=0) as pak_ingest,
        Ingestor(ksa_store, workers=0) as ksa_ingest,
    ):
        pak_host, ksa_host = RecordingHost(), RecordingHost()
        pak = service(pak_store, PAK_KEY, KSA_KEY, pak_host, pak_ingest)
        ksa = service(ksa_store, KSA_KEY, PAK_KEY, ksa_host, ksa_ingest)
        async with trio.open_nursery() as nursery:
            await nursery.start(pak.writer.run)
            await nursery.start(ksa.writer.run)
            yield pak, ksa, pak_host, ksa_host
            nursery.cancel_scope.cancel()


async def ksa_cosigns_pak(pak: Any, ksa: Any, ksa_host: RecordingHost) -> int:
    """KSA replicates PAK's log, cosigns its latest checkpoint, and PAK receives the cosignature."""
    replicate(pak.store, ksa, PAK)
    size: int = await ksa.cosign_latest(force=True)
    await deliver_party_cosignatures(ksa_host, pak)
    return size


async def bonded_corridor(pair: Any) -> tuple[Any, Any, RecordingHost, RecordingHost]:
    """Four watchers bonded in PAK's log, made final by bilateral (bootstrap) finality."""
    pak, ksa, pak_host, ksa_host = pair
    for key in WATCHERS:
        await pak.writer.submit("watcher.bond", bond(key))
    assert pak.quorum.ledger().total_active() == 0  # pending until their receipts are final
    assert await ksa_cosigns_pak(pak, ksa, ksa_host) == 4
    return pak, ksa, pak_host, ksa_host


async def test_bonds_become_active_by_bilateral_bootstrap_finality(pair: Any) -> None:
    pak, ksa, _, _ = await bonded_corridor(pair)
    ledger = pak.quorum.ledger()
    assert ledger.active_weights() == {vkey(key): 100 for key in WATCHERS}
    assert pak.quorum.final_size(PAK) == 4
    assert pak.store.witness_state(state_key(PAK))["final_size"] == 4  # durable
    # KSA reaches the same ledger from its replica and its own cosignature.
    assert ksa.quorum.final_size(PAK) == 4
    assert ksa.quorum.ledger().active_weights() == ledger.active_weights()
    # Status and finality answers.
    status = pak.status()
    finality = status["finality"][PAK]
    assert {k: finality[k] for k in ("quorum_final_size", "active_watchers", "active_stake")} == {
        "quorum_final_size": 4, "active_watchers": 4, "active_stake": 400,
    }  # fmt: skip
    assert finality["last_decision"] == {
        "size": 4, "final": True, "cosigning_stake": 0, "active_stake": 0, "cosigners": 0,
        "missing": [], "bootstrap": True,
    }  # fmt: skip
    assert status["stake"]["active"] == 400 and len(status["stake"]["watchers"]) == 4
    assert pak.quorum.finality(PAK, 3) == {
        "receipt_signed": True, "counterparty_cosigned": True, "quorum_final": True, "quorum_final_size": 4,
    }  # fmt: skip


async def test_three_of_four_watchers_make_a_checkpoint_final_two_do_not(pair: Any) -> None:
    pak, ksa, _, ksa_host = await bonded_corridor(pair)
    await pak.writer.submit("transfer", transfer(1))
    size = await ksa_cosigns_pak(pak, ksa, ksa_host)
    assert size > 4 and pak.quorum.final_size(PAK) == 4  # counterparty alone is no longer enough
    w1, w2, w3, _ = WATCHERS
    for key in (w1, w2):
        await pak._on_cosignature(announcement(PAK, key.name, watcher_note(pak.store, PAK, size, key)))
    assert pak.quorum.final_size(PAK) == 4
    assert set(pak.quorum.last_decisions[PAK][1].missing) == {"stake", "watchers"}
    assert pak.quorum.finality(PAK, size - 1)["quorum_final"] is False
    assert pak.quorum.finality(PAK, size - 1)["counterparty_cosigned"] is True
    await pak._on_cosignature(announcement(PAK, w3.name, watcher_note(pak.store, PAK, size, w3)))
    assert pak.quorum.final_size(PAK) == size
    assert pak.stats.quorum_final >= 1
    # Every line is on the stored note: the log's, KSA's and three watchers'.
    _, note = parse_checkpoint(pak.store.checkpoint(PAK, size))
    assert {s.name for s in note.signatures} == {PAK, KSA, w1.name, w2.name, w3.name}


async def test_watcher_quorum_without_the_counterparty_is_not_final(pair: Any) -> None:
    pak, _, _, _ = await bonded_corridor(pair)
    await pak.writer.submit("transfer", transfer(1))
    size = pak.store.head(PAK).size
    note = watcher_note(pak.store, PAK, size, *WATCHERS)
    await pak._on_cosignature(announcement(PAK, WATCHERS[0].name, note))
    assert pak.quorum.final_size(PAK) == 4
    assert pak.quorum.last_decisions[PAK][1].missing == ("counterparty",)


async def test_an_unbonded_watcher_stops_counting_at_once(pair: Any) -> None:
    pak, ksa, _, ksa_host = await bonded_corridor(pair)
    w1, w2, w3, w4 = WATCHERS
    await pak.writer.submit("watcher.unbond", unbond(w1))  # not final yet: it counts at once anyway
    assert vkey(w1) not in pak.quorum.ledger().active_weights()
    size = await ksa_cosigns_pak(pak, ksa, ksa_host)
    for key in (w1, w2, w3):
        await pak._on_cosignature(announcement(PAK, key.name, watcher_note(pak.store, PAK, size, key)))
    # w2 + w3 hold 200 of 300 active: not strictly more than 2/3, and only 2 watchers.
    assert pak.quorum.final_size(PAK) == 4
    _, note = parse_checkpoint(pak.store.checkpoint(PAK, size))
    assert w1.name not in {s.name for s in note.signatures}  # an inactive watcher's line is not stored
    await pak._on_cosignature(announcement(PAK, w4.name, watcher_note(pak.store, PAK, size, w4)))
    assert pak.quorum.final_size(PAK) == size
    watchers = {w["name"]: w for w in pak.quorum.watchers()["watchers"]}
    assert watchers[w1.name]["active"] is False and watchers[w1.name]["unbonding_since"] is not None


async def test_a_cosignature_from_an_unknown_key_is_not_merged_and_changes_nothing(pair: Any) -> None:
    pak, ksa, _, ksa_host = await bonded_corridor(pair)
    await pak.writer.submit("transfer", transfer(1))
    size = await ksa_cosigns_pak(pak, ksa, ksa_host)
    before = pak.store.checkpoint(PAK, size)
    await pak._on_cosignature(announcement(PAK, STRANGER.name, watcher_note(pak.store, PAK, size, STRANGER)))
    assert pak.store.checkpoint(PAK, size) == before
    assert pak.quorum.final_size(PAK) == 4
    # A stranger posing under an active watcher's name (other key, so other key ID) is dropped too.
    impostor = SigningKey(WATCHERS[0].name, bytes([77]) * 32)
    await pak._on_cosignature(announcement(PAK, impostor.name, watcher_note(pak.store, PAK, size, impostor)))
    assert pak.store.checkpoint(PAK, size) == before
    # Junk around a valid line: only the active watcher's verified line is stored.
    cp, _ = parse_checkpoint(before)
    junk = (cosign(cp, STRANGER, STAMP), NoteSignature(name="pad", key_id=b"\0\0\0\0", signature=b"x" * 72))
    await pak._on_cosignature(
        announcement(PAK, WATCHERS[1].name, watcher_note(pak.store, PAK, size, WATCHERS[1], extra=junk))
    )
    _, stored = parse_checkpoint(pak.store.checkpoint(PAK, size))
    assert {s.name for s in stored.signatures} == {PAK, KSA, WATCHERS[1].name}


async def test_a_bad_line_of_an_active_watcher_is_a_peer_fault(pair: Any) -> None:
    pak, ksa, _, ksa_host = await bonded_corridor(pair)
    await pak.writer.submit("transfer", transfer(1))
    size = await ksa_cosigns_pak(pak, ksa, ksa_host)
    w1 = WATCHERS[0]
    good = parse_note(watcher_note(pak.store, PAK, size, w1))
    forged = tuple(
        NoteSignature(name=s.name, key_id=s.key_id, signature=s.signature[:8] + bytes(64))
        if s.name == w1.name
        else s
        for s in good.signatures
    )
    note = format_note(type(good)(text=good.text, signatures=forged))
    with pytest.raises(PeerProtocolError):
        await pak._on_cosignature(announcement(PAK, w1.name, note))
    # The validator still lets watcher announcements through: only the consumer knows the ledger.
    data = encode(CosignatureAnnouncement(corridor="PAK-KSA", origin=PAK, cosigner=w1.name, note=note))
    assert pak._validate_cosignature("peer", data).value == "accept"


async def test_watcher_lines_ahead_of_the_replica_count_once_it_catches_up(pair: Any) -> None:
    """Watchers cosign PAK's checkpoint before KSA has replicated it (the usual order under load):
    KSA keeps their verified lines and counts them once its replica holds the checkpoint and it
    cosigns; dropping them left the checkpoint short of a quorum at KSA for good (devnet, issue 6)."""
    pak, ksa, _, _ = await bonded_corridor(pair)
    await pak.writer.submit("transfer", transfer(1))
    size = pak.store.head(PAK).size
    assert ksa.store.head(PAK).size < size  # KSA has not replicated it yet
    for key in WATCHERS[:3]:
        await ksa._on_cosignature(announcement(PAK, key.name, watcher_note(pak.store, PAK, size, key)))
    assert ksa.quorum.final_size(PAK) == 4  # nothing stored or decided beyond the replica
    replicate(pak.store, ksa, PAK)
    assert await ksa.cosign_latest(force=True) == size
    assert ksa.quorum.final_size(PAK) == size
    _, note = parse_checkpoint(ksa.store.checkpoint(PAK, size))
    assert {s.name for s in note.signatures} == {PAK, KSA, *(k.name for k in WATCHERS[:3])}
    # A stranger's line ahead of the replica is never kept: only active watchers' verified lines are.
    await pak.writer.submit("transfer", transfer(2))
    later = pak.store.head(PAK).size
    await ksa._on_cosignature(announcement(PAK, STRANGER.name, watcher_note(pak.store, PAK, later, STRANGER)))
    assert ksa.quorum._ahead.get(PAK, {}) == {}


async def test_quorum_record_survives_a_restart(pair: Any) -> None:
    pak, _, pak_host, _ = await bonded_corridor(pair)
    with Ingestor(pak.store, workers=0) as ingest:
        again = service(pak.store, PAK_KEY, KSA_KEY, pak_host, ingest)
    assert again.quorum.final_size(PAK) == 4
    assert again.quorum.ledger().total_active() == 400


# ---------------------------------------------------------------------------------- CLI and HTTP API


def test_watcher_bond_and_unbond_commands_print_submittable_signed_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_initial_config(tmp_path / "w", "w1.example", "/ip4/127.0.0.1/tcp/4101", "127.0.0.1:8101")
    argv = ["--config", str(config), "--corridor", "PAK-KSA"]
    assert watcher_cli(["bond", *argv, "--amount", "500", "--currency", "USD", "--collateral-ref", "r1"]) == 0
    assert watcher_cli(["unbond", *argv]) == 0
    bond_line, unbond_line = capsys.readouterr().out.splitlines()
    for line, kind in ((bond_line, "watcher.bond"), (unbond_line, "watcher.unbond")):
        item = json.loads(line)
        assert item["kind"] == kind
        LogWriter.check_transition(kind, item["payload"])
        key = check_watcher_payload(kind, item["payload"])
        assert key.name == "w1.example" and item["payload"]["request"]["corridors"] == ["PAK-KSA"]
    assert json.loads(bond_line)["payload"]["request"]["amount"] == "500"
    assert watcher_cli(["bond", *argv, "--amount", "0", "--currency", "USD", "--collateral-ref", "r"]) == 1


class FakeFinality:
    def __init__(self, service: Any) -> None:
        self.service = service

    def receipt_finality(self, origin: str, sequence: int) -> dict[str, Any]:
        result: dict[str, Any] = self.service.quorum.finality(origin, sequence)
        return result

    def corridor_watchers(self, corridor_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.service.quorum.watchers()
        return result


class StatusOf:
    def __init__(self, service: Any) -> None:
        self.service = service

    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.service.status()
        return result


async def test_api_accepts_watcher_requests_and_answers_finality(pair: Any) -> None:
    pak, ksa, _, ksa_host = pair
    app = build_app(
        ApiContext(
            store=pak.store, writers={"PAK-KSA": pak.writer}, token="t" * 32, status=StatusOf(pak),
            finality=FakeFinality(pak),
        )
    )  # fmt: skip
    auth = {"Authorization": "Bearer " + "t" * 32}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        for key in WATCHERS:
            body = {"kind": "watcher.bond", "payload": bond(key)}
            response = await http.post("/v1/corridors/PAK-KSA/transitions", json=body, headers=auth)
            assert response.status_code == 201, response.text
        forged = {**bond(WATCHERS[0]), "signature": bond(WATCHERS[1])["signature"]}
        response = await http.post(
            "/v1/corridors/PAK-KSA/transitions",
            json={"kind": "watcher.bond", "payload": forged},
            headers=auth,
        )
        assert response.status_code == 422 and "bad-watcher-signature" in response.text
        answer = (await http.get(f"/v1/logs/{PAK}/receipts/3/finality")).json()
        assert answer == {
            "receipt_signed": True, "counterparty_cosigned": False,
            "quorum_final": False, "quorum_final_size": 0,
        }  # fmt: skip
        await ksa_cosigns_pak(pak, ksa, ksa_host)
        answer = (await http.get(f"/v1/logs/{PAK}/receipts/3/finality")).json()
        assert answer["counterparty_cosigned"] and answer["quorum_final"] and answer["quorum_final_size"] == 4
        assert (await http.get(f"/v1/logs/{PAK}/receipts/9/finality")).status_code == 404
        ledger = (await http.get("/v1/corridors/PAK-KSA/watchers")).json()
        assert ledger["active"] == 400
        assert {w["name"] for w in ledger["watchers"]} == {k.name for k in WATCHERS}
        status = (await http.get("/v1/corridors/PAK-KSA/status")).json()
        assert status["finality"][PAK]["quorum_final_size"] == 4
        assert status["finality"][KSA]["active_watchers"] == 4
