"""Gossipsub as design §13 uses it: content-addressed ids, guarded validators, tuned queues.

What py-libp2p 0.8.1 does, read from its source and checked by our tests
------------------------------------------------------------------------
* **Validators are booleans.** ``Pubsub.set_topic_validator(topic, fn, is_async)`` takes
  ``fn(forwarder: ID, msg) -> bool``; there is no ACCEPT/IGNORE/REJECT. Any falsy result raises
  ``ValidationError`` inside ``push_msg``: the message is neither delivered to our subscribers nor
  forwarded, and ``PeerScorer.on_invalid_message(forwarder, topic)`` is counted. With the default
  ``ScoreParams`` every weight is 0 and every threshold ``-inf``, so neither IGNORE nor REJECT
  changes anything about the peer; were scoring configured, IGNORE would be penalised exactly
  like REJECT (unlike go-libp2p-pubsub). So :class:`Verdict` maps ACCEPT to True and both others
  to False, and we count REJECTs per forwarding peer ourselves (``rejected_by_peer`` in
  :class:`GossipStatistics`) for the application to act on.
* **Failed validations are cached** by message id for ``validation_cache_ttl`` (300 s): a later
  copy of the same message is refused without running the validator. Right for REJECT, wrong for
  IGNORE ("not yet in order" may become valid), so our validation cache does not remember IGNOREd
  ids (:class:`_IgnoreAwareValidationCache`).
* **A sync validator that raises is not caught** (only async ones are): the exception escapes
  ``push_msg``, a task of the pubsub service, whose manager then cancels pubsub. Our adapter
  catches everything, logs it with its traceback and answers REJECT.
* **Validators also run on our own publishes** (``publish`` calls ``push_msg(self, msg)``). A
  stateful validator would answer IGNORE ("duplicate") for a batch the node has just stored, and
  the publish would silently vanish; the adapter accepts our own publishes without calling the
  validator: validate before publishing.
* **Message ids:** ``Pubsub(msg_id_constructor=...)`` is honoured for the seen-cache, the
  validation cache and IDONTWANT, but the router's ``MessageCache`` (IHAVE/IWANT gossip) always
  keys by ``from_id + seqno``. We install :class:`ContentAddressedMessageCache` so IHAVE carries
  the same SHA-256 ids our seen-cache holds; otherwise every IHAVE'd message is IWANTed again.
  The raw 32-byte digest goes on the wire; libp2p decodes ids that happen to be ASCII hex as hex,
  which a SHA-256 digest is with negligible probability (about (22/256)^32).
* **Our own publishes reach our own subscription** (``from_id`` is ours); the drain task drops
  them.
* Equivocation detection in the router keeps up to ~1000 full messages between heartbeats: keep
  gossip payloads (batches) small, tens of KiB, and fetch bulk data over ``/sez/sync/1``.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.peer.id import ID
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import ValidationCache, ValidationResult
from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue

__all__ = [
    "ContentAddressedMessageCache",
    "GossipMessage",
    "GossipStatistics",
    "GossipValidator",
    "Verdict",
    "content_message_id",
]

logger = logging.getLogger("node.p2p")

#: libp2p's per-topic subscription channel (default 32, drops when full). Our drain task empties
#: it continuously; the size only absorbs bursts while the drain task waits for the scheduler.
SUBSCRIPTION_CHANNEL_SIZE = 4096
#: libp2p's per-peer outbound RPC queue (default 32, drops when full).
PEER_QUEUE_SIZE = 4096


class Verdict(enum.Enum):
    """What a gossip validator decides about one message (design §13)."""

    #: Valid and new: deliver to our subscribers and forward.
    ACCEPT = "accept"
    #: Not invalid, but not for now (duplicate, old, out of order): drop without penalty.
    IGNORE = "ignore"
    #: Invalid: drop and count against the forwarding peer.
    REJECT = "reject"


#: ``fn(forwarder_peer_id, payload) -> Verdict``; pure and fast (it runs in the network task).
GossipValidator = Callable[[str, bytes], Verdict]


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipMessage:
    """One message received on a topic from another peer."""

    #: Topic it arrived on.
    topic: str
    #: Payload, exactly as published.
    data: bytes
    #: Peer id of the publisher (authenticated by libp2p's message signature).
    origin: str
    #: SHA-256 of ``data``: the gossipsub message id.
    msg_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipStatistics:
    """Counters since the host started."""

    published: int
    delivered: int
    own_filtered: int
    accepted: int
    ignored: int
    rejected: int
    validator_errors: int
    rejected_by_peer: dict[str, int]


def content_message_id(msg: rpc_pb2.Message) -> bytes:
    """Message id = SHA-256 of the payload (design §13)."""
    return hashlib.sha256(msg.data).digest()


class ContentAddressedMessageCache(MessageCache):
    """The router's IHAVE/IWANT cache, keyed by :func:`content_message_id` instead of from+seqno."""

    def put(self, msg: rpc_pb2.Message) -> None:
        mid = content_message_id(msg)
        if mid in self.msgs:
            return
        self.msgs[mid] = msg
        self.history[0].append(CacheEntry(mid, msg.topicIDs))


