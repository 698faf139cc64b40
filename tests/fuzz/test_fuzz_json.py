"""Fuzzing the JSON decoders: strict and canonical JSON, receipts, evidence, settlement statements,
trust policies (JSON and tlog-policy text), lifecycle transitions and corridor definitions.

Each gets byte mutations of a valid seed (the parser's checks) and field edits of the parsed seed
(the checks behind the parser: schema, consistency, signatures)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import lifecycle
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.evidence import KINDS, verify_evidence
from protocol.jcs import canonical, loads_strict, parse_canonical
from protocol.keys import VerifierKey
from protocol.policy import TrustPolicy, parse_policy
from protocol.receipts import MAX_RECEIPT_BYTES, Receipt, verify_receipt
from protocol.settlement import SettlementStatement
from tests.fuzz.mutations import FUZZ, json_edited, json_junk, mutated, rejects_cleanly
from tests.light_fixture import Corridor
from tests.unit.test_lifecycle import CASES, HOOKS, REGISTERED, signed, state_in, unsigned
from tests.unit.test_settlement import build, cosigned, transfer, two_logs

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
CORRIDOR = Corridor(n=4, watchers=3)
RECEIPTS = [receipt.raw for receipt in CORRIDOR.receipts]
POLICY = CORRIDOR.policy()
LOG_KEY = CORRIDOR.pak.verifier()

# ------------------------------------------------------------------------------------------ JSON, receipts


@FUZZ
@given(st.sampled_from(RECEIPTS).flatmap(mutated))
def test_strict_and_canonical_json_parse_or_are_refused(data: bytes) -> None:
    value = rejects_cleanly(lambda: loads_strict(data, max_bytes=MAX_RECEIPT_BYTES), PeerProtocolError)
    strict_ok = value is not None or data.strip() == b"null"
    parsed = rejects_cleanly(lambda: parse_canonical(data, max_bytes=MAX_RECEIPT_BYTES), PeerProtocolError)
    if parsed is not None:
        assert strict_ok, "canonical JSON is strict JSON"
        assert canonical(parsed) == data


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_random_input_is_refused_as_json(data: bytes) -> None:
    rejects_cleanly(lambda: loads_strict(data, max_bytes=1024), PeerProtocolError)
    rejects_cleanly(lambda: parse_canonical(data, max_bytes=1024), PeerProtocolError)
    rejects_cleanly(lambda: Receipt.from_bytes(data), PeerProtocolError)


@pytest.mark.parametrize("depth", [31, 32, 33, 64, 1000, 100_000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    for data in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        for parse in (
            partial(loads_strict, max_bytes=1 << 20),
            partial(parse_canonical, max_bytes=1 << 20),
            Receipt.from_bytes,
        ):
            rejects_cleanly(partial(parse, data), PeerProtocolError)


def _accepted(data: bytes) -> bool:
    """Parsed *and* verified under the log's key: what a replica would store."""
    receipt = rejects_cleanly(lambda: Receipt.from_bytes(data), PeerProtocolError)
    if receipt is None:
        return False
    return rejects_cleanly(lambda: verify_receipt(receipt, LOG_KEY), PeerProtocolError) is not None


@FUZZ
@given(st.sampled_from(RECEIPTS).flatmap(mutated))
def test_mutated_receipts_are_refused_unless_unchanged(data: bytes) -> None:
    # next_root binds the body; the proof object (outside it) is bound by verify_receipt.
    if _accepted(data):
        assert data in RECEIPTS, "a receipt whose bytes changed must never be accepted"


@FUZZ
@given(st.sampled_from(RECEIPTS).map(json.loads).flatmap(json_edited))
def test_edited_receipts_are_refused(body: Any) -> None:
    data = json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    if _accepted(data):
        assert data in RECEIPTS


# ------------------------------------------------------------------------------------------ evidence

VECTORS = sorted((ROOT / "tests" / "vectors" / "evidence").glob("*/valid.json"))
EVIDENCE = [json.loads(path.read_text(encoding="utf-8")) for path in VECTORS]


def _verify(document: dict[str, Any], evidence: bytes | dict[str, Any]) -> Any:
    context = document["context"]
    keys = context["log_keys"]
    return verify_evidence(
        evidence,
        log_keys=None if keys is None else {o: VerifierKey.from_vkey(v) for o, v in keys.items()},
        now=context["now"], window=context["window"], max_skew=context["max_skew"],
        corridor_id=context.get("corridor_id"), watcher_keys=context.get("watcher_keys"),
        kinds=context.get("kinds", KINDS),
    )  # fmt: skip


def test_every_kind_of_evidence_has_a_valid_seed() -> None:
    assert len(EVIDENCE) == 5
    for document in EVIDENCE:
        _verify(document, canonical(document["evidence"]))


@FUZZ
@given(st.data())
def test_mutated_evidence_bytes_are_refused_as_peer_faults(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from(EVIDENCE))
    raw = data.draw(mutated(canonical(document["evidence"])))
    verified = rejects_cleanly(lambda: _verify(document, raw), PeerProtocolError)
    if verified is not None:  # evidence is judged from its own canonical bytes only
        assert canonical(parse_canonical(raw, max_bytes=1 << 20)) == raw


