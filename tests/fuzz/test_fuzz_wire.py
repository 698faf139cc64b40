"""Fuzzing the wire decoder and the sync framing: every message kind, mutated, truncated, oversize."""

from __future__ import annotations

import dataclasses
import struct
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import wire
from protocol.errors import PeerProtocolError
from protocol.sync import NEED_DATA, FrameDecoder, frame
from tests.fuzz.mutations import FUZZ, mutated, rejects_cleanly
from tests.light_fixture import Corridor

pytestmark = pytest.mark.timeout(300)

KINDS: list[type[wire.Message]] = [
    cls
    for cls in vars(wire).values()
    if isinstance(cls, type) and issubclass(cls, wire.Message) and cls is not wire.Message
]
MAX = wire.MAX_SYNC_FRAME
CORRIDOR = Corridor(n=3, watchers=2)


def _field_strategy(cls: type[wire.Message], name: str, hint: Any) -> st.SearchStrategy[Any]:
    limit = cls.LIMITS.get(name)
    if hint is str:
        return st.text(max_size=min(limit or 40, 40))
    if hint is int:
        return st.integers(0, limit or wire.MAX_U63)
    if hint is bytes:
        if name in ("note", "checkpoint"):
            return st.just(CORRIDOR.checkpoint())
        return st.binary(max_size=min(limit or 64, 64))
    if name == "hashes":
        return st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple)
    return st.lists(
        st.sampled_from([r.raw for r in CORRIDOR.receipts]) | st.binary(max_size=32), max_size=3
    ).map(tuple)


def messages(cls: type[wire.Message]) -> st.SearchStrategy[wire.Message]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _field_strategy(cls, f.name, hints[f.name]) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))


ANY_MESSAGE = st.one_of([messages(cls) for cls in KINDS])


def test_every_kind_is_fuzzed() -> None:
    """A new message kind joins the fuzzing by itself; this pins that none slipped out of the scan."""
    assert len({cls.KIND for cls in KINDS}) == len(KINDS) == 15


@FUZZ
@given(ANY_MESSAGE)
def test_valid_messages_round_trip(message: wire.Message) -> None:
    assert wire.decode(wire.encode(message), max_bytes=MAX) == message


@FUZZ
@given(st.data())
def test_mutated_messages_decode_or_are_refused_as_peer_faults(data: st.DataObject) -> None:
    message = data.draw(ANY_MESSAGE)
    raw = data.draw(mutated(wire.encode(message)))
    decoded = rejects_cleanly(lambda: wire.decode(raw, max_bytes=MAX), PeerProtocolError)
    if decoded is not None:
        # Only the canonical encoding is accepted, so whatever decodes re-encodes to the same bytes.
        assert wire.encode(decoded) == raw


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_are_refused_as_peer_faults(raw: bytes) -> None:
    rejects_cleanly(lambda: wire.decode(raw, max_bytes=MAX), PeerProtocolError)


@FUZZ
@given(ANY_MESSAGE, st.data())
def test_every_truncation_is_refused(message: wire.Message, data: st.DataObject) -> None:
    raw = wire.encode(message)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(PeerProtocolError):
        wire.decode(raw[:cut], max_bytes=MAX)


@FUZZ
@given(ANY_MESSAGE)
def test_oversize_is_refused_before_parsing(message: wire.Message) -> None:
    raw = wire.encode(message)
    with pytest.raises(PeerProtocolError) as info:
        wire.decode(raw, max_bytes=len(raw) - 1)
    assert info.value.reason == "too-large"


def test_declared_huge_containers_are_refused_without_allocating() -> None:
    # array32 / map32 / bin32 / str32 headers claiming 4 GiB, with nothing behind them.
    for head in (b"\xdd", b"\xdf", b"\xc6", b"\xdb"):
        with pytest.raises(PeerProtocolError):
            wire.decode(head + b"\xff\xff\xff\xff", max_bytes=MAX)
    # Deep nesting must be a clean refusal, not a RecursionError.
    with pytest.raises(PeerProtocolError):
        wire.decode(b"\x91" * 100_000, max_bytes=MAX)


# ---------------------------------------------------------------------------------------------- framing


def _feed(stream: bytes, chunks: list[int], *, decoder: FrameDecoder | None = None) -> list[wire.Message]:
    """Feed ``stream`` in chunks of the given sizes; collect messages until NEED_DATA or an error."""
    decoder = decoder or FrameDecoder()
    out: list[wire.Message] = []
    pos = 0
    sizes = iter(chunks)
    while pos < len(stream):
        step = max(1, next(sizes, len(stream)))
        decoder.receive_data(stream[pos : pos + step])
        pos += step
        while (message := decoder.next_message()) is not NEED_DATA:
            assert isinstance(message, wire.Message)
            out.append(message)
    return out


@FUZZ
@given(st.lists(ANY_MESSAGE, min_size=1, max_size=4), st.lists(st.integers(1, 64), max_size=64))
def test_frames_survive_any_chunking(sent: list[wire.Message], chunks: list[int]) -> None:
    stream = b"".join(frame(m) for m in sent)
    assert _feed(stream, chunks) == sent


@FUZZ
@given(st.lists(ANY_MESSAGE, min_size=1, max_size=3), st.lists(st.integers(1, 64), max_size=16), st.data())
def test_mutated_streams_give_messages_or_a_sticky_peer_fault(
    sent: list[wire.Message], chunks: list[int], data: st.DataObject
) -> None:
    stream = data.draw(mutated(b"".join(frame(m) for m in sent)))
    decoder = FrameDecoder()
    try:
        _feed(stream, chunks, decoder=decoder)
    except PeerProtocolError as exc:
        assert exc.reason and exc.message
        # After a refusal the session stays broken: every later call is refused (h11's sticky ERROR).
        with pytest.raises(PeerProtocolError) as info:
            decoder.next_message()
        assert info.value.reason == "session-broken"
        with pytest.raises(PeerProtocolError):
            decoder.receive_data(b"\x00")


@FUZZ
@given(st.integers(0, 2**32 - 1))
def test_a_declared_length_over_the_limit_is_refused_at_once(length: int) -> None:
    decoder = FrameDecoder(max_frame=1024)
    decoder.receive_data(struct.pack(">I", length))
    if length > 1024:
        with pytest.raises(PeerProtocolError) as info:
            decoder.next_message()
        assert info.value.reason == "too-large"
    elif length == 0:
        with pytest.raises(PeerProtocolError):  # an empty body is no message
            decoder.next_message()
    else:
        assert decoder.next_message() is NEED_DATA
