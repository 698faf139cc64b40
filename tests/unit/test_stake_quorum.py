"""Watcher requests, the stake ledger fold and the quorum rule (design §7)."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.quorum import QuorumPolicy, decide
from protocol.receipts import build_receipt, genesis_root
from protocol.stake import (
    BOND_REQUEST,
    UNBOND_REQUEST,
    LedgerEntry,
    check_watcher_payload,
    fold,
    sign_request,
)

PAK = "sez.gov.pk/corridor/PAK-KSA"
KSA = "sez.gov.sa/corridor/PAK-KSA"
W = [SigningKey(f"watcher-{i}", bytes([i]) * 32) for i in range(5)]
VK = [w.verifier(ALG_COSIGNATURE_V1).to_vkey() for w in W]


def bond(i: int, amount: int = 100, corridors: tuple[str, ...] = ("PAK-KSA",), currency: str = "USD",
         t: str = "2026-11-27T10:00:00Z") -> dict[str, Any]:  # fmt: skip
    request = {"type": BOND_REQUEST, "watcher": VK[i], "amount": str(amount), "currency": currency,
               "corridors": list(corridors), "collateral_ref": f"escrow-{i}", "timestamp": t}  # fmt: skip
    return sign_request(request, W[i])


def unbond(i: int, t: str = "2026-11-28T10:00:00Z") -> dict[str, Any]:
    request = {"type": UNBOND_REQUEST, "watcher": VK[i], "corridors": ["PAK-KSA"], "timestamp": t}
    return sign_request(request, W[i])


def entry(
    origin: str, seq: int, kind: str, payload: dict[str, Any], t: str = "2026-11-27T10:00:00Z"
) -> LedgerEntry:
    return LedgerEntry(origin=origin, sequence=seq, timestamp=t, kind=kind, payload=payload)


def ledger(entries: list[LedgerEntry], final: dict[str, int], now: str = "2026-11-27T12:00:00Z") -> Any:
    return fold(entries, corridor_id="PAK-KSA", final_sizes=final, now=now, stake_currency="USD")


def test_watcher_requests_verify_and_ride_in_receipts() -> None:
    payload = bond(0)
    assert check_watcher_payload("watcher.bond", payload).name == "watcher-0"
    key = SigningKey(PAK, bytes(32))
    receipt = build_receipt(
        key=key, corridor_id="PAK-KSA", sequence=0, timestamp="2026-11-27T10:00:00Z",
        prev_root=genesis_root("PAK-KSA", PAK), kind="watcher.bond", payload=payload,
    )  # fmt: skip
    assert receipt.kind == "watcher.bond"


@pytest.mark.parametrize(
    ("kind", "mutate", "reason", "receipt_reason"),
    [
        ("watcher.bond", lambda p: p["request"].update(amount="1000000"), "bad-watcher-signature", None),
        ("watcher.unbond", lambda p: None, "bad-request-type", "schema-violation"),  # the schemas differ too
        ("watcher.bond", lambda p: p["request"].update(watcher=W[1].verifier().to_vkey()), "bad-vkey", None),
        ("watcher.bond", lambda p: p["request"].update(watcher=VK[1]), "bad-watcher-signature", None),
    ],
)
def test_forged_watcher_requests_are_refused(
    kind: str, mutate: Any, reason: str, receipt_reason: str | None
) -> None:
    payload = bond(0)
    mutate(payload)
    with pytest.raises(PeerProtocolError) as info:
        check_watcher_payload(kind, payload)
    assert info.value.reason == reason
    key = SigningKey(PAK, bytes(32))
    with pytest.raises(PeerProtocolError) as info:  # the same rule guards the log
        build_receipt(key=key, corridor_id="PAK-KSA", sequence=0, timestamp="2026-11-27T10:00:00Z",
                      prev_root=genesis_root("PAK-KSA", PAK), kind=kind, payload=payload)  # fmt: skip
    assert info.value.reason == (receipt_reason or reason)


def test_bond_counts_only_once_final() -> None:
    entries = [entry(PAK, 3, "watcher.bond", bond(0, 100)), entry(KSA, 0, "watcher.bond", bond(1, 50))]
    assert ledger(entries, {PAK: 3, KSA: 1}).active_weights() == {VK[1]: 50}
    both = ledger(entries, {PAK: 4, KSA: 1})
    assert both.active_weights() == {VK[0]: 100, VK[1]: 50}
    assert both.total_active() == 150
    assert both.watchers[VK[0]].bonds == [(PAK, 3)]


def test_unbond_stops_counting_at_once_and_becomes_withdrawable_after_the_period() -> None:
    entries = [entry(PAK, 0, "watcher.bond", bond(0)),
               entry(KSA, 5, "watcher.unbond", unbond(0), t="2026-11-28T10:00:00Z")]  # fmt: skip
    state = ledger(
        entries, {PAK: 1, KSA: 0}, now="2026-11-28T10:00:01Z"
    )  # the unbond is not final: still counts
    assert state.active_weights() == {}
    assert not state.watchers[VK[0]].withdrawable
    later = ledger(entries, {PAK: 1}, now="2026-12-05T10:00:00Z")
    assert later.watchers[VK[0]].withdrawable
    assert not ledger(entries, {PAK: 1}, now="2026-12-05T09:59:59Z").watchers[VK[0]].withdrawable


def test_other_currency_and_other_corridor_carry_no_weight() -> None:
    entries = [entry(PAK, 0, "watcher.bond", bond(0, currency="PKR")),
               entry(PAK, 1, "watcher.bond", bond(1, corridors=("PAK-UAE",)))]  # fmt: skip
    assert ledger(entries, {PAK: 2}).active_weights() == {}


def test_unbond_before_any_bond_is_ignored() -> None:
    entries = [entry(PAK, 0, "watcher.unbond", unbond(0, t="2026-11-26T00:00:00Z"), t="2026-11-26T00:00:00Z"),
               entry(PAK, 1, "watcher.bond", bond(0))]  # fmt: skip
    assert ledger(entries, {PAK: 2}).active_weights() == {VK[0]: 100}


@settings(max_examples=200)
@given(st.permutations(list(range(6))))
def test_fold_does_not_depend_on_input_order(order: list[int]) -> None:
    entries = [
        entry(PAK, 0, "watcher.bond", bond(0, 100)),
        entry(KSA, 0, "watcher.bond", bond(1, 200)),
        entry(PAK, 1, "watcher.bond", bond(2, 300), t="2026-11-27T11:00:00Z"),
        entry(KSA, 1, "watcher.unbond", unbond(1, t="2026-11-27T12:00:00Z"), t="2026-11-27T12:00:00Z"),
        entry(PAK, 2, "watcher.bond", bond(3, 50), t="2026-11-27T12:00:00Z"),
        entry(KSA, 2, "watcher.bond", bond(4, 10), t="2026-11-27T13:00:00Z"),
    ]
    expected = ledger(entries, {PAK: 3, KSA: 2}).active_weights()
    assert ledger([entries[i] for i in order], {PAK: 3, KSA: 2}).active_weights() == expected
    assert expected == {VK[0]: 100, VK[2]: 300, VK[3]: 50}


WEIGHTS = {VK[0]: 100, VK[1]: 100, VK[2]: 100, VK[3]: 100}
POLICY = QuorumPolicy(min_watchers=3)


def test_three_of_four_is_final_two_is_not() -> None:
    three = decide(VK[:3], WEIGHTS, counterparty_cosigned=True, policy=POLICY)
    assert three.final and three.cosigning_stake == 300 and three.active_stake == 400
    two = decide(VK[:2], WEIGHTS, counterparty_cosigned=True, policy=POLICY)
    assert not two.final and set(two.missing) == {"stake", "watchers"}


def test_exactly_two_thirds_is_not_a_quorum() -> None:
    weights = {VK[0]: 200, VK[1]: 100, VK[2]: 100, VK[3]: 100}  # 400 of 500 > 2/3; 200+100 = 300 of 450 = 2/3
    assert decide(VK[:3], weights, counterparty_cosigned=True, policy=POLICY).final
    exact = {VK[0]: 100, VK[1]: 100, VK[2]: 100}
    assert not decide(VK[:2], exact, counterparty_cosigned=True, policy=QuorumPolicy(min_watchers=1)).final
    three = {VK[0]: 1, VK[1]: 1, VK[2]: 1}  # 2 of 3 is exactly 2/3
    assert decide(VK[:2], three, counterparty_cosigned=True, policy=QuorumPolicy(min_watchers=1)).missing == (
        "stake",
    )


def test_counterparty_and_inactive_cosigners() -> None:
    missing = decide(VK[:4], WEIGHTS, counterparty_cosigned=False, policy=POLICY)
    assert missing.missing == ("counterparty",)
    assert decide(VK[:4], WEIGHTS, counterparty_cosigned=False,
                  policy=QuorumPolicy(require_counterparty=False)).final  # fmt: skip
    unbonded = {**WEIGHTS, VK[3]: 0}
    outsiders = decide(
        [VK[3], VK[4], "stranger+00000000+AAAA"], unbonded, counterparty_cosigned=True, policy=POLICY
    )
    assert outsiders.cosigners == () and not outsiders.final
    assert not decide([], {}, counterparty_cosigned=True, policy=QuorumPolicy(min_watchers=1)).final


@pytest.mark.parametrize(
    "kwargs", [{"threshold": Fraction(1, 3)}, {"threshold": Fraction(1)}, {"min_watchers": 0}]
)
def test_bad_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        QuorumPolicy(**kwargs)
    assert info.value.reason == "bad-policy"


def test_unbonding_period_is_a_policy_setting() -> None:
    entries = [entry(PAK, 0, "watcher.bond", bond(0)), entry(PAK, 1, "watcher.unbond", unbond(0),
                                                                t="2026-11-28T10:00:00Z")]  # fmt: skip
    state = fold(entries, corridor_id="PAK-KSA", final_sizes={PAK: 2}, now="2026-11-29T10:00:00Z",
                 stake_currency="USD", unbonding_period=timedelta(days=1))  # fmt: skip
    assert state.watchers[VK[0]].withdrawable
