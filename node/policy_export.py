"""A corridor's trust policy as a running node knows it (design §7, §11): ``GET /v1/corridors/{c}/policy``.

Built from the node's corridor configuration (our log key and the counterparty's, and each party's
cosigner key: the same Ed25519 key as its log, as C2SP type 0x04) and from the stake ledger of the
corridor's :class:`~node.quorum.QuorumCollector` (the active watchers and their stake), with the
corridor's quorum rule. Both corridor parties compute the same ledger from the same two logs, so both
export the same policy once they are in sync; the logs are listed in origin order for that reason.

The policy is the ledger *now*: a light client holding an older bundle verifies it under the policy
of the time it trusts (the active set changes only through quorum-final ``watcher.*`` receipts).
"""

from __future__ import annotations

from protocol.errors import PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, VerifierKey
from protocol.policy import LogEntry, TrustPolicy, WatcherEntry

from .corridor import CorridorService

__all__ = ["corridor_policy"]


def corridor_policy(service: CorridorService) -> TrustPolicy:
    """The trust policy of ``service``'s corridor, from its configuration and its stake ledger now.

    Raises:
        LocalProtocolError(bad-policy): the ledger cannot be expressed as a policy (two active
            watchers with one key name).
    """
    quorum = service.quorum
    watchers = []
    for vkey, stake in sorted(quorum.ledger().active_weights().items()):
        try:
            key = VerifierKey.from_vkey(vkey)
        except PeerProtocolError:
            continue  # the receipt rules let no such key in; never export one
        if stake > 0 and key.alg == ALG_COSIGNATURE_V1:
            watchers.append(WatcherEntry(key=key, stake=stake))
    ours = LogEntry(key=service.key.verifier(), cosigner=service.key.verifier(ALG_COSIGNATURE_V1))
    theirs = LogEntry(key=service.counterparty_key, cosigner=service.counterparty_cosigner)
    first, second = sorted((ours, theirs), key=lambda entry: entry.origin)
    return TrustPolicy(
        corridor_id=service.id,
        logs=(first, second),
        watchers=tuple(watchers),
        stake_currency=quorum.stake_currency,
        quorum=quorum.policy,
    )
