"""Settlement between two nodes (issue 9, node side): real stores, writers, replicas, quorum finality.

The corridor services, their LMDB stores, log writers, replicas and quorum collectors are the real ones
(``test_witness_acks``); finality is the real bilateral bootstrap finality, reached by replicating and
cosigning both ways. Only the libp2p host is replaced: :class:`LinkedHost` carries a ``/sez/settle/1``
stream to the other node's real stream handler (:func:`node.settlement.serve_settle_frames`) over an
in-memory stream pair. The process-level test with real libp2p is
``tests/integration/test_settlement_processes.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from node import settlement
from node.api import ApiContext, build_app
from node.ingest import Ingestor
from node.settle_cli import describe_refusal
from node.settlement import (
    MAX_SETTLE_FRAME,
    SETTLE_PROTOCOL_ID,
    SettlementBook,
    SettlementRefused,
    SettlementService,
    serve_settle_frames,
)
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import canonical
from protocol.keys import SigningKey
from protocol.settlement import Flow, NetPosition, sign_statement, verify_statement
from protocol.sync import FrameDecoder, frame
from protocol.wire import MAX_STATEMENT_BYTES, SettleAccepted, SettleProposal, SettleRefused
from store import LogStore
from tests.unit.test_quorum_collector import deliver_party_cosignatures
from tests.unit.test_witness_acks import KSA, KSA_KEY, PAK, PAK_KEY, RecordingHost, replicate, service

PAK_PEER = "pak-peer"
KSA_PEER = "ksa-peer"
KEYS = {PAK: PAK_KEY.verifier(), KSA: KSA_KEY.verifier()}


class _ServerSide:
    """The accepting end of an in-memory stream, with the peer id the handler checks."""

    def __init__(self, stream: trio.abc.Stream, peer_id: str) -> None:
        self._stream = stream
        self.peer_id = peer_id

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)


class LinkedHost(RecordingHost):
    """A host connected to one peer; a settle stream to it is served by that node's real handler."""

    def __init__(self, nursery: trio.Nursery, own_peer: str, other_peer: str) -> None:
        super().__init__()
        self.nursery = nursery
        self.own_peer = own_peer
        self.other_peer = other_peer
        self.handler: Callable[[Any], Any] | None = None
        self.connected = True

    def is_connected(self, peer_id: str) -> bool:
        return self.connected and peer_id == self.other_peer

    async def open_stream(self, peer_id: str, protocol_id: str) -> trio.abc.Stream:
        assert peer_id == self.other_peer and protocol_id == SETTLE_PROTOCOL_ID and self.handler
        client, server = trio.testing.memory_stream_pair()
        handler = self.handler

        async def serve() -> None:
            async with server:
                await handler(_ServerSide(server, self.own_peer))

        self.nursery.start_soon(serve)
        return client


class Node:
    """One corridor party: its corridor service (real store, writer, replica, quorum) and settlement."""

    def __init__(self, corridor: Any, recording: RecordingHost, link: LinkedHost, peer: str) -> None:
        self.corridor = corridor
        self.recording = recording
        self.link = link
        self.store: LogStore = corridor.store
        self.book = SettlementBook(
            corridor.store, "PAK-KSA", corridor.key, counterparty_origin=corridor.counterparty_origin,
            counterparty_key=corridor.counterparty_key, final_size=corridor.quorum.final_size,
        )  # fmt: skip
        fake: Any = link
        self.settlement = SettlementService(self.book, corridor.writer, fake, [peer])

    async def submit(self, payload: dict[str, Any]) -> None:
        await self.corridor.writer.submit("transfer", payload)

    def settlement_payloads(self, origin: str) -> list[dict[str, Any]]:
        out = []
        for _, raw in self.store.iter_receipts(origin):
            body = json.loads(raw)
            if body["transition"]["kind"] == "settlement":
                out.append(body["transition"]["payload"])
        return out


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    with (
        LogStore(tmp_path / "pak") as pak_store,
        LogStore(tmp_path / "ksa") as ksa_store,
        Ingestor(pak_store, workers=0) as pak_ingest,
        Ingestor(ksa_store, workers=0) as ksa_ingest,
    ):
        async with trio.open_nursery() as nursery:
            pak_rec, ksa_rec = RecordingHost(), RecordingHost()
            pak_svc = service(pak_store, PAK_KEY, KSA_KEY, pak_rec, pak_ingest)
            ksa_svc = service(ksa_store, KSA_KEY, PAK_KEY, ksa_rec, ksa_ingest)
            pak_link = LinkedHost(nursery, PAK_PEER, KSA_PEER)
            ksa_link = LinkedHost(nursery, KSA_PEER, PAK_PEER)
            pak, ksa = Node(pak_svc, pak_rec, pak_link, KSA_PEER), Node(ksa_svc, ksa_rec, ksa_link, PAK_PEER)
            pak_link.handler = serve_settle_frames(lambda: {"PAK-KSA": ksa.settlement})
            ksa_link.handler = serve_settle_frames(lambda: {"PAK-KSA": pak.settlement})
            await nursery.start(pak_svc.writer.run)
            await nursery.start(ksa_svc.writer.run)
            yield pak, ksa
            nursery.cancel_scope.cancel()


