"""Starting and stopping the node's libp2p host (design §13): :func:`open_host`.

Theory of operation
-------------------
:func:`open_host` builds a py-libp2p 0.8.1 host that speaks TCP, Noise (only: no plaintext, no
secio, no TLS) and yamux (only), keeps at most one connection per peer, refuses peers missing from
the allowlist during the Noise handshake (:mod:`node.p2p.allowlist`) and runs gossipsub with the
settings of libp2p-notes.md. It then enters, in this order (the order the notes measured as safe
at shutdown under traffic):

1. the ``Pubsub`` service, 2. the ``GossipSub`` router service, 3. ``host.run(listen)`` (the
swarm), 4. our own nursery (re-dial loop, one drain task per subscribed topic).

All of this runs in one task (:func:`_serve`) under a cancel scope *shielded* from the caller's
block, so cancelling the block cancels only the block. On exit, whether the block returned, raised
or was cancelled, ``_serve`` is told to stop and, bounded by :data:`SHUTDOWN_TIMEOUT`: our tasks
are cancelled; every connection is closed concurrently (each close costs py-libp2p at least
100 ms); ``host.close()`` cancels identify (which py-libp2p runs as trio *system* tasks, outside
any nursery) and closes the swarm; then the contexts unwind in reverse order. Only then do
gossipsub and pubsub stop, so no connection event reaches a stopped service (the "Nursery is
closed to new arrivals" crash).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from protocol.errors import LocalProtocolError

from .allowlist import AllowlistNoiseTransport, PeerAllowlist
from .gossip import (
    PEER_QUEUE_SIZE,
    SUBSCRIPTION_CHANNEL_SIZE,
    ContentAddressedMessageCache,
    _tune_pubsub_module,
    content_message_id,
)
from .host import DEFAULT_DIAL_TIMEOUT, P2PError, P2PHost, RedialPolicy, _ConnectionNotifee

__all__ = ["DEFAULT_LISTEN_ADDR", "SHUTDOWN_TIMEOUT", "open_host"]

logger = logging.getLogger("node.p2p")

DEFAULT_LISTEN_ADDR = "/ip4/127.0.0.1/tcp/0"
#: Bound on the shutdown that follows the caller's block (closing connections, swarm, services).
SHUTDOWN_TIMEOUT = 5.0
#: Gossipsub parameters (libp2p-notes.md): mesh degree and heartbeat.
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 6, 4, 12
GOSSIP_HEARTBEAT_SECONDS = 1


@asynccontextmanager
async def open_host(
    key_pair: KeyPair,
    *,
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    allowlist: PeerAllowlist | Iterable[str] = (),
    peers: Iterable[str] = (),
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
    redial: RedialPolicy | None = None,
    max_gossip_rpc_bytes: int = DefaultMaxMessageSize,
) -> AsyncIterator[P2PHost]:
    """Run a hardened libp2p host for the duration of the ``async with`` block.

    Args:
        key_pair: the node's Ed25519 identity (:mod:`node.p2p.identity`).
        listen_addr: multiaddr to listen on; ``/tcp/0`` lets the OS choose (see
            :attr:`P2PHost.listen_addrs` for the port it chose).
        allowlist: peer ids allowed to connect, or a shared :class:`PeerAllowlist`.
        peers: multiaddrs with ``/p2p/<id>`` to keep connected (:meth:`P2PHost.keep_connected`).
        dial_timeout: bound on each dial.
        redial: backoff of the re-dial loop.
        max_gossip_rpc_bytes: largest inbound gossipsub RPC accepted (libp2p default 1 MiB).

    Shutdown order and guarantees are in the module docstring. Cancellation-safe: leaving the
    block by cancellation runs the same shielded, bounded shutdown. An exception that ends the
    block alone is re-raised as itself, not inside exception groups. The first call enlarges
    py-libp2p's process-wide gossip queues (:func:`node.p2p.gossip._tune_pubsub_module`).

    Raises:
        LocalProtocolError: ``bad-multiaddr``, ``bad-peer-id``, ``dial-self``, ``peer-not-allowed``.
        P2PError: could not listen on ``listen_addr``.
    """
    allow = allowlist if isinstance(allowlist, PeerAllowlist) else PeerAllowlist(allowlist)
    try:
        listen = multiaddr.Multiaddr(listen_addr)
    except Exception as exc:
        raise LocalProtocolError("bad-multiaddr", f"{listen_addr!r} is not a multiaddr") from exc
    _probe_listen_address(listen)
    _tune_pubsub_module(SUBSCRIPTION_CHANNEL_SIZE, PEER_QUEUE_SIZE)

    noise = AllowlistNoiseTransport(key_pair, create_x25519_key_pair().private_key, allow)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1, dial_timeout=dial_timeout),
        listen_addrs=[listen],
    )
    network: Any = host.get_network()
    network.retry_config = RetryConfig(max_retries=0)
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        degree=GOSSIP_DEGREE,
        degree_low=GOSSIP_DEGREE_LOW,
        degree_high=GOSSIP_DEGREE_HIGH,
        heartbeat_interval=GOSSIP_HEARTBEAT_SECONDS,
        spam_protection_enabled=False,
    )
    router.mcache = ContentAddressedMessageCache(router.mcache.window_size, router.mcache.history_size)
    # Created before any dial: pubsub learns peers from connection notifications.
    pubsub = Pubsub(
        host,
        router,
        msg_id_constructor=content_message_id,
        max_inbound_rpc_size=max_gossip_rpc_bytes,
    )
    # py-libp2p seeds the message sequence number with the current second, so a node restarted within
    # as many seconds as it had published reuses numbers, and peers drop those messages as equivocation.
    # Nanoseconds keep every run's numbers above the last one's.
    pubsub.counter = time.time_ns()
    p2p = P2PHost(host, pubsub, router, allow, dial_timeout=dial_timeout, redial=redial or RedialPolicy())
    network.register_notifee(_ConnectionNotifee(p2p))
    for addr in peers:
        p2p.keep_connected(addr)

    # The caller's block and our own nursery are the only things the caller's cancellation
    # reaches: the services run in _serve under a shield, and stop when the block is left.
    # Whatever single exception ends the block (the caller's, or a failure to start) comes out of
    # the nursery wrapped in an exception group; it is re-raised as itself.
    stop = trio.Event()
    sole: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, p2p, pubsub, router, listen, stop)
            try:
                yield p2p
            finally:
                stop.set()
    except BaseExceptionGroup as group:
        sole = _sole_leaf(group)
        if sole is None:
            raise
    if sole is not None:
        raise sole


async def _serve(
    p2p: P2PHost,
    pubsub: Pubsub,
    router: GossipSub,
    listen: multiaddr.Multiaddr,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run pubsub, the router, the swarm and our tasks until ``stop``; then shut down in order.

    Shielded from the caller's cancellation: had libp2p's tasks been cancelled together with the
    caller's block (their nurseries sit inside it), their cleanup would be cut short at the first
    checkpoint, leaving sockets open and peers believing we are still connected. The shutdown
    after ``stop`` is bounded by :data:`SHUTDOWN_TIMEOUT`.
    """
    host = p2p.libp2p_host
    with trio.CancelScope(shield=True) as scope:
        async with (
            background_trio_service(pubsub),
            background_trio_service(router),
            host.run([listen]),
        ):
            try:
                if not host.get_transport_addrs():
                    raise P2PError(f"could not listen on {listen}")
                async with trio.open_nursery() as tasks:
                    p2p._nursery = tasks
                    tasks.start_soon(p2p._maintain_connections)
                    task_status.started()
                    await stop.wait()
                    scope.deadline = trio.current_time() + SHUTDOWN_TIMEOUT
                    tasks.cancel_scope.cancel()
            finally:
                p2p._nursery = None
                await p2p._shutdown()
    if scope.cancelled_caught:
        logger.warning("libp2p host %s: shutdown exceeded %.0f s", p2p.peer_id, SHUTDOWN_TIMEOUT)
    else:
        logger.info("libp2p host %s stopped", p2p.peer_id)


def _probe_listen_address(listen: multiaddr.Multiaddr) -> None:
    """Refuse a fixed TCP port that another socket is already listening on.

    py-libp2p 0.8.1 listens with ``SO_REUSEPORT`` (for TCP hole punching), so a second daemon
    started on the same port would bind successfully and the kernel would split incoming
    connections between the two processes. A probe socket with ``SO_REUSEADDR`` only fails with
    ``EADDRINUSE`` on any listener (and still binds past ``TIME_WAIT`` after a restart).
    """
    names = {protocol.name for protocol in listen.protocols()}
    if "tcp" not in names or not names & {"ip4", "ip6"}:
        return
    family = socket.AF_INET if "ip4" in names else socket.AF_INET6
    host = str(listen.value_for_protocol("ip4" if "ip4" in names else "ip6"))
    port = int(listen.value_for_protocol("tcp"))
    if port == 0:
        return
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise P2PError(f"could not listen on {listen}: {exc.strerror or exc}") from exc
    finally:
        probe.close()


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only non-group exception inside ``group`` (however nested), or None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None
