"""Settlement (design §12): both sides net identically, exactly, and refuse near misses by reason."""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jsonschema
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import mmr
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import canonical
from protocol.keys import SigningKey, VerifierKey
from protocol.receipts import Receipt, build_receipt, genesis_root
from protocol.schemas import load_schema, validate
from protocol.settlement import (
    LogWindow,
    SettlementStatement,
    build_statement,
    corridor_code,
    countersign,
    sign_statement,
    verify_statement,
)

CORRIDOR = "PAK-KSA"
PK = SigningKey("sez.gov.pk/corridor/PAK-KSA", bytes(range(32)))
SA = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(1, 33)))
IMPOSTOR = SigningKey(SA.name, bytes(range(2, 34)))
"""A key that calls itself KSA's log but is not its registered key."""
KEYS: dict[str, VerifierKey] = {PK.name: PK.verifier(), SA.name: SA.verifier()}
CURRENCIES = ["AED", "CNY", "EUR", "GBP", "JPY", "PKR", "SAR", "USD"]


# ------------------------------------------------------------------------------------------ helpers


def transfer(n: int, sender: str, receiver: str, currency: str, amount: int) -> dict[str, Any]:
    return {
        "transfer_id": f"T-{n}",
        "sender": {"entity_id": f"acct-{sender}-{n}", "jurisdiction": sender},
        "receiver": {"entity_id": f"acct-{receiver}-{n}", "jurisdiction": receiver},
        "currency": currency,
        "amount": str(amount),
    }


@dataclass
class Log:
    """One log as a replica holds it: its receipts and the root at every size."""

    key: SigningKey
    receipts: list[Receipt]
    roots: list[bytes]  # roots[size]

    @classmethod
    def new(cls, key: SigningKey) -> Log:
        return cls(key, [], [mmr.EMPTY_ROOT])

    def append(self, kind: str, payload: dict[str, Any]) -> Receipt:
        prev = self.receipts[-1].next_root if self.receipts else genesis_root(CORRIDOR, self.key.name)
        receipt = build_receipt(
            key=self.key,
            corridor_id=CORRIDOR,
            sequence=len(self.receipts),
            timestamp="2026-11-27T10:00:00Z",
            prev_root=prev,
            kind=kind,
            payload=payload,
        )
        self.receipts.append(receipt)
        appender = mmr.MMRAppender()
        for r in self.receipts:
            appender.append(mmr.hash_leaf(r.next_root))
        self.roots.append(appender.root())
        return receipt

    @property
    def origin(self) -> str:
        return self.key.name

    def window(self, start: int = 0, end: int | None = None) -> LogWindow:
        end = len(self.receipts) if end is None else end
        return LogWindow(
            origin=self.origin,
            from_size=start,
            from_root=self.roots[start],
            to_size=end,
            to_root=self.roots[end],
        )

    def final(self, *sizes: int) -> dict[int, bytes]:
        chosen = sizes or (len(self.receipts),)
        return {size: self.roots[size] for size in chosen}


def two_logs(payloads: Sequence[tuple[int, dict[str, Any]]]) -> tuple[Log, Log]:
    """Write each payload into log 0 (PAK) or 1 (KSA)."""
    logs = (Log.new(PK), Log.new(SA))
    for which, payload in payloads:
        logs[which].append("transfer", payload)
    return logs


def build(pk: Log, sa: Log, receipts: Sequence[Receipt] | None = None, **kw: Any) -> SettlementStatement:
    return build_statement(
        corridor_id=CORRIDOR,
        windows=kw.pop("windows", [pk.window(), sa.window()]),
        receipts=pk.receipts + sa.receipts if receipts is None else receipts,
        final=kw.pop("final", {pk.origin: pk.final(), sa.origin: sa.final()}),
        **kw,
    )


def cosigned(statement: SettlementStatement) -> SettlementStatement:
    return statement.with_signature(sign_statement(statement, PK)).with_signature(
        sign_statement(statement, SA)
    )


