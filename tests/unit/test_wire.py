"""Wire messages and the /sez/sync/1 codec: one table both ways, byte by byte, fuzzed, near misses."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.sync import MAX_IN_FLIGHT, NEED_DATA, FrameDecoder, SyncClient, frame
from protocol.wire import (
    MAX_GOSSIP_BYTES,
    MAX_SYNC_FRAME,
    AnchorAnnouncement,
    CheckpointAnnouncement,
    CosignatureAnnouncement,
    ErrorResponse,
    GetCheckpoint,
    GetConsistency,
    GetInclusion,
    GetReceipts,
    Message,
    NoteResponse,
    ProofResponse,
    ReceiptBatch,
    ReceiptsResponse,
    SettleAccepted,
    SettleProposal,
    SettleRefused,
    decode,
    encode,
)

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
SAMPLES: list[Message] = [
    ReceiptBatch(
        corridor="PAK-KSA", origin=ORIGIN, start=7, receipts=(b'{"a":1}', b'{"b":2}'), checkpoint=b"n\n"
    ),
    CheckpointAnnouncement(corridor="PAK-KSA", origin=ORIGIN, note=b"note\n"),
    CosignatureAnnouncement(corridor="PAK-KSA", origin=ORIGIN, cosigner="watcher-1", note=b"note\n"),
    GetCheckpoint(id=1, origin=ORIGIN, size=0),
    GetReceipts(id=2, origin=ORIGIN, start=100, count=2048),
    GetConsistency(id=3, origin=ORIGIN, old=10, new=2**40),
    GetInclusion(id=4, origin=ORIGIN, index=0, size=1),
    NoteResponse(id=1, note=b"x" * 1000),
    ReceiptsResponse(id=2, origin=ORIGIN, start=100, receipts=()),
    ProofResponse(id=3, hashes=(b"\x00" * 32, b"\xff" * 32)),
    ErrorResponse(id=9, reason="unknown-origin", message="no such log"),
    SettleProposal(id=1, corridor="PAK-KSA", statement=b'{"type":"sez.settlement/v1"}'),
    SettleAccepted(id=1, statement=b"{}"),
    SettleRefused(id=1, reason="statement-mismatch", message="differs", details=b'{"differences":[]}'),
    AnchorAnnouncement(corridor="PAK-KSA", record=b'{"type":"sez.anchor/v1"}'),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.KIND)
def test_round_trip_both_ways(message: Message) -> None:
    data = encode(message)
    assert decode(data, max_bytes=MAX_SYNC_FRAME) == message
    assert encode(decode(data, max_bytes=MAX_SYNC_FRAME)) == data
    raw = msgpack.unpackb(data)
    assert raw["t"] == message.KIND and raw["v"] == 1
    assert list(raw) == sorted(raw)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.KIND)
def test_frames_decode_whole_byte_by_byte_and_with_trailing_bytes(message: Message) -> None:
    data = frame(message)
    whole = FrameDecoder()
    whole.receive_data(data + data)
    assert whole.next_message() == message
    assert whole.next_message() == message
    assert whole.next_message() is NEED_DATA

    trickle = FrameDecoder()
    for i in range(len(data) - 1):
        trickle.receive_data(data[i : i + 1])
        assert trickle.next_message() is NEED_DATA
    trickle.receive_data(data[-1:] + data[:3])
    assert trickle.next_message() == message
    assert trickle.next_message() is NEED_DATA
    assert trickle.buffered == 3


def _raw(**fields: Any) -> bytes:
    return msgpack.packb(dict(sorted(fields.items())), use_bin_type=True)


BASE = {"t": "get-receipts", "v": 1, "id": 1, "origin": ORIGIN, "start": 0, "count": 10}
NEAR_MISSES = [
    ("unknown kind", _raw(**{**BASE, "t": "get-everything"}), "unknown-kind"),
    ("kind not text", _raw(**{**BASE, "t": 5}), "unknown-kind"),
    ("version 2", _raw(**{**BASE, "v": 2}), "bad-version"),
    ("version missing", _raw(**{k: v for k, v in BASE.items() if k != "v"}), "bad-version"),
    ("extra key", _raw(**{**BASE, "x": 1}), "bad-message"),
    ("missing key", _raw(**{k: v for k, v in BASE.items() if k != "count"}), "bad-message"),
    ("negative start", _raw(**{**BASE, "start": -1}), "bad-field"),
    ("count over the range limit", _raw(**{**BASE, "count": 2049}), "bad-field"),
    ("origin as bytes", _raw(**{**BASE, "origin": ORIGIN.encode()}), "bad-field"),
    ("id as bool", _raw(**{**BASE, "id": True}), "bad-field"),
    ("unsorted keys", msgpack.packb(BASE, use_bin_type=True), "non-canonical"),
    ("not a map", msgpack.packb([1, 2]), "bad-message"),
    ("garbage", b"\xc1\xc1\xc1", "bad-message"),
    ("truncated", _raw(**BASE)[:-3], "bad-message"),
    ("trailing byte", _raw(**BASE) + b"\x00", "bad-message"),
    ("empty", b"", "bad-message"),
    (
        "non-minimal integer",
        _raw(**{**BASE, "start": 0}).replace(b"\xa5start\x00", b"\xa5start\xcd\x00\x00"),
        "non-canonical",
    ),
    (
        "bytes sent as str",
        _raw(t="note", v=1, id=1, note="text"),
        "bad-field",
    ),
    (
        "proof hash of 31 bytes",
        _raw(t="proof", v=1, id=1, hashes=[b"\x00" * 31]),
        "bad-field",
    ),
]


@pytest.mark.parametrize(("name", "data", "reason"), NEAR_MISSES, ids=[n for n, _, _ in NEAR_MISSES])
def test_near_misses_are_refused_with_their_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        decode(data, max_bytes=MAX_SYNC_FRAME)
    assert info.value.reason == reason, info.value.message


def test_size_limit_comes_first() -> None:
    data = encode(SAMPLES[0])
    with pytest.raises(PeerProtocolError) as info:
        decode(data, max_bytes=len(data) - 1)
    assert info.value.reason == "too-large"


def test_constructors_refuse_bad_values() -> None:
    with pytest.raises(LocalProtocolError) as info:
        GetReceipts(id=1, origin=ORIGIN, start=-1, count=1)
    assert info.value.reason == "bad-field"
    with pytest.raises(LocalProtocolError):
        ReceiptBatch(corridor="PAK-KSA", origin=ORIGIN, start=0, receipts=(b"x",) * 513, checkpoint=b"")


def test_largest_gossip_batch_fits_the_gossip_limit() -> None:
    receipts = tuple(b"x" * 1500 for _ in range(512))  # transfer receipts are about 900 bytes
    assert len(encode(ReceiptBatch(corridor="PAK-KSA", origin=ORIGIN, start=0, receipts=receipts,
                                   checkpoint=b"n" * 2000))) < MAX_GOSSIP_BYTES  # fmt: skip


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_peer_protocol_error(data: bytes) -> None:
    try:
        message = decode(data, max_bytes=MAX_SYNC_FRAME)
    except PeerProtocolError:
        return
    assert encode(message) == data


@settings(max_examples=500)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_messages_decode_or_raise_peer_protocol_error(message: Message, data: st.DataObject) -> None:
    raw = bytearray(encode(message))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = decode(bytes(raw), max_bytes=MAX_SYNC_FRAME)
    except PeerProtocolError:
        return
    assert encode(decoded) == bytes(raw)


def test_oversized_frame_is_refused_before_buffering_it() -> None:
    decoder = FrameDecoder(max_frame=1024)
    decoder.receive_data((1025).to_bytes(4, "big") + b"x")
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_message()
    assert info.value.reason == "too-large"
    with pytest.raises(PeerProtocolError) as info:  # sticky: the session is over
        decoder.receive_data(frame(SAMPLES[3]))
    assert info.value.reason == "session-broken"


def test_bad_frame_breaks_the_session_for_good() -> None:
    decoder = FrameDecoder()
    decoder.receive_data((3).to_bytes(4, "big") + b"\xc1\xc1\xc1" + frame(SAMPLES[3]))
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_message()
    assert info.value.reason == "bad-message"
    with pytest.raises(PeerProtocolError) as info:
        decoder.next_message()
    assert info.value.reason == "session-broken"


def _served(client: SyncClient, response: Message) -> Any:
    client.receive_data(frame(response))
    return client.next_answer()


def test_client_matches_answers_to_requests() -> None:
    client = SyncClient()
    client.send(GetReceipts(id=client.next_id(), origin=ORIGIN, start=5, count=3))
    client.send(GetCheckpoint(id=client.next_id(), origin=ORIGIN, size=0))
    assert client.in_flight == 2
    answer = _served(client, NoteResponse(id=2, note=b"n"))
    assert isinstance(answer.request, GetCheckpoint)
    answer = _served(client, ReceiptsResponse(id=1, origin=ORIGIN, start=5, receipts=(b"a", b"b")))
    assert isinstance(answer.request, GetReceipts)
    assert client.in_flight == 0
    assert client.next_answer() is NEED_DATA


def test_client_accepts_an_error_answer() -> None:
    client = SyncClient()
    client.send(GetInclusion(id=1, origin=ORIGIN, index=3, size=2))
    answer = _served(client, ErrorResponse(id=1, reason="bad-index", message="3 >= 2"))
    assert isinstance(answer.response, ErrorResponse)


@pytest.mark.parametrize(
    ("request_", "response", "reason"),
    [
        (GetCheckpoint(id=1, origin=ORIGIN, size=0), NoteResponse(id=7, note=b"n"), "unexpected-response"),
        (GetCheckpoint(id=1, origin=ORIGIN, size=0), ProofResponse(id=1, hashes=()), "unexpected-response"),
        (
            GetCheckpoint(id=1, origin=ORIGIN, size=0),
            GetCheckpoint(id=1, origin=ORIGIN, size=0),
            "unexpected-response",
        ),
        (
            GetReceipts(id=1, origin=ORIGIN, start=5, count=1),
            ReceiptsResponse(id=1, origin=ORIGIN, start=6, receipts=()),
            "bad-response",
        ),
        (
            GetReceipts(id=1, origin=ORIGIN, start=5, count=1),
            ReceiptsResponse(id=1, origin="other", start=5, receipts=()),
            "bad-response",
        ),
        (
            GetReceipts(id=1, origin=ORIGIN, start=5, count=1),
            ReceiptsResponse(id=1, origin=ORIGIN, start=5, receipts=(b"a", b"b")),
            "bad-response",
        ),
    ],
)
def test_client_refuses_wrong_answers(request_: Any, response: Message, reason: str) -> None:
    client = SyncClient()
    client.send(request_)
    with pytest.raises(PeerProtocolError) as info:
        _served(client, response)
    assert info.value.reason == reason
    with pytest.raises(PeerProtocolError) as info:
        client.next_answer()
    assert info.value.reason == "session-broken"


def test_client_request_rules() -> None:
    client = SyncClient()
    with pytest.raises(LocalProtocolError) as info:
        client.send(GetCheckpoint(id=5, origin=ORIGIN, size=0))
    assert info.value.reason == "bad-request-id"
    for _ in range(MAX_IN_FLIGHT):
        client.send(GetCheckpoint(id=client.next_id(), origin=ORIGIN, size=0))
    with pytest.raises(LocalProtocolError) as info:
        client.send(GetCheckpoint(id=client.next_id(), origin=ORIGIN, size=0))
    assert info.value.reason == "too-many-in-flight"
