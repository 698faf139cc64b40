"""libp2p streams as trio streams, a guard for stream handlers, and msgpack framing.

* :class:`P2PStream` adapts a libp2p ``INetStream`` to ``trio.abc.Stream``: ``receive_some``
  returns ``b""`` at end of stream, and every failure the *peer* can cause (reset, broken
  connection, write after the peer closed) becomes ``trio.BrokenResourceError``.
* :func:`guard_stream_handler` wraps a handler so that nothing it raises reaches the swarm's
  task nursery. In py-libp2p 0.8.1 an exception escaping a stream handler is recorded by the
  swarm's service manager, which then cancels the whole swarm: one bad peer would stop the
  daemon. The guard always closes the stream.
* :class:`MsgpackStream` carries msgpack objects back to back on one long-lived stream (msgpack
  is self-delimiting), with a bounded ``msgpack.Unpacker`` and batched writes (one ``write()``
  per batch: about 35 times faster than one per message, libp2p-notes.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgpack
import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import IOException
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError

from protocol.errors import LocalProtocolError, PeerProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MsgpackStream",
    "P2PStream",
    "StreamHandler",
    "guard_stream_handler",
]

logger = logging.getLogger("node.p2p")

#: Bound on closing a stream politely (FIN) before resetting it instead.
STREAM_CLOSE_TIMEOUT = 2.0
#: Largest single msgpack message :class:`MsgpackStream` accepts by default (4 MiB): a receipt
#: range reply is bounded by bytes on the sender's side well below this.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Bytes asked of the stream per read.
DEFAULT_READ_SIZE = 64 * 1024
#: Longest msgpack array or map accepted by default.
DEFAULT_MAX_CONTAINER_LEN = 100_000

# Errors a peer (or the network between us) can cause on a libp2p stream. StreamError,
# StreamReset and StreamClosed subclass IOException; yamux's own errors subclass MuxedStreamError.
_PEER_IO_ERRORS: tuple[type[BaseException], ...] = (IOException, MuxedStreamError, OSError)


class P2PStream(trio.abc.Stream):
    """A libp2p stream with trio's stream contract.

    Resource handling: whoever holds the ``P2PStream`` closes it (:meth:`aclose` or :meth:`reset`).
    Handlers wrapped by :func:`guard_stream_handler` need not: the guard closes the stream when
    the handler returns or fails.

    Not safe for concurrent ``send_all`` calls (or concurrent ``receive_some`` calls) from two
    tasks; one reader task and one writer task may run at the same time.
    """

    def __init__(self, net_stream: INetStream) -> None:
        self._stream = net_stream
        self._closed = False
        self.peer_id: str = net_stream.muxed_conn.peer_id.to_base58()
        protocol = net_stream.get_protocol()
        self.protocol: str = str(protocol) if protocol is not None else ""

    @property
    def net_stream(self) -> INetStream:
        """The wrapped libp2p stream (for code that needs libp2p's own API)."""
        return self._stream

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed locally")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the next bytes the peer sent (at most ``max_bytes``), or ``b""`` at end of stream.

        Raises:
            trio.BrokenResourceError: the peer reset the stream or the connection broke.
            trio.ClosedResourceError: we closed the stream.
        """
        self._check_open()
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        try:
            return await self._stream.read(max_bytes if max_bytes is not None else DEFAULT_READ_SIZE)
        except (StreamEOF, MuxedStreamEOF):
            return b""
        except _PEER_IO_ERRORS as exc:
            raise trio.BrokenResourceError(f"stream from peer {self.peer_id} broke: {exc!r}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``. If cancelled, some, all or none of it may have been sent.

        Raises:
            trio.BrokenResourceError: the peer reset or closed the stream, or the connection broke.
            trio.ClosedResourceError: we closed the stream.
        """
        self._check_open()
        try:
            await self._stream.write(bytes(data))
        except _PEER_IO_ERRORS as exc:
            raise trio.BrokenResourceError(f"stream to peer {self.peer_id} broke: {exc!r}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        """libp2p gives no such signal; a checkpoint."""
        self._check_open()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close politely (yamux FIN), falling back to a reset; idempotent.

        Runs shielded, bounded by ``STREAM_CLOSE_TIMEOUT``, so the stream is released even when
        the caller is being cancelled; then checkpoints (raising ``Cancelled`` if it applies).
        """
        if not self._closed:
            self._closed = True
            with trio.CancelScope(shield=True):
                closed = False
                with trio.move_on_after(STREAM_CLOSE_TIMEOUT):
                    try:
                        await self._stream.close()
                        closed = True
                    except Exception as exc:  # already reset or connection gone
                        logger.debug("closing stream to %s failed, resetting: %r", self.peer_id, exc)
                if not closed:
                    await self._reset_quietly()
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        """Abort the stream (yamux RST): the peer's next read or write fails. Idempotent."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._reset_quietly()
        await trio.lowlevel.checkpoint()

    async def _reset_quietly(self) -> None:
        with trio.move_on_after(STREAM_CLOSE_TIMEOUT):
            try:
                await self._stream.reset()
            except Exception as exc:
                logger.debug("resetting stream to %s failed: %r", self.peer_id, exc)


StreamHandler = Callable[[P2PStream], Awaitable[None]]
PeerFaultCallback = Callable[[str, BaseException], None]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _is_peer_side(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (PeerProtocolError, trio.BrokenResourceError, trio.TooSlowError, trio.EndOfChannel, *_PEER_IO_ERRORS),
    )


def guard_stream_handler(
    handler: StreamHandler,
    protocol_id: str,
    *,
    on_peer_fault: PeerFaultCallback | None = None,
    on_handler_error: Callable[[BaseException], None] | None = None,
) -> Callable[[INetStream], Awaitable[None]]:
    """Wrap ``handler`` for ``IHost.set_stream_handler``.

    Error handling:

    * ``PeerProtocolError`` (the peer sent bad bytes): logged at WARNING with its ``reason``,
      ``on_peer_fault(peer_id, exc)`` is called, and the stream is *reset*.
    * ``trio.BrokenResourceError``, ``trio.TooSlowError``, ``trio.EndOfChannel`` and libp2p stream
      errors (reset, EOF, closed connection): the peer went away or stalled; logged at INFO.
    * Any other ``Exception`` is a bug in our handler: logged with its traceback,
      ``on_handler_error(exc)`` is called, and it is *not* re-raised, because the swarm would
      cancel every connection. (Style rule 14 would let it propagate; here it cannot.)
    * An exception group is treated as the worst of its members.
    * ``trio.Cancelled`` (connection closed, host shutting down) propagates, as it must.

    Resource handling: the stream is always closed when the handler ends, however it ends; the
    handler may close it earlier. Callbacks must be quick and must not raise.
    """

    async def guarded(net_stream: INetStream) -> None:
        stream = P2PStream(net_stream)
        try:
            await handler(stream)
        except Exception as exc:
            leaves = _leaves(exc)
            if not all(_is_peer_side(leaf) for leaf in leaves):
                logger.error(
                    "stream handler for %s failed on a stream from peer %s",
                    protocol_id,
                    stream.peer_id,
                    exc_info=exc,
                )
                if on_handler_error is not None:
                    on_handler_error(exc)
            else:
                faults = [leaf for leaf in leaves if isinstance(leaf, PeerProtocolError)]
                if faults:
                    fault = faults[0]
                    assert isinstance(fault, PeerProtocolError)
                    logger.warning("peer %s broke protocol %s: %s", stream.peer_id, protocol_id, fault.reason)
                    if on_peer_fault is not None:
                        on_peer_fault(stream.peer_id, fault)
                    await stream.reset()
                else:
                    logger.info("stream %s with peer %s ended: %s", protocol_id, stream.peer_id, _brief(exc))
        finally:
            await stream.aclose()

    return guarded


def _brief(exc: BaseException) -> str:
    leaves = _leaves(exc)
    return "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)


class MsgpackStream:
    """msgpack objects back to back on one trio stream, usually a :class:`P2PStream`.

    For request/response on a long-lived stream, pipelined or not.

    Reading feeds raw chunks into a ``msgpack.Unpacker`` whose buffer is bounded by
    ``max_message_bytes + read_size`` (so at most that much is held for a peer that sends one
    endless object: ``message-too-large``), whose strings and binaries are bounded by
    ``max_message_bytes`` and whose arrays and maps are bounded by ``max_container_len``
    (``bad-msgpack``; msgpack checks a declared length once the object's bytes have arrived, so
    the buffer bound is what limits memory).

    Writing is batched: :meth:`pack` appends to a buffer without awaiting; :meth:`flush` sends the
    whole buffer in one write. :meth:`send` is ``pack`` + ``flush``.

    Failure is sticky (style rule 9): after a :class:`PeerProtocolError`, a broken stream or a
    cancelled or failed write, every later call raises; close the stream.

    Resource handling: the caller keeps owning the underlying stream and closes it.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_container_len: int = DEFAULT_MAX_CONTAINER_LEN,
        read_size: int = DEFAULT_READ_SIZE,
    ) -> None:
        if max_message_bytes < 1 or max_container_len < 1 or read_size < 1:
            raise ValueError("limits must be positive")
        self.stream = stream
        self._read_size = read_size
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=max_message_bytes + read_size,
            max_str_len=max_message_bytes,
            max_bin_len=max_message_bytes,
            max_ext_len=max_message_bytes,
            max_array_len=max_container_len,
            max_map_len=max_container_len,
            raw=False,
            strict_map_key=True,
        )
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._fed = 0
        self._pending = bytearray()
        self._failure: BaseException | None = None
        self._request_lock = trio.Lock()

    @property
    def pending_bytes(self) -> int:
        """Bytes packed but not yet flushed."""
        return len(self._pending)

    def _check(self) -> None:
        if self._failure is not None:
            raise trio.BrokenResourceError("msgpack stream failed earlier") from self._failure

    def _fail(self, exc: BaseException) -> BaseException:
        self._failure = exc
        return exc

    async def receive(self) -> Any:
        """Return the next object the peer sent.

        Raises:
            trio.EndOfChannel: the peer closed the stream between two objects.
            PeerProtocolError: ``bad-msgpack`` (undecodable or over a limit), ``message-too-large``
                (buffer limit) or ``truncated-message`` (stream ended inside an object).
            trio.BrokenResourceError: the stream broke, or an earlier call failed.
        """
        self._check()
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            except (ValueError, msgpack.UnpackException) as exc:
                raise self._fail(
                    PeerProtocolError("bad-msgpack", f"undecodable msgpack from peer: {exc}")
                ) from exc
            try:
                chunk = await self.stream.receive_some(self._read_size)
            except trio.BrokenResourceError as exc:
                self._fail(exc)
                raise
            if not chunk:
                if self._fed > self._unpacker.tell():
                    raise self._fail(
                        PeerProtocolError(
                            "truncated-message",
                            "stream ended inside a msgpack object",
                            buffered=self._fed - self._unpacker.tell(),
                        )
                    )
                raise trio.EndOfChannel
            try:
                self._unpacker.feed(chunk)
            except msgpack.BufferFull as exc:
                raise self._fail(
                    PeerProtocolError("message-too-large", "msgpack message exceeds the buffer limit")
                ) from exc
            self._fed += len(chunk)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            try:
                item = await self.receive()
            except trio.EndOfChannel:
                return
            yield item

    def pack(self, obj: Any) -> None:
        """Append ``obj`` to the write buffer (no I/O, atomic).

        Raises:
            LocalProtocolError(unpackable-value): msgpack cannot encode ``obj``.
        """
        try:
            self._pending += self._packer.pack(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(
                "unpackable-value", f"cannot msgpack {type(obj).__name__}: {exc}"
            ) from exc

    async def flush(self) -> None:
        """Send everything packed so far in one write.

        The buffer is taken before awaiting; if the write is cancelled or fails, the stream is
        marked failed (part of the batch may have been sent).
        """
        self._check()
        if not self._pending:
            await trio.lowlevel.checkpoint()
            return
        data = bytes(self._pending)
        self._pending.clear()
        try:
            await self.stream.send_all(data)
        except BaseException as exc:
            self._fail(exc)
            raise

    async def send(self, obj: Any) -> None:
        """Pack ``obj`` and flush (with anything packed before it)."""
        self.pack(obj)
        await self.flush()

    async def send_many(self, objs: Iterable[Any]) -> None:
        """Pack every object, then flush once."""
        for obj in objs:
            self.pack(obj)
        await self.flush()

    async def request(self, obj: Any) -> Any:
        """Send ``obj`` and return the next object received; concurrent calls are serialised.

        For strictly alternating request/response. The caller bounds it (``trio.fail_after``);
        a request cancelled after sending leaves an unread reply, so the stream is marked failed.
        """
        async with self._request_lock:
            await self.send(obj)
            try:
                return await self.receive()
            except trio.Cancelled as exc:
                self._fail(exc)
                raise
