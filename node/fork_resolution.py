"""Fork resolution as one node runs it (design §8): watchers on both branches slashed, the quorum branch wins.

Theory of operation
-------------------
One :class:`ForkResolver` per corridor service. It works beside the replica's detector (a conflicting
*receipt*) and finds what only cosigned checkpoints show:

1. **Two branches.** A cosigned checkpoint note arrives on the cosignature gossip for one of the
   corridor's logs, validly signed by that log's key, at a size where this node stores a checkpoint of
   that log with **another root**. That is ``log-equivocation`` (checkpoint form, built with
   :func:`~protocol.evidence.log_equivocation_from_checkpoints`), handed to the service's ``on_fork``
   (verify, keep, gossip, halt). The note is the other branch's certificate: it is **kept durably**
   (witness-state record ``fork-branches/<origin>``, at most :data:`MAX_BRANCH_NOTES` per origin, the
   verified lines of further announcements of the same checkpoint merged into it).
2. **Watchers on both branches.** Every watcher with stake in the ledger whose cosignature verifies on
   both our stored note and the kept one equivocated: ``watcher-equivocation`` evidence
   (:func:`~protocol.evidence.watcher_equivocation`) is verified into the evidence pool, gossiped, and
   this node writes a ``watcher.slash`` receipt for it (reporter: this node's key) unless the ledger
   already applied it or this process already wrote it. Checked again whenever a watcher's line is
   merged into a checkpoint at a size where a branch is kept (lines may arrive in any order), and for
   watcher-equivocation evidence arriving on the evidence gossip.
3. **The quorum branch.** While the logs say HALTED, the party whose log is *not* the forked one (its
   log is undisputed, and its slashes count in the judging ledger) builds a certificate
   (:mod:`protocol.fork`) for the branch its store holds: at the size of the kept branch (both judged
   at one size), or, when no other branch's cosigned checkpoint is held (a fork seen in receipts), at
   its quorum-final size past the fork point. The judging ledger is the forked log's prefix up to
   min(fork bound, its quorum-final size) and our own log up to its head (the slashes count), bonds
   final below each log's quorum-final size. Once every watcher seen on both branches is slashed in
   that ledger, every branch held (ours and the kept ones) is judged under it; if ours, and only ours,
   holds a quorum, this node writes HALTED -> ACTIVE with ``resolution: {"method": "quorum", ...}``
   (the writer's gate checks it with the same verifier every node runs). The forked party never writes
   one (its log beyond the fork is what is judged); it reads the counterparty's and verifies it. If no
   branch holds a quorum the corridor stays HALTED and :meth:`ForkResolver.status` says why; the way
   out is the two-party resolution (``sez-node lifecycle sign`` by both parties).

**Limits.** Only a conflict at a size where this node *stores* a checkpoint is seen here (watchers
cosign announced batch checkpoints, which both nodes store); a conflict at another size, and watchers
that cosigned two branches at different sizes (``watcher-equivocation`` with a divergence proof), are
not detected by this module. If the other branch holds the quorum, this node (whose copy is then the
losing branch) says so and writes nothing: recovery of that copy is ``node`` recovery's business.

Everything touching the store is synchronous (called from worker threads); the async part is the
service's: gossip, the writer, the loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from protocol.checkpoints import Checkpoint, open_checkpoint, parse_checkpoint, verify_cosignatures
from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.evidence import (
    evidence_digest,
    log_equivocation_from_checkpoints,
    validate_basic,
    watcher_equivocation,
)
from protocol.fork import (
    EMPTY_ROOT,
    ForkContext,
    HeldLedger,
    assess_quorum_certificate,
    fork_bound,
    make_certificate,
    verify_quorum_certificate,
)
from protocol.jcs import canonical
from protocol.keys import ALG_COSIGNATURE_V1, VerifierKey
from protocol.lifecycle import State
from protocol.lifecycle import sign as sign_lifecycle
from protocol.notes import NoteSignature, SignedNote, format_note, parse_note
from protocol.quorum import decide
from protocol.stake import LedgerEntry
from store import LogStore, StoreError

if TYPE_CHECKING:
    from .corridor import CorridorService

__all__ = ["MAX_BRANCH_NOTES", "RESOLVE_INTERVAL", "ForkResolver", "branch_state_key"]

log = logging.getLogger(__name__)

MAX_BRANCH_NOTES: Final = 8
"""Conflicting checkpoints kept per origin: a fork needs one; a byzantine log spraying roots gets 8."""
RESOLVE_INTERVAL: Final = 1.0
"""Seconds between two looks at a halted corridor's branches (a slash or a cosignature may tip it)."""
_LEDGER_KINDS: Final = ("watcher.bond", "watcher.unbond", "watcher.slash")
_PREFIXES_KEPT: Final = 8
"""Log prefixes whose watcher receipts are cached (a certificate names two; a few assessments more)."""


