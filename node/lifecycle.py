"""A corridor's lifecycle as one node tracks and enforces it (design §9).

Theory of operation
-------------------
The state is :func:`protocol.lifecycle.merge` over the ``lifecycle`` receipts of the corridor's two
logs (ours and the counterparty's replica, in origin order), so both nodes derive the same state
from the same logs. Each party may record a transition in its own log; a transition recorded by both
counts once. The tracker reads only receipts appended since its last read (a byte search for the
``lifecycle`` kind; only candidates are parsed) and re-merges when a new one appears.

**Enforcement** is in the writer (:meth:`LifecycleGate.admit`, called for every receipt while the
batch is built, in sequence order): a kind the current state does not allow is refused with
``corridor-state`` naming the state; a ``lifecycle`` payload must apply to the state reached so far
(including earlier receipts of the same batch) under the corridor's registered keys. A transition
already applied from the other party's log may be recorded in ours too (each log then commits to
it; the merge counts it once); one already in our own log is refused with ``already-recorded``. If
the node has the corridor definition, DRAFT -> PENDING must bind that definition's digest.

Receipts in the counterparty's log are never refused for their kind: its log is its own and signed;
a lifecycle payload in it that does not verify is reported (``rejected`` in the API) and ignored.

**Forks** (design §8): when this node holds verified ``log-equivocation`` evidence of one of the
corridor's logs (:meth:`LifecycleTracker.note_fork`), an ACTIVE corridor is treated as HALTED at once,
before any halt receipt is written: receipt production stops to what HALTED allows, and finality
stops (``halted``). The corridor service then records the ACTIVE -> HALTED transition with the
evidence. A halt's evidence is verified with the logs' keys and without an age limit (a fork is a
fork whenever it is read: every node folding the same logs must reach the same state, whatever its
clock); a resolution (HALTED -> ACTIVE) settles the evidence that halted the corridor. A ``quorum``
resolution is checked by ``verify_quorum`` (:mod:`node.fork_resolution`, over :mod:`protocol.fork`),
against this node's copy of the log prefixes its certificate names, so every node reaches one verdict.

**Holds** (``node.recovery``): while a writer hold is set (the own-log check at start, a recovery of
our log to the canonical branch), or a *guard* says our log must not grow (a resolution names a
branch of our log that our log disagrees with), every gate refuses every kind with ``recovering``:
our writer must never extend a losing branch. :meth:`LifecycleTracker.forget` drops what was read of
a log whose tail was set aside, so the next read starts again from its first receipt.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import evidence_verifier
from protocol.keys import VerifierKey
from protocol.lifecycle import (
    CorridorState,
    EvidenceVerifier,
    MergedLifecycle,
    QuorumVerifier,
    State,
    allowed_kinds,
    apply,
    definition_digest,
    merge,
    signing_digest,
)
from store import LogStore, StoreError

__all__ = ["LifecycleGate", "LifecycleTracker", "halt_verifier"]

log = logging.getLogger(__name__)

_MARK = b'"kind":"lifecycle"'
_NO_LIMIT = 2**62
_OWN_COPY_REASONS = frozenset({"ledger-mismatch", "ledger-not-held"})
"""Refusals of a quorum certificate that say this node's copy of a log differs, not the certificate."""


def halt_verifier(log_keys: Mapping[str, VerifierKey]) -> EvidenceVerifier:
    """The ACTIVE -> HALTED evidence hook: ``log-equivocation`` of one of ``log_keys``'s logs, any age."""
    return evidence_verifier(log_keys=log_keys, now=0, window=_NO_LIMIT, max_skew=_NO_LIMIT)


