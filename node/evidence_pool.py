"""The node's evidence pool: verify evidence with the corridor's context, then keep it (design §7, §8).

Theory of operation
-------------------
Bookkeeping around the pure verifier (style rule 11, cometbft ``evidence/pool.go``). For one piece of
evidence, :meth:`EvidencePool.add` does, in order:

1. **Context.** The corridor's two log keys (ours and the counterparty's registered key) and its
   :class:`~protocol.stake.SlashPolicy` (evidence window, clock skew); an unknown corridor is the
   caller's error (``unknown-corridor``).
2. **Duplicate?** Cheap shape checks and the digest; evidence already stored is a quiet no-op (the
   sender may simply be behind), never a fault.
3. **Verify** with :func:`protocol.evidence.verify_evidence` at the node's clock.
4. **Persist** in the ``evidence`` database (:class:`store.evidence.EvidenceStore`), one write
   transaction.

Gossip of evidence, halting on a log equivocation and writing ``watcher.slash`` receipts on our own
initiative are the detectors' and the lifecycle's business; they call :meth:`add` first. The HTTP API
calls :meth:`verify_slash` before a ``watcher.slash`` it is asked to write reaches the log writer, so
a node never signs a slash it has not verified (the receipt rules then re-check what needs no
context, and every node's stake fold re-verifies all of it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import (
    KINDS,
    SLASHABLE_KINDS,
    VerifiedEvidence,
    evidence_digest,
    validate_basic,
    verify_evidence,
)
from protocol.keys import VerifierKey
from protocol.stake import DEFAULT_SLASH_POLICY, SlashPolicy
from store import LogStore
from store.evidence import EvidenceRecord, EvidenceStore

__all__ = ["EvidencePool"]


class EvidencePool:
    """Verified evidence of the node's corridors (see the module docstring).

    Args:
        store: the node's store.
        log_keys: corridor id -> (origin -> registered log key) of its two logs.
        policies: corridor id -> its slashing policy (default: the design's defaults).
        now: unix-seconds clock.

    Thread-safe: every method is one or two LMDB transactions and pure verification.
    """

    def __init__(
        self,
        store: LogStore,
        log_keys: Mapping[str, Mapping[str, VerifierKey]],
        *,
        policies: Mapping[str, SlashPolicy] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._evidence = EvidenceStore(store)
        self._log_keys = {cid: dict(keys) for cid, keys in log_keys.items()}
        self._policies = dict(policies or {})
        self._now = now

    def _context(self, corridor_id: str) -> tuple[Mapping[str, VerifierKey], SlashPolicy]:
        keys = self._log_keys.get(corridor_id)
        if keys is None:
            raise LocalProtocolError(
                "unknown-corridor", f"this node is not a party to corridor {corridor_id!r}"
            )
        return keys, self._policies.get(corridor_id, DEFAULT_SLASH_POLICY)

    def add(
        self, corridor_id: str, evidence: bytes | Mapping[str, Any], *, kinds: Collection[str] = KINDS
    ) -> tuple[VerifiedEvidence | None, bool]:
        """Verify and store ``evidence`` of ``corridor_id``.

        Returns:
            (the verified evidence, True) if it was new; (None, False) if its digest was already held.

        Raises:
            PeerProtocolError: any :func:`~protocol.evidence.verify_evidence` reason; nothing is stored.
            LocalProtocolError(unknown-corridor).
            StoreError: the write failed (never the sender's fault).
        """
        # 1. Context.
        log_keys, policy = self._context(corridor_id)
        # 2. Duplicate?
        _, body = validate_basic(evidence)
        if self._evidence.get(evidence_digest(body)) is not None:
            return None, False
        # 3. Verify.
        verified = self._verify(corridor_id, body, log_keys, policy, kinds)
        # 4. Persist.
        return verified, self._evidence.add(verified, received=int(self._now()))

    def _verify(
        self,
        corridor_id: str,
        body: Mapping[str, Any],
        log_keys: Mapping[str, VerifierKey],
        policy: SlashPolicy,
        kinds: Collection[str],
    ) -> VerifiedEvidence:
        return verify_evidence(
            body,
            log_keys=log_keys,
            corridor_id=corridor_id,
            now=int(self._now()),
            window=policy.evidence_window,
            max_skew=policy.max_clock_skew,
            kinds=kinds,
        )

    def verify_slash(self, corridor_id: str, payload: Mapping[str, Any]) -> VerifiedEvidence:
        """Verify the evidence of a ``watcher.slash`` payload we are asked to write, and keep it.

        Verified even if the evidence is already stored (a slash must be judged now, against the
        window); storing it again is a no-op.

        Raises:
            PeerProtocolError: ``schema-violation`` (no ``evidence`` object), ``kind-not-accepted``
                (not a watcher's misbehaviour), or any other verification reason.
            LocalProtocolError(unknown-corridor).
        """
        log_keys, policy = self._context(corridor_id)
        evidence = payload.get("evidence") if isinstance(payload, Mapping) else None
        if not isinstance(evidence, Mapping):
            raise PeerProtocolError("schema-violation", "a watcher.slash payload carries an evidence object")
        _, body = validate_basic(evidence)
        verified = self._verify(corridor_id, body, log_keys, policy, SLASHABLE_KINDS)
        self._evidence.add(verified, received=int(self._now()))
        return verified

    def list_evidence(self, corridor_id: str) -> dict[str, Any]:
        """A corridor's stored evidence, JSON-ready (API ``/v1/corridors/{id}/evidence``)."""
        self._context(corridor_id)
        return {
            "corridor": corridor_id,
            "evidence": [_json(record) for record in self._evidence.list(corridor_id)],
        }


def _json(record: EvidenceRecord) -> dict[str, Any]:
    return {
        "digest": record.digest,
        "kind": record.kind,
        "origin": record.origin,
        "offender": record.offender,
        "time": record.time,
        "received": record.received,
        "evidence": json.loads(record.raw),
    }
