"""node.anchoring: the anchors topic's validator and consumer, and the stored records (real LMDB)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from node.anchoring import CorridorAnchors, finality_fields
from node.p2p import Verdict
from protocol.anchor import AnchorRecord, AnchorState, checkpoint_digest
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.wire import AnchorAnnouncement, CheckpointAnnouncement, encode
from store import LogStore

OURS = SigningKey.generate("sez.gov.pk/corridor/PAK-KSA")
THEIRS = SigningKey.generate("sez.gov.sa/corridor/PAK-KSA")
TX = "0x" + "ab" * 32
BLOCK = "0x" + "cd" * 32


def _wire(record: AnchorRecord, corridor: str = "PAK-KSA") -> bytes:
    return encode(AnchorAnnouncement(corridor=corridor, record=record.to_bytes()))


def _record(key: SigningKey, size: int = 4, **changes: Any) -> AnchorRecord:
    cp = Checkpoint(origin=key.name, size=size, root=hashlib.sha256(b"%d" % size).digest())
    note = format_note(sign_checkpoint(cp, key))
    fields: dict[str, Any] = {
        "corridor_id": "PAK-KSA", "origin": key.name, "size": size,
        "checkpoint_sha256": checkpoint_digest(note).hex(), "checkpoint": note.decode(), "chain_id": 31337,
        "sender": "0x" + "11" * 20, "tx_hash": TX, "nonce": 0, "max_fee_per_gas": 2,
        "max_priority_fee_per_gas": 1, "attempts": (TX,), "state": AnchorState.SUBMITTED,
        "updated": "2026-11-27T10:00:00Z",
    }  # fmt: skip
    fields.update(changes)
    return AnchorRecord(**fields)


def _anchors(store: LogStore) -> CorridorAnchors:
    return CorridorAnchors(
        store=store, corridor_id="PAK-KSA", origin=OURS.name,
        log_keys={OURS.name: OURS.verifier(), THEIRS.name: THEIRS.verifier()},
        quorum=None, host=None, config=None,  # type: ignore[arg-type]  # anchoring off: not used
    )  # fmt: skip


@pytest.fixture
def anchors(tmp_path: Path) -> Any:
    with LogStore(tmp_path / "db") as store:
        yield _anchors(store)


def test_validator_verdicts(anchors: CorridorAnchors) -> None:
    assert anchors.validate("peer", _wire(_record(THEIRS))) is Verdict.ACCEPT
    assert anchors.validate("peer", _wire(_record(OURS))) is Verdict.IGNORE  # our own, echoed
    forged_key = SigningKey.generate(THEIRS.name)
    forged = _record(forged_key)  # a checkpoint the counterparty never signed
    stranger = SigningKey.generate("sez.gov.ae/corridor/PAK-KSA")
    not_canonical = encode(AnchorAnnouncement(corridor="PAK-KSA", record=b" " + _record(THEIRS).to_bytes()))
    wrong_kind = encode(CheckpointAnnouncement(corridor="PAK-KSA", origin=THEIRS.name, note=b"n\n"))
    for data in (_wire(forged), _wire(_record(stranger)), not_canonical, b"x" * 20000, wrong_kind,
                 _wire(_record(THEIRS), corridor="PAK-UAE")):  # fmt: skip
        assert anchors.validate("peer", data) is Verdict.REJECT
    assert anchors.rejected == {
        "missing-log-signature": 1, "unknown-origin": 1, "bad-anchor": 1, "wrong-topic": 1,
        "wrong-corridor": 1, "bad-message": 1,
    }  # fmt: skip


async def test_pending_records_are_stored_confirmed_ones_need_the_chain(anchors: CorridorAnchors) -> None:
    record = _record(THEIRS)
    assert await anchors.receive(_wire(record)) is True
    assert anchors.records() == [record]
    confirmed = dataclasses.replace(record, size=4, state=AnchorState.CONFIRMED, block_number=3,
                                    block_hash=BLOCK, confirmations=6)  # fmt: skip
    # No RPC node for that chain here: a confirmed record is not taken on the peer's word.
    assert await anchors.receive(_wire(confirmed)) is False
    assert anchors.records() == [record]
    assert anchors.anchored_size(THEIRS.name) == 0
    assert finality_fields(anchors, THEIRS.name, 0) == {"anchored": False, "anchored_size": 0}
    with pytest.raises(PeerProtocolError) as info:
        await anchors.receive(_wire(_record(SigningKey.generate(THEIRS.name))))
    assert info.value.reason == "missing-log-signature"
    assert anchors.records() == [record]  # nothing stored changed


def test_covering_and_anchored_size_use_confirmed_records_only(anchors: CorridorAnchors) -> None:
    confirmed = _record(OURS, 4, state=AnchorState.CONFIRMED, block_number=3, block_hash=BLOCK)
    pending = _record(OURS, 9)
    anchors.store.put_anchor(confirmed)
    anchors.store.put_anchor(pending)
    anchors = _anchors(anchors.store.store)  # a restart reads the stored records
    assert anchors.anchored_size(OURS.name) == 4
    assert anchors.covering(OURS.name, 3) == confirmed
    assert anchors.covering(OURS.name, 4) is None
    assert finality_fields(anchors, OURS.name, 3) == {"anchored": True, "anchored_size": 4}
    assert anchors.listing()["anchors"] == [confirmed.to_json(), pending.to_json()]
    assert anchors.status()["enabled"] is False