def branch_state_key(origin: str) -> str:
    """The witness-state key of the conflicting branches kept for ``origin``."""
    return "fork-branches/" + origin


def _key(cp: Checkpoint) -> str:
    return f"{cp.size}:{cp.root.hex()}"


class ForkResolver:
    """Detects watchers on both branches, slashes them, and resolves a halt by quorum (module docstring).

    Args:
        service: the corridor service (store, keys, quorum collector, lifecycle, writer, gossip).
    """

    def __init__(self, service: CorridorService) -> None:
        self.service = service
        self.store: LogStore = service.store
        self.corridor_id = service.id
        self._lock = threading.RLock()
        self._slashed: set[str] = set()
        """Digests of watcher evidence this process wrote a slash for (the ledger covers restarts)."""
        quorum = service.quorum
        self.context = ForkContext(
            corridor_id=service.id,
            log_keys=dict(service.log_keys),
            party_cosigners=dict(quorum.party_cosigners),
            policy=quorum.policy,
            stake_currency=quorum.stake_currency,
            unbonding_period=quorum.unbonding_period,
            slash_policy=quorum.slash_policy,
        )
        self.last_assessment: dict[str, Any] | None = None
        self._last_reason: str | None = None
        """The reason logged last by :meth:`resolve_once` (logged again only when it changes)."""
        self._prefixes: dict[tuple[str, int, bytes], tuple[LedgerEntry, ...]] = {}
        """(origin, size, root) -> the watcher receipts of that prefix (see :meth:`held`)."""

    # ------------------------------------------------------------- the verifier

    def verify_quorum(self, resolution: Mapping[str, Any], halt_digest: str | None) -> None:
        """The lifecycle's ``verify_quorum`` hook: :func:`protocol.fork.verify_quorum_certificate`
        against this node's copies of the named prefixes and the halt evidence in the logs."""
        verify_quorum_certificate(
            resolution,
            halt_digest=halt_digest,
            halt_evidence=self.service.lifecycle.halt_evidence_body(halt_digest),
            context=self.context,
            held=self.held,
        )

    def held(self, ledger: Mapping[str, Mapping[str, Any]]) -> HeldLedger:
        """This node's copy of the prefixes ``ledger`` names: roots, and the ``watcher.*`` receipts.

        The receipts of a prefix are read once per (origin, size, root) and cached: a prefix with a
        given root never changes, and the lifecycle re-verifies a resolution at every re-merge.
        """
        roots: dict[str, bytes | None] = {}
        entries: list[LedgerEntry] = []
        for origin, item in ledger.items():
            size = int(item["size"])
            try:
                head = self.store.head(origin).size
            except StoreError:
                head = 0
            if size == 0:
                roots[origin] = EMPTY_ROOT
                continue
            if size > head:
                roots[origin] = None
                continue
            root = self.store.root_at(origin, size)
            roots[origin] = root
            entries.extend(self._prefix_entries(origin, size, root))
        return HeldLedger(roots, entries)

    def _prefix_entries(self, origin: str, size: int, root: bytes) -> tuple[LedgerEntry, ...]:
        key = (origin, size, root)
        with self._lock:
            cached = self._prefixes.get(key)
        if cached is not None:
            return cached
        found = []
        for sequence, raw in self.store.iter_receipts(origin, 0):
            if sequence >= size:
                break
            if b'"watcher.' not in raw:
                continue
            receipt = json.loads(raw)
            kind = receipt["transition"]["kind"]
            if kind in _LEDGER_KINDS:
                found.append(
                    LedgerEntry(origin=origin, sequence=sequence, timestamp=receipt["timestamp"],
                                kind=kind, payload=receipt["transition"]["payload"])
                )  # fmt: skip
        with self._lock:
            self._prefixes[key] = tuple(found)
            while len(self._prefixes) > _PREFIXES_KEPT:
                del self._prefixes[next(iter(self._prefixes))]
        return tuple(found)

    # ---------------------------------------------------------- kept branches

    def branches(self, origin: str) -> dict[str, bytes]:
        """The conflicting checkpoint notes kept for ``origin``: ``"<size>:<root hex>"`` -> note."""
        record = self.store.witness_state(branch_state_key(origin)) or {}
        notes: dict[str, bytes] = dict(record.get("notes", {}))
        return notes

    def _keep(self, origin: str, cp: Checkpoint, note: SignedNote) -> None:
        """Keep ``note`` (its log line and the lines of known keys that verify), bounded."""
        keep = self._verified_lines(origin, cp, note)
        with self._lock:
            notes = self.branches(origin)
            key = _key(cp)
            if key in notes:
                old = parse_note(notes[key])
                merged = {s.key: s for s in (*old.signatures, *keep)}
                keep = tuple(merged.values())
            notes[key] = format_note(SignedNote(text=note.text, signatures=tuple(keep)))
            for stale in sorted(notes, key=lambda k: int(k.split(":")[0]))[:-MAX_BRANCH_NOTES]:
                del notes[stale]
            self.store.set_witness_state(branch_state_key(origin), {"notes": notes})

    def _watcher_keys(self) -> dict[str, VerifierKey]:
        """vkey -> cosigner key of every watcher with stake in the ledger (active or not, not removed)."""
        keys: dict[str, VerifierKey] = {}
        for vkey, stake in self.service.quorum.ledger().watchers.items():
            if stake.removed or stake.bonded + stake.pending <= 0:
                continue
            try:
                key = VerifierKey.from_vkey(vkey)
            except PeerProtocolError:
                continue
            if key.alg == ALG_COSIGNATURE_V1:
                keys[vkey] = key
        return keys

    def _verified_lines(self, origin: str, cp: Checkpoint, note: SignedNote) -> tuple[NoteSignature, ...]:
        log_key = self.context.log_keys[origin]
        cosigners = [*self._watcher_keys().values(), self.context.party_cosigners[origin]]
        wanted = {(k.name, k.key_id): k for k in (log_key, *cosigners)}
        lines = []
        for sig in note.signatures:
            key = wanted.get(sig.key)
            if key is None:
                continue
            if key is log_key or _verifies(note, cp, key):
                lines.append(sig)
        return tuple(lines)

    # -------------------------------------------------------------- detection

    def inspect(self, origin: str, data: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A cosigned note of ``origin`` arrived: the fork evidence and watcher evidence it completes.

        Returns (log-equivocation evidence or None, watcher-equivocation evidence list). Nothing if the
        note is not signed by the log, or agrees with what we store at its size.
        """
        if origin not in self.context.log_keys:
            return None, []
        try:
            cp, _ = parse_checkpoint(data)
            stored = self.store.checkpoint(origin, cp.size)
        except (PeerProtocolError, StoreError):
            return None, []  # malformed, or no checkpoint stored at that size: nothing to compare
        if parse_checkpoint(stored)[0].root == cp.root:
            return None, []  # the same tree: the usual case, decided without a signature check
        try:
            cp, note = open_checkpoint(data, self.context.log_keys[origin])
        except PeerProtocolError:
            return None, []  # not signed by the log: no statement of it (the quorum collector refuses it)
        fork = log_equivocation_from_checkpoints(stored, data, self.context.log_keys[origin])
        self._keep(origin, cp, note)
        return fork, self.watchers_on_both(origin, cp.size)

    def watchers_on_both(self, origin: str, size: int) -> list[dict[str, Any]]:
        """``watcher-equivocation`` of every staked watcher on our note and on a kept one at ``size``."""
        kept = [note for key, note in self.branches(origin).items() if int(key.split(":")[0]) == size]
        if not kept:
            return []
        try:
            ours = self.store.checkpoint(origin, size)
        except StoreError:
            return []
        ours_cp, ours_note = parse_checkpoint(ours)
        found = []
        for key in self._watcher_keys().values():
            if not _verifies(ours_note, ours_cp, key):
                continue
            for other in kept:
                other_cp, other_note = parse_checkpoint(other)
                if other_cp.root != ours_cp.root and _verifies(other_note, other_cp, key):
                    try:
                        found.append(watcher_equivocation(ours, other, key))
                    except SezError as exc:  # both lines verified: the builder refusing is our bug; say so
                        log.error("watcher evidence not built: %s: %s", exc.reason, exc.message,
                                  extra={"corridor": self.corridor_id, "watcher": key.to_vkey()})  # fmt: skip
        return found

    def needs_slash(self, evidence: Mapping[str, Any]) -> bool:
        """Whether no slash for ``evidence`` is in the ledger yet nor was written by this process."""
        digest = evidence_digest(evidence).hex()
        if digest in self._slashed:
            return False
        stake = self.service.quorum.ledger().watchers.get(str(evidence.get("watcher")))
        return not (stake is not None and any(s.digest == digest for s in stake.slashes))

    async def on_watcher_note(self, origin: str, data: bytes, where: str) -> bool:
        """Before a watcher's note is merged: True (consumed) if it is another branch of ``origin``."""
        fork, watchers = await trio.to_thread.run_sync(self.inspect, origin, data)
        if fork is None:
            return False
        await self.handle(fork, watchers, where)
        return True

    async def after_merge(self, origin: str, data: bytes, where: str) -> None:
        """After a watcher's note was merged: slash watchers now seen on both branches at its size."""
        try:
            cp, _ = parse_checkpoint(data)
        except PeerProtocolError:
            return
        watchers = await trio.to_thread.run_sync(self.watchers_on_both, origin, cp.size)
        await self.handle(None, watchers, where)

    async def handle(self, fork: dict[str, Any] | None, watchers: list[dict[str, Any]], where: str) -> None:
        """Act on what :meth:`inspect` found: halt on the fork; verify, gossip and slash each watcher."""
        service = self.service
        if fork is not None:
            await service.on_fork(fork, where)
        for evidence in watchers:
            await self.slash(evidence, where)

    async def slash(self, evidence: dict[str, Any], where: str) -> None:
        """Verify ``evidence`` into the pool, gossip it if new, write our ``watcher.slash`` once."""
        service = self.service
        if service.evidence is None:
            return
        try:
            _, new = await trio.to_thread.run_sync(service.evidence.add, self.corridor_id, evidence)
        except (PeerProtocolError, LocalProtocolError) as exc:
            log.warning("watcher evidence from %s refused: %s: %s", where, exc.reason, exc.message,
                        extra={"corridor": self.corridor_id, "reason": exc.reason})  # fmt: skip
            return
        if new:
            await service.host.publish(f"/sez/1/{self.corridor_id}/evidence", canonical(evidence))
        if not await trio.to_thread.run_sync(self.needs_slash, evidence):
            return
        digest = evidence_digest(evidence).hex()
        payload = {"evidence": evidence, "reporter": service.key.verifier().to_vkey()}
        try:
            await service.writer.submit("watcher.slash", payload)
        except SezError as exc:
            log.warning("slash not written: %s: %s", exc.reason, exc.message,
                        extra={"corridor": self.corridor_id, "evidence": digest})  # fmt: skip
            return
        self._slashed.add(digest)
        log.error(
            "SLASH: watcher %s cosigned both branches of %s (evidence %s, from %s)",
            evidence.get("watcher"), evidence.get("origin"), digest, where,
            extra={"corridor": self.corridor_id, "watcher": evidence.get("watcher"), "evidence": digest},
        )  # fmt: skip

    async def on_watcher_evidence(self, data: bytes) -> None:
        """Watcher-equivocation evidence from the gossip (already verified by the pool): slash it too."""
        try:
            _, body = validate_basic(data)
        except PeerProtocolError:
            return
        if body.get("kind") == "watcher-equivocation":
            await self.slash(body, "evidence gossip")

    # -------------------------------------------------------------- resolving

    def _halt(self) -> tuple[str, dict[str, Any]] | None:
        lifecycle = self.service.lifecycle
        state = lifecycle.state()
        if state.state != State.HALTED or state.halt_evidence is None:
            return None
        body = lifecycle.halt_evidence_body(state.halt_evidence)
        return (state.halt_evidence, body) if body is not None else None

    def assess(self) -> dict[str, Any] | None:
        """The fork's branches judged under one ledger, and the resolution to write (or why none).

        Returns None when the logs do not say HALTED; else a JSON-ready assessment with, under
        ``"payload"``, the unsigned resolution when exactly our branch holds a quorum and we may write.
        """
        halt = self._halt()
        if halt is None:
            return None  # the last assessment stays readable after the resolution
        digest, evidence = halt
        forked, bound = fork_bound(evidence)
        own = self.service.origin
        result: dict[str, Any] = {"evidence": digest, "forked_origin": forked, "fork_bound": bound,
                                  "branches": [], "decision": None, "reason": None}  # fmt: skip
        kept = self.branches(forked)
        sizes = sorted({int(key.split(":")[0]) for key in kept})
        quorum = self.service.quorum
        # The branch we hold: at the size of the other branch's cosigned checkpoint when we keep one (both
        # judged at one size); else (a fork seen in receipts) our quorum-final checkpoint past the fork.
        size = sizes[-1] if sizes else quorum.final_size(forked)
        if size <= bound:
            result["reason"] = (
                f"no checkpoint of {forked} past the fork point is quorum-final here and no other branch's "
                "cosigned checkpoint is held: only a two-party resolution"
            )
            self.last_assessment = result
            return result
        try:
            ours = self.store.checkpoint(forked, size)
        except StoreError:
            result["reason"] = f"no checkpoint of {forked} at size {size} is stored here"
            self.last_assessment = result
            return result
        cp, _ = parse_checkpoint(ours)
        forked_size = min(bound, quorum.final_size(forked), cp.size)
        other = self.service.counterparty_origin if forked == own else own
        try:
            other_head = self.store.head(other).size
        except StoreError:
            other_head = 0
        ledger = {
            forked: (forked_size, self.store.root_at(forked, forked_size) if forked_size else EMPTY_ROOT,
                     forked_size),
            other: (other_head, self.store.root_at(other, other_head) if other_head else EMPTY_ROOT,
                    min(quorum.final_size(other), other_head)),
        }  # fmt: skip
        proof = (
            self.store.consistency_proof(forked, forked_size, cp.size) if 0 < forked_size < cp.size else []
        )
        certificate = make_certificate(
            evidence_digest_hex=digest, note=ours, ledger=ledger, forked_proof=proof
        )
        branch = {"origin": forked, "size": cp.size, "root": cp.root.hex()}
        resolution = {"method": "quorum", "branch": branch, "certificate": certificate}
        try:
            verdict = assess_quorum_certificate(
                resolution, halt_digest=digest, halt_evidence=evidence, context=self.context, held=self.held
            )
        except PeerProtocolError as exc:
            result["reason"] = f"our branch's certificate does not verify: {exc.reason}: {exc.message}"
            self.last_assessment = result
            return result
        judged = verdict.ledger
        weights = judged.active_weights()
        result["ledger"] = certificate["ledger"]
        result["slashed"] = sorted(vkey for vkey, stake in judged.watchers.items() if stake.removed)
        winners = []
        for label, note_bytes in [("held", ours), *((f"kept:{k}", v) for k, v in sorted(kept.items()))]:
            branch_cp, branch_note = parse_checkpoint(note_bytes)
            cosigners = [
                vkey for vkey in sorted(weights) if _verifies(branch_note, branch_cp, _cosigner(vkey))
            ]
            party = _verifies(branch_note, branch_cp, self.context.party_cosigners[forked])
            decision = decide(cosigners, weights, counterparty_cosigned=party, policy=self.context.policy)
            result["branches"].append({
                "source": label, "origin": forked, "size": branch_cp.size, "root": branch_cp.root.hex(),
                "cosigners": list(decision.cosigners), "cosigning_stake": decision.cosigning_stake,
                "active_stake": decision.active_stake, "counterparty_cosigned": party,
                "quorum": decision.final, "missing": list(decision.missing),
            })  # fmt: skip
            if decision.final:
                winners.append(label)
        unslashed = sorted(
            str(ev["watcher"]) for ev in self.watchers_on_both(forked, size)
            if not (stake := judged.watchers.get(str(ev["watcher"]))) or not stake.removed
        )  # fmt: skip
        if unslashed:
            # Design §8: recompute the stake only once the equivocators' slashes are in the ledger.
            result["reason"] = f"waiting for the slashes of {len(unslashed)} watchers on both branches"
            result["unslashed"] = unslashed
        elif winners == ["held"]:
            result["decision"] = {"method": "quorum", "branch": resolution["branch"]}
            if forked != own:  # the forked party reads the resolution from the other's log
                result["payload"] = {
                    "corridor_id": self.corridor_id, "from": "HALTED", "to": "ACTIVE",
                    "reason": f"quorum resolution of the fork of {forked}: size {cp.size} is canonical",
                    "resolution": resolution,
                }  # fmt: skip
        elif not winners:
            result["reason"] = "no branch holds a quorum of the judging ledger: only a two-party resolution"
        elif "held" not in winners:
            result["reason"] = "the other branch holds the quorum: this node's copy is on the losing branch"
        else:
            result["reason"] = "more than one branch holds a quorum: equivocators are not all slashed yet"
        self.last_assessment = {k: v for k, v in result.items() if k != "payload"}
        return result

    async def resolve_once(self) -> bool:
        """Write the quorum resolution if :meth:`assess` says we may; True if written."""
        service = self.service
        assessment = await trio.to_thread.run_sync(self.assess)
        if assessment is None or "payload" not in assessment:
            reason = None if assessment is None else assessment.get("reason")
            if reason is not None and reason != self._last_reason:
                # Once per change: why the fork is not resolved yet (also in lifecycle status ``fork``).
                log.info("fork not resolved yet: %s", reason, extra={"corridor": self.corridor_id})
            self._last_reason = reason
            return False
        self._last_reason = None
        payload = sign_lifecycle(assessment["payload"], {service.party: service.key})
        try:
            await service.writer.submit("lifecycle", payload)
        except SezError as exc:
            log.info("quorum resolution not written: %s: %s", exc.reason, exc.message,
                     extra={"corridor": self.corridor_id})  # fmt: skip
            return False
        branch = assessment["decision"]["branch"]
        log.warning("fork of %s resolved by quorum: size %s is canonical", assessment["forked_origin"],
                    branch["size"], extra={"corridor": self.corridor_id})  # fmt: skip
        return True

    async def run(self) -> None:
        """While the corridor is halted, look at its branches every :data:`RESOLVE_INTERVAL` seconds."""
        while True:
            await trio.sleep(RESOLVE_INTERVAL)
            if not self.service.lifecycle.halted():
                continue
            try:
                await self.resolve_once()
            except (PeerProtocolError, StoreError) as exc:
                log.warning("fork resolution round failed: %s: %s", exc.reason, exc.message,
                            extra={"corridor": self.corridor_id})  # fmt: skip

    def status(self) -> dict[str, Any]:
        """JSON-ready: the kept branches and the last assessment (API, lifecycle status ``fork``)."""
        kept: dict[str, list[dict[str, Any]]] = {}
        for origin in self.context.log_keys:
            for key in self.branches(origin):
                size, root = key.split(":")
                kept.setdefault(origin, []).append({"size": int(size), "root": root})
        return {"kept_branches": kept, "assessment": self.last_assessment}


def _cosigner(vkey: str) -> VerifierKey:
    return VerifierKey.from_vkey(vkey)


def _verifies(note: SignedNote, cp: Checkpoint, key: VerifierKey) -> bool:
    try:
        return bool(verify_cosignatures(note, cp, [key]))
    except (PeerProtocolError, LocalProtocolError):
        return False
