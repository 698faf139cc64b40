"""The client side of one ``/sez/sync/1`` stream, shared by the node's replica sync and the watcher.

:class:`SyncSession` wraps an open stream and a sans-I/O :class:`~protocol.sync.SyncClient`: ``ask``
writes one request and reads until its answer arrives, bounded by ``timeout`` (a peer that does not
answer in time is slow or faulty: ``trio.TooSlowError``). The caller owns and closes the stream.
"""

from __future__ import annotations

from typing import Final

import trio

from protocol.sync import NEED_DATA, Request, SyncClient
from protocol.wire import Message

__all__ = ["SYNC_REQUEST_TIMEOUT", "SyncSession"]

SYNC_REQUEST_TIMEOUT: Final = 10.0
"""Seconds one sync request may take before the round is abandoned."""
_READ_SIZE: Final = 65536


class SyncSession:
    """Requests over one stream, answered in order of arrival and matched by ``SyncClient``."""

    def __init__(self, stream: trio.abc.Stream, *, timeout: float = SYNC_REQUEST_TIMEOUT) -> None:
        self._stream = stream
        self._client = SyncClient()
        self._timeout = timeout

    def next_id(self) -> int:
        """The id the next request must carry."""
        return self._client.next_id()

    async def ask(self, request: Request) -> Message:
        """Send ``request`` and return the response that answers it.

        Raises:
            trio.TooSlowError: no answer within the timeout.
            trio.BrokenResourceError: the peer closed the stream or it broke.
            PeerProtocolError: the peer answered with something invalid (the session is then broken).
        """
        await self._stream.send_all(self._client.send(request))
        with trio.fail_after(self._timeout):
            while True:
                answer = self._client.next_answer()
                if answer is not NEED_DATA:
                    return answer.response
                data = await self._stream.receive_some(_READ_SIZE)
                if not data:
                    raise trio.BrokenResourceError("peer closed the sync stream")
                self._client.receive_data(bytes(data))