class LifecycleTracker:
    """The lifecycle of one corridor read from the store (thread-safe; every method is synchronous).

    Args:
        store: the node's store (both logs of the corridor).
        corridor_id: ``AAA-BBB``.
        origins: the corridor's two origins (any order: merged in sorted order).
        registered_keys: party code -> its registered Ed25519 key (the parties' log keys).
        definition: the corridor definition this node was configured with, if any.
        verify_evidence: the fork-evidence verifier for ACTIVE -> HALTED (None: halts are refused).
        verify_quorum: the quorum-resolution verifier for HALTED -> ACTIVE (None: refused).
    """

    def __init__(
        self,
        store: LogStore,
        corridor_id: str,
        origins: Sequence[str],
        registered_keys: Mapping[str, VerifierKey],
        *,
        definition: Mapping[str, Any] | None = None,
        verify_evidence: EvidenceVerifier | None = None,
        verify_quorum: QuorumVerifier | None = None,
    ) -> None:
        self.store = store
        self.corridor_id = corridor_id
        self.origins = tuple(sorted(origins))
        self.registered_keys = dict(registered_keys)
        self.definition_digest = definition_digest(definition).hex() if definition is not None else None
        self.verify_evidence = verify_evidence
        self.verify_quorum = verify_quorum
        """Checks a quorum resolution (``node.fork_resolution``; None: quorum resolutions are refused)."""
        self.fork_status: Callable[[], dict[str, Any]] | None = None
        """The fork resolver's status, shown as ``fork`` in :meth:`status` (None: not shown)."""
        self._lock = threading.RLock()
        self._scanned = dict.fromkeys(self.origins, 0)
        self._payloads: dict[str, list[dict[str, Any]]] = {origin: [] for origin in self.origins}
        self._positions: dict[str, list[int]] = {origin: [] for origin in self.origins}
        self._merged = merge(corridor_id, [[], []], self.registered_keys)
        self._applied: frozenset[str] = frozenset()
        self._recorded: dict[str, set[str]] = {origin: set() for origin in self.origins}
        self._forks: dict[str, dict[str, Any]] = {}
        """Verified log-equivocation evidence this node holds: digest hex -> evidence JSON."""
        self._holds: dict[str, str] = {}
        """Writer holds by name -> why (``node.recovery``): while any is set, gates refuse everything."""
        self.guards: list[Callable[[], str | None]] = []
        """Called by every :meth:`gate`: a non-None answer (why) holds the writer like a hold."""
        self._dirty = False
        self._branches_of: MergedLifecycle | None = None
        self._branches: dict[str, int] = {}

    def hold(self, name: str, why: str) -> None:
        """Refuse every receipt of our writer until :meth:`release` (``recovering``)."""
        with self._lock:
            self._holds[name] = why

    def release(self, name: str) -> None:
        """End the hold ``name`` (no-op if not held)."""
        with self._lock:
            self._holds.pop(name, None)

    def holds(self) -> dict[str, str]:
        """The writer holds in force: name -> why."""
        with self._lock:
            return dict(self._holds)

    def hold_reason(self) -> str | None:
        """Why our writer is held now (a hold or a guard), or None."""
        with self._lock:
            if self._holds:
                return "; ".join(self._holds.values())
        for guard in self.guards:
            why = guard()
            if why is not None:
                return why
        return None

    def forget(self, origin: str) -> None:
        """Forget what was read of ``origin`` (its tail was set aside): re-read it from sequence 0."""
        with self._lock:
            self._scanned[origin] = 0
            self._payloads[origin] = []
            self._positions[origin] = []
            self._recorded[origin] = set()
            self._dirty = True

    def resolution_for(self, origin: str) -> dict[str, Any] | None:
        """The latest applied HALTED -> ACTIVE payload whose resolution names a branch of ``origin``.

        While the corridor is HALTED, instead: a quorum resolution naming ``origin``'s branch that
        only our copy of that log kept us from judging (:meth:`_unjudged_resolution_for`), or None.
        """
        merged = self.merged()
        if merged.lifecycle.state.state == State.HALTED:
            # Halted again: an applied resolution is an earlier fork's, which our log agreed with.
            return self._unjudged_resolution_for(origin, merged)
        with self._lock:
            by_digest = {
                signing_digest(payload).hex(): payload
                for payloads in self._payloads.values()
                for payload in payloads
                if payload.get("from") == "HALTED" and payload.get("to") == "ACTIVE"
            }
        for transition in reversed(merged.lifecycle.history):
            payload = by_digest.get(transition.digest)
            branch = (payload or {}).get("resolution", {}).get("branch", {})
            if payload is not None and branch.get("origin") == origin:
                return payload
        return None

    def _unjudged_resolution_for(self, origin: str, merged: MergedLifecycle) -> dict[str, Any] | None:
        """A quorum resolution naming ``origin``'s branch that only our copy of that log kept us from judging.

        The forked party's own log is the losing branch up to the point it restored, so the ledger
        prefix a certificate names (common to both branches as the resolver sees them) may not be
        what its own copy holds: the resolution is refused here with ``ledger-mismatch`` or
        ``ledger-not-held`` for its own log, and the corridor would stay HALTED for ever. Recovery
        may act on such a resolution when the corridor is HALTED and this node holds verified fork
        evidence *about that log* (it signed two branches; an honest log's node never does): it pulls
        only receipts signed by that log's key whose root at the branch size is the named root, and
        once its copy is the branch, the merge judges the resolution like every other node's.
        """
        with self._lock:
            forked = any(body.get("origin") == origin for body in self._forks.values())
            halt = self.halt_evidence_body(merged.lifecycle.state.halt_evidence)
            if not forked and (halt is None or halt.get("origin") != origin):
                return None
            for rejected in reversed(merged.rejected):
                if rejected.reason not in _OWN_COPY_REASONS:
                    continue
                payload = self._payloads[self.origins[rejected.log]][rejected.position]
                resolution = payload.get("resolution") if payload.get("to") == "ACTIVE" else None
                if isinstance(resolution, Mapping) and resolution.get("branch", {}).get("origin") == origin:
                    return payload
        return None

    def _read(self) -> bool:
        """Read lifecycle receipts appended since the last read; True if any was new."""
        new = False
        for origin in self.origins:
            try:
                head = self.store.head(origin).size
            except StoreError:
                continue  # the replica's origin is registered at its first receipt
            start = self._scanned[origin]
            if head <= start:
                continue
            for sequence, raw in self.store.iter_receipts(origin, start):
                if sequence >= head:
                    break
                self._scanned[origin] = sequence + 1
                if _MARK not in raw:
                    continue
                transition = json.loads(raw)["transition"]
                if transition["kind"] == "lifecycle":
                    self._recorded[origin].add(signing_digest(transition["payload"]).hex())
                    self._payloads[origin].append(transition["payload"])
                    self._positions[origin].append(sequence)
                    new = True
        return new

    def merged(self) -> MergedLifecycle:
        """The merged lifecycle of both logs as stored now."""
        with self._lock:
            if self._read() or self._dirty:
                self._dirty = False
                self._merged = merge(
                    self.corridor_id,
                    [self._payloads[origin] for origin in self.origins],
                    self.registered_keys,
                    verify_evidence=self.verify_evidence,
                    verify_quorum=self.verify_quorum,
                )
                self._applied = frozenset(t.digest for t in self._merged.lifecycle.history)
                for rejected in self._merged.rejected:
                    log.warning(
                        "lifecycle payload ignored: %s: %s", rejected.reason, rejected.message,
                        extra={"corridor": self.corridor_id, "origin": self.origins[rejected.log],
                               "sequence": self._positions[self.origins[rejected.log]][rejected.position]},
                    )  # fmt: skip
            return self._merged

    def state(self) -> CorridorState:
        """The corridor's current state as the logs record it."""
        return self.merged().lifecycle.state

    def halt_evidence_body(self, digest: str | None) -> dict[str, Any] | None:
        """The evidence body of an ACTIVE -> HALTED payload in either log whose digest is ``digest``."""
        if digest is None:
            return None
        with self._lock:
            for payloads in self._payloads.values():
                for payload in payloads:
                    evidence = payload.get("evidence") if payload.get("to") == "HALTED" else None
                    if isinstance(evidence, Mapping) and evidence.get("digest_sha256") == digest:
                        body = evidence.get("body")
                        return dict(body) if isinstance(body, Mapping) else None
            held = self._forks.get(digest)
            return dict(held) if held is not None else None

    def note_fork(self, digest: str, evidence: Mapping[str, Any]) -> bool:
        """Remember verified fork evidence (its digest hex); False if already known."""
        with self._lock:
            if digest in self._forks:
                return False
            self._forks[digest] = dict(evidence)
            return True

    def _unresolved(self, merged: MergedLifecycle) -> dict[str, dict[str, Any]]:
        settled = merged.lifecycle.state.settled_evidence  # halts a resolution ended
        branches = self._resolved_branches(merged)
        return {
            digest: body
            for digest, body in self._forks.items()
            if digest not in settled and not _within_branch(body, branches)
        }

    def _resolved_branches(self, merged: MergedLifecycle) -> dict[str, int]:
        """Origin -> the largest ``branch.size`` an applied resolution named for that log.

        A resolution says which branch of a log is canonical up to ``branch.size``: every fork of that
        log at or below that size is settled by it, whichever spelling of the fork (receipts or
        checkpoints) this node happened to hold. A fork beyond it is a new one.
        """
        if self._branches_of is merged:
            return self._branches
        resume = (State.HALTED, State.ACTIVE)
        resumed = {t.digest for t in merged.lifecycle.history if (t.from_state, t.to_state) == resume}
        branches: dict[str, int] = {}
        for payloads in self._payloads.values():
            for payload in payloads:
                branch = payload.get("resolution", {}).get("branch")
                if isinstance(branch, dict) and signing_digest(payload).hex() in resumed:
                    origin = str(branch.get("origin"))
                    branches[origin] = max(branches.get(origin, 0), int(branch.get("size", 0)))
        self._branches_of, self._branches = merged, branches
        return branches

    def unresolved_forks(self) -> dict[str, dict[str, Any]]:
        """Fork evidence held and not settled by a resolution: digest hex -> evidence JSON."""
        with self._lock:
            return self._unresolved(self.merged())

    def effective_state(self) -> State:
        """The state receipts are admitted under: ACTIVE with an unresolved fork counts as HALTED."""
        state = self.state().state
        if state == State.ACTIVE and self.unresolved_forks():
            return State.HALTED
        return state

    def halted(self) -> bool:
        """Receipt production and finality stop (design §8): HALTED, or an unresolved fork seen."""
        return self.effective_state() == State.HALTED

    def gate(self, origin: str) -> LifecycleGate:
        """A gate for one batch of ``origin``'s writer, starting from the current state."""
        with self._lock:
            merged = self.merged()
            state = merged.lifecycle.state
            gate = LifecycleGate(self, state, set(self._applied), set(self._recorded[origin]))
            gate.fork_pending = state.state == State.ACTIVE and bool(self._unresolved(merged))
        gate.held = self.hold_reason()
        return gate

    def status(self) -> dict[str, Any]:
        """JSON-ready state and history (API ``/v1/corridors/{id}/lifecycle``)."""
        merged = self.merged()
        state = merged.lifecycle.state
        with self._lock:
            rejected = [
                {
                    "origin": self.origins[r.log],
                    "sequence": self._positions[self.origins[r.log]][r.position],
                    "reason": r.reason,
                    "message": r.message,
                }
                for r in merged.rejected
            ]
        effective = self.effective_state()
        return {
            "corridor": self.corridor_id,
            "state": str(state.state),
            "effective_state": str(effective),
            "forks": sorted(self.unresolved_forks()),
            "allowed_kinds": sorted(allowed_kinds(effective)),
            "definition_digest": state.definition_digest,
            "suspended_by": state.suspended_by,
            "halt_evidence": state.halt_evidence,
            "history": [
                {
                    "from": str(t.from_state),
                    "to": str(t.to_state),
                    "reason": t.reason,
                    "digest": t.digest,
                    "signers": list(t.signers),
                }
                for t in merged.lifecycle.history
            ],
            "rejected": rejected,
            "waiting": dict(zip(self.origins, merged.waiting, strict=True)),
            **({"fork": self.fork_status()} if self.fork_status is not None else {}),
        }


