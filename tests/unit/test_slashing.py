"""``watcher.slash`` receipts and their effect on the stake ledger fold (design §7)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.checkpoints import Checkpoint, cosign
from protocol.errors import PeerProtocolError
from protocol.evidence import evidence_digest, watcher_equivocation, watcher_rollback
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import SignedNote
from protocol.receipts import Receipt, build_receipt, genesis_root
from protocol.stake import (
    BOND_REQUEST,
    DEFAULT_SLASH_POLICY,
    UNBOND_REQUEST,
    LedgerEntry,
    SlashPolicy,
    StakeLedger,
    fold,
    sign_request,
)
from tests.unit.test_evidence import KSA, LOG, LOG_KEYS, PAK, log_fork_receipts

W = [SigningKey(f"watcher-{i}", bytes([40 + i]) * 32) for i in range(3)]
VK = [w.verifier(ALG_COSIGNATURE_V1).to_vkey() for w in W]
REPORTER = SigningKey("reporter", bytes([50]) * 32).verifier().to_vkey()
KSA_LOG = SigningKey(KSA, bytes([2]) * 32)


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC).timestamp())


def note(i: int, size: int, root: int, t: str) -> SignedNote:
    cp = Checkpoint(origin=PAK, size=size, root=bytes([root]) * 32)
    return SignedNote(text=cp.body(), signatures=(cosign(cp, W[i], unix(t)),))


def equivocation(
    i: int = 0, t: str = "2026-11-27T11:00:00Z", roots: tuple[int, int] = (1, 2)
) -> dict[str, Any]:
    return watcher_equivocation(
        note(i, 7, roots[0], t), note(i, 7, roots[1], t), W[i].verifier(ALG_COSIGNATURE_V1)
    )


def rollback(
    i: int = 0,
    t1: str = "2026-11-27T11:00:00Z",
    t2: str = "2026-11-27T11:05:00Z",
    sizes: tuple[int, int] = (9, 4),
) -> dict[str, Any]:
    return watcher_rollback(
        note(i, sizes[0], 3, t1), note(i, sizes[1], 4, t2), W[i].verifier(ALG_COSIGNATURE_V1)
    )


def bond(i: int, amount: int = 1000, t: str = "2026-11-27T10:00:00Z") -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST,
        "watcher": VK[i],
        "amount": str(amount),
        "currency": "USD",
        "corridors": ["PAK-KSA"],
        "collateral_ref": f"escrow-{i}",
        "timestamp": t,
    }
    return sign_request(request, W[i])


def unbond(i: int, t: str) -> dict[str, Any]:
    return sign_request(
        {"type": UNBOND_REQUEST, "watcher": VK[i], "corridors": ["PAK-KSA"], "timestamp": t}, W[i]
    )


def slash(evidence: dict[str, Any], reporter: str = REPORTER) -> dict[str, Any]:
    return {"evidence": evidence, "reporter": reporter}


def entry(
    origin: str, seq: int, kind: str, payload: dict[str, Any], t: str = "2026-11-27T10:00:00Z"
) -> LedgerEntry:
    return LedgerEntry(origin=origin, sequence=seq, timestamp=t, kind=kind, payload=payload)


SLASH_TIME = "2026-11-27T12:00:00Z"


def ledger(entries: list[LedgerEntry], final: dict[str, int] | None = None, **kwargs: Any) -> StakeLedger:
    return fold(
        entries,
        corridor_id="PAK-KSA",
        final_sizes=final if final is not None else {PAK: 100, KSA: 100},
        now="2026-11-28T00:00:00Z",
        stake_currency="USD",
        **kwargs,
    )


def bonded_three() -> list[LedgerEntry]:
    return [entry(PAK, i, "watcher.bond", bond(i)) for i in range(3)]


# --------------------------------------------------------------------------- the receipt rule


def test_a_slash_receipt_carries_verified_evidence() -> None:
    receipt = build_receipt(
        key=LOG,
        corridor_id="PAK-KSA",
        sequence=5,
        timestamp=SLASH_TIME,
        prev_root=genesis_root("PAK-KSA", PAK),
        kind="watcher.slash",
        payload=slash(equivocation()),
    )
    assert Receipt.from_bytes(receipt.raw).kind == "watcher.slash"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (slash(log_fork_receipts()), "kind-not-accepted"),  # a log is not staked
        (slash(equivocation(), reporter="nobody"), "bad-vkey"),
        ({"evidence": equivocation()}, "schema-violation"),
        ({**slash(equivocation()), "amount": "5"}, "schema-violation"),
        (slash({**equivocation(), "cosigned": equivocation()["cosigned"][:1] * 2}), "no-conflict"),
        (slash({**equivocation(), "watcher": VK[1]}), "wrong-signer"),
    ],
    ids=["log-equivocation", "bad-reporter", "no-reporter", "extra-field", "no-conflict", "blames-another"],
)
def test_a_slash_receipt_with_bad_evidence_is_refused(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        build_receipt(
            key=LOG,
            corridor_id="PAK-KSA",
            sequence=5,
            timestamp=SLASH_TIME,
            prev_root=genesis_root("PAK-KSA", PAK),
            kind="watcher.slash",
            payload=payload,
        )
    assert info.value.reason == reason


# --------------------------------------------------------------------------- the fold


def test_equivocation_takes_everything_removes_and_rewards_the_reporter() -> None:
    result = ledger([*bonded_three(), entry(PAK, 3, "watcher.slash", slash(equivocation()), SLASH_TIME)])
    stake = result.watchers[VK[0]]
    assert (stake.bonded, stake.pending, stake.slashed, stake.removed, stake.active) == (
        0,
        0,
        1000,
        True,
        False,
    )
    assert result.rewards == {REPORTER: 1000 // 64}
    assert [s.kind for s in stake.slashes] == ["watcher-equivocation"]
    assert stake.slashes[0].digest == evidence_digest(equivocation()).hex()
    assert result.total_active() == 2000
    assert result.rejected == ()


def test_rollback_takes_half_and_keeps_the_watcher() -> None:
    result = ledger([*bonded_three(), entry(PAK, 3, "watcher.slash", slash(rollback()), SLASH_TIME)])
    stake = result.watchers[VK[0]]
    assert (stake.bonded, stake.slashed, stake.removed, stake.active) == (500, 500, False, True)
    assert result.rewards == {REPORTER: 500 // 64}
    assert result.active_weights()[VK[0]] == 500


def test_the_same_evidence_applies_once_even_in_both_logs() -> None:
    evidence = rollback()
    resent = json.loads(json.dumps(evidence, indent=3))  # re-serialised, same digest
    entries = [
        *bonded_three(),
        entry(PAK, 3, "watcher.slash", slash(evidence), SLASH_TIME),
        entry(KSA, 0, "watcher.slash", slash(resent, reporter=VK[2]), "2026-11-27T12:00:01Z"),
        entry(PAK, 4, "watcher.slash", slash(evidence), "2026-11-27T12:00:02Z"),
    ]
    result = ledger(entries)
    assert result.watchers[VK[0]].bonded == 500
    assert len(result.watchers[VK[0]].slashes) == 1
    assert result.rewards == {REPORTER: 500 // 64}  # the first report in fold order is rewarded


def test_distinct_misbehaviours_each_apply() -> None:
    first = rollback(t1="2026-11-27T11:00:00Z", t2="2026-11-27T11:05:00Z")
    second = rollback(t1="2026-11-27T11:10:00Z", t2="2026-11-27T11:15:00Z", sizes=(12, 2))
    entries = [
        *bonded_three(),
        entry(PAK, 3, "watcher.slash", slash(first), SLASH_TIME),
        entry(PAK, 4, "watcher.slash", slash(second), "2026-11-27T12:01:00Z"),
    ]
    assert ledger(entries).watchers[VK[0]].bonded == 250


def test_a_slash_reaches_pending_stake_and_the_total_is_the_same_once_final() -> None:
    entries = [
        entry(PAK, 0, "watcher.bond", bond(0)),
        entry(PAK, 1, "watcher.slash", slash(rollback()), SLASH_TIME),
    ]
    before = ledger(entries, final={PAK: 0}).watchers[VK[0]]
    after = ledger(entries, final={PAK: 2}).watchers[VK[0]]
    assert (before.bonded, before.pending, before.slashed) == (0, 500, 500)
    assert (after.bonded, after.pending, after.slashed) == (500, 0, 500)


def test_unbonding_stake_is_slashable_until_the_period_ends() -> None:
    within = [
        *bonded_three(),
        entry(PAK, 3, "watcher.unbond", unbond(0, "2026-11-27T10:30:00Z"), "2026-11-27T10:30:00Z"),
        entry(PAK, 4, "watcher.slash", slash(rollback()), SLASH_TIME),
    ]
    assert ledger(within).watchers[VK[0]].slashed == 500
    # The slash came after the unbonding period had passed: the stake was free to leave.
    late = [
        *[
            entry(PAK, i, "watcher.bond", bond(i, t="2026-11-10T10:00:00Z"), "2026-11-10T10:00:00Z")
            for i in range(3)
        ],
        entry(PAK, 3, "watcher.unbond", unbond(0, "2026-11-20T10:00:00Z"), "2026-11-20T10:00:00Z"),
        entry(PAK, 4, "watcher.slash", slash(rollback()), SLASH_TIME),
    ]
    stake = ledger(late).watchers[VK[0]]
    assert (stake.slashed, stake.bonded) == (0, 1000)
    assert stake.slashes[0].amount == 0


def test_evidence_judged_at_the_slash_receipts_time() -> None:
    stale_slash = entry(PAK, 3, "watcher.slash", slash(rollback()), "2026-12-30T00:00:00Z")  # > 14 days later
    result = ledger([*bonded_three(), stale_slash])
    assert result.watchers[VK[0]].bonded == 1000
    assert result.rejected == ((PAK, 3, "evidence-expired"),)
    early_slash = entry(
        PAK, 3, "watcher.slash", slash(rollback()), "2026-11-27T10:00:00Z"
    )  # before the offence
    assert ledger([*bonded_three(), early_slash]).rejected == ((PAK, 3, "evidence-from-future"),)


def test_evidence_of_another_corridor_or_an_unknown_log_is_rejected() -> None:
    uae = "sez.gov.ae/corridor/PAK-UAE"
    cp = Checkpoint(origin=uae, size=7, root=bytes([1]) * 32)
    other = Checkpoint(origin=uae, size=7, root=bytes([2]) * 32)
    t = unix("2026-11-27T11:00:00Z")
    evidence = watcher_equivocation(
        SignedNote(text=cp.body(), signatures=(cosign(cp, W[0], t),)),
        SignedNote(text=other.body(), signatures=(cosign(other, W[0], t),)),
        W[0].verifier(ALG_COSIGNATURE_V1),
    )
    result = ledger([*bonded_three(), entry(PAK, 3, "watcher.slash", slash(evidence), SLASH_TIME)])
    assert result.rejected == ((PAK, 3, "wrong-corridor"),)
    only_pak = {PAK: LOG_KEYS[PAK]}
    with_keys = ledger(
        [*bonded_three(), entry(PAK, 3, "watcher.slash", slash(equivocation()), SLASH_TIME)],
        log_keys=only_pak,
    )
    assert with_keys.watchers[VK[0]].removed
    ksa_evidence = equivocation()
    ksa_evidence["origin"] = KSA  # statements are about PAK: refused either way
    assert ledger(
        [*bonded_three(), entry(PAK, 3, "watcher.slash", slash(ksa_evidence), SLASH_TIME)], log_keys=only_pak
    ).rejected == ((PAK, 3, "unknown-origin"),)


def test_no_reward_for_reporting_oneself_and_no_way_back_after_removal() -> None:
    entries = [
        *bonded_three(),
        entry(PAK, 3, "watcher.slash", slash(equivocation(), reporter=VK[0]), SLASH_TIME),
        entry(PAK, 4, "watcher.bond", bond(0, 5000, "2026-11-27T13:00:00Z"), "2026-11-27T13:00:00Z"),
    ]
    result = ledger(entries)
    assert result.rewards == {}
    assert result.watchers[VK[0]].bonded == 5000 and not result.watchers[VK[0]].active
    alias = SigningKey("alias", W[0].seed).verifier().to_vkey()  # the offender's key, renamed, as type 0x01
    aliased = ledger(
        [*bonded_three(), entry(PAK, 3, "watcher.slash", slash(equivocation(), reporter=alias), SLASH_TIME)]
    )
    assert aliased.rewards == {} and aliased.watchers[VK[0]].slashed == 1000


def test_a_slash_of_a_watcher_never_bonded_is_recorded_and_bars_it() -> None:
    result = ledger(
        [
            entry(PAK, 0, "watcher.slash", slash(equivocation(1)), SLASH_TIME),
            entry(PAK, 1, "watcher.bond", bond(1), "2026-11-27T13:00:00Z"),
        ]
    )
    assert result.watchers[VK[1]].removed and not result.watchers[VK[1]].active
    assert result.rewards == {}


def test_the_ledger_does_not_depend_on_the_order_entries_arrive_in() -> None:
    entries = [
        *bonded_three(),
        entry(PAK, 3, "watcher.slash", slash(rollback()), SLASH_TIME),
        entry(KSA, 0, "watcher.slash", slash(equivocation(1), reporter=VK[2]), SLASH_TIME),
        entry(PAK, 4, "watcher.slash", slash(rollback(2)), "2026-11-27T12:30:00Z"),
    ]
    expected = ledger(entries)
    for seed in range(5):
        shuffled = list(entries)
        random.Random(seed).shuffle(shuffled)
        assert ledger(shuffled) == expected


def test_penalties_follow_the_policy() -> None:
    gentle = SlashPolicy(equivocation_percent=10, rollback_percent=1, whistleblower=(1, 2))
    result = ledger(
        [*bonded_three(), entry(PAK, 3, "watcher.slash", slash(equivocation()), SLASH_TIME)],
        slash_policy=gentle,
    )
    stake = result.watchers[VK[0]]
    assert (stake.bonded, stake.removed) == (900, True)
    assert result.rewards == {REPORTER: 50}


def test_corridor_configs_carry_the_default_policy() -> None:
    root = Path(__file__).resolve().parents[2] / "configs" / "corridors"
    for path in sorted(root.glob("*.json")):
        policy = json.loads(path.read_text())["policy"]
        assert SlashPolicy.from_policy(policy) == DEFAULT_SLASH_POLICY, path.name


def test_bad_slash_payloads_in_the_fold_change_nothing() -> None:
    forged = rollback()
    note_text = forged["cosigned"][1]
    forged["cosigned"][1] = note_text[:-10] + ("A" if note_text[-10] != "A" else "B") + note_text[-9:]
    before = ledger(bonded_three())
    after = ledger([*bonded_three(), entry(PAK, 3, "watcher.slash", slash(forged), SLASH_TIME)])
    assert after.watchers == before.watchers and after.rewards == {}
    assert len(after.rejected) == 1
