"""Watcher stake: signed bond and unbond requests, and the ledger as a pure fold (design §7).

Theory of operation
-------------------
A watcher signs a *request* (``sez.watcher.bond-request/v1`` or ``…unbond-request/v1``) with its
cosigner key (C2SP type 0x04); a corridor party writes it into its log as the payload of a
``watcher.bond`` / ``watcher.unbond`` receipt. The signature is over
``b"sez.watcher.request/v1\\n" || SHA-256(JCS(request))`` and is checked whenever such a receipt is
built or received (``receipts`` calls :func:`check_watcher_payload`), so no log can hold a bond the
watcher did not ask for.

The ledger is :func:`fold` over the ``watcher.*`` receipts of a corridor's two logs. Every node that
holds the same two logs computes the same ledger, because the fold is a function of the receipts
alone plus two explicit arguments: how far each log is quorum-final, and the time it is asked about.
Entries are applied in a total order, (timestamp, origin, sequence), so the two logs interleave the
same way everywhere. Rules:

* a bond adds its amount to the watcher's stake for the corridors it names; it **counts for quorum
  only once the receipt carrying it is quorum-final** (a bond cannot finalize itself);
* an unbond stops the watcher's stake counting **at once** (from its receipt, final or not) for the
  corridors it names; the stake stays slashable until ``unbonding_period`` has passed since the
  unbond's timestamp, then it is withdrawable;
* requests for another currency than the policy's stake currency, or for corridors the policy does
  not cover, are kept in the history but carry no weight;
* a slash (``watcher.slash``, design §7) is **re-verified** by the fold (:func:`protocol.evidence.
  verify_evidence`, slashable kinds only, against the corridor's :class:`SlashPolicy`, judged at the
  slash receipt's own timestamp so that every node decides alike whenever it folds) and applies **at
  once**, final or not: the evidence is true on any branch, and taking weight away is the safe
  direction. It takes ``equivocation_percent`` (and removes the watcher from the set for good: later
  bonds carry no weight) or ``rollback_percent`` of the watcher's stake, bonded and pending, taken
  from the bonded part first, and credits ``whistleblower`` of the amount taken to the reporter's key
  (never to the offender itself). Stake whose unbonding period had passed at the slash's time is no
  longer slashable. Each (watcher, evidence digest) applies once, the first in the order above,
  even when both logs carry it; evidence that fails re-verification is kept in
  :attr:`StakeLedger.rejected` with its reason and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from . import evidence
from .errors import PeerProtocolError
from .jcs import canonical
from .keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey

__all__ = [
    "BOND_REQUEST",
    "DEFAULT_SLASH_POLICY",
    "REQUEST_DOMAIN",
    "UNBOND_REQUEST",
    "LedgerEntry",
    "SlashPolicy",
    "SlashRecord",
    "StakeLedger",
    "WatcherStake",
    "check_slash_payload",
    "check_watcher_payload",
    "fold",
    "sign_request",
]

REQUEST_DOMAIN: Final = b"sez.watcher.request/v1\n"
BOND_REQUEST: Final = "sez.watcher.bond-request/v1"
UNBOND_REQUEST: Final = "sez.watcher.unbond-request/v1"
_REQUEST_TYPE = {"watcher.bond": BOND_REQUEST, "watcher.unbond": UNBOND_REQUEST}


def _request_digest(request: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical(dict(request))).digest()


def sign_request(request: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The receipt payload ``{"request", "signature"}`` for a request signed by the watcher ``key``."""
    signature = key.sign(REQUEST_DOMAIN + _request_digest(request))
    return {"request": dict(request), "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode()}


def check_watcher_payload(kind: str, payload: Mapping[str, Any]) -> VerifierKey:
    """Check a schema-valid ``watcher.bond`` / ``watcher.unbond`` payload and return the watcher's key.

    Raises:
        PeerProtocolError: ``bad-request-type`` (a bond request in an unbond receipt, ...),
            ``bad-vkey`` (not a type-0x04 cosigner key), ``bad-watcher-signature``.
    """
    request = payload["request"]
    if request["type"] != _REQUEST_TYPE.get(kind):
        raise PeerProtocolError("bad-request-type", f"{kind} receipt carries a {request['type']} request")
    key = VerifierKey.from_vkey(request["watcher"])
    if key.alg != ALG_COSIGNATURE_V1:
        raise PeerProtocolError("bad-vkey", "a watcher key must be a cosignature/v1 (0x04) verifier key")
    text = payload["signature"]
    signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if not key.verify(REQUEST_DOMAIN + _request_digest(request), signature):
        raise PeerProtocolError("bad-watcher-signature", f"the {kind} request is not signed by {key.name}")
    return key


def check_slash_payload(kind: str, payload: Mapping[str, Any]) -> VerifierKey:
    """Check a schema-valid ``watcher.slash`` payload with no corridor context; return the offender's key.

    The receipt rule: the evidence's shape, a slashable kind, both statements, the conflict and the
    watcher's signatures (:func:`protocol.evidence.check_slash_evidence`), and a well-formed reporter
    key. The corridor's origins and the age window are checked by :func:`fold`.

    Raises:
        PeerProtocolError: any :func:`~protocol.evidence.check_slash_evidence` reason; ``bad-vkey``
            (reporter).
    """
    offender, _ = evidence.check_slash_evidence(payload["evidence"])
    VerifierKey.from_vkey(payload["reporter"])
    return VerifierKey.from_vkey(offender)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlashPolicy:
    """The corridor policy's slashing settings (``schemas/corridor.json`` ``policy``; design §7 defaults).

    Attributes:
        equivocation_percent: share of stake a watcher equivocation takes (and removal from the set).
        rollback_percent: share of stake a watcher rollback takes.
        whistleblower: (numerator, denominator) of the amount taken credited to the reporter.
        evidence_window: seconds; older evidence is refused.
        max_clock_skew: seconds; evidence dated further ahead is refused.
    """

    equivocation_percent: int = 100
    rollback_percent: int = 50
    whistleblower: tuple[int, int] = (1, 64)
    evidence_window: int = 14 * 24 * 3600
    max_clock_skew: int = 300

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> SlashPolicy:
        """From a corridor definition's ``policy`` object (schema-valid)."""
        penalties = policy["penalties"]
        numerator, _, denominator = penalties["whistleblower_fraction"].partition("/")
        return cls(
            equivocation_percent=penalties["equivocation_percent"],
            rollback_percent=penalties["rollback_percent"],
            whistleblower=(int(numerator), int(denominator)),
            evidence_window=policy["evidence_window_seconds"],
            max_clock_skew=policy["max_clock_skew_seconds"],
        )


DEFAULT_SLASH_POLICY: Final = SlashPolicy()
"""The design's defaults, equal to ``configs/corridors/*.json``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SlashRecord:
    """One applied slash: which receipt, which evidence, what it took and whom it rewarded."""

    origin: str
    sequence: int
    kind: str
    digest: str
    amount: int
    reporter: str
    reward: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One ``watcher.*`` receipt as the fold sees it."""

    origin: str
    sequence: int
    timestamp: str
    kind: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class WatcherStake:
    """One watcher's position in one corridor."""

    vkey: str
    name: str
    bonded: int = 0
    """Stake bonded by final receipts (in the stake currency)."""
    pending: int = 0
    """Stake bonded by receipts not yet quorum-final."""
    unbonding_since: str | None = None
    """Timestamp of the unbond that stopped the stake counting."""
    withdrawable: bool = False
    bonds: list[tuple[str, int]] = field(default_factory=list)
    """(origin, sequence) of every bond receipt counted."""
    slashed: int = 0
    """Stake taken by slashes."""
    removed: bool = False
    """Slashed for equivocation: out of the set for good."""
    slashes: list[SlashRecord] = field(default_factory=list)
    """Every slash applied, in fold order."""

    @property
    def active(self) -> bool:
        """Counts for quorum: bonded by a final receipt, not unbonding, not removed by a slash."""
        return self.bonded > 0 and self.unbonding_since is None and not self.removed


@dataclass(frozen=True, slots=True)
class StakeLedger:
    """The fold's result for one corridor: every watcher seen, and the active set with weights."""

    corridor_id: str
    watchers: Mapping[str, WatcherStake]
    rewards: Mapping[str, int] = field(default_factory=dict)
    """Reporter key -> whistleblower rewards credited (not stake: they count for no quorum)."""
    rejected: tuple[tuple[str, int, str], ...] = ()
    """(origin, sequence, reason) of every ``watcher.slash`` whose evidence did not re-verify."""

    def active_weights(self) -> dict[str, int]:
        """vkey -> stake of every active watcher."""
        return {vkey: stake.bonded for vkey, stake in self.watchers.items() if stake.active}

    def total_active(self) -> int:
        """Sum of active stake."""
        return sum(self.active_weights().values())


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


def _unix(text: str) -> int:
    return int(_parse_time(text).replace(tzinfo=UTC).timestamp())


def _same_key(reporter: str, offender: str) -> bool:
    """Whether the reporter is the offender under any key name or type (no reward for reporting oneself)."""
    try:
        return VerifierKey.from_vkey(reporter).public == VerifierKey.from_vkey(offender).public
    except PeerProtocolError:
        return reporter == offender


@dataclass(slots=True)
class _Slashing:
    """The fold's slashing state: its context, and what it applied."""

    corridor_id: str
    policy: SlashPolicy
    log_keys: Mapping[str, VerifierKey] | None
    unbonding_period: timedelta
    applied: set[tuple[str, bytes]] = field(default_factory=set)
    rewards: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)

    def apply(self, entry: LedgerEntry, watchers: dict[str, WatcherStake]) -> None:
        """Re-verify ``entry``'s evidence and apply its penalty once (module docstring)."""
        try:
            verified = evidence.verify_evidence(
                entry.payload["evidence"],
                log_keys=self.log_keys,
                corridor_id=self.corridor_id,
                now=_unix(entry.timestamp),
                window=self.policy.evidence_window,
                max_skew=self.policy.max_clock_skew,
                kinds=evidence.SLASHABLE_KINDS,
            )
        except PeerProtocolError as exc:
            self.rejected.append((entry.origin, entry.sequence, exc.reason))
            return
        vkey = verified.offender
        if (vkey, verified.digest) in self.applied:
            return  # the same misbehaviour, already slashed (maybe from the other log)
        self.applied.add((vkey, verified.digest))
        stake = watchers.setdefault(vkey, WatcherStake(vkey=vkey, name=vkey.split("+", 1)[0]))
        equivocation = verified.kind == "watcher-equivocation"
        percent = self.policy.equivocation_percent if equivocation else self.policy.rollback_percent
        released = stake.unbonding_since is not None and (
            _parse_time(entry.timestamp) - _parse_time(stake.unbonding_since) >= self.unbonding_period
        )
        amount = 0 if released else (stake.bonded + stake.pending) * percent // 100
        from_bonded = min(amount, stake.bonded)
        stake.bonded -= from_bonded
        stake.pending -= amount - from_bonded
        stake.slashed += amount
        if equivocation:
            stake.removed = True
        reporter = entry.payload["reporter"]
        numerator, denominator = self.policy.whistleblower
        reward = 0 if _same_key(reporter, vkey) else amount * numerator // denominator
        if reward:
            self.rewards[reporter] = self.rewards.get(reporter, 0) + reward
        stake.slashes.append(
            SlashRecord(
                origin=entry.origin,
                sequence=entry.sequence,
                kind=verified.kind,
                digest=verified.digest.hex(),
                amount=amount,
                reporter=reporter,
                reward=reward,
            )
        )


