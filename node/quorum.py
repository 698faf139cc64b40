"""Quorum finality of a corridor's two logs, as one node collects it (design §7).

Theory of operation
-------------------
The :class:`QuorumCollector` of a corridor keeps, for each of the corridor's two logs (ours and the
counterparty's replica), the **quorum-final size**: the size of the largest checkpoint found final
so far. It is stored durably (``store.set_witness_state("quorum/" + origin, ...)``) and only grows.

* **Ledger.** The stake ledger is :func:`protocol.stake.fold` over the ``watcher.*`` receipts of
  both logs (read from the store and cached; each call reads only receipts appended since the last
  one), with ``final_sizes`` = the quorum-final sizes, and the corridor definition's stake currency,
  unbonding period and :class:`~protocol.quorum.QuorumPolicy` (defaults without a definition). A
  bond therefore counts only once the receipt carrying it is below a quorum-final size; an unbond
  stops the stake counting at once.
* **Collecting.** A watcher's cosignature announcement is verified against the cosigner keys of the
  *active* watchers only (``VerifierKey.from_vkey`` of the ledger's vkeys). Only lines with an
  active watcher's name *and* key ID, that verify, are merged into the stored checkpoint note of
  that origin and size; anything else in the announced note (lines of unknown or inactive keys,
  padding) is dropped, never stored. A line of an active key that does not verify is a peer fault.
* **Deciding.** After every merge the stored note is re-read and :func:`protocol.quorum.decide` is
  asked, with the watchers whose lines verify on it and ``counterparty_cosigned`` = whether the other
  corridor party's cosignature (for our log: the counterparty's; for the counterparty's log: ours)
  verifies on it. A final checkpoint raises the quorum-final size of its origin.
* **Bootstrap rule.** While fewer than ``min_watchers`` watchers are active (at the start, none:
  no bond is final yet), a checkpoint cosigned by both corridor parties is final (*bilateral
  finality*): the log's own signature plus the other party's cosignature. This is what lets the
  first bonds become final, and so active, one at a time or together. Once ``min_watchers`` watchers
  are active, only the quorum rule applies (``decide``: strictly more than the threshold of active
  stake, at least ``min_watchers`` distinct watchers, and the counterparty's cosignature). Waiting
  for "no stake at all" instead would stall the corridor as soon as the first bond became final
  alone (one active watcher can never meet ``min_watchers``). A bond still never finalizes itself:
  it counts only from a checkpoint after the one that made it final. The same fallback applies if
  unbonding or slashing later leaves fewer than ``min_watchers`` active: the corridor is then only as
  strong as its two parties, which the status API shows (``finality.active_watchers``).

Every method is synchronous and thread-safe (one lock serializes merges, ledger reads and
decisions); the corridor service calls them from worker threads.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from protocol.checkpoints import Checkpoint, add_signatures, parse_checkpoint, verify_cosignatures
from protocol.errors import PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, VerifierKey
from protocol.notes import NoteSignature, SignedNote, format_note, parse_note
from protocol.quorum import QuorumDecision, QuorumPolicy, decide
from protocol.stake import DEFAULT_SLASH_POLICY, LedgerEntry, SlashPolicy, StakeLedger, fold
from store import LogStore, StoreError

__all__ = ["STAKE_CURRENCY", "QuorumCollector", "state_key"]

STAKE_CURRENCY: Final = "USD"
"""The stake currency of a corridor configured without a definition."""
_SCAN_LIMIT: Final = 4096
"""Checkpoints scanned (newest first) once per origin, when no durable record says how far the
other party has cosigned."""


_AHEAD_LIMIT: Final = 16
"""Checkpoint sizes per origin for which watcher lines are kept while the replica catches up."""


def state_key(origin: str) -> str:
    """The witness-state key of ``origin``'s quorum record."""
    return "quorum/" + origin


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class QuorumCollector:
    """Quorum-final sizes and the stake ledger of one corridor (see the module docstring).

    Args:
        store: the node's store (holds both logs).
        corridor_id: the corridor.
        party_cosigners: per origin of the corridor, the type-0x04 key of the *other* party, whose
            cosignature of that origin's checkpoints counts as ``counterparty_cosigned``.
        policy: the corridor's quorum rule.
        now: unix-seconds clock (withdrawability in the ledger).
    """

    def __init__(
        self,
        store: LogStore,
        corridor_id: str,
        party_cosigners: Mapping[str, VerifierKey],
        *,
        policy: QuorumPolicy,
        stake_currency: str = STAKE_CURRENCY,
        unbonding_period: timedelta = timedelta(days=7),
        now: Callable[[], float] = time.time,
        log_keys: Mapping[str, VerifierKey] | None = None,
        slash_policy: SlashPolicy = DEFAULT_SLASH_POLICY,
        halted: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.corridor_id = corridor_id
        self.party_cosigners = dict(party_cosigners)
        self.origins = tuple(party_cosigners)
        self.policy = policy
        self.stake_currency = stake_currency
        self.unbonding_period = unbonding_period
        self._now = now
        self.log_keys = None if log_keys is None else dict(log_keys)
        self.slash_policy = slash_policy
        self.halted = halted
        """While it answers True (a fork, design §8), nothing becomes final."""
        self._lock = threading.RLock()
        self._entries: list[LedgerEntry] = []
        self._scanned: dict[str, int] = {origin: 0 for origin in self.origins}
        self._records: dict[str, dict[str, Any]] = {}
        self.last_decisions: dict[str, tuple[int, QuorumDecision]] = {}
        """Per origin: the decision on the largest checkpoint evaluated so far, with its size."""
        self._ahead: dict[str, dict[int, tuple[Checkpoint, SignedNote, list[NoteSignature]]]] = {}
        """Per origin and size: verified watcher lines of a checkpoint beyond the stored log (see
        :meth:`on_watcher_note`), merged once the replica holds that many receipts."""

    # ------------------------------------------------------------------ records

    def _record(self, origin: str) -> dict[str, Any]:
        record = self._records.get(origin)
        if record is None:
            stored = self.store.witness_state(state_key(origin))
            if stored is None:
                record = {"final_size": 0, "cosigned_size": self._scan_cosigned(origin)}
            else:
                record = {
                    "final_size": int(stored["final_size"]),
                    "cosigned_size": int(stored["cosigned_size"]),
                }
            self._records[origin] = record
        return record

    def _raise(self, origin: str, *, final_size: int = 0, cosigned_size: int = 0) -> None:
        record = self._record(origin)
        updated = {
            "final_size": max(record["final_size"], final_size),
            "cosigned_size": max(record["cosigned_size"], cosigned_size),
        }
        if updated != record:
            self.store.set_witness_state(state_key(origin), dict(updated))
            self._records[origin] = updated

    def _scan_cosigned(self, origin: str) -> int:
        try:
            sizes = self.store.checkpoint_sizes(origin)
        except StoreError:
            return 0
        for count, size in enumerate(reversed(sizes)):
            if count >= _SCAN_LIMIT:
                break
            cp, note = parse_checkpoint(self.store.checkpoint(origin, size))
            if self._verifies(note, cp, self.party_cosigners[origin]):
                return size
        return 0

    def forget(self, origin: str, size: int) -> None:
        """``origin``'s log was cut back to ``size`` receipts (a tail set aside, ``node.recovery``).

        Drops every cached figure read from the old tail (ledger entries, the cosigned and final
        sizes, held-ahead lines, last decisions) and lowers the stored sizes to at most ``size``:
        the orphaned checkpoints are no longer this log's.
        """
        with self._lock:
            self._entries = [e for e in self._entries if e.origin != origin or e.sequence < size]
            self._scanned[origin] = min(self._scanned.get(origin, 0), size)
            self._ahead.pop(origin, None)
            self.last_decisions.pop(origin, None)
            record = self._record(origin)
            lowered = {key: min(int(value), size) for key, value in record.items()}
            if lowered != record:
                self.store.set_witness_state(state_key(origin), dict(lowered))
            self._records.pop(origin, None)

    def final_size(self, origin: str) -> int:
        """The quorum-final size of ``origin`` (0 if nothing is final yet)."""
        with self._lock:
            return int(self._record(origin)["final_size"])

    def cosigned_size(self, origin: str) -> int:
        """The largest size of ``origin`` whose stored checkpoint carries the other party's cosignature."""
        with self._lock:
            return int(self._record(origin)["cosigned_size"])

    # ------------------------------------------------------------------- ledger

    def _read_entries(self) -> None:
        for origin in self.origins:
            try:
                head = self.store.head(origin).size
            except StoreError:
                continue
            start = self._scanned[origin]
            if head <= start:
                continue
            for sequence, raw in self.store.iter_receipts(origin, start):
                if sequence >= head:
                    break
                receipt = json.loads(raw)
                kind = receipt["transition"]["kind"]
                if kind in ("watcher.bond", "watcher.unbond", "watcher.slash"):
                    self._entries.append(
                        LedgerEntry(
                            origin=origin, sequence=sequence, timestamp=receipt["timestamp"],
                            kind=kind, payload=receipt["transition"]["payload"],
                        )
                    )  # fmt: skip
                self._scanned[origin] = sequence + 1

    def ledger(self) -> StakeLedger:
        """The corridor's stake ledger now (every watcher seen; the active set with weights)."""
        with self._lock:
            self._read_entries()
            return fold(
                self._entries,
                corridor_id=self.corridor_id,
                final_sizes={origin: self._record(origin)["final_size"] for origin in self.origins},
                now=_utc(self._now()),
                stake_currency=self.stake_currency,
                unbonding_period=self.unbonding_period,
                slash_policy=self.slash_policy,
                log_keys=self.log_keys,
            )

    @staticmethod
    def active_keys(ledger: StakeLedger) -> dict[str, VerifierKey]:
        """vkey -> cosigner key of every active watcher."""
        keys: dict[str, VerifierKey] = {}
        for vkey in ledger.active_weights():
            try:
                key = VerifierKey.from_vkey(vkey)
            except PeerProtocolError:
                continue  # the receipt rules let no such key in; never count one
            if key.alg == ALG_COSIGNATURE_V1:
                keys[vkey] = key
        return keys

    # ----------------------------------------------------------------- collecting

    @staticmethod
    def _verifies(note: SignedNote, cp: Checkpoint, key: VerifierKey) -> bool:
        try:
            return key.name in verify_cosignatures(note, cp, [key])
        except PeerProtocolError:
            return False

    def merge(
        self, origin: str, cp: Checkpoint, log_note: SignedNote, lines: Iterable[NoteSignature]
    ) -> bool:
        """Merge verified cosignature ``lines`` into the stored checkpoint of ``origin`` at ``cp.size``.

        If no checkpoint is stored at that size but the log holds that many receipts, the log's own
        signature line(s) of ``log_note`` are stored with the lines (``add_checkpoint`` checks the log
        signature and the root). Returns False (nothing stored) when the log is not that long yet.

        Raises:
            PeerProtocolError: a bad log signature, or ``checkpoint-conflict``.
        """
        lines = list(lines)
        with self._lock:
            try:
                stored = parse_note(self.store.checkpoint(origin, cp.size))
            except StoreError as exc:
                if exc.reason != "not-found":
                    raise
                if cp.size > self.store.head(origin).size:
                    return False
                log_key = self.store.origin(origin).key
                own = tuple(s for s in log_note.signatures if s.key == (origin, log_key.key_id))
                stored = SignedNote(text=log_note.text, signatures=own)
            self.store.add_checkpoint(origin, format_note(add_signatures(stored, lines)))
            return True

    def on_watcher_note(self, origin: str, data: bytes) -> QuorumDecision | None:
        """A watcher's cosigned checkpoint of ``origin``: merge the active watchers' verified lines, decide.

        Returns the decision, or None if nothing was merged (no active watcher's line on the note,
        or a checkpoint beyond the stored log).

        Raises:
            PeerProtocolError: a malformed note, a line of an active watcher that does not verify,
                a bad log signature or a conflicting root.
        """
        if origin not in self.party_cosigners:
            raise PeerProtocolError("unknown-origin", f"{origin!r} writes no log in {self.corridor_id}")
        cp, note = parse_checkpoint(data)
        if cp.origin != origin:
            raise PeerProtocolError("wrong-origin", f"checkpoint of {cp.origin!r} announced for {origin!r}")
        with self._lock:
            keys = self.active_keys(self.ledger())
            wanted = {key.to_vkey(): (key.name, key.key_id) for key in keys.values()}
            lines = []
            for vkey, key in keys.items():
                if verify_cosignatures(note, cp, [key]):  # raises on a bad line of an active watcher
                    matching = [s for s in note.signatures if s.key == wanted[vkey]]
                    lines.append(max(matching, key=_timestamp))
            if not lines:
                return None
            if not self.merge(origin, cp, note, lines):
                self._keep_ahead(origin, cp, note, lines)
                return None
            return self.evaluate(origin, cp.size)

    def _keep_ahead(self, origin: str, cp: Checkpoint, note: SignedNote, lines: list[NoteSignature]) -> None:
        """Keep a watcher's verified lines on a checkpoint the replica does not hold yet.

        Watchers often cosign the counterparty's checkpoint before this node has replicated that
        far; dropping their lines then would leave that checkpoint (often the last one, once traffic
        stops) without a quorum here for good, since a watcher announces each cosignature once.
        Bounded: the newest :data:`_AHEAD_LIMIT` sizes per origin.
        """
        ahead = self._ahead.setdefault(origin, {})
        kept = ahead.get(cp.size)
        if kept is not None:
            lines = list({s.key: s for s in (*kept[2], *lines)}.values())
        ahead[cp.size] = (cp, note, lines)
        for size in sorted(ahead)[:-_AHEAD_LIMIT]:
            del ahead[size]

    def _merge_ahead(self, origin: str) -> None:
        """Merge the kept watcher lines of every checkpoint of ``origin`` the store now holds."""
        ahead = self._ahead.get(origin)
        if not ahead:
            return
        head = self.store.head(origin).size
        for size in sorted(s for s in ahead if s <= head):
            cp, note, lines = ahead.pop(size)
            try:
                self.merge(origin, cp, note, lines)
            except (PeerProtocolError, StoreError):
                continue  # a checkpoint that conflicts with the log: the note was never good; drop it
            self.evaluate(origin, size)

    def on_party_cosigned(self, origin: str, size: int) -> QuorumDecision | None:
        """The other party's cosignature of ``origin`` at ``size`` was merged (or ours was): decide.

        Watcher lines kept for checkpoints that were beyond the stored log are merged first.
        """
        with self._lock:
            self._merge_ahead(origin)
            return self.evaluate(origin, size)

    def latest_undecided(self, origin: str) -> int | None:
        """The size of ``origin``'s latest stored checkpoint if it is beyond the quorum-final size."""
        try:
            cp, _ = parse_checkpoint(self.store.checkpoint(origin))
        except StoreError as exc:
            if exc.reason in {"not-found", "unknown-origin"}:
                return None
            raise
        return cp.size if cp.size > self.final_size(origin) else None

    def evaluate(self, origin: str, size: int) -> QuorumDecision | None:
        """Decide finality of the stored checkpoint of ``origin`` at ``size``; record it if final."""
        with self._lock:
            try:
                cp, note = parse_checkpoint(self.store.checkpoint(origin, size))
            except StoreError as exc:
                if exc.reason == "not-found":
                    return None
                raise
            party = self._verifies(note, cp, self.party_cosigners[origin])
            if party:
                self._raise(origin, cosigned_size=size)
            ledger = self.ledger()
            weights = ledger.active_weights()
            if sum(1 for weight in weights.values() if weight > 0) < self.policy.min_watchers:
                # Bootstrap rule: too few active watchers for a quorum -> both parties' signatures decide.
                decision = QuorumDecision(party, 0, 0, (), () if party else ("counterparty",))
            else:
                keys = self.active_keys(ledger)
                cosigners = [vkey for vkey, key in keys.items() if self._verifies(note, cp, key)]
                decision = decide(cosigners, weights, counterparty_cosigned=party, policy=self.policy)
            if decision.final and self.halted():
                # Finality stops while the corridor is halted by a fork (design §8).
                decision = QuorumDecision(
                    False, decision.cosigning_stake, decision.active_stake, decision.cosigners, ("halted",)
                )
            if size >= self.last_decisions.get(origin, (0, decision))[0]:
                self.last_decisions[origin] = (size, decision)
            if decision.final:
                self._raise(origin, final_size=size)
            return decision

    # ------------------------------------------------------------------- reading

    def finality(self, origin: str, sequence: int) -> dict[str, Any]:
        """The finality of receipt ``sequence`` of ``origin`` (API)."""
        with self._lock:
            if origin not in self.party_cosigners:
                raise PeerProtocolError("unknown-origin", f"{origin!r} writes no log in {self.corridor_id}")
            self.store.receipt(origin, sequence)  # not-found / bad-index for a receipt not held
            final = self.final_size(origin)
            return {
                "receipt_signed": True,
                "counterparty_cosigned": sequence < self.cosigned_size(origin),
                "quorum_final": sequence < final,
                "quorum_final_size": final,
            }

    def watchers(self) -> dict[str, Any]:
        """The stake ledger, JSON-ready (API ``/v1/corridors/{id}/watchers``)."""
        ledger = self.ledger()
        return {
            "corridor": self.corridor_id,
            "currency": self.stake_currency,
            "policy": {
                "threshold": str(self.policy.threshold),
                "min_watchers": self.policy.min_watchers,
                "require_counterparty": self.policy.require_counterparty,
            },
            "watchers": [
                {
                    "vkey": stake.vkey,
                    "name": stake.name,
                    "bonded": stake.bonded,
                    "pending": stake.pending,
                    "active": stake.active,
                    "unbonding_since": stake.unbonding_since,
                    "withdrawable": stake.withdrawable,
                    "slashed": stake.slashed,
                    "removed": stake.removed,
                    "slashes": [dataclasses.asdict(record) for record in stake.slashes],
                }
                for stake in sorted(ledger.watchers.values(), key=lambda s: s.vkey)
            ],
            "bonded": sum(stake.bonded for stake in ledger.watchers.values()),
            "active": ledger.total_active(),
            "slashed": sum(stake.slashed for stake in ledger.watchers.values()),
            "rewards": dict(sorted(ledger.rewards.items())),
            "rejected_slashes": [
                {"origin": origin, "sequence": sequence, "reason": reason}
                for origin, sequence, reason in ledger.rejected
            ],
        }

    def status(self) -> dict[str, Any]:
        """Per origin: quorum-final size, active watchers and stake, and the latest decision.

        ``last_decision`` is the decision on the largest checkpoint evaluated so far: its size,
        whether it is final, the cosigning and active stake, how many active watchers' cosignatures
        counted, and what is missing (``stake``, ``watchers``, ``counterparty``). ``bootstrap`` says
        the bilateral rule decided it (fewer than ``min_watchers`` active).
        """
        with self._lock:
            ledger = self.ledger()
            weights = ledger.active_weights()
            active_watchers = sum(1 for weight in weights.values() if weight > 0)
            result: dict[str, Any] = {}
            for origin in self.origins:
                entry: dict[str, Any] = {
                    "quorum_final_size": self.final_size(origin),
                    "active_watchers": active_watchers,
                    "active_stake": sum(weights.values()),
                    "last_decision": None,
                }
                if origin in self.last_decisions:
                    size, decision = self.last_decisions[origin]
                    entry["last_decision"] = {
                        "size": size,
                        "final": decision.final,
                        "cosigning_stake": decision.cosigning_stake,
                        "active_stake": decision.active_stake,
                        "cosigners": len(decision.cosigners),
                        "missing": list(decision.missing),
                        "bootstrap": decision.active_stake == 0,
                    }
                result[origin] = entry
            return result


def _timestamp(sig: NoteSignature) -> int:
    return int.from_bytes(sig.signature[:8], "big")