def reference(
    payloads: Sequence[tuple[int, dict[str, Any]]],
) -> tuple[dict[str, dict[str, list[int]]], int]:
    """Netting straight from the text: per currency, [gross, count] each way; other pairs only counted."""
    iso = {"SAU": "KSA"}
    sums: dict[str, dict[str, list[int]]] = {}
    excluded = 0
    for _, p in payloads:
        pair = (
            iso.get(p["sender"]["jurisdiction"], p["sender"]["jurisdiction"]),
            iso.get(p["receiver"]["jurisdiction"], p["receiver"]["jurisdiction"]),
        )
        if pair == ("PAK", "KSA"):
            way = "a_to_b"
        elif pair == ("KSA", "PAK"):
            way = "b_to_a"
        else:
            excluded += 1
            continue
        entry = sums.setdefault(p["currency"], {"a_to_b": [0, 0], "b_to_a": [0, 0]})
        entry[way][0] += int(p["amount"])
        entry[way][1] += 1
    return sums, excluded


SIDES = st.sampled_from(
    [
        ("PAK", "KSA"),
        ("PAK", "SAU"),
        ("KSA", "PAK"),
        ("SAU", "PAK"),
        ("PAK", "PAK"),
        ("PAK", "CHN"),
        ("ARE", "SAU"),
    ]
)
AMOUNTS = st.one_of(st.integers(0, 1000), st.integers(0, 10**39 - 1), st.just(2**53 + 1))


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, dict[str, Any]]]:
    n = draw(st.integers(1, 30))
    out = []
    for i in range(n):
        sender, receiver = draw(SIDES)
        payload = transfer(i, sender, receiver, draw(st.sampled_from(CURRENCIES)), draw(AMOUNTS))
        out.append((draw(st.integers(0, 1)), payload))
    return out


# ------------------------------------------------------------------------------------------ netting