async def finalize(pak: Node, ksa: Node) -> tuple[int, int]:
    """Replicate and cosign both ways (bilateral bootstrap finality); the final sizes (PAK, KSA)."""
    replicate(pak.store, ksa.corridor, PAK)
    await ksa.corridor.cosign_latest(force=True)
    await deliver_party_cosignatures(ksa.recording, pak.corridor)
    replicate(ksa.store, pak.corridor, KSA)
    await pak.corridor.cosign_latest(force=True)
    await deliver_party_cosignatures(pak.recording, ksa.corridor)
    # Let each side see the other's latest log (acks written above) without finalizing more.
    replicate(pak.store, ksa.corridor, PAK)
    replicate(ksa.store, pak.corridor, KSA)
    sizes = (pak.corridor.quorum.final_size(PAK), pak.corridor.quorum.final_size(KSA))
    assert sizes == (ksa.corridor.quorum.final_size(PAK), ksa.corridor.quorum.final_size(KSA))
    return sizes


def transfer(n: int, sender: str, receiver: str, currency: str, amount: int) -> dict[str, Any]:
    return {
        "transfer_id": f"T-{n}",
        "sender": {"entity_id": f"acct-{sender}", "jurisdiction": sender},
        "receiver": {"entity_id": f"acct-{receiver}", "jurisdiction": receiver},
        "currency": currency,
        "amount": str(amount),
    }


async def random_traffic(pak: Node, ksa: Node, rnd: random.Random, count: int) -> dict[str, list[int]]:
    """``count`` transfers both ways, written into either log; the reference sums per currency."""
    sums: dict[str, list[int]] = {}
    for n in range(count):
        sender, receiver = rnd.choice([("PAK", "KSA"), ("PAK", "SAU"), ("KSA", "PAK"), ("SAU", "PAK")])
        currency = rnd.choice(["USD", "SAR", "PKR"])
        amount = rnd.choice([rnd.randrange(1000), rnd.randrange(10**30), 2**53 + 1])
        await rnd.choice([pak, ksa]).submit(transfer(n, sender, receiver, currency, amount))
        entry = sums.setdefault(currency, [0, 0])
        entry[0 if sender == "PAK" else 1] += amount
    return sums


# ------------------------------------------------------------------------------------------ tests


