"""Quorum finality (design §7): when a cosigned checkpoint is final. Pure.

A checkpoint is **final** when the watchers that validly cosigned it hold *strictly more* than
``threshold`` (default 2/3) of the corridor's active stake, they are at least ``min_watchers``
distinct keys, and, by default, the counterparty node has cosigned it too. Stake comes from the
ledger (``protocol.stake``); which cosignatures are valid comes from ``verify_cosignatures``.
The comparison is done in integers (``den * cosigning > num * active``), so no rounding can
turn 2/3 exactly into a quorum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from .errors import LocalProtocolError

__all__ = ["QuorumDecision", "QuorumPolicy", "decide"]


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumPolicy:
    """A corridor's quorum rule."""

    threshold: Fraction = Fraction(2, 3)
    min_watchers: int = 3
    require_counterparty: bool = True

    def __post_init__(self) -> None:
        if not Fraction(1, 2) <= self.threshold < 1:
            raise LocalProtocolError("bad-policy", f"quorum threshold {self.threshold} must be in [1/2, 1)")
        if self.min_watchers < 1:
            raise LocalProtocolError("bad-policy", "min_watchers must be at least 1")


@dataclass(frozen=True, slots=True)
class QuorumDecision:
    """The decision and the figures behind it (shown in the API and light-client output)."""

    final: bool
    cosigning_stake: int
    active_stake: int
    cosigners: tuple[str, ...]
    missing: tuple[str, ...]
    """Why it is not final (empty when it is): ``stake``, ``watchers``, ``counterparty``."""


def decide(
    cosigners: Iterable[str],
    active_weights: Mapping[str, int],
    *,
    counterparty_cosigned: bool,
    policy: QuorumPolicy,
) -> QuorumDecision:
    """Decide finality.

    Args:
        cosigners: watcher keys (vkey strings) whose cosignature on the checkpoint verified.
        active_weights: the ledger's active set, vkey -> stake.
        counterparty_cosigned: whether the counterparty node's cosignature verified.
        policy: the corridor's rule.

    Cosigners that are not active (unbonded, unknown, slashed out) carry no weight and do not
    count towards ``min_watchers``.
    """
    counted = tuple(sorted({key for key in cosigners if active_weights.get(key, 0) > 0}))
    cosigning = sum(active_weights[key] for key in counted)
    active = sum(weight for weight in active_weights.values() if weight > 0)
    missing = []
    threshold = policy.threshold
    if active == 0 or threshold.denominator * cosigning <= threshold.numerator * active:
        missing.append("stake")
    if len(counted) < policy.min_watchers:
        missing.append("watchers")
    if policy.require_counterparty and not counterparty_cosigned:
        missing.append("counterparty")
    return QuorumDecision(not missing, cosigning, active, counted, tuple(missing))
