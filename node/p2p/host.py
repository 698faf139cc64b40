"""The running libp2p host: connections, re-dialling, gossip and streams (design §13).

:class:`P2PHost` is what :func:`node.p2p.open_host` (:mod:`node.p2p.service`) yields. It wraps
one py-libp2p 0.8.1 host, its ``Pubsub`` and ``GossipSub`` router.

py-libp2p also re-dials known peers on its own (its auto-connector; it cannot be disabled); our
re-dial loop is the one the configuration relies on, with bounded exponential backoff. We set the
swarm's ``retry_config`` to a single attempt per dial and clear the swarm's 60-second negative
cache before each of our dials, so our backoff is the only one.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.subscription import TrioSubscriptionAPI

from protocol.errors import LocalProtocolError

from .allowlist import PeerAllowlist
from .gossip import (
    GossipMessage,
    GossipStatistics,
    GossipValidator,
    _GossipCounters,
    _IgnoreAwareValidationCache,
    _ValidatorAdapter,
    content_message_id,
)
from .identity import parse_peer_id
from .streams import P2PStream, StreamHandler, guard_stream_handler

__all__ = [
    "DEFAULT_DIAL_TIMEOUT",
    "DialError",
    "P2PError",
    "P2PHost",
    "P2PStatistics",
    "RedialPolicy",
    "StreamOpenError",
]

logger = logging.getLogger("node.p2p")

#: Bound on one dial (TCP connect + Noise + yamux negotiation).
DEFAULT_DIAL_TIMEOUT = 5.0
#: Bound on opening a stream (yamux open + multistream-select negotiation).
DEFAULT_STREAM_OPEN_TIMEOUT = 5.0
#: Default capacity of the channel :meth:`P2PHost.subscribe` returns.
DEFAULT_SUBSCRIPTION_BUFFER = 256


class P2PError(OSError):
    """A network operation failed; never the caller's fault, not necessarily the peer's."""

    def __init__(self, message: str, *, peer_id: str | None = None) -> None:
        super().__init__(message)
        self.peer_id = peer_id


class DialError(P2PError):
    """A dial failed or timed out; ``__cause__`` holds libp2p's error."""


class StreamOpenError(P2PError):
    """Opening or negotiating a stream failed or timed out; ``__cause__`` holds libp2p's error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedialPolicy:
    """Backoff of the re-dial loop: ``initial_delay * multiplier**(failures-1)``, capped, ±jitter."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    #: Relative jitter, so peers restarted together do not dial in lockstep.
    jitter: float = 0.1
    #: A connection that lived this long resets the failure count.
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay <= self.max_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need multiplier >= 1 and 0 <= jitter < 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed dials (``failures >= 1``)."""
        base = min(self.initial_delay * self.multiplier ** max(failures - 1, 0), self.max_delay)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True, slots=True, kw_only=True)
class P2PStatistics:
    """A snapshot of the host's counters (for ``/metrics``)."""

    peer_id: str
    connected_peers: int
    wanted_peers: int
    refused_inbound: int
    refused_outbound: int
    dial_attempts: int
    dial_failures: int
    handler_errors: int
    peer_faults: dict[str, int]
    gossip: GossipStatistics


@dataclass(slots=True)
class _WantedPeer:
    peer_id: str
    addr: str
    failures: int = 0
    next_attempt: float = 0.0
    connected_since: float | None = None


@dataclass(slots=True)
class _Counters:
    dial_attempts: int = 0
    dial_failures: int = 0
    handler_errors: int = 0
    peer_faults: Counter[str] = field(default_factory=Counter)


class _ConnectionNotifee(INotifee):
    """Wakes the host's waiters on every connect and disconnect (never raises, never blocks)."""

    def __init__(self, host: P2PHost) -> None:
        self._host = host

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._host._connections_changed()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._host._connections_changed()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def _parse_p2p_addr(addr: str) -> PeerInfo:
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # multiaddr raises assorted error types
        raise LocalProtocolError(
            "bad-multiaddr", f"{addr!r} is not a multiaddr ending in /p2p/<peer id>", addr=addr
        ) from exc


