"""SyncSession: one request, its answer; a silent peer times out; a closed stream is broken."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.sync_session import SyncSession
from protocol.sync import NEED_DATA, FrameDecoder, frame
from protocol.wire import GetCheckpoint, NoteResponse

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"


async def test_ask_returns_the_matching_answer() -> None:
    client, server = trio.testing.memory_stream_pair()
    session = SyncSession(client)

    async def serve() -> None:
        decoder = FrameDecoder()
        while (request := decoder.next_message()) is NEED_DATA:
            decoder.receive_data(await server.receive_some(1024))
        assert isinstance(request, GetCheckpoint)
        reply = frame(NoteResponse(id=request.id, note=b"note"))
        for i in range(len(reply)):  # byte by byte: the session must reassemble
            await server.send_all(reply[i : i + 1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        answer = await session.ask(GetCheckpoint(id=session.next_id(), origin=ORIGIN, size=0))
    assert answer == NoteResponse(id=1, note=b"note")
    assert session.next_id() == 2


async def test_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    client, _server = trio.testing.memory_stream_pair()
    session = SyncSession(client, timeout=5)
    with pytest.raises(trio.TooSlowError):
        await session.ask(GetCheckpoint(id=session.next_id(), origin=ORIGIN, size=0))


async def test_closed_stream_is_broken() -> None:
    client, server = trio.testing.memory_stream_pair()
    session = SyncSession(client)
    await server.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await session.ask(GetCheckpoint(id=session.next_id(), origin=ORIGIN, size=0))