def fold(
    entries: Iterable[LedgerEntry],
    *,
    corridor_id: str,
    final_sizes: Mapping[str, int],
    now: str,
    stake_currency: str,
    unbonding_period: timedelta = timedelta(days=7),
    slash_policy: SlashPolicy = DEFAULT_SLASH_POLICY,
    log_keys: Mapping[str, VerifierKey] | None = None,
) -> StakeLedger:
    """The stake ledger of ``corridor_id`` (see the module docstring for the rules).

    Args:
        entries: ``watcher.*`` receipts of both logs of the corridor (any order; signatures
            already checked by the receipt rules).
        final_sizes: per origin, the size of its latest quorum-final checkpoint.
        now: the time the ledger is asked about (``YYYY-MM-DDTHH:MM:SSZ``), for withdrawability.
        stake_currency: the corridor policy's stake currency.
        unbonding_period: the corridor policy's unbonding period.
        slash_policy: the corridor policy's penalties, evidence window and clock skew.
        log_keys: origin -> registered log key of the corridor's two logs; a slash's evidence must
            be about one of them. Without it, the evidence need only name this corridor and an
            origin of it (``<host>/corridor/<id>``).
    """
    watchers: dict[str, WatcherStake] = {}
    slashing = _Slashing(corridor_id, slash_policy, log_keys, unbonding_period)
    ordered = sorted(entries, key=lambda e: (e.timestamp, e.origin, e.sequence))
    for entry in ordered:
        if entry.kind == "watcher.slash":
            slashing.apply(entry, watchers)
            continue
        request = entry.payload["request"]
        if corridor_id not in request["corridors"]:
            continue
        vkey = request["watcher"]
        stake = watchers.setdefault(vkey, WatcherStake(vkey=vkey, name=vkey.split("+", 1)[0]))
        if entry.kind == "watcher.bond":
            if request["currency"] != stake_currency:
                continue
            amount = int(request["amount"])
            if entry.sequence < final_sizes.get(entry.origin, 0):
                stake.bonded += amount
                stake.bonds.append((entry.origin, entry.sequence))
                stake.unbonding_since = None  # a new final bond after an unbond starts a fresh position
                stake.withdrawable = False
            else:
                stake.pending += amount
        elif entry.kind == "watcher.unbond" and (stake.bonded or stake.pending):
            stake.unbonding_since = entry.timestamp
    for stake in watchers.values():
        if stake.unbonding_since is not None:
            stake.withdrawable = _parse_time(now) - _parse_time(stake.unbonding_since) >= unbonding_period
    return StakeLedger(corridor_id, watchers, dict(slashing.rewards), tuple(slashing.rejected))