@settings(max_examples=60, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_both_sides_net_identically_and_match_the_reference(
    payloads: list[tuple[int, dict[str, Any]]], rnd: random.Random
) -> None:
    pk, sa = two_logs(payloads)
    everything = pk.receipts + sa.receipts
    pak_view, ksa_view = everything[:], everything[:]
    rnd.shuffle(pak_view)
    rnd.shuffle(ksa_view)
    final = {pk.origin: pk.final(), sa.origin: sa.final()}
    mine = build(pk, sa, pak_view, windows=[pk.window(), sa.window()], final=final)
    theirs = build(pk, sa, ksa_view, windows=[sa.window(), pk.window()], final=dict(reversed(final.items())))
    assert mine.to_bytes() == theirs.to_bytes()

    sums, excluded = reference(payloads)
    body = mine.to_json()
    assert body["excluded_count"] == excluded
    assert [p["currency"] for p in body["positions"]] == sorted(sums)
    for position in body["positions"]:
        want = sums[position["currency"]]
        assert [int(position["a_to_b"]["gross"]), position["a_to_b"]["count"]] == want["a_to_b"]
        assert [int(position["b_to_a"]["gross"]), position["b_to_a"]["count"]] == want["b_to_a"]
        diff = want["a_to_b"][0] - want["b_to_a"][0]
        if diff == 0:
            assert position["net"] is None
        else:
            payer, payee = ("PAK", "KSA") if diff > 0 else ("KSA", "PAK")
            assert position["net"] == {"payer": payer, "payee": payee, "amount": str(abs(diff))}
    assert (
        body["statement_digest"]
        == hashlib.sha256(
            rfc8785.dumps({k: v for k, v in body.items() if k not in ("statement_digest", "signatures")})
        ).hexdigest()
    )

    # The proposal round-trips, KSA countersigns it from its own (reordered) replica, and it verifies.
    proposal = mine.with_signature(sign_statement(mine, PK))
    assert SettlementStatement.from_json(proposal.to_bytes()) == proposal
    done = countersign(
        proposal.to_bytes(), receipts=ksa_view, final=final, settled=(), registered_keys=KEYS, key=SA
    )
    assert verify_statement(done.to_bytes(), KEYS) == done
    validate("payload.settlement", done.to_json())


def test_amounts_far_above_2_53_are_exact() -> None:
    big = 10**30
    pk, sa = two_logs(
        [
            (0, transfer(1, "PAK", "KSA", "USD", big + 7)),
            (0, transfer(2, "PAK", "SAU", "USD", big)),
            (1, transfer(3, "SAU", "PAK", "USD", big + 1)),
            (1, transfer(4, "KSA", "PAK", "PKR", 2**53 + 1)),
            (0, transfer(5, "PAK", "KSA", "PKR", 2**53 + 1)),
        ]
    )
    body = build(pk, sa).to_json()
    usd, pkr = body["positions"][1], body["positions"][0]
    assert usd == {
        "currency": "USD",
        "a_to_b": {"gross": str(2 * big + 7), "count": 2},
        "b_to_a": {"gross": str(big + 1), "count": 1},
        "net": {"payer": "PAK", "payee": "KSA", "amount": "1000000000000000000000000000006"},
    }
    assert pkr["net"] is None
    assert pkr["a_to_b"] == pkr["b_to_a"] == {"gross": "9007199254740993", "count": 1}


def test_iso_and_corridor_codes_are_one_party_and_other_pairs_are_counted_apart() -> None:
    assert [corridor_code(c) for c in ("SAU", "KSA", "ARE", "UAE", "PAK", "CHN")] == [
        "KSA",
        "KSA",
        "UAE",
        "UAE",
        "PAK",
        "CHN",
    ]
    pk, sa = two_logs(
        [
            (0, transfer(1, "PAK", "SAU", "USD", 5)),
            (0, transfer(2, "PAK", "KSA", "USD", 5)),
            (1, transfer(3, "KSA", "KSA", "USD", 100)),  # domestic
            (1, transfer(4, "SAU", "CHN", "USD", 100)),  # a third jurisdiction
        ]
    )
    body = build(pk, sa).to_json()
    assert body["excluded_count"] == 2
    assert body["positions"] == [
        {
            "currency": "USD",
            "a_to_b": {"gross": "10", "count": 2},
            "b_to_a": {"gross": "0", "count": 0},
            "net": {"payer": "PAK", "payee": "KSA", "amount": "10"},
        }
    ]


def test_other_kinds_are_skipped_and_a_repeated_receipt_counts_once() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5))])
    pk.append("attestation", {"subject": "x", "attestation_type": "licence", "digest_sha256": "ab" * 32})
    sa.append("transfer", transfer(2, "KSA", "PAK", "USD", 3))
    once = build(pk, sa)
    twice = build(pk, sa, pk.receipts + sa.receipts + pk.receipts)
    assert once.to_bytes() == twice.to_bytes()
    assert once.to_json()["positions"][0]["net"] == {"payer": "PAK", "payee": "KSA", "amount": "2"}


def test_receipts_outside_the_window_or_another_corridor_are_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (0, transfer(2, "PAK", "KSA", "USD", 5))])
    sa.append("transfer", transfer(3, "KSA", "PAK", "USD", 1))
    final = {pk.origin: pk.final(1, 2), sa.origin: sa.final()}
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, windows=[pk.window(0, 1), sa.window()], final=final)
    assert info.value.reason == "receipt-outside-window"
    assert info.value.details == {"origin": pk.origin, "sequence": 1}
    other = build_receipt(
        key=PK,
        corridor_id="PAK-UAE",
        sequence=0,
        timestamp="2026-11-27T10:00:00Z",
        prev_root=genesis_root("PAK-UAE", PK.name),
        kind="transfer",
        payload=transfer(9, "PAK", "UAE", "USD", 1),
    )
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, [other])
    assert info.value.reason == "wrong-corridor"


