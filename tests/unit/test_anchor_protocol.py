"""protocol.anchor: calldata, the anchor record, the state machine table, verification given as data."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jsonschema
import pytest

import protocol.anchor as anchor_module
from protocol.anchor import (
    ANCHOR_TAG,
    TRANSITIONS,
    AnchorEvent,
    AnchorRecord,
    AnchorState,
    advance,
    anchor_calldata,
    checkpoint_digest,
    join_bundle_extra,
    parse_calldata,
    split_bundle_extra,
    state_diagram,
    verify_anchor,
)
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.schemas import load_schema

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KEY = SigningKey.generate(ORIGIN)
TX = "0x" + "ab" * 32
BLOCK = "0x" + "cd" * 32
SENDER = "0x" + "11" * 20
NOW = "2026-11-27T10:00:00Z"


def _note(size: int = 5, key: SigningKey = KEY) -> bytes:
    cp = Checkpoint(origin=ORIGIN, size=size, root=hashlib.sha256(b"root%d" % size).digest())
    return format_note(sign_checkpoint(cp, key))


def _record(**changes: Any) -> AnchorRecord:
    note = _note()
    fields: dict[str, Any] = {
        "corridor_id": "PAK-KSA", "origin": ORIGIN, "size": 5,
        "checkpoint_sha256": checkpoint_digest(note).hex(), "checkpoint": note.decode(),
        "chain_id": 31337, "sender": SENDER, "tx_hash": TX, "nonce": 0,
        "max_fee_per_gas": 2, "max_priority_fee_per_gas": 1, "attempts": (TX,),
        "state": AnchorState.SUBMITTED, "updated": NOW,
    }  # fmt: skip
    fields.update(changes)
    return AnchorRecord(**fields)


def _chain(record: AnchorRecord, *, number: int = 10) -> dict[str, Any]:
    """The JSON-RPC answers a chain gives for an included anchor transaction."""
    return {
        "tx": {
            "hash": record.tx_hash, "chainId": hex(record.chain_id), "from": record.sender,
            "input": "0x" + anchor_calldata(record.digest).hex(),
        },
        "receipt": {"status": "0x1", "blockNumber": hex(number), "blockHash": BLOCK},
        "block": {
            "number": hex(number), "hash": BLOCK, "timestamp": "0x10", "transactions": [record.tx_hash],
        },
    }  # fmt: skip


def test_calldata_round_trip_and_tag() -> None:
    digest = bytes(range(32))
    data = anchor_calldata(digest)
    assert data[:4] == ANCHOR_TAG and len(data) == 36
    assert parse_calldata(data) == digest
    for bad in (data[:-1], data + b"\x00", b"XXXX" + digest):
        with pytest.raises(PeerProtocolError) as info:
            parse_calldata(bad)
        assert info.value.reason == "anchor-bad-calldata"


def test_digest_is_of_the_body_only() -> None:
    note = _note()
    body = note.split(b"\n\n")[0] + b"\n"
    assert checkpoint_digest(note) == hashlib.sha256(body).digest()


def test_record_round_trips_canonically() -> None:
    record = _record()
    assert AnchorRecord.from_bytes(record.to_bytes()) == record
    with pytest.raises(PeerProtocolError) as info:
        AnchorRecord.from_bytes(record.to_bytes().replace(b"{", b"{ ", 1))
    assert info.value.reason == "bad-anchor"


def test_record_refuses_a_digest_of_another_checkpoint() -> None:
    with pytest.raises(PeerProtocolError) as info:
        _record(checkpoint_sha256="00" * 32)
    assert info.value.reason == "anchor-digest-mismatch"


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 6), ("tx_hash", "0x" + "AB" * 32), ("sender", "0x12"), ("attempts", ()), ("nonce", -1),
     ("block_number", 3), ("chain_id", 0), ("updated", "yesterday")],
)  # fmt: skip
def test_record_near_misses(field: str, value: Any) -> None:
    with pytest.raises(PeerProtocolError) as info:
        _record(**{field: value})
    assert info.value.reason == "bad-anchor"


def test_state_machine_happy_path_reorg_and_resubmit() -> None:
    record = _record()
    bumped = advance(record, AnchorEvent.BUMPED, now=NOW, tx_hash="0x" + "ee" * 32, max_fee_per_gas=3)
    assert bumped.state is AnchorState.SUBMITTED and bumped.attempts == (TX, "0x" + "ee" * 32)
    included = advance(
        bumped, AnchorEvent.INCLUDED, now=NOW, block_number=7, block_hash=BLOCK, confirmations=1
    )
    confirmed = advance(included, AnchorEvent.CONFIRMED, now=NOW, confirmations=3)
    assert confirmed.state is AnchorState.CONFIRMED
    reorged = advance(confirmed, AnchorEvent.REORGED, now=NOW)
    assert reorged.block_number is None and reorged.confirmations == 0
    again = advance(reorged, AnchorEvent.RESUBMITTED, now=NOW, tx_hash="0x" + "ff" * 32, nonce=1)
    assert again.state is AnchorState.RESUBMITTED and len(again.attempts) == 3


def test_every_illegal_transition_raises_and_changes_nothing() -> None:
    samples = {
        AnchorState.SUBMITTED: _record(),
        AnchorState.INCLUDED: _record(state=AnchorState.INCLUDED, block_number=1, block_hash=BLOCK),
        AnchorState.CONFIRMED: _record(state=AnchorState.CONFIRMED, block_number=1, block_hash=BLOCK),
        AnchorState.REORGED: _record(state=AnchorState.REORGED),
        AnchorState.RESUBMITTED: _record(state=AnchorState.RESUBMITTED),
        AnchorState.ABANDONED: _record(state=AnchorState.ABANDONED),
    }
    illegal = 0
    for state, record in samples.items():
        for event in AnchorEvent:
            if (state, event) in TRANSITIONS:
                continue
            before = record.to_bytes()
            with pytest.raises(LocalProtocolError) as info:
                advance(record, event, now=NOW, tx_hash=TX)
            assert info.value.reason == "illegal-anchor-transition"
            assert record.to_bytes() == before
            illegal += 1
    assert illegal > 20
    assert not any(state is AnchorState.ABANDONED for state, _ in TRANSITIONS)


def test_verify_anchor_accepts_the_real_thing() -> None:
    record = _record()
    verdict = verify_anchor(record, **_chain(record), head=12, confirmations=3, log_key=KEY.verifier())
    assert verdict.confirmations == 3 and verdict.block_number == 10 and verdict.checkpoint.size == 5


def _mutate(chain: dict[str, Any], part: str, field: str, value: Any) -> dict[str, Any]:
    out = {k: dict(v) for k, v in chain.items()}
    out[part][field] = value
    return out


@pytest.mark.parametrize(
    ("part", "field", "value", "reason"),
    [
        ("tx", "chainId", hex(1), "anchor-wrong-chain"),
        ("tx", "from", "0x" + "22" * 20, "anchor-wrong-sender"),
        ("tx", "input", "0x" + (ANCHOR_TAG + b"\x00" * 32).hex(), "anchor-calldata-mismatch"),
        ("tx", "input", "0x" + (b"XXXX" + b"\x00" * 32).hex(), "anchor-bad-calldata"),
        ("tx", "hash", "0x" + "99" * 32, "anchor-tx-mismatch"),
        ("receipt", "status", "0x0", "anchor-tx-failed"),
        ("receipt", "blockNumber", None, "anchor-not-included"),
        ("block", "hash", "0x" + "00" * 32, "anchor-block-mismatch"),
        ("block", "transactions", [], "anchor-block-mismatch"),
        ("tx", "chainId", "seven", "anchor-bad-rpc-data"),
    ],
)
def test_verify_anchor_near_misses(part: str, field: str, value: Any, reason: str) -> None:
    record = _record()
    with pytest.raises(PeerProtocolError) as info:
        verify_anchor(record, **_mutate(_chain(record), part, field, value), head=12, confirmations=3)
    assert info.value.reason == reason


def test_verify_anchor_missing_tx_unconfirmed_and_foreign_key() -> None:
    record = _record()
    chain = _chain(record)
    with pytest.raises(PeerProtocolError) as info:
        verify_anchor(record, tx=None, receipt=None, block=None, head=12, confirmations=1)
    assert info.value.reason == "anchor-tx-missing"
    with pytest.raises(PeerProtocolError) as info:
        verify_anchor(record, **chain, head=11, confirmations=3)
    assert info.value.reason == "anchor-unconfirmed"
    forged = SigningKey.generate(ORIGIN)
    with pytest.raises(PeerProtocolError) as info:
        verify_anchor(record, **chain, head=12, confirmations=1, log_key=forged.verifier())
    assert info.value.reason == "missing-log-signature"  # another key: its key ID is not on the note


def test_forged_record_for_another_checkpoint_fails() -> None:
    """An attacker re-labels a real anchor transaction as the anchor of a different checkpoint."""
    record = _record()
    chain = _chain(record)
    other = _note(size=9)
    forged = dataclasses.replace(
        record, size=9, checkpoint=other.decode(), checkpoint_sha256=checkpoint_digest(other).hex()
    )
    with pytest.raises(PeerProtocolError) as info:
        verify_anchor(forged, **chain, head=12, confirmations=1)
    assert info.value.reason == "anchor-calldata-mismatch"


def test_bundle_extra_round_trip() -> None:
    receipt = b'{"a":1,"type":"sez.receipt/v1"}'
    record = _record()
    joined = join_bundle_extra(receipt, record)
    assert split_bundle_extra(joined) == (receipt, record)
    assert split_bundle_extra(receipt) == (receipt, None)


def test_record_json_matches_its_schema() -> None:
    validator = jsonschema.Draft202012Validator(load_schema("anchor"))
    for record in (_record(), _record(state=AnchorState.CONFIRMED, block_number=3, block_hash=BLOCK)):
        validator.validate(record.to_json())


def test_state_diagram_is_the_table() -> None:
    diagram = state_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    assert diagram.count(" --> ") == len(TRANSITIONS) + 1
    assert "    included --> reorged: reorged" in diagram
    assert diagram in (anchor_module.__doc__ or "")  # the module's documented diagram is current
