"""``protocol.policy``: the trust policy in JSON and in C2SP tlog-policy form, and its quorum rule."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import pytest

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import canonical
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.policy import TrustPolicy, WatcherEntry, parse_policy, parse_tlog_policy
from protocol.schemas import validate
from tests.light_fixture import KSA_ORIGIN, PAK_ORIGIN, Corridor

C = Corridor(n=2, watchers=5, stakes=[5, 1, 1, 2, 3])
POLICY = C.policy()


def test_json_round_trip_is_canonical_and_schema_valid() -> None:
    data = POLICY.to_json()
    assert data == canonical(json.loads(data))
    validate("policy", json.loads(data))
    again = TrustPolicy.from_json(data)
    assert again.to_json() == data
    assert parse_policy(data).to_json() == data
    value = json.loads(data)
    assert (
        value["threshold"] == "2/3" and value["min_watchers"] == 3 and value["require_counterparty"] is True
    )
    vkeys = [w["vkey"] for w in value["watchers"]]
    assert vkeys == sorted(vkeys)
    assert sorted(int(w["stake"]) for w in value["watchers"]) == [1, 1, 2, 3, 5]


def test_tlog_policy_round_trip() -> None:
    text = POLICY.to_tlog_policy()
    assert parse_tlog_policy(text).to_json() == POLICY.to_json()
    assert parse_policy(text.encode()).to_json() == POLICY.to_json()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert sum(line.startswith("log ") for line in lines) == 2
    assert sum(line.startswith("witness ") for line in lines) == 2 + 5
    assert lines[-1] == "quorum sez-quorum"
    assert "group sez-quorum all watchers parties" in lines


def _stock_ok(policy: TrustPolicy) -> None:
    """Any k watchers (the stock group count) meet the stake rule; the count is as small as can be."""
    k = policy.stock_watcher_count()
    stakes = [w.stake for w in policy.watchers]
    total = sum(stakes)
    threshold = policy.quorum.threshold
    assert k >= policy.quorum.min_watchers
    for chosen in itertools.combinations(stakes, k):
        assert threshold.denominator * sum(chosen) > threshold.numerator * total
    if k > policy.quorum.min_watchers:
        smallest = sorted(stakes)[: k - 1]
        assert threshold.denominator * sum(smallest) <= threshold.numerator * total


@pytest.mark.parametrize(
    "stakes", [[1, 1, 1], [1, 1, 1, 1], [5, 1, 1, 2, 3], [100, 1, 1, 1], [1] * 10, [7, 7, 7, 1, 1, 1, 1]]
)
def test_the_stock_count_rule_is_never_weaker_than_the_stake_rule(stakes: list[int]) -> None:
    _stock_ok(Corridor(n=1, watchers=len(stakes), stakes=stakes).policy())


def test_bootstrap_policy_text_asks_for_the_parties() -> None:
    policy = Corridor(n=1, watchers=1).policy()
    assert policy.bootstrap
    text = policy.to_tlog_policy()
    assert text.splitlines()[-1] == "quorum parties"
    assert parse_tlog_policy(text).to_json() == policy.to_json()


def test_counterparty_optional_text() -> None:
    policy = C.policy(require_counterparty=False, threshold=Fraction(3, 4))
    text = policy.to_tlog_policy()
    assert "counterparty optional" in text and "threshold 3/4" in text
    assert text.splitlines()[-1] == "quorum watchers"
    assert parse_tlog_policy(text).to_json() == policy.to_json()


def test_a_plain_c2sp_policy_has_no_stake_rule() -> None:
    text = "\n".join(line for line in POLICY.to_tlog_policy().splitlines() if not line.startswith("#sez "))
    with pytest.raises(PeerProtocolError) as info:
        parse_tlog_policy(text)
    assert info.value.reason == "not-a-sez-policy"


def _text_without(prefix: str) -> str:
    return "".join(
        line + "\n" for line in POLICY.to_tlog_policy().splitlines() if not line.startswith(prefix)
    )


@pytest.mark.parametrize(
    ("desc", "text"),
    [
        ("unknown keyword", POLICY.to_tlog_policy() + "monitor x\n"),
        ("two quorum lines", POLICY.to_tlog_policy() + "quorum parties\n"),
        ("no quorum line", _text_without("quorum ")),
        ("a witness without stake or party", _text_without("#sez stake w1.example")),
        ("a party line missing", _text_without("#sez party party-2")),
        ("a log line missing", _text_without(f"log {KSA_ORIGIN}")),
        ("a bad vkey", POLICY.to_tlog_policy().replace(" w1.example w1.example+", " w1.example w1.examplf+")),
        ("a log key of the wrong type", POLICY.to_tlog_policy().replace(f"log {PAK_ORIGIN}+", "log x+", 1)),
        ("group of an undefined member", POLICY.to_tlog_policy() + "group g 1 nobody\n"),
        ("group threshold too high", POLICY.to_tlog_policy() + "group g 3 party-1 party-2\n"),
        ("a malformed extension", POLICY.to_tlog_policy() + "#sez stake w1.example 1.5\n"),
        ("threshold out of range", POLICY.to_tlog_policy().replace("threshold 2/3", "threshold 1/3")),
    ],
)  # fmt: skip
def test_tlog_policy_near_misses(desc: str, text: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        parse_tlog_policy(text)
    assert info.value.reason == "bad-policy", desc


@pytest.mark.parametrize(
    ("desc", "change"),
    [
        ("float stake", lambda v: v["watchers"][0].update(stake=1.5)),
        ("zero stake", lambda v: v["watchers"][0].update(stake="0")),
        ("one log", lambda v: v["logs"].pop()),
        ("extra field", lambda v: v.update(extra=1)),
        ("threshold not a fraction", lambda v: v.update(threshold="0.66")),
        ("origin is not the key's name", lambda v: v["logs"][0].update(origin="sez.gov.pk/corridor/X")),
        ("cosigner key of type 0x01", lambda v: v["logs"][0].update(cosigner_vkey=v["logs"][0]["vkey"])),
        ("watcher key of type 0x01", lambda v: v["watchers"][0].update(vkey=v["logs"][0]["vkey"])),
    ],
)
def test_json_policy_near_misses(desc: str, change: object) -> None:
    value = json.loads(POLICY.to_json())
    change(value)  # type: ignore[operator]
    with pytest.raises(PeerProtocolError) as info:
        TrustPolicy.from_json(json.dumps(value).encode())
    assert info.value.reason in {"bad-policy", "schema-violation", "float-refused"}, desc


def test_duplicate_cosigner_names_are_refused() -> None:
    twin = SigningKey("w1.example", b"\x55" * 32).verifier(ALG_COSIGNATURE_V1)
    with pytest.raises(LocalProtocolError) as info:
        TrustPolicy(
            corridor_id=POLICY.corridor_id,
            logs=POLICY.logs,
            watchers=(*POLICY.watchers, WatcherEntry(key=twin, stake=1)),
            stake_currency="USD",
            quorum=POLICY.quorum,
        )
    assert info.value.reason == "bad-policy"


def test_decide_uses_the_counterparty_of_each_log() -> None:
    names = {w.key.name: 0 for w in POLICY.watchers}
    assert POLICY.counterparty_cosigner(PAK_ORIGIN).name == KSA_ORIGIN
    assert POLICY.counterparty_cosigner(KSA_ORIGIN).name == PAK_ORIGIN
    assert POLICY.decide(PAK_ORIGIN, {**names, KSA_ORIGIN: 0}).final
    assert POLICY.decide(PAK_ORIGIN, {**names, PAK_ORIGIN: 0}).missing == ("counterparty",)
    assert POLICY.decide(KSA_ORIGIN, {**names, PAK_ORIGIN: 0}).final