def test_two_different_receipts_at_one_position_are_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (1, transfer(2, "KSA", "PAK", "USD", 5))])
    fork, _ = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 6))])
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, pk.receipts + sa.receipts + fork.receipts)
    assert info.value.reason == "duplicate-receipt"


# ------------------------------------------------------------------------------------------ windows


def test_a_window_ending_at_a_checkpoint_that_is_not_quorum_final_is_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (0, transfer(2, "PAK", "KSA", "USD", 5))])
    sa.append("transfer", transfer(3, "KSA", "PAK", "USD", 1))
    final = {pk.origin: pk.final(1), sa.origin: sa.final()}  # PAK is final at 1, not at 2
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, final=final)
    assert info.value.reason == "window-not-final"
    assert info.value.details == {"origin": pk.origin, "to_size": 2}
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, final={pk.origin: pk.final(), sa.origin: {}})
    assert info.value.reason == "window-not-final"


def test_a_window_whose_root_is_not_the_final_root_is_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (1, transfer(2, "KSA", "PAK", "USD", 5))])
    forged = replace(pk.window(), to_root=bytes(32))
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, windows=[forged, sa.window()])
    assert info.value.reason == "window-root-mismatch"


def test_windows_chain_from_zero_and_the_same_window_twice_is_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (1, transfer(2, "KSA", "PAK", "USD", 5))])
    first = build(pk, sa)
    settled = list(first.windows)
    pk.append("transfer", transfer(3, "PAK", "KSA", "EUR", 9))
    final = {pk.origin: pk.final(1, 2), sa.origin: sa.final(1)}

    with pytest.raises(LocalProtocolError) as info:  # the same window again
        build(pk, sa, windows=[pk.window(0, 1), sa.window(0, 1)], final=final, settled=settled)
    assert info.value.reason == "window-already-settled"
    with pytest.raises(LocalProtocolError) as info:  # overlapping the settled one
        build(pk, sa, windows=[pk.window(0, 2), sa.window(1, 1)], final=final, settled=settled)
    assert info.value.reason == "window-already-settled"

    # The next window starts where the last ended; the KSA log did not move, which is allowed.
    second = build(
        pk, sa, pk.receipts[1:], windows=[pk.window(1, 2), sa.window(1, 1)], final=final, settled=settled
    )
    assert second.to_json()["positions"][0]["currency"] == "EUR"

    with pytest.raises(LocalProtocolError) as info:  # starting later than the last end
        build(pk, sa, [], windows=[pk.window(2, 2), sa.window(1, 1)], final=final, settled=settled)
    assert info.value.reason == "window-gap"
    with pytest.raises(LocalProtocolError) as info:  # not starting at 0 with nothing settled
        build(pk, sa, pk.receipts[1:], windows=[pk.window(1, 2), sa.window(0, 1)], final=final)
    assert info.value.reason == "window-gap"
    wrong_start = replace(pk.window(1, 2), from_root=bytes(32))
    with pytest.raises(LocalProtocolError) as info:  # right size, wrong root
        build(pk, sa, pk.receipts[1:], windows=[wrong_start, sa.window(1, 1)], final=final, settled=settled)
    assert info.value.reason == "window-gap"
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, [], windows=[pk.window(1, 1), sa.window(1, 1)], final=final, settled=settled)
    assert info.value.reason == "empty-window"


def test_a_statement_needs_one_window_of_each_of_two_logs() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5))])
    with pytest.raises(LocalProtocolError) as info:
        build(pk, sa, windows=[pk.window(), pk.window()])
    assert info.value.reason == "bad-windows"
    with pytest.raises(LocalProtocolError) as info:
        LogWindow(origin=pk.origin, from_size=2, from_root=bytes(32), to_size=1, to_root=bytes(32))
    assert info.value.reason == "bad-window"


# ------------------------------------------------------------------------------------------ tampering