async def test_settle_nets_both_ways_and_both_logs_carry_the_same_statement(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    sums = await random_traffic(pak, ksa, random.Random(9), 60)
    final_pak, final_ksa = await finalize(pak, ksa)

    result = await pak.settlement.settle()

    statement = verify_statement(result["statement"], KEYS)
    assert [(w.origin, w.from_size, w.to_size) for w in statement.windows] == [
        (PAK, 0, final_pak),
        (KSA, 0, final_ksa),
    ]
    figures = {p.currency: [p.a_to_b.gross, p.b_to_a.gross] for p in statement.positions}
    assert figures == sums
    assert any(p.a_to_b.gross > 2**53 for p in statement.positions)
    # Both logs hold the same co-signed statement, once each; PAK's copy is the returned receipt.
    assert ksa.settlement_payloads(KSA) == [result["statement"]]
    assert pak.settlement_payloads(PAK) == [result["statement"]]
    assert result["receipt"]["transition"]["payload"] == result["statement"]
    assert result["recovered"] == []
    # Each side's list shows its own copy and, once replicated, the other's.
    replicate(ksa.store, pak.corridor, KSA)
    listed = await pak.settlement.settlements()
    assert [(s["origin"], s["statement_digest"]) for s in listed["settlements"]] == [
        (PAK, statement.digest().hex()),
        (KSA, statement.digest().hex()),
    ]


async def test_nothing_new_is_nothing_to_settle_and_the_next_window_chains(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    first = verify_statement((await pak.settlement.settle())["statement"], KEYS)
    await finalize(pak, ksa)
    with pytest.raises(LocalProtocolError) as caught:
        await pak.settlement.settle()
    assert caught.value.reason == "nothing-to-settle"

    await ksa.submit(transfer(2, "KSA", "PAK", "USD", 7))
    sizes = await finalize(pak, ksa)
    second = verify_statement((await ksa.settlement.settle())["statement"], KEYS)  # KSA proposes this time
    assert [(w.from_size, w.from_root) for w in second.windows] == [
        (w.to_size, w.to_root) for w in first.windows
    ]
    assert [w.to_size for w in second.windows] == list(sizes)
    (usd,) = second.positions
    assert (usd.a_to_b.count, usd.b_to_a.gross, usd.b_to_a.count) == (0, 7, 1)
    assert usd.net(("PAK", "KSA")) == NetPosition(payer="KSA", payee="PAK", amount=7)
    assert pak.settlement_payloads(PAK)[-1] == ksa.settlement_payloads(KSA)[-1] == second.to_json()


async def test_the_same_window_twice_is_refused(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    proposal = await trio.to_thread.run_sync(pak.book.propose)
    request = SettleProposal(id=1, corridor="PAK-KSA", statement=proposal.to_bytes())
    assert isinstance(await ksa.settlement.answer(request), SettleAccepted)
    head = ksa.store.head(KSA).size

    again = await ksa.settlement.answer(request)

    assert isinstance(again, SettleRefused) and again.reason == "window-already-settled"
    assert json.loads(again.details)["settled_to"] > 0
    assert ksa.store.head(KSA).size == head  # nothing written


async def test_a_window_ending_beyond_the_counterpartys_final_size_is_refused(
    nodes: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    pak, ksa = nodes
    monkeypatch.setattr(settlement, "NOT_FINAL_RETRY_DELAY", 0.01)  # refused again on every retry
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    # PAK's log grows and PAK (wrongly) treats it as final; KSA holds the receipts but never cosigned them.
    await pak.submit(transfer(2, "PAK", "KSA", "USD", 6))
    replicate(pak.store, ksa.corridor, PAK)
    pak.book._final_size = lambda origin: pak.store.head(origin).size
    head = ksa.store.head(KSA).size

    with pytest.raises(SettlementRefused) as caught:
        await pak.settlement.settle()

    assert caught.value.reason == "window-not-final"
    assert caught.value.details["refused_by"] == KSA
    assert caught.value.details["origin"] == PAK
    assert ksa.store.head(KSA).size == head and ksa.settlement_payloads(KSA) == []
    assert pak.settlement_payloads(PAK) == []


async def test_a_statement_that_nets_differently_is_refused_with_the_differing_figures(
    nodes: tuple[Node, Node],
) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 2**60))
    await ksa.submit(transfer(2, "KSA", "PAK", "USD", 3))
    await finalize(pak, ksa)
    honest = await trio.to_thread.run_sync(pak.book.propose)
    # A proposer whose figures differ from KSA's replica (a bug, or a lie), validly signed by PAK.
    (usd,) = honest.positions
    changed = replace(usd, a_to_b=Flow(gross=usd.a_to_b.gross + 1, count=usd.a_to_b.count))
    unsigned = replace(honest, positions=(changed,), signatures=())
    forged = unsigned.with_signature(sign_statement(unsigned, PAK_KEY))
    head = ksa.store.head(KSA).size

    answer = await ksa.settlement.answer(
        SettleProposal(id=1, corridor="PAK-KSA", statement=forged.to_bytes())
    )

    assert isinstance(answer, SettleRefused) and answer.reason == "statement-mismatch"
    differences = json.loads(answer.details)["differences"]
    assert {"field": "positions[USD].a_to_b.gross", "proposed": str(2**60 + 1), "computed": str(2**60)} in (
        differences
    )
    assert {"field": "positions[USD].net.amount", "proposed": str(2**60 - 2), "computed": str(2**60 - 3)} in (
        differences
    )
    assert ksa.store.head(KSA).size == head


async def test_a_tampered_or_unsigned_proposal_is_refused(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    proposal = await trio.to_thread.run_sync(pak.book.propose)
    tampered = proposal.to_json()
    tampered["positions"][0]["a_to_b"]["gross"] = "6"
    tampered["positions"][0]["net"]["amount"] = "6"
    impostor = SigningKey(PAK, bytes(range(5, 37)))
    pak_method = PAK_KEY.verifier().verification_method
    forged_line = sign_statement(proposal, impostor).to_json() | {"verificationMethod": pak_method}
    cases = {
        "statement-digest-mismatch": canonical(tampered),
        "bad-signature": canonical({**proposal.to_json(), "signatures": [forged_line]}),
        "wrong-key": proposal.with_signature(sign_statement(proposal, impostor)).to_bytes(),
        "bad-json": b"{",
    }
    for reason, data in cases.items():
        answer = await ksa.settlement.answer(SettleProposal(id=3, corridor="PAK-KSA", statement=data))
        assert isinstance(answer, SettleRefused) and answer.reason == reason, (reason, answer)
    assert ksa.settlement_payloads(KSA) == []


async def test_a_proposal_arriving_during_our_own_settlement_is_refused_busy(
    nodes: tuple[Node, Node],
) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    proposal = await trio.to_thread.run_sync(pak.book.propose)
    async with ksa.settlement._lock:
        answer = await ksa.settlement.answer(
            SettleProposal(id=1, corridor="PAK-KSA", statement=proposal.to_bytes())
        )
        with pytest.raises(LocalProtocolError) as caught:
            await ksa.settlement.settle()
    assert isinstance(answer, SettleRefused) and answer.reason == "settlement-busy"
    assert caught.value.reason == "settlement-busy"


async def test_a_statement_only_the_counterparty_recorded_is_caught_up(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    proposal = await trio.to_thread.run_sync(pak.book.propose)
    # KSA countersigned and wrote it, but PAK never got the answer (it crashed or timed out).
    answer = await ksa.settlement.answer(
        SettleProposal(id=1, corridor="PAK-KSA", statement=proposal.to_bytes())
    )
    assert isinstance(answer, SettleAccepted)
    assert pak.settlement_payloads(PAK) == []
    replicate(ksa.store, pak.corridor, KSA)

    result = await pak.settlement.settle()

    assert [r["statement"]["statement_digest"] for r in result["recovered"]] == [proposal.digest().hex()]
    assert pak.settlement_payloads(PAK) == ksa.settlement_payloads(KSA)
    assert result["statement"]["statement_digest"] == proposal.digest().hex()


async def test_an_unreachable_counterparty_or_a_stranger_peer_settles_nothing(
    nodes: tuple[Node, Node],
) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    pak.link.connected = False
    with pytest.raises(LocalProtocolError) as caught:
        await pak.settlement.settle()
    assert caught.value.reason == "counterparty-unreachable"
    pak.link.connected = True
    ksa.settlement.peer_ids = ("someone-else",)  # PAK's peer id is not configured on KSA's side
    with pytest.raises(SettlementRefused) as refused:
        await pak.settlement.settle()
    assert refused.value.reason == "not-a-party"
    assert pak.settlement_payloads(PAK) == ksa.settlement_payloads(KSA) == []


async def test_a_settlement_receipt_that_does_not_verify_settles_nothing(nodes: tuple[Node, Node]) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)
    proposal = await trio.to_thread.run_sync(pak.book.propose)
    # Schema-valid, but "signed" by PAK twice over: KSA's signature slot holds PAK's bytes.
    bogus = proposal.to_json()
    bogus["signatures"] = [
        proposal.signatures[0].to_json(),
        {**proposal.signatures[0].to_json(), "origin": KSA,
         "verificationMethod": KSA_KEY.verifier().verification_method},
    ]  # fmt: skip
    await ksa.corridor.writer.submit("settlement", bogus)
    assert ksa.book.records() == []
    assert ksa.book.settled_windows() == []


# ------------------------------------------------------------------------------------ API and CLI


class Desk:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def settle(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"statement": {}, "receipt": {}, "recovered": []}

    async def settlements(self) -> dict[str, Any]:
        return {"corridor": "PAK-KSA", "settlements": []}


async def test_the_api_answers_a_refusal_as_a_problem_with_the_differing_figures(tmp_path: Path) -> None:
    differences = [{"field": "positions[USD].a_to_b.gross", "proposed": "6", "computed": "5"}]
    refusal = SettlementRefused("statement-mismatch", "KSA refused", refused_by=KSA, differences=differences)
    with LogStore(tmp_path / "s") as store:
        desks: dict[str, Any] = {"PAK-KSA": Desk(refusal), "PAK-UAE": Desk()}
        status: Any = None
        app = build_app(ApiContext(store=store, writers={}, token="t", status=status, settlements=desks))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            auth = {"Authorization": "Bearer t"}
            refused = await client.post("/v1/corridors/PAK-KSA/settlements", headers=auth)
            assert refused.status_code == 409
            body = refused.json()
            assert body["type"] == "urn:sez:problem:statement-mismatch"
            assert body["refused_by"] == KSA and body["differences"] == differences
            message = describe_refusal(body)
            assert (
                message is not None and 'positions[USD].a_to_b.gross: proposed "6", computed "5"' in message
            )
            assert (await client.post("/v1/corridors/PAK-UAE/settlements")).status_code == 401
            assert (await client.post("/v1/corridors/PAK-UAE/settlements", headers=auth)).status_code == 201
            assert (await client.post("/v1/corridors/PAK-CHN/settlements", headers=auth)).status_code == 404
            listed = await client.get("/v1/corridors/PAK-UAE/settlements")
            assert listed.json() == {"corridor": "PAK-KSA", "settlements": []}


async def test_an_answer_that_is_not_our_statement_countersigned_writes_nothing(
    nodes: tuple[Node, Node],
) -> None:
    pak, ksa = nodes
    await pak.submit(transfer(1, "PAK", "KSA", "USD", 5))
    await finalize(pak, ksa)

    async def echo_unsigned(stream: Any) -> None:  # "accepts", but sends back the proposal as it came
        decoder = FrameDecoder(MAX_SETTLE_FRAME)
        decoder.receive_data(await stream.receive_some(MAX_SETTLE_FRAME))
        request = decoder.next_message()
        await stream.send_all(frame(SettleAccepted(id=request.id, statement=request.statement)))

    pak.link.handler = echo_unsigned
    with pytest.raises(PeerProtocolError) as caught:
        await pak.settlement.settle()
    assert caught.value.reason == "bad-counterparty-answer"
    assert caught.value.details["cause"] == "missing-signature"
    assert pak.settlement_payloads(PAK) == []

    pak.link.handler = serve_settle_frames(lambda: {})  # a node that is not in the corridor
    with pytest.raises(SettlementRefused) as refused:
        await pak.settlement.settle()
    assert refused.value.reason == "unknown-corridor"
    assert pak.settlement_payloads(PAK) == []


def test_a_refusal_with_more_differences_than_a_frame_holds_is_cut_to_fit() -> None:
    differences = [
        {"field": f"positions[C{i:03}].a_to_b.gross", "proposed": "9" * 64, "computed": "1"}
        for i in range(2000)
    ]
    exc = PeerProtocolError("statement-mismatch", "differs", differences=differences, fields=["x"] * 2000)
    answer = settlement._refusal(SettleProposal(id=4, corridor="PAK-KSA", statement=b"{}"), exc)
    details = json.loads(answer.details)
    assert len(answer.details) <= MAX_STATEMENT_BYTES and details["truncated"] is True
    assert 0 < len(details["differences"]) < 2000 and details["differences"][0] == differences[0]
    assert (answer.id, answer.reason) == (4, "statement-mismatch")
