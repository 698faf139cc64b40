"""The ``/sez/sync/1`` codec: framing and request/response bookkeeping, without I/O (design §13).

Theory of operation
-------------------
A sync session is one long-lived libp2p stream. Each direction carries frames:
a 4-byte big-endian length, then one canonical wire message (``protocol.wire``)
of at most :data:`~protocol.wire.MAX_SYNC_FRAME` bytes. The length comes first so
that an oversized frame is refused before any of it is buffered.

* :class:`FrameDecoder` follows the h11 pattern: ``receive_data(bytes)`` only
  buffers, ``next_message()`` returns a decoded message or :data:`NEED_DATA`.
  A malformed frame raises :class:`~protocol.errors.PeerProtocolError` and the
  decoder becomes sticky-broken: every later call raises ``session-broken``,
  and the caller closes the stream (style rule 9).
* :class:`SyncClient` numbers requests, remembers what it asked, and matches
  each response to its request: the response must be the kind that request
  allows (or an error), and a range or proof must answer the question asked
  (same origin and start, not more receipts than asked). Anything else is a
  peer fault.

The server side needs no state beyond a decoder: requests are independent.
``node/sync.py`` answers them from the store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Final

from .errors import LocalProtocolError, PeerProtocolError
from .wire import (
    MAX_SYNC_FRAME,
    ErrorResponse,
    GetCheckpoint,
    GetConsistency,
    GetInclusion,
    GetReceipts,
    Message,
    NoteResponse,
    ProofResponse,
    ReceiptsResponse,
    decode,
    encode,
)

__all__ = ["NEED_DATA", "PROTOCOL_ID", "FrameDecoder", "NeedData", "Request", "SyncClient", "frame"]

PROTOCOL_ID: Final = "/sez/sync/1"
_LENGTH = struct.Struct(">I")

Request = GetCheckpoint | GetReceipts | GetConsistency | GetInclusion
_ANSWERS: dict[type[Message], type[Message]] = {
    GetCheckpoint: NoteResponse,
    GetReceipts: ReceiptsResponse,
    GetConsistency: ProofResponse,
    GetInclusion: ProofResponse,
}
MAX_IN_FLIGHT: Final = 64
"""Requests a client may have outstanding on one session: bounds the server's queue and our memory."""


class NeedData(Enum):
    """Sentinel type: the decoder needs more bytes before it can return a message."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


def frame(message: Message) -> bytes:
    """One frame: length prefix and canonical message bytes.

    Raises:
        LocalProtocolError(too-large): the message exceeds MAX_SYNC_FRAME.
    """
    body = encode(message)
    if len(body) > MAX_SYNC_FRAME:
        raise LocalProtocolError("too-large", f"sync frame of {len(body)} bytes exceeds {MAX_SYNC_FRAME}")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Incremental frame decoder for one direction of a sync session.

    Costs O(bytes received): the buffer is consumed from the front and never rescanned.
    """

    __slots__ = ("_broken", "_buffer", "_max_frame")

    def __init__(self, max_frame: int = MAX_SYNC_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._broken: PeerProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the stream."""
        self._raise_if_broken()
        self._buffer += data

    def next_message(self) -> Message | NeedData:
        """The next complete message, or NEED_DATA.

        Raises:
            PeerProtocolError: ``too-large`` (declared length over the limit), any
                ``protocol.wire.decode`` reason, or ``session-broken`` after an earlier failure.
        """
        self._raise_if_broken()
        if len(self._buffer) < _LENGTH.size:
            return NEED_DATA
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self._max_frame:
            self._fail(PeerProtocolError("too-large", f"frame of {length} bytes exceeds {self._max_frame}"))
        if len(self._buffer) < _LENGTH.size + length:
            return NEED_DATA
        body = bytes(self._buffer[_LENGTH.size : _LENGTH.size + length])
        del self._buffer[: _LENGTH.size + length]
        try:
            return decode(body, max_bytes=self._max_frame)
        except PeerProtocolError as exc:
            self._fail(exc)
            raise  # unreachable: _fail raises

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buffer)

    def _fail(self, exc: PeerProtocolError) -> None:
        raise self.fail(exc)

    def fail(self, exc: PeerProtocolError) -> PeerProtocolError:
        """Mark the session broken by ``exc`` (a fault found above the framing) and return it to raise."""
        self._broken = exc
        return exc

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise PeerProtocolError("session-broken", f"sync session failed earlier: {self._broken.reason}")


@dataclass(frozen=True, slots=True)
class Answer:
    """A response matched to the request it answers."""

    request: Request
    response: Message


class SyncClient:
    """Client-side request bookkeeping for one sync session (no I/O).

    Usage: ``data = client.send(GetReceipts(...))`` returns the frame to write;
    feed read bytes to ``client.receive_data``; ``client.next_answer()`` returns
    :class:`Answer` or NEED_DATA. A peer fault breaks the session for good.
    """

    __slots__ = ("_decoder", "_next_id", "_pending")

    def __init__(self, max_frame: int = MAX_SYNC_FRAME) -> None:
        self._decoder = FrameDecoder(max_frame)
        self._pending: dict[int, Request] = {}
        self._next_id = 1

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    def next_id(self) -> int:
        """The id the next request must carry."""
        return self._next_id

    def send(self, request: Request) -> bytes:
        """Register ``request`` and return its frame.

        Raises:
            LocalProtocolError: ``bad-request-id`` (not :meth:`next_id`), ``too-many-in-flight``.
        """
        if request.id != self._next_id:
            raise LocalProtocolError("bad-request-id", f"request id {request.id} is not {self._next_id}")
        if len(self._pending) >= MAX_IN_FLIGHT:
            raise LocalProtocolError("too-many-in-flight", f"{MAX_IN_FLIGHT} requests already outstanding")
        data = frame(request)
        self._pending[request.id] = request
        self._next_id += 1
        return data

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the stream."""
        self._decoder.receive_data(data)

    def next_answer(self) -> Answer | NeedData:
        """The next response matched to its request, or NEED_DATA.

        Raises:
            PeerProtocolError: decode failures; ``unexpected-response`` (unknown id,
                a request kind, or the wrong response kind); ``bad-response`` (an
                answer to another question).
        """
        message = self._decoder.next_message()
        if message is NEED_DATA:
            return NEED_DATA
        assert isinstance(message, Message)
        request_id = getattr(message, "id", None)
        request = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if request is None:
            raise self._broken(PeerProtocolError("unexpected-response", f"{message.KIND} answers no request"))
        if isinstance(message, ErrorResponse):
            return Answer(request, message)
        if type(message) is not _ANSWERS[type(request)]:
            raise self._broken(
                PeerProtocolError("unexpected-response", f"{request.KIND} answered with {message.KIND}")
            )
        if isinstance(message, ReceiptsResponse):
            assert isinstance(request, GetReceipts)
            if message.origin != request.origin or message.start != request.start:
                raise self._broken(
                    PeerProtocolError("bad-response", "receipt range answers another question")
                )
            if len(message.receipts) > request.count:
                raise self._broken(PeerProtocolError("bad-response", "more receipts than asked for"))
        return Answer(request, message)

    def _broken(self, exc: PeerProtocolError) -> PeerProtocolError:
        return self._decoder.fail(exc)