def _statement() -> SettlementStatement:
    pk, sa = two_logs(
        [
            (0, transfer(1, "PAK", "KSA", "USD", 10**30)),
            (1, transfer(2, "KSA", "PAK", "USD", 7)),
            (1, transfer(3, "KSA", "PAK", "PKR", 9)),
            (1, transfer(4, "KSA", "KSA", "PKR", 9)),
        ]
    )
    return cosigned(build(pk, sa))


GOOD = _statement().to_json()


def _redigest(value: dict[str, Any]) -> None:
    body = {k: v for k, v in value.items() if k not in ("statement_digest", "signatures")}
    value["statement_digest"] = hashlib.sha256(canonical(body)).hexdigest()


def _flip(hex_text: str) -> str:
    return ("0" if hex_text[0] != "0" else "1") + hex_text[1:]


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _unused_bit(text: str) -> str:
    """The same 64 bytes, spelt differently: 86 characters carry 516 bits, the last 4 unused."""
    return text[:-1] + B64URL[B64URL.index(text[-1]) ^ 1]


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _with(*mutations: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return mutate


def _swap(name: str) -> Mutation:
    return lambda doc: doc[name].reverse()


def _pop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[int(last) if last.isdigit() else last]

    return mutate


# Positions are [PKR, USD]; USD: a_to_b 10**30 (1), b_to_a 7 (1), net PAK pays 10**30 - 7.
USD_NET = str(10**30 - 7)
NEAR_MISSES: list[tuple[str, Mutation, bool, str]] = [
    # (desc, mutation, recompute statement_digest after it, reason)
    ("type", _set("type", "sez.settlement/v2"), True, "schema-violation"),
    ("corridor id", _set("corridor_id", "PAK-UAE"), True, "wrong-parties"),
    ("parties swapped", _swap("parties"), True, "wrong-parties"),
    ("digest algorithm", _set("digest_algorithm", "sha512"), True, "schema-violation"),
    ("extra member", _set("memo", "x"), True, "schema-violation"),
    ("windows swapped", _swap("windows"), True, "unsorted-windows"),
    ("window from_size", _set("windows.0.from_size", 1), False, "statement-digest-mismatch"),
    ("window from_size past to_size", _set("windows.0.from_size", 5), True, "bad-window"),
    ("window to_size", _set("windows.1.to_size", 4), False, "statement-digest-mismatch"),
    ("window to_size as string", _set("windows.1.to_size", "3"), True, "schema-violation"),
    ("window from_root", _set("windows.0.from_root", "00" * 32), False, "statement-digest-mismatch"),
    ("window to_root", _set("windows.1.to_root", "00" * 32), False, "statement-digest-mismatch"),
    (
        "window origin",
        _set("windows.1.origin", "sez.gov.sa/corridor/PAK-KSX"),
        False,
        "statement-digest-mismatch",
    ),
    ("window to_size re-digested", _set("windows.1.to_size", 4), True, "bad-signature"),
    ("gross alone", _set("positions.1.a_to_b.gross", "1"), False, "net-mismatch"),
    (
        "gross with its net",
        _with(_set("positions.1.b_to_a.gross", "8"), _set("positions.1.net.amount", str(10**30 - 8))),
        False,
        "statement-digest-mismatch",
    ),
    (
        "gross with its net, re-digested",
        _with(_set("positions.1.b_to_a.gross", "8"), _set("positions.1.net.amount", str(10**30 - 8))),
        True,
        "bad-signature",
    ),
    ("count", _set("positions.1.b_to_a.count", 2), False, "statement-digest-mismatch"),
    ("count re-digested", _set("positions.1.b_to_a.count", 2), True, "bad-signature"),
    ("gross over no transfers", _set("positions.0.a_to_b.gross", "5"), True, "empty-position"),
    ("net removed", _set("positions.1.net", None), True, "net-mismatch"),
    (
        "net reversed",
        _set("positions.1.net", {"payer": "KSA", "payee": "PAK", "amount": USD_NET}),
        True,
        "net-mismatch",
    ),
    ("net amount", _set("positions.1.net.amount", "1"), True, "net-mismatch"),
    (
        "net where none is due",
        _set("positions.0.net", {"payer": "KSA", "payee": "PAK", "amount": "0"}),
        True,
        "schema-violation",
    ),
    ("amount with a leading zero", _set("positions.1.b_to_a.gross", "07"), True, "schema-violation"),
    ("amount as a number", _set("positions.1.b_to_a.gross", 7), True, "schema-violation"),
    ("negative amount", _set("positions.1.b_to_a.gross", "-7"), True, "schema-violation"),
    ("currency", _set("positions.1.currency", "USX"), False, "statement-digest-mismatch"),
    ("positions swapped", _swap("positions"), True, "unsorted-positions"),
    (
        "position duplicated",
        lambda d: d["positions"].append(copy.deepcopy(d["positions"][1])),
        True,
        "unsorted-positions",
    ),
    ("position removed", _pop("positions.0"), False, "statement-digest-mismatch"),
    ("excluded count", _set("excluded_count", 0), False, "statement-digest-mismatch"),
    ("excluded count re-digested", _set("excluded_count", 0), True, "bad-signature"),
    (
        "statement digest",
        lambda d: d.update(statement_digest=_flip(d["statement_digest"])),
        False,
        "statement-digest-mismatch",
    ),
    ("signature", _set("signatures.0.signature", "A" * 86), False, "bad-signature"),
    (
        "signature spelt with unused bits set",
        lambda d: d["signatures"][0].update(signature=_unused_bit(d["signatures"][0]["signature"])),
        False,
        "bad-signature-encoding",
    ),
    ("signature removed", _pop("signatures.1"), False, "missing-signature"),
    ("both signatures removed", _set("signatures", []), False, "schema-violation"),
    ("signatures swapped", _swap("signatures"), False, "unsorted-signatures"),
    (
        "signature duplicated",
        lambda d: d["signatures"].__setitem__(1, d["signatures"][0]),
        False,
        "unsorted-signatures",
    ),
    (
        "signer renamed",
        _set("signatures.1.origin", "sez.gov.ae/corridor/PAK-UAE"),
        False,
        "unexpected-signer",
    ),
    (
        "signature by the other key",
        _set("signatures.1.verificationMethod", PK.verifier().verification_method),
        False,
        "wrong-key",
    ),
]


@pytest.mark.parametrize(
    ("desc", "mutate", "redigest", "reason"), NEAR_MISSES, ids=[c[0] for c in NEAR_MISSES]
)
def test_a_tampered_statement_is_refused_with_its_reason(
    desc: str, mutate: Mutation, redigest: bool, reason: str
) -> None:
    doc = copy.deepcopy(GOOD)
    mutate(doc)
    if redigest:
        _redigest(doc)
    assert doc != GOOD, desc
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(canonical(doc), KEYS)
    assert info.value.reason == reason, info.value


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [path]


def test_every_field_is_covered() -> None:
    """Changing any one leaf of the statement, digest recomputed or not, is refused."""
    assert verify_statement(canonical(GOOD), KEYS).to_json() == GOOD
    allowed = {
        "schema-violation",
        "wrong-parties",
        "unsorted-windows",
        "bad-window",
        "net-mismatch",
        "empty-position",
        "unsorted-positions",
        "statement-digest-mismatch",
        "bad-signature",
        "wrong-key",
        "unexpected-signer",
        "unsorted-signatures",
        "bad-signature-encoding",
    }
    count = 0
    for path in _leaves(GOOD):
        for redigest in (False, True):
            doc = copy.deepcopy(GOOD)
            node: Any = doc
            for part in path[:-1]:
                node = node[part]
            old = node[path[-1]]
            if old is None:  # a position without a net; "net where none is due" covers it
                continue
            node[path[-1]] = (old + 1) if isinstance(old, int) else _tweak(old)
            if redigest and path[0] not in ("statement_digest", "signatures"):
                _redigest(doc)
            with pytest.raises(PeerProtocolError) as info:
                verify_statement(canonical(doc), KEYS)
            assert info.value.reason in allowed, (path, info.value)
            count += 1
    assert count > 60


def _tweak(text: str) -> str:
    if text.isdigit():
        return str(int(text) + 1)
    if all(c in "0123456789abcdef" for c in text) and len(text) == 64:
        return _flip(text)
    return text[:-1] + ("B" if text[-1] != "B" else "C")


def test_a_float_in_the_statement_is_refused() -> None:
    raw = canonical(GOOD).replace(b'"excluded_count":1', b'"excluded_count":1.0')
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(raw, KEYS)
    assert info.value.reason == "float-refused"


# ------------------------------------------------------------------------------------------ signers


def test_a_wrong_signer_is_refused() -> None:
    statement = SettlementStatement.from_json(GOOD)
    # The impostor names itself as KSA's log; its signature is valid for its own key, not the registered one.
    forged = statement.with_signature(sign_statement(statement, IMPOSTOR))
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(forged.to_bytes(), KEYS)
    assert info.value.reason == "wrong-key"
    # The impostor also copies the registered key's verificationMethod: the signature then fails.
    fake = sign_statement(statement, IMPOSTOR)
    fake = replace(fake, verification_method=SA.verifier().verification_method)
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(statement.with_signature(fake).to_bytes(), KEYS)
    assert info.value.reason == "bad-signature"
    # PAK signing twice under both names does not make a co-signed statement.
    both_pk = replace(sign_statement(statement, PK), origin=SA.name)
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(statement.with_signature(both_pk).to_bytes(), KEYS)
    assert info.value.reason == "wrong-key"
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(statement.to_bytes(), {PK.name: PK.verifier()})
    assert info.value.reason == "unknown-signer"
    with pytest.raises(LocalProtocolError) as local:
        sign_statement(statement, SigningKey("sez.gov.ae/corridor/PAK-UAE", bytes(32)))
    assert local.value.reason == "unexpected-signer"


def test_a_signature_over_another_statement_is_refused() -> None:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 5)), (1, transfer(2, "KSA", "PAK", "USD", 4))])
    other = build(pk, sa)
    statement = SettlementStatement.from_json(GOOD)
    moved = replace(sign_statement(other, SA))
    with pytest.raises(PeerProtocolError) as info:
        verify_statement(statement.with_signature(moved).to_bytes(), KEYS)
    assert info.value.reason == "bad-signature"


