"""The log writer: durable acknowledgements, batching, refusal of bad transitions, clean shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.writer import CommittedBatch, LogWriter
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import SigningKey
from store import LogStore
from store.fsck import fsck

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KEY = SigningKey(ORIGIN, bytes(range(32)))


def transfer(i: int) -> dict[str, Any]:
    return {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "a", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "b", "jurisdiction": "SAU"},
        "currency": "PKR",
        "amount": str(i),
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with LogStore(tmp_path / "data") as opened:
        yield opened


async def test_concurrent_submissions_become_one_consecutive_durable_log(store: LogStore) -> None:
    batches: list[CommittedBatch] = []

    async def on_batch(batch: CommittedBatch) -> None:
        batches.append(batch)

    writer = LogWriter(
        store, "PAK-KSA", KEY, on_batch=on_batch, max_batch=16, now=lambda: "2026-11-27T10:00:00Z"
    )
    receipts: dict[int, Any] = {}

    async def submit(i: int) -> None:
        receipts[i] = await writer.submit("transfer", transfer(i))
        # Acknowledged means stored: the receipt is readable now.
        assert store.receipt(ORIGIN, receipts[i].sequence) == receipts[i].raw

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as submitters:
            for i in range(100):
                submitters.start_soon(submit, i)
        nursery.cancel_scope.cancel()

    assert sorted(r.sequence for r in receipts.values()) == list(range(100))
    assert store.head(ORIGIN).size == 100
    assert all(len(b.receipts) <= 16 for b in batches)
    assert [r.sequence for b in batches for r in b.receipts] == list(range(100))
    assert store.checkpoint_sizes(ORIGIN)[-1] == 100
    assert writer.statistics().receipts == 100
    assert fsck(store).ok


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("teleport", {}, "unknown-kind"),
        ("transfer", {**transfer(1), "amount": 1.5}, "float-refused"),
        ("transfer", {**transfer(1), "amount": "-1"}, "schema-violation"),
        ("transfer", {**transfer(1), "extra": "x"}, "schema-violation"),
        (None, {}, "unknown-kind"),
    ],
)
async def test_bad_transitions_are_refused_before_the_log(
    store: LogStore, kind: Any, payload: Any, reason: str
) -> None:
    writer = LogWriter(store, "PAK-KSA", KEY)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with pytest.raises(PeerProtocolError) as info:
            await writer.submit(kind, payload)
        assert info.value.reason == reason
        await writer.submit("transfer", transfer(1))
        nursery.cancel_scope.cancel()
    assert store.head(ORIGIN).size == 1


async def test_queued_submissions_are_answered_on_shutdown(store: LogStore) -> None:
    writer = LogWriter(store, "PAK-KSA", KEY)
    errors: list[str] = []

    async def submit() -> None:
        try:
            await writer.submit("transfer", transfer(0))
        except LocalProtocolError as exc:
            errors.append(exc.reason)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(submit)
        await trio.testing.wait_all_tasks_blocked()
        # The writer never ran: stopping it answers everything queued.
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.run()
    assert errors == ["shutting-down"] * 3
    assert store.head(ORIGIN).size == 0
    with pytest.raises(LocalProtocolError) as info:
        await writer.submit("transfer", transfer(1))
    assert info.value.reason == "shutting-down"


async def test_hook_failure_is_logged_not_fatal(store: LogStore, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(batch: CommittedBatch) -> None:
        raise RuntimeError("gossip is down")

    writer = LogWriter(store, "PAK-KSA", KEY, on_batch=broken)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.submit("transfer", transfer(1))
        await writer.submit("transfer", transfer(2))
        nursery.cancel_scope.cancel()
    assert store.head(ORIGIN).size == 2
    assert "after-batch hook failed" in caplog.text


async def test_writer_continues_an_existing_log(store: LogStore) -> None:
    for round_ in range(2):
        writer = LogWriter(store, "PAK-KSA", KEY)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            receipt = await writer.submit("transfer", transfer(round_))
            nursery.cancel_scope.cancel()
        assert receipt.sequence == round_
    assert fsck(store).ok
