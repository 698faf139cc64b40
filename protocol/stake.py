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
  not cover, are kept in the history but carry no weight.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from .errors import PeerProtocolError
from .jcs import canonical
from .keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey

__all__ = [
    "BOND_REQUEST",
    "REQUEST_DOMAIN",
    "UNBOND_REQUEST",
    "LedgerEntry",
    "StakeLedger",
    "WatcherStake",
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

    @property
    def active(self) -> bool:
        """Counts for quorum: bonded by a final receipt and not unbonding."""
        return self.bonded > 0 and self.unbonding_since is None


@dataclass(frozen=True, slots=True)
class StakeLedger:
    """The fold's result for one corridor: every watcher seen, and the active set with weights."""

    corridor_id: str
    watchers: Mapping[str, WatcherStake]

    def active_weights(self) -> dict[str, int]:
        """vkey -> stake of every active watcher."""
        return {vkey: stake.bonded for vkey, stake in self.watchers.items() if stake.active}

    def total_active(self) -> int:
        """Sum of active stake."""
        return sum(self.active_weights().values())


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


def fold(
    entries: Iterable[LedgerEntry],
    *,
    corridor_id: str,
    final_sizes: Mapping[str, int],
    now: str,
    stake_currency: str,
    unbonding_period: timedelta = timedelta(days=7),
) -> StakeLedger:
    """The stake ledger of ``corridor_id`` (see the module docstring for the rules).

    Args:
        entries: ``watcher.*`` receipts of both logs of the corridor (any order; signatures
            already checked by the receipt rules).
        final_sizes: per origin, the size of its latest quorum-final checkpoint.
        now: the time the ledger is asked about (``YYYY-MM-DDTHH:MM:SSZ``), for withdrawability.
        stake_currency: the corridor policy's stake currency.
        unbonding_period: the corridor policy's unbonding period.
    """
    watchers: dict[str, WatcherStake] = {}
    ordered = sorted(entries, key=lambda e: (e.timestamp, e.origin, e.sequence))
    for entry in ordered:
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
    return StakeLedger(corridor_id, watchers)
