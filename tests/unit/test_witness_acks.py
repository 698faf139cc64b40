"""The node's witness: cosign the counterparty under the witness rule, ack only real growth (design §6).

The p2p host is faked at the edge (it only records what is published); stores, writers, replicas and
the corridor service are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from node.config import CorridorConfig
from node.corridor import CorridorService
from node.ingest import Ingestor
from protocol.checkpoints import open_checkpoint, parse_checkpoint, verify_cosignatures
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.wire import CosignatureAnnouncement, decode
from store import LogStore

PAK = "sez.gov.pk/corridor/PAK-KSA"
KSA = "sez.gov.sa/corridor/PAK-KSA"
PAK_KEY = SigningKey(PAK, bytes(range(32)))
KSA_KEY = SigningKey(KSA, bytes(range(1, 33)))


class RecordingHost:
    """Stands in for the libp2p host: records publishes, has no peers."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def cosignatures(self) -> list[bytes]:
        return [data for topic, data in self.published if topic.endswith("/cosignatures")]

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((topic, data))

    def is_connected(self, peer_id: str) -> bool:
        return False


def service(
    store: LogStore, own: SigningKey, other: SigningKey, host: RecordingHost, ingest: Ingestor
) -> Any:
    config = CorridorConfig(
        id="PAK-KSA", origin=own.name, counterparty_origin=other.name, counterparty_key=other.verifier(),
        peers=(), checkpoint_every=1, checkpoint_interval=1,
    )  # fmt: skip
    fake: Any = host
    corridor = CorridorService(
        store=store, config=config, key=own, host=fake, ingestor=ingest, now=lambda: 1_800_000_000
    )
    # These tests are about witnessing and quorum, not the lifecycle (tests/unit/test_node_lifecycle.py):
    # the corridor is taken as ACTIVE, so the logs hold only what each test writes.
    corridor.writer.gate = None
    return corridor


def transfer(i: int) -> dict[str, Any]:
    return {
        "transfer_id": f"t{i}", "sender": {"entity_id": "a", "jurisdiction": "SAU"},
        "receiver": {"entity_id": "b", "jurisdiction": "PAK"}, "currency": "SAR", "amount": str(i),
    }  # fmt: skip


def replicate(source: LogStore, target_service: Any, origin: str) -> None:
    """What gossip or sync would do: copy the writer's new receipts and checkpoint into the replica."""
    held = target_service.store.head(origin).size
    size = source.head(origin).size
    target_service.replica.apply(held, source.receipts(origin, held, size), source.checkpoint(origin))


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


async def test_growth_is_cosigned_and_acked_but_acks_are_not_acked(pair: Any) -> None:
    pak, ksa, pak_host, _ = pair
    for i in range(3):
        await ksa.writer.submit("transfer", transfer(i))
    replicate(ksa.store, pak, KSA)
    assert await pak.cosign_latest(force=True) == 3
    # PAK published a cosignature that verifies under its cosigner key, and wrote one ack.
    (data,) = pak_host.cosignatures()
    message = decode(data, max_bytes=1 << 20)
    assert isinstance(message, CosignatureAnnouncement)
    cp, note = parse_checkpoint(message.note)
    assert verify_cosignatures(note, cp, [PAK_KEY.verifier(ALG_COSIGNATURE_V1)]) == {PAK: 1_800_000_000}
    assert pak.store.head(PAK).size == 1
    assert pak.stats.acks_written == 1
    ack = pak.store.receipt(PAK, 0)
    assert b'"kind":"ack"' in ack and b'"size":3' in ack

    # KSA now sees PAK's log grow by that ack only: it cosigns, but writes no ack of the ack.
    replicate(pak.store, ksa, PAK)
    assert await ksa.cosign_latest(force=True) == 1
    assert ksa.stats.cosigned == 1 and ksa.stats.acks_written == 0
    assert ksa.store.head(KSA).size == 3

    # Nothing new: nothing to cosign, nothing to ack, on either side.
    assert await pak.cosign_latest(force=True) is None
    assert await ksa.cosign_latest(force=True) is None
    assert (pak.store.head(PAK).size, ksa.store.head(KSA).size) == (1, 3)

    # New transfers on KSA: acked again.
    await ksa.writer.submit("transfer", transfer(9))
    replicate(ksa.store, pak, KSA)
    assert await pak.cosign_latest(force=True) == 4
    assert pak.stats.acks_written == 2


async def test_witness_state_is_stored_before_the_cosignature_is_published(pair: Any) -> None:
    pak, ksa, pak_host, _ = pair
    await ksa.writer.submit("transfer", transfer(1))
    replicate(ksa.store, pak, KSA)
    published_before = len(pak_host.cosignatures())
    original_publish = pak_host.publish

    async def check_then_publish(topic: str, data: bytes) -> None:
        state = pak.store.witness_state(KSA)
        assert state is not None and state["size"] == 1  # durable before anything leaves
        await original_publish(topic, data)

    pak_host.publish = check_then_publish
    assert await pak.cosign_latest(force=True) == 1
    assert len(pak_host.cosignatures()) == published_before + 1
    note = pak.store.witness_state(KSA)["note"]
    assert open_checkpoint(note, KSA_KEY.verifier())[0].size == 1