# ------------------------------------------------------------------------------------------ countersign


def _proposal() -> tuple[Log, Log, SettlementStatement]:
    pk, sa = two_logs(
        [
            (0, transfer(1, "PAK", "KSA", "USD", 10**30)),
            (1, transfer(2, "KSA", "PAK", "USD", 7)),
            (0, transfer(3, "PAK", "SAU", "PKR", 9)),
        ]
    )
    statement = build(pk, sa)
    return pk, sa, statement.with_signature(sign_statement(statement, PK))


def _countersign(proposal: SettlementStatement | dict[str, Any], receipts: list[Receipt], **kw: Any) -> Any:
    raw = canonical(proposal) if isinstance(proposal, dict) else proposal.to_bytes()
    return countersign(
        raw,
        receipts=receipts,
        final=kw.pop("final"),
        settled=kw.pop("settled", ()),
        registered_keys=kw.pop("registered_keys", KEYS),
        key=kw.pop("key", SA),
    )


def test_countersign_signs_an_identical_recomputation() -> None:
    pk, sa, proposal = _proposal()
    final = {pk.origin: pk.final(), sa.origin: sa.final()}
    done = _countersign(proposal, list(reversed(pk.receipts + sa.receipts)), final=final)
    assert [s.origin for s in done.signatures] == sorted([PK.name, SA.name])
    assert verify_statement(done.to_json(), KEYS) == done
    # The co-signed statement is a valid `settlement` receipt payload.
    log = Log.new(PK)
    receipt = log.append("settlement", done.to_json())
    assert receipt.kind == "settlement"
    assert verify_statement(receipt.body["transition"]["payload"], KEYS) == done
    jsonschema.Draft202012Validator(load_schema("payload.settlement")).validate(done.to_json())


