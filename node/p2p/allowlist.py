"""The peer allowlist and the Noise transport that enforces it (design §13).

Where the check sits
--------------------
A connection from a peer id that no corridor or watcher configuration names is dropped. py-libp2p
0.8.1 offers three places to check a peer id:

* ``ConnectionConfig.allow_list`` / ``ConnectionGate``: IP addresses and CIDRs only, no peer ids.
* A network notifee's ``connected()``: runs *after* the connection is registered, concurrently
  with every other notifee (pubsub opens its stream to the peer, identify starts), so the peer
  briefly takes part before we could close it.
* The security upgrade. The peer id is known, and authenticated, the moment the Noise XX
  handshake ends, before the muxer is negotiated and before the swarm registers the connection or
  tells any notifee. :class:`AllowlistNoiseTransport` wraps Noise there: an unlisted peer's
  secured connection is closed and ``HandshakeFailure`` raised, which the swarm turns into
  ``SecurityUpgradeFailure`` and a closed socket (inbound), or a failed dial (outbound). The peer
  never gets a stream, a pubsub message or an identify exchange.

The check runs in both directions, so the background re-dialling libp2p does on its own (its
auto-connector, which cannot be disabled) cannot connect us to a peer we dropped either. On the
dialling side of a refused connection, Noise completes (the initiator sends the last handshake
message) and the dial then fails while negotiating the muxer, in a few milliseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from libp2p.abc import IRawConnection, ISecureConn
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.peer.id import ID
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import Transport as NoiseTransport

from .identity import parse_peer_id

__all__ = ["AllowlistNoiseTransport", "PeerAllowlist"]

logger = logging.getLogger("node.p2p")

#: A refused peer is logged at WARNING at most once per this many seconds; the rest are counted.
REFUSAL_LOG_INTERVAL = 60.0
_MAX_TRACKED_REFUSALS = 1024


class PeerAllowlist:
    """A mutable set of allowed peer ids (base58 strings).

    All methods are synchronous and atomic (no ``await``): the transport consults
    :meth:`allows` during every handshake, so a change applies to the next connection at once.
    Removing a peer does not close its open connections; :meth:`node.p2p.P2PHost.set_allowlist`
    does both.
    """

    def __init__(self, peer_ids: Iterable[str] = ()) -> None:
        """Raises ``LocalProtocolError(bad-peer-id)`` if any entry is not a canonical peer id."""
        self._ids: frozenset[str] = self._validated(peer_ids)
        self.refused_inbound = 0
        self.refused_outbound = 0
        self._last_logged: dict[str, float] = {}

    @staticmethod
    def _validated(peer_ids: Iterable[str]) -> frozenset[str]:
        ids = frozenset(peer_ids)
        for peer_id in ids:
            parse_peer_id(peer_id)
        return ids

    def allows(self, peer_id: str) -> bool:
        """True if ``peer_id`` may connect."""
        return peer_id in self._ids

    __contains__ = allows

    def __len__(self) -> int:
        return len(self._ids)

    def snapshot(self) -> frozenset[str]:
        """The allowed peer ids at this moment."""
        return self._ids

    def add(self, peer_id: str) -> None:
        """Allow ``peer_id``. Raises ``LocalProtocolError(bad-peer-id)``."""
        self._ids = self._ids | self._validated([peer_id])

    def discard(self, peer_id: str) -> None:
        """Stop allowing ``peer_id`` (no error if absent)."""
        self._ids = self._ids - {peer_id}

    def replace(self, peer_ids: Iterable[str]) -> frozenset[str]:
        """Replace the whole set; returns the peer ids that were removed.

        Atomic: if any entry is invalid, raises ``LocalProtocolError(bad-peer-id)`` and changes
        nothing.
        """
        new = self._validated(peer_ids)
        removed = self._ids - new
        self._ids = new
        return removed

    def record_refusal(self, peer_id: str, direction: str, remote: object) -> None:
        """Count a refused connection and log it (rate-limited per peer)."""
        if direction == "inbound":
            self.refused_inbound += 1
        else:
            self.refused_outbound += 1
        now = time.monotonic()
        last = self._last_logged.get(peer_id)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            return
        if len(self._last_logged) >= _MAX_TRACKED_REFUSALS:
            self._last_logged.clear()
        self._last_logged[peer_id] = now
        logger.warning(
            "refused %s connection: peer %s is not in the allowlist (remote %s)",
            direction,
            peer_id,
            remote,
        )


class AllowlistNoiseTransport(NoiseTransport):
    """Noise XX, then drop the connection unless the authenticated peer id is allowed.

    ``secure_inbound``/``secure_outbound`` either return a secured connection to an allowed peer
    or close what they built and raise ``HandshakeFailure``; they never return a connection to an
    unlisted peer. Cancellation-safe: a cancelled handshake leaves the raw connection to the
    swarm, which closes it.
    """

    def __init__(self, key_pair: KeyPair, noise_privkey: PrivateKey, allowlist: PeerAllowlist) -> None:
        super().__init__(key_pair, noise_privkey=noise_privkey)
        self.allowlist = allowlist

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        secured = await super().secure_inbound(conn)
        await self._enforce(secured, "inbound")
        return secured

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        secured = await super().secure_outbound(conn, peer_id)
        await self._enforce(secured, "outbound")
        return secured

    async def _enforce(self, secured: ISecureConn, direction: str) -> None:
        peer_id = secured.get_remote_peer().to_base58()
        if self.allowlist.allows(peer_id):
            return
        remote = _remote_address(secured)
        self.allowlist.record_refusal(peer_id, direction, remote)
        try:
            await secured.close()
        except Exception as exc:  # the socket may already be gone; the swarm closes it again
            logger.debug("closing refused connection from %s failed: %r", peer_id, exc)
        raise HandshakeFailure(f"peer {peer_id} is not in the allowlist")


def _remote_address(secured: ISecureConn) -> str:
    try:
        address = secured.get_remote_address()
    except Exception:
        return "?"
    if address is None:
        return "?"
    host, port = address
    return f"{host}:{port}"