class _IgnoreAwareValidationCache(ValidationCache):
    """libp2p's validation cache, except that it does not remember IGNOREd message ids."""

    def __init__(self, ttl: int, max_size: int) -> None:
        super().__init__(ttl, max_size)
        self.uncacheable: set[bytes] = set()

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        if msg_id in self.uncacheable:
            self.uncacheable.discard(msg_id)
            if not result.is_valid:
                return
        super().put(msg_id, result)


class _GossipCounters:
    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.own_filtered = 0
        self.accepted = 0
        self.ignored = 0
        self.rejected = 0
        self.validator_errors = 0
        self.rejected_by_peer: Counter[str] = Counter()

    def snapshot(self) -> GossipStatistics:
        return GossipStatistics(
            published=self.published,
            delivered=self.delivered,
            own_filtered=self.own_filtered,
            accepted=self.accepted,
            ignored=self.ignored,
            rejected=self.rejected,
            validator_errors=self.validator_errors,
            rejected_by_peer=dict(self.rejected_by_peer),
        )


class _ValidatorAdapter:
    """Turns a :data:`GossipValidator` into the boolean sync validator libp2p calls.

    Never raises: an exception or a non-:class:`Verdict` result counts as REJECT.
    """

    def __init__(
        self,
        topic: str,
        fn: GossipValidator,
        self_id: ID,
        cache: _IgnoreAwareValidationCache,
        counters: _GossipCounters,
    ) -> None:
        self.topic = topic
        self.fn = fn
        self.self_id = self_id
        self.cache = cache
        self.counters = counters

    def __call__(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        if forwarder == self.self_id:
            return True
        peer = forwarder.to_base58()
        try:
            verdict = self.fn(peer, msg.data)
        except Exception:
            self.counters.validator_errors += 1
            logger.exception(
                "gossip validator for %s raised on a message from %s; treating it as REJECT",
                self.topic,
                peer,
            )
            verdict = Verdict.REJECT
        if not isinstance(verdict, Verdict):
            self.counters.validator_errors += 1
            logger.error(
                "gossip validator for %s returned %r, not a Verdict; treating it as REJECT",
                self.topic,
                verdict,
            )
            verdict = Verdict.REJECT
        if verdict is Verdict.ACCEPT:
            self.counters.accepted += 1
            return True
        if verdict is Verdict.IGNORE:
            self.counters.ignored += 1
            # validate_msg caches this result right after we return, with no await in between.
            self.cache.uncacheable.add(content_message_id(msg))
            return False
        self.counters.rejected += 1
        self.counters.rejected_by_peer[peer] += 1
        logger.info(
            "rejected gossip on %s from %s (id %s)", self.topic, peer, content_message_id(msg).hex()[:16]
        )
        return False


def _tune_pubsub_module(subscription_channel_size: int, peer_queue_size: int) -> None:
    """Enlarge libp2p's process-wide gossip queues (idempotent).

    ``SUBSCRIPTION_CHANNEL_SIZE`` is read from the module at each ``subscribe``; ``RpcQueue()`` is
    created with its default size, bound when ``rpc_queue`` was imported, so we substitute a
    subclass with a larger default in the ``pubsub`` module's namespace.
    """
    _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = max(
        _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE, subscription_channel_size
    )
    namespace = vars(_pubsub_module)
    current: Any = namespace["RpcQueue"]
    if getattr(current, "sez_queue_size", 0) >= peer_queue_size:
        return

    class _LargeRpcQueue(RpcQueue):
        sez_queue_size = peer_queue_size

        def __init__(
            self, max_size: int = peer_queue_size, max_message_size: int = DefaultMaxMessageSize
        ) -> None:
            super().__init__(max_size=max_size, max_message_size=max_message_size)

    namespace["RpcQueue"] = _LargeRpcQueue
