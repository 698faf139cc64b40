"""The p2p layer of sez-node on py-libp2p 0.8.1 (design §13; libp2p-notes.md).

One hardened host per process: TCP, Noise only, yamux only, one connection per peer, a peer-id
allowlist enforced during the Noise handshake, gossipsub with content-addressed message ids and
guarded validators, guarded stream handlers, and msgpack framing for long-lived request/response
streams. Gossip (receipt batches, checkpoints, ...), the ``/sez/sync/1`` protocol and watchers are
built on :class:`P2PHost`.

Modules:

* :mod:`~node.p2p.identity`: key files.
* :mod:`~node.p2p.allowlist`: who may connect, and where in py-libp2p that is checked.
* :mod:`~node.p2p.service`: :func:`open_host`, its settings, start-up and shutdown order.
* :mod:`~node.p2p.host`: :class:`P2PHost`, dialling and re-dialling, gossip, streams.
* :mod:`~node.p2p.gossip`: validators and message ids, and what py-libp2p does with them.
* :mod:`~node.p2p.streams`: trio streams, the handler guard, msgpack framing.
* :mod:`~node.p2p.logs`: routing py-libp2p's logging.

Usage::

    configure_libp2p_logging()
    key = load_or_create_identity(path)
    async with open_host(key, listen_addr="/ip4/0.0.0.0/tcp/4001",
                         allowlist=peer_ids, peers=bootstrap_addrs) as host:
        host.set_topic_validator(topic, validate)
        messages = await host.subscribe(topic)
        host.set_stream_handler("/sez/sync/1", serve_sync)
        ...
"""

from .allowlist import AllowlistNoiseTransport, PeerAllowlist
from .gossip import (
    ContentAddressedMessageCache,
    GossipMessage,
    GossipStatistics,
    GossipValidator,
    Verdict,
    content_message_id,
)
from .host import (
    DialError,
    P2PError,
    P2PHost,
    P2PStatistics,
    RedialPolicy,
    StreamOpenError,
)
from .identity import (
    generate_identity,
    load_identity,
    load_or_create_identity,
    parse_peer_id,
    peer_id_of,
    save_identity,
)
from .logs import DEFAULT_LEVEL_CAPS, configure_libp2p_logging
from .service import DEFAULT_LISTEN_ADDR, open_host
from .streams import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MsgpackStream,
    P2PStream,
    StreamHandler,
    guard_stream_handler,
)

__all__ = [
    "DEFAULT_LEVEL_CAPS",
    "DEFAULT_LISTEN_ADDR",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AllowlistNoiseTransport",
    "ContentAddressedMessageCache",
    "DialError",
    "GossipMessage",
    "GossipStatistics",
    "GossipValidator",
    "MsgpackStream",
    "P2PError",
    "P2PHost",
    "P2PStatistics",
    "P2PStream",
    "PeerAllowlist",
    "RedialPolicy",
    "StreamHandler",
    "StreamOpenError",
    "Verdict",
    "configure_libp2p_logging",
    "content_message_id",
    "generate_identity",
    "guard_stream_handler",
    "load_identity",
    "load_or_create_identity",
    "open_host",
    "parse_peer_id",
    "peer_id_of",
    "save_identity",
]