def _within_branch(evidence: Mapping[str, Any], branches: Mapping[str, int]) -> bool:
    """True if the fork ``evidence`` shows lies at or below a resolved branch size of its log."""
    size = branches.get(str(evidence.get("origin")))
    if size is None:
        return False
    try:
        if evidence.get("receipts"):
            return int(evidence["receipts"][0]["sequence"]) < size
        if evidence.get("checkpoints"):
            return int(str(evidence["checkpoints"][0]).split("\n")[1]) <= size
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return False


class LifecycleGate:
    """Admits the receipts of one writer batch in order (see the module docstring)."""

    def __init__(
        self, tracker: LifecycleTracker, state: CorridorState, applied: set[str], recorded: set[str]
    ) -> None:
        self.tracker = tracker
        self.state = state
        self.applied = applied
        self.recorded = recorded
        self.fork_pending = False
        """An unresolved fork is held while the logs still say ACTIVE: admit as HALTED."""
        self.held: str | None = None
        """Why our writer is held (recovery, see the module docstring): refuse everything."""

    def admit(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Admit one receipt of ``kind``; for ``lifecycle``, advance the batch's state.

        Raises:
            LocalProtocolError: ``corridor-state`` (the kind is not allowed now; details name the
                ``state``) or ``already-recorded`` (this transition is in our log already).
            PeerProtocolError: the lifecycle payload does not apply (``illegal-transition``,
                ``wrong-from-state``, ``bad-signature``, ``unknown-signer``,
                ``definition-mismatch``, ...).
        """
        state = self.state.state
        if self.held is not None:
            raise LocalProtocolError(
                "recovering",
                f"corridor {self.tracker.corridor_id}: our log is being recovered: {self.held}",
                state=str(state),
                kind=kind,
            )
        if self.fork_pending and state == State.ACTIVE:
            state = State.HALTED
        if kind not in allowed_kinds(state):
            raise LocalProtocolError(
                "corridor-state",
                f"corridor {self.tracker.corridor_id} is {state}: {kind} receipts are not accepted",
                state=str(state),
                kind=kind,
            )
        if kind != "lifecycle":
            return
        digest = signing_digest(payload).hex()
        if digest in self.recorded:
            raise LocalProtocolError(
                "already-recorded",
                f"this {payload.get('from')} -> {payload.get('to')} transition is in our log already",
                state=str(state),
            )
        if digest in self.applied:  # applied from the other party's log: ours records it too
            self.recorded.add(digest)
            return
        expected = self.tracker.definition_digest
        if (
            expected is not None
            and state == State.DRAFT
            and payload.get("to") == State.PENDING
            and payload.get("definition_digest") != expected
        ):
            raise PeerProtocolError(
                "definition-mismatch",
                "DRAFT -> PENDING must bind this node's corridor definition",
                expected=expected,
                got=payload.get("definition_digest"),
            )
        self.state = apply(
            self.state, payload, self.tracker.registered_keys, verify_evidence=self.tracker.verify_evidence,
            verify_quorum=self.tracker.verify_quorum,
        )  # fmt: skip
        if self.state.state == State.HALTED:
            self.fork_pending = False
        self.applied.add(digest)
        self.recorded.add(digest)