def test_countersign_refuses_with_the_differing_figures() -> None:
    pk, sa, proposal = _proposal()
    final = {pk.origin: pk.final(), sa.origin: sa.final()}
    # KSA's replica of its own log holds a different amount at sequence 0.
    mine = Log.new(SA)
    mine.append("transfer", transfer(2, "KSA", "PAK", "USD", 8))
    final_mine = {pk.origin: pk.final(), sa.origin: mine.final()}
    with pytest.raises(PeerProtocolError) as info:
        _countersign(proposal, pk.receipts + mine.receipts, final=final_mine)
    assert info.value.reason == "statement-mismatch"
    assert info.value.details["fields"] == [
        "positions[USD].b_to_a.gross",
        "positions[USD].net.amount",
        "windows[1].to_root",
    ]
    diffs = {d["field"]: d for d in info.value.details["differences"]}
    assert diffs["positions[USD].b_to_a.gross"]["proposed"] == "7"
    assert diffs["positions[USD].b_to_a.gross"]["computed"] == "8"
    assert diffs["positions[USD].net.amount"]["computed"] == str(10**30 - 8)

    # A transfer missing from our replica: a whole currency differs.
    with pytest.raises(PeerProtocolError) as info:
        _countersign(proposal, pk.receipts[:1] + sa.receipts, final=final)
    assert info.value.reason == "statement-mismatch"
    assert info.value.details["fields"] == [
        "positions[PKR]",
    ]
    assert info.value.details["differences"][0]["computed"] is None


