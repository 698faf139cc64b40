"""The served side of ``/sez/sync/1``: answers, and the bounds on what an idle or trickling peer holds.

The handler runs on an in-memory stream pair (the edge of a unit test: the libp2p stream is replaced
by trio's memory streams with a ``peer_id``); the store is a real LMDB file.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.corridor import serve_sync_frames
from protocol.sync import NEED_DATA, FrameDecoder, frame
from protocol.wire import ErrorResponse, GetCheckpoint
from store import LogStore

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"


class _PeerStream:
    """A memory stream with the ``peer_id`` the handler reads."""

    def __init__(self, stream: Any, peer_id: str = "peer-A") -> None:
        self._stream = stream
        self.peer_id = peer_id

    async def receive_some(self, max_bytes: int) -> bytes:
        data: bytes = await self._stream.receive_some(max_bytes)
        return data

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)


@pytest.fixture
def store(tmp_path: Path) -> LogStore:
    return LogStore(tmp_path / "store")


async def _serve(store: LogStore, server: Any, **timeouts: float) -> float:
    """Run the handler to its end; return how long it ran (on the mock clock)."""
    handler = serve_sync_frames(store, lambda peer: frozenset({ORIGIN}), **timeouts)
    started = trio.current_time()
    await handler(_PeerStream(server))
    return trio.current_time() - started


async def test_a_request_is_answered_and_a_closed_stream_ends_the_handler(store: LogStore) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, store, server)
        await client.send_all(frame(GetCheckpoint(id=7, origin="sez.other/x", size=0)))
        decoder = FrameDecoder()
        while (reply := decoder.next_message()) is NEED_DATA:
            decoder.receive_data(bytes(await client.receive_some(65536)))
        await client.send_eof()
    assert isinstance(reply, ErrorResponse) and reply.id == 7 and reply.reason == "unknown-origin"


async def test_an_idle_stream_is_closed_after_the_idle_timeout(
    store: LogStore, autojump_clock: trio.testing.MockClock
) -> None:
    _client, server = trio.testing.memory_stream_pair()
    ran = await _serve(store, server, idle_timeout=60.0, frame_timeout=5.0)
    assert ran == pytest.approx(60.0)


async def test_requests_keep_a_stream_open_past_the_idle_timeout(
    store: LogStore, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(_serve, store, server, idle_timeout=60.0, frame_timeout=5.0))
        for _ in range(5):  # a follower asking every 40 s: 200 s in all, never idle for 60
            await trio.sleep(40)
            await client.send_all(frame(GetCheckpoint(id=1, origin=ORIGIN, size=0)))
            await client.receive_some(65536)
        opened = trio.current_time()
    # The handler closed 60 s after the last request, not before.
    assert trio.current_time() - opened == pytest.approx(60.0, abs=0.5)


async def test_a_frame_trickled_a_byte_at_a_time_is_cut_at_the_frame_timeout(
    store: LogStore, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    request = frame(GetCheckpoint(id=1, origin=ORIGIN, size=0))

    async def trickle() -> None:
        for byte in request[:-1]:  # one byte every 2 s: each read is within the idle timeout
            await trio.sleep(2)
            try:
                await client.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        ran = await _serve(store, server, idle_timeout=60.0, frame_timeout=5.0)
        nursery.cancel_scope.cancel()
    assert ran == pytest.approx(2.0 + 5.0)  # the first byte at 2 s, cut 5 s later