class P2PHost:
    """A running libp2p host; obtained from :func:`open_host`, valid inside its ``async with``.

    Synchronous methods never block and are atomic. Async methods are checkpoints; each says what
    happens if it is cancelled.
    """

    def __init__(
        self,
        host: IHost,
        pubsub: Pubsub,
        router: GossipSub,
        allowlist: PeerAllowlist,
        *,
        dial_timeout: float,
        redial: RedialPolicy,
    ) -> None:
        self._host = host
        self._pubsub = pubsub
        self._router = router
        self.allowlist = allowlist
        self._dial_timeout = dial_timeout
        self._redial = redial
        self._self_id = host.get_id()
        self._self_id_bytes = self._self_id.to_bytes()
        self.peer_id: str = self._self_id.to_base58()
        self._wanted: dict[str, _WantedPeer] = {}
        self._subscriptions: set[str] = set()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._counters = _Counters()
        self._gossip = _GossipCounters()
        self._validation_cache = _IgnoreAwareValidationCache(300, 1000)
        pubsub.validation_cache = self._validation_cache

    # -- escape hatches ------------------------------------------------------------------

    @property
    def libp2p_host(self) -> IHost:
        """The py-libp2p host, for what this class does not wrap. Do not close it."""
        return self._host

    @property
    def pubsub(self) -> Pubsub:
        """The py-libp2p ``Pubsub`` service. Prefer this class's gossip methods."""
        return self._pubsub

    # -- addresses and connections -------------------------------------------------------

    @property
    def listen_addrs(self) -> list[str]:
        """The addresses we listen on, with the real port and ``/p2p/<our peer id>``."""
        return [str(addr) for addr in self._host.get_addrs()]

    @property
    def listen_addr(self) -> str:
        """The first of :attr:`listen_addrs` (the one to give peers)."""
        return self.listen_addrs[0]

    def connected_peers(self) -> frozenset[str]:
        """Peer ids with at least one open connection."""
        network = self._host.get_network()
        return frozenset(pid.to_base58() for pid, conns in network.connections.items() if conns)

    def is_connected(self, peer_id: str) -> bool:
        return bool(self._host.get_network().connections.get(ID.from_base58(peer_id)))

    def _connections_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self, peer_id: str) -> None:
        """Wait until ``peer_id`` is connected (either direction). Unbounded: bound it yourself."""
        while not self.is_connected(peer_id):
            changed = self._changed
            await changed.wait()
        await trio.lowlevel.checkpoint()

    async def wait_disconnected(self, peer_id: str) -> None:
        """Wait until no connection to ``peer_id`` remains. Unbounded: bound it yourself."""
        while self.is_connected(peer_id):
            changed = self._changed
            await changed.wait()
        await trio.lowlevel.checkpoint()

    async def connect(self, addr: str, *, timeout: float | None = None) -> str:
        """Dial ``addr`` (``.../p2p/<peer id>``) unless already connected; return the peer id.

        One attempt, bounded by ``timeout`` (default: the host's dial timeout). If cancelled, the
        swarm discards the half-open connection.

        Raises:
            LocalProtocolError: ``bad-multiaddr``, ``dial-self``, ``peer-not-allowed``.
            DialError: the dial failed or timed out (refused, unreachable, wrong peer id, or the
                peer's allowlist lacks us).
        """
        info = _parse_p2p_addr(addr)
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            raise LocalProtocolError("dial-self", "refusing to dial our own peer id", addr=addr)
        if not self.allowlist.allows(peer_id):
            raise LocalProtocolError(
                "peer-not-allowed", f"peer {peer_id} is not in the allowlist", peer_id=peer_id
            )
        network: Any = self._host.get_network()
        network.unblock_peer(info.peer_id)
        limit = self._dial_timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit):
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise DialError(f"dial to {addr} timed out after {limit:g} s", peer_id=peer_id) from exc
        except Exception as exc:
            raise DialError(f"dial to {addr} failed: {_root_cause(exc)}", peer_id=peer_id) from exc
        if not self.is_connected(peer_id):
            raise DialError(f"dial to {addr} ended without a connection", peer_id=peer_id)
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` (streams on it are reset)."""
        await self._host.disconnect(parse_peer_id(peer_id))

    def keep_connected(self, addr: str) -> str:
        """Keep a connection to ``addr`` (``.../p2p/<peer id>``): dial it now and whenever it drops.

        Failed dials are retried with the host's :class:`RedialPolicy`; failures are logged, never
        raised. Calling it again for the same peer replaces the address. Returns the peer id.

        Raises:
            LocalProtocolError: ``bad-multiaddr``, ``dial-self``, ``peer-not-allowed``.
        """
        info = _parse_p2p_addr(addr)
        peer_id = info.peer_id.to_base58()
        if peer_id == self.peer_id:
            raise LocalProtocolError("dial-self", "refusing to dial our own peer id", addr=addr)
        if not self.allowlist.allows(peer_id):
            raise LocalProtocolError(
                "peer-not-allowed", f"peer {peer_id} is not in the allowlist", peer_id=peer_id
            )
        self._wanted[peer_id] = _WantedPeer(peer_id=peer_id, addr=addr)
        self._connections_changed()
        return peer_id

    def forget_peer(self, peer_id: str) -> None:
        """Stop re-dialling ``peer_id`` (its open connection, if any, stays)."""
        self._wanted.pop(peer_id, None)

    async def set_allowlist(self, peer_ids: Iterable[str]) -> None:
        """Replace the allowlist, forget and disconnect the peers no longer on it.

        The new list applies to the next handshake at once. If cancelled, some removed peers may
        still be connected; call again.

        Raises:
            LocalProtocolError(bad-peer-id): an entry is not a peer id (nothing changes).
        """
        removed = self.allowlist.replace(peer_ids)
        for peer_id in sorted(removed):
            self._wanted.pop(peer_id, None)
            if self.is_connected(peer_id):
                logger.warning("disconnecting peer %s: removed from the allowlist", peer_id)
                await self.disconnect(peer_id)
        await trio.lowlevel.checkpoint()

    async def _maintain_connections(self) -> None:
        """Background task: dial every wanted peer that is down, with bounded backoff. Never returns."""
        policy = self._redial
        while True:
            now = trio.current_time()
            wake_at = now + policy.max_delay
            due: list[_WantedPeer] = []
            for wanted in self._wanted.values():
                if self.is_connected(wanted.peer_id):
                    if wanted.connected_since is None:
                        wanted.connected_since = now
                    if now - wanted.connected_since >= policy.stable_after:
                        wanted.failures = 0
                    elif wanted.failures:
                        # Wake when the connection has lived long enough to count as stable: without
                        # this the reset waited for the next change, and a link cut again before then
                        # redialled with the backoff of every earlier outage (up to max_delay).
                        wake_at = min(wake_at, wanted.connected_since + policy.stable_after)
                    continue
                wanted.connected_since = None
                if wanted.next_attempt <= now:
                    due.append(wanted)
                else:
                    wake_at = min(wake_at, wanted.next_attempt)
            if due:
                async with trio.open_nursery() as nursery:
                    for wanted in due:
                        nursery.start_soon(self._redial_one, wanted)
                continue
            changed = self._changed
            with trio.move_on_at(wake_at):
                await changed.wait()

    async def _redial_one(self, wanted: _WantedPeer) -> None:
        self._counters.dial_attempts += 1
        try:
            await self.connect(wanted.addr)
        except (DialError, LocalProtocolError) as exc:
            self._counters.dial_failures += 1
            wanted.failures += 1
            delay = self._redial.delay(wanted.failures)
            wanted.next_attempt = trio.current_time() + delay
            level = logging.WARNING if wanted.failures == 1 or wanted.failures % 10 == 0 else logging.INFO
            logger.log(
                level,
                "re-dial of peer %s failed (%d in a row, next in %.1f s): %s",
                wanted.peer_id,
                wanted.failures,
                delay,
                exc,
            )
        else:
            wanted.next_attempt = trio.current_time() + self._redial.initial_delay
            logger.info("connected to peer %s at %s", wanted.peer_id, wanted.addr)

    # -- gossip ---------------------------------------------------------------------------

    def topic_peers(self, topic: str) -> frozenset[str]:
        """Peers known to be subscribed to ``topic``."""
        return frozenset(pid.to_base58() for pid in self._pubsub.peer_topics.get(topic, ()))

    def mesh_peers(self, topic: str) -> frozenset[str]:
        """Peers in our gossipsub mesh for ``topic`` (we forward full messages to these)."""
        return frozenset(pid.to_base58() for pid in self._router.mesh.get(topic, ()))

    async def subscribe(
        self, topic: str, *, buffer: int = DEFAULT_SUBSCRIPTION_BUFFER
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Subscribe to ``topic``; messages from *other* peers arrive on the returned channel.

        A dedicated task drains libp2p's subscription into the channel (capacity ``buffer``),
        dropping our own publishes. When the channel is full the task waits, and libp2p's own
        queue (:data:`SUBSCRIPTION_CHANNEL_SIZE`) absorbs the burst, dropping with a warning only
        when that is full too. Resource handling: the caller owns the receive channel; closing it
        unsubscribes (noticed when the next message arrives). The channel ends (``EndOfChannel``) on
        :meth:`unsubscribe` or when the host stops.

        Raises:
            LocalProtocolError(already-subscribed): one consumer per topic.
        """
        if topic in self._subscriptions:
            raise LocalProtocolError("already-subscribed", f"already subscribed to {topic!r}", topic=topic)
        nursery = self._require_nursery()
        self._subscriptions.add(topic)
        try:
            subscription = await self._pubsub.subscribe(topic)
        except BaseException:
            self._subscriptions.discard(topic)
            raise
        send, receive = trio.open_memory_channel[GossipMessage](buffer)
        assert isinstance(subscription, TrioSubscriptionAPI)
        nursery.start_soon(self._drain_subscription, topic, subscription, send)
        return receive

    async def _drain_subscription(
        self,
        topic: str,
        subscription: TrioSubscriptionAPI,
        send: trio.MemorySendChannel[GossipMessage],
    ) -> None:
        """Task: libp2p subscription -> our channel. Owns and closes ``send``."""
        consumer_gone = False
        try:
            async with send:
                async for msg in subscription:
                    if msg.from_id == self._self_id_bytes:
                        self._gossip.own_filtered += 1
                        continue
                    item = GossipMessage(
                        topic=topic,
                        data=msg.data,
                        origin=ID(msg.from_id).to_base58(),
                        msg_id=content_message_id(msg),
                    )
                    # Counted first: the consumer may run before this task resumes.
                    self._gossip.delivered += 1
                    try:
                        await send.send(item)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._gossip.delivered -= 1
                        consumer_gone = True
                        break
        finally:
            self._subscriptions.discard(topic)
        if consumer_gone:
            logger.info("consumer of %s closed its channel; unsubscribing", topic)
            await self._pubsub.unsubscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        """Leave ``topic``; its channel ends after the messages already in it."""
        await self._pubsub.unsubscribe(topic)
        await trio.lowlevel.checkpoint()

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic`` and yield to the scheduler.

        libp2p's ``publish`` never yields, so a publish loop would starve the network tasks; this
        one ends with ``trio.sleep(0)``. Our own validator is not run on our publishes (see
        :mod:`node.p2p.gossip`). Delivery is best effort (design §13: sync repairs gaps).
        """
        if not isinstance(data, bytes):
            raise TypeError("gossip payload must be bytes")
        await self._pubsub.publish(topic, data)
        self._gossip.published += 1
        await trio.sleep(0)

    def set_topic_validator(self, topic: str, validator: GossipValidator) -> None:
        """Run ``validator(forwarder_peer_id, payload)`` on every message for ``topic`` from others.

        It runs before delivery and before forwarding: only ACCEPT delivers and forwards. An
        exception inside it is logged with its traceback and counts as REJECT. It must be pure and
        quick: it runs synchronously inside libp2p's message task. Replaces any earlier validator.
        """
        adapter = _ValidatorAdapter(topic, validator, self._self_id, self._validation_cache, self._gossip)
        self._pubsub.set_topic_validator(topic, adapter, False)

    def remove_topic_validator(self, topic: str) -> None:
        self._pubsub.remove_topic_validator(topic)

    # -- streams --------------------------------------------------------------------------

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler) -> None:
        """Serve ``protocol_id`` with ``handler(stream)``, guarded by :func:`guard_stream_handler`.

        The handler runs in the connection's task group, once per inbound stream, and is
        cancelled when the connection closes. The stream is closed for it when it returns.
        """
        self._host.set_stream_handler(
            TProtocol(protocol_id),
            guard_stream_handler(
                handler,
                protocol_id,
                on_peer_fault=self._record_peer_fault,
                on_handler_error=self._record_handler_error,
            ),
        )

    def remove_stream_handler(self, protocol_id: str) -> None:
        self._host.remove_stream_handler(TProtocol(protocol_id))

    def _record_peer_fault(self, peer_id: str, exc: BaseException) -> None:
        self._counters.peer_faults[peer_id] += 1

    def _record_handler_error(self, exc: BaseException) -> None:
        self._counters.handler_errors += 1

    async def open_stream(
        self, peer_id: str, protocol_id: str, *, timeout: float = DEFAULT_STREAM_OPEN_TIMEOUT
    ) -> P2PStream:
        """Open a stream to ``peer_id`` and negotiate ``protocol_id``, all within ``timeout``.

        If no connection is open, libp2p dials the addresses its peerstore holds for the peer
        (within the same ``timeout``).

        Resource handling: the caller owns the returned stream and closes it (``aclose``). If
        cancelled, the half-negotiated stream is reset.

        Raises:
            LocalProtocolError(bad-peer-id)
            StreamOpenError: no connection could be made, the peer does not speak
                ``protocol_id``, or the timeout passed.
        """
        pid = parse_peer_id(peer_id)
        try:
            with trio.fail_after(timeout):
                net_stream = await self._host.new_stream(pid, [TProtocol(protocol_id)])
        except trio.TooSlowError as exc:
            raise StreamOpenError(
                f"opening {protocol_id} to {peer_id} timed out after {timeout:g} s", peer_id=peer_id
            ) from exc
        except Exception as exc:
            raise StreamOpenError(
                f"opening {protocol_id} to {peer_id} failed: {exc}", peer_id=peer_id
            ) from exc
        return P2PStream(net_stream)

    # -- lifecycle ------------------------------------------------------------------------

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise LocalProtocolError("host-not-running", "the host is not running (outside open_host)")
        return self._nursery

    def statistics(self) -> P2PStatistics:
        return P2PStatistics(
            peer_id=self.peer_id,
            connected_peers=len(self.connected_peers()),
            wanted_peers=len(self._wanted),
            refused_inbound=self.allowlist.refused_inbound,
            refused_outbound=self.allowlist.refused_outbound,
            dial_attempts=self._counters.dial_attempts,
            dial_failures=self._counters.dial_failures,
            handler_errors=self._counters.handler_errors,
            peer_faults=dict(self._counters.peer_faults),
            gossip=self._gossip.snapshot(),
        )

    async def _shutdown(self) -> None:
        """Close connections concurrently (each close costs libp2p 100 ms), then the host.

        ``host.close()`` cancels identify, which py-libp2p runs as trio *system* tasks outside
        any nursery, and closes the swarm. Called from ``service._serve``'s shielded scope.
        """
        network: Any = self._host.get_network()
        connections = [conn for conns in list(network.connections.values()) for conn in conns]
        async with trio.open_nursery() as nursery:
            for conn in connections:
                nursery.start_soon(_close_quietly, conn)
        try:
            await self._host.close()
        except Exception as exc:
            logger.warning("closing the libp2p host failed: %r", exc)


def _root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause (through ``__cause__``, groups, libp2p's MultiError)."""
    for _ in range(16):
        inner = exc.__cause__
        errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else getattr(exc, "errors", None)
        if inner is None and errors and isinstance(errors[-1], BaseException):
            inner = errors[-1]
        if inner is None:
            break
        exc = inner
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


async def _close_quietly(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception as exc:
        logger.debug("closing connection failed: %r", exc)