@FUZZ
@given(st.data())
def test_edited_evidence_is_refused_as_a_peer_fault(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from(EVIDENCE))
    edited = data.draw(json_edited(document["evidence"]))
    rejects_cleanly(lambda: _verify(document, edited), PeerProtocolError)
    rejects_cleanly(lambda: _verify(document, json.dumps(edited).encode()), PeerProtocolError)


# ------------------------------------------------------------------------------------------ settlement


def _statement() -> bytes:
    pk, sa = two_logs([(0, transfer(1, "PAK", "KSA", "USD", 100)), (1, transfer(2, "KSA", "PAK", "SAR", 7))])
    return cosigned(build(pk, sa)).to_bytes()


STATEMENT = _statement()


def test_the_statement_seed_parses() -> None:
    assert SettlementStatement.from_json(STATEMENT).to_bytes() == STATEMENT


@FUZZ
@given(mutated(STATEMENT))
def test_mutated_statements_parse_or_are_refused(data: bytes) -> None:
    statement = rejects_cleanly(lambda: SettlementStatement.from_json(data), PeerProtocolError)
    if statement is not None:
        SettlementStatement.from_json(statement.to_bytes())


@FUZZ
@given(json_edited(json.loads(STATEMENT), max_edits=3))
def test_edited_statements_parse_or_are_refused(value: Any) -> None:
    rejects_cleanly(lambda: SettlementStatement.from_json(value), PeerProtocolError)
    rejects_cleanly(lambda: SettlementStatement.from_json(json.dumps(value)), PeerProtocolError)


# ------------------------------------------------------------------------------------------ policies

POLICIES = [POLICY.to_json(), POLICY.to_tlog_policy().encode()]


def test_the_policy_seeds_parse() -> None:
    for data in POLICIES:
        assert parse_policy(data) == POLICY


@FUZZ
@given(st.sampled_from(POLICIES).flatmap(mutated))
def test_mutated_policies_parse_or_are_refused(data: bytes) -> None:
    policy = rejects_cleanly(lambda: parse_policy(data), PeerProtocolError)
    if policy is not None:
        assert parse_policy(policy.to_json()) == policy


@FUZZ
@given(json_edited(json.loads(POLICY.to_json()), max_edits=3))
def test_edited_json_policies_parse_or_are_refused(value: Any) -> None:
    rejects_cleanly(lambda: TrustPolicy.from_json_value(value), PeerProtocolError)


# ------------------------------------------------------------------------------------------ lifecycle

TRANSITIONS = [(source, signed(unsigned(source, target, **options))) for _, source, target, options in CASES]


def test_the_lifecycle_seeds_apply() -> None:
    for source, payload in TRANSITIONS:
        lifecycle.apply(state_in(source), payload, REGISTERED, **HOOKS)


@FUZZ
@given(
    st.sampled_from(TRANSITIONS).flatmap(lambda t: st.tuples(st.just(t[0]), json_edited(t[1], max_edits=2)))
)
def test_edited_transitions_apply_or_are_refused_and_change_nothing(case: tuple[Any, Any]) -> None:
    source, payload = case
    before = state_in(source)
    after = rejects_cleanly(lambda: lifecycle.apply(before, payload, REGISTERED, **HOOKS), PeerProtocolError)
    assert before == state_in(source)
    if after is not None:
        assert after.state != before.state or after == before


@FUZZ
@given(st.sampled_from(TRANSITIONS).flatmap(lambda t: st.tuples(st.just(t[0]), mutated(canonical(t[1])))))
def test_mutated_transition_bytes_are_refused(case: tuple[Any, bytes]) -> None:
    source, raw = case
    payload = rejects_cleanly(lambda: loads_strict(raw, max_bytes=MAX_RECEIPT_BYTES), PeerProtocolError)
    if isinstance(payload, dict):
        rejects_cleanly(
            lambda: lifecycle.apply(state_in(source), payload, REGISTERED, **HOOKS), PeerProtocolError
        )


@FUZZ
@given(json_junk(), st.sampled_from(list(lifecycle.State)))
def test_junk_payloads_never_crash_apply(payload: Any, state: lifecycle.State) -> None:
    if isinstance(payload, dict):
        rejects_cleanly(
            lambda: lifecycle.apply(state_in(state), payload, REGISTERED, **HOOKS), PeerProtocolError
        )


# ------------------------------------------------------------------------------------------ definitions

DEFINITIONS = [
    json.loads(path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "configs" / "corridors").glob("*.json"))
]


def test_the_definition_seeds_check() -> None:
    assert DEFINITIONS
    for definition in DEFINITIONS:
        lifecycle.check_definition(definition)


@FUZZ
@given(st.sampled_from(DEFINITIONS).flatmap(lambda d: json_edited(d, max_edits=3)))
def test_edited_definitions_check_or_are_refused(definition: Any) -> None:
    if isinstance(definition, dict):
        rejects_cleanly(lambda: lifecycle.check_definition(definition), PeerProtocolError)
        rejects_cleanly(
            lambda: lifecycle.definition_digest(definition), PeerProtocolError, LocalProtocolError
        )