def test_countersign_refuses_a_forged_root_and_windows_it_cannot_accept() -> None:
    pk, sa, proposal = _proposal()
    final = {pk.origin: pk.final(), sa.origin: sa.final()}
    forged = replace(
        proposal,
        windows=(replace(proposal.windows[0], to_root=b"\xab" * 32), proposal.windows[1]),
        signatures=(),
    )
    forged = forged.with_signature(sign_statement(forged, PK))
    with pytest.raises(PeerProtocolError) as info:
        _countersign(forged, pk.receipts + sa.receipts, final=final)
    assert info.value.reason == "statement-mismatch"
    assert info.value.details["fields"] == ["windows[0].to_root"]

    with pytest.raises(PeerProtocolError) as info:  # not final in our view
        _countersign(proposal, pk.receipts + sa.receipts, final={pk.origin: {}, sa.origin: sa.final()})
    assert info.value.reason == "window-not-final"
    with pytest.raises(PeerProtocolError) as info:  # already settled in our view
        _countersign(proposal, pk.receipts + sa.receipts, final=final, settled=list(proposal.windows))
    assert info.value.reason == "window-already-settled"


def test_countersign_checks_the_proposers_signature_first() -> None:
    pk, sa, proposal = _proposal()
    final = {pk.origin: pk.final(), sa.origin: sa.final()}
    unsigned = replace(proposal, signatures=())
    with pytest.raises(PeerProtocolError) as info:
        _countersign(unsigned.to_json(), pk.receipts + sa.receipts, final=final)
    assert info.value.reason == "schema-violation"
    impostor = replace(proposal, signatures=(replace(sign_statement(proposal, SA), origin=PK.name),))
    with pytest.raises(PeerProtocolError) as info:
        _countersign(impostor, pk.receipts + sa.receipts, final=final)
    assert info.value.reason == "wrong-key"
    already = proposal.with_signature(sign_statement(proposal, SA))
    with pytest.raises(PeerProtocolError) as info:
        _countersign(already, pk.receipts + sa.receipts, final=final)
    assert info.value.reason == "unexpected-signer"
