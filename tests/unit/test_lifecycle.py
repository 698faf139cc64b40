"""The corridor lifecycle state machine (design §9): the whole transition matrix, every refusal, fold."""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import receipts
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import canonical
from protocol.keys import SigningKey, VerifierKey
from protocol.lifecycle import (
    SIGNATURE_DOMAIN,
    TRANSITIONS,
    CorridorState,
    State,
    allowed_kinds,
    apply,
    check_payload,
    definition_digest,
    fold,
    merge,
    mermaid,
    sign,
    signing_digest,
)
from protocol.receipts import KNOWN_KINDS, build_receipt, genesis_root

CORRIDOR = "PAK-KSA"
KEYS = {
    "PAK": SigningKey("sez.gov.pk/corridor/PAK-KSA", bytes([1]) * 32),
    "KSA": SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes([2]) * 32),
}
REGISTERED: dict[str, VerifierKey] = {party: key.verifier() for party, key in KEYS.items()}
UAE_KEYS = {
    "PAK": SigningKey("sez.gov.pk/corridor/PAK-UAE", bytes([3]) * 32),
    "UAE": SigningKey("sez.gov.ae/corridor/PAK-UAE", bytes([4]) * 32),
}
STRANGER = SigningKey("stranger", bytes([9]) * 32)

DEFINITION = {"id": CORRIDOR, "note": "a stand-in definition; configs are tested in test_corridor_configs"}
DEF_HEX = definition_digest(DEFINITION).hex()
BODY = {"type": "log-equivocation", "a": "receipt-1", "b": "receipt-2"}
EVIDENCE: dict[str, Any] = {
    "type": "log-equivocation",
    "digest_sha256": hashlib.sha256(canonical(BODY)).hexdigest(),
    "body": BODY,
}
BRANCH = {"origin": "sez.gov.pk/corridor/PAK-KSA", "size": 42, "root": "ab" * 32}


def verify_evidence(evidence: Mapping[str, Any]) -> bytes:
    """Stand-in for issue 5's verifier: the digest of the body, or a refusal if it says so."""
    if evidence["body"].get("valid") is False:
        raise PeerProtocolError("bad-evidence", "the evidence does not verify")
    return hashlib.sha256(canonical(dict(evidence["body"]))).digest()


def verify_quorum(resolution: Mapping[str, Any], halt_evidence: str | None) -> None:
    if resolution.get("certificate", {}).get("ok") is not True:
        raise PeerProtocolError("no-quorum", "the branch did not reach quorum")


HOOKS: dict[str, Any] = {"verify_evidence": verify_evidence, "verify_quorum": verify_quorum}


def state_in(state: State, corridor: str = CORRIDOR) -> CorridorState:
    """A corridor in ``state`` with what the earlier transitions would have recorded."""
    return CorridorState(
        corridor_id=corridor,
        state=state,
        definition_digest=None if state == State.DRAFT else DEF_HEX,
        suspended_by="PAK" if state == State.SUSPENDED else None,
        halt_evidence=EVIDENCE["digest_sha256"] if state == State.HALTED else None,
    )


def unsigned(
    source: State,
    target: State,
    *,
    corridor: str = CORRIDOR,
    authority: str = "PAK",
    method: str = "two-party",
    reason: str = "test",
) -> dict[str, Any]:
    """The payload of (source, target) with the fields its table row needs, not yet signed."""
    payload: dict[str, Any] = {
        "corridor_id": corridor,
        "from": str(source),
        "to": str(target),
        "reason": reason,
    }
    rule = TRANSITIONS.get((source, target))
    fields = rule.fields if rule else frozenset()
    if "definition_digest" in fields:
        payload["definition_digest"] = DEF_HEX
    if "authority" in fields:
        payload["authority"] = authority
    if "evidence" in fields:
        payload["evidence"] = copy.deepcopy(EVIDENCE)
    if "resolution" in fields:
        payload["resolution"] = {"method": method, "branch": dict(BRANCH)}
        if method == "quorum":
            payload["resolution"]["certificate"] = {"ok": True}
    return payload


def required_signers(payload: Mapping[str, Any]) -> list[str]:
    rule = TRANSITIONS[(State(payload["from"]), State(payload["to"]))]
    signers = rule.signers
    if signers == "resolution":
        signers = "both" if payload["resolution"]["method"] == "two-party" else "any"
    parties: list[str] = payload["corridor_id"].split("-")
    if signers == "both":
        return parties
    if signers == "authority":
        return [payload["authority"]]
    return [parties[1]]  # "any": the counterparty, to show it need not be the first party


def signed(payload: dict[str, Any], keys: Mapping[str, SigningKey] = KEYS) -> dict[str, Any]:
    return sign(payload, {party: keys[party] for party in required_signers(payload)})


# Every allowed transition, as (id, source, target, unsigned-payload options).
CASES = [
    ("DRAFT->PENDING", State.DRAFT, State.PENDING, {}),
    ("PENDING->ACTIVE", State.PENDING, State.ACTIVE, {}),
    ("ACTIVE->SUSPENDED", State.ACTIVE, State.SUSPENDED, {}),
    ("SUSPENDED->ACTIVE", State.SUSPENDED, State.ACTIVE, {}),
    ("ACTIVE->HALTED", State.ACTIVE, State.HALTED, {}),
    ("HALTED->ACTIVE two-party", State.HALTED, State.ACTIVE, {"method": "two-party"}),
    ("HALTED->ACTIVE quorum", State.HALTED, State.ACTIVE, {"method": "quorum"}),
    ("ACTIVE->DEPRECATED", State.ACTIVE, State.DEPRECATED, {}),
    ("SUSPENDED->DEPRECATED", State.SUSPENDED, State.DEPRECATED, {}),
    ("HALTED->DEPRECATED", State.HALTED, State.DEPRECATED, {}),
]
CASE_IDS = [case[0] for case in CASES]


def test_cases_cover_the_table() -> None:
    assert {(source, target) for _, source, target, _ in CASES} == set(TRANSITIONS)


def refused(before: CorridorState, payload: dict[str, Any], reason: str, **hooks: Any) -> PeerProtocolError:
    """Apply, expect PeerProtocolError(reason), and check that neither the state nor the payload changed."""
    snapshot = replace(before)
    payload_copy = copy.deepcopy(payload)
    with pytest.raises(PeerProtocolError) as info:
        apply(before, payload, REGISTERED, **(hooks or HOOKS))
    assert info.value.reason == reason, info.value
    assert before == snapshot
    assert payload == payload_copy
    return info.value


# --- the allowed transitions -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_allowed_transition_with_good_evidence(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    before = state_in(source)
    after = apply(before, signed(unsigned(source, target, **options)), REGISTERED, **HOOKS)
    assert after.state == target
    assert after.corridor_id == CORRIDOR
    assert before.state == source  # frozen: the old value is untouched


def test_transitions_record_what_they_bind() -> None:
    pending = apply(state_in(State.DRAFT), signed(unsigned(State.DRAFT, State.PENDING)), REGISTERED)
    assert pending.definition_digest == DEF_HEX
    suspended = apply(
        state_in(State.ACTIVE), signed(unsigned(State.ACTIVE, State.SUSPENDED, authority="KSA")), REGISTERED
    )
    assert suspended.suspended_by == "KSA"
    resumed = apply(suspended, signed(unsigned(State.SUSPENDED, State.ACTIVE, authority="KSA")), REGISTERED)
    assert resumed.suspended_by is None
    halted = apply(state_in(State.ACTIVE), signed(unsigned(State.ACTIVE, State.HALTED)), REGISTERED, **HOOKS)
    assert halted.halt_evidence == EVIDENCE["digest_sha256"]
    active = apply(halted, signed(unsigned(State.HALTED, State.ACTIVE)), REGISTERED)
    assert active.halt_evidence is None


def test_the_other_party_may_cosign_a_suspension() -> None:
    payload = sign(unsigned(State.ACTIVE, State.SUSPENDED), KEYS)
    assert [entry["party"] for entry in payload["signatures"]] == ["KSA", "PAK"]
    assert apply(state_in(State.ACTIVE), payload, REGISTERED).state == State.SUSPENDED


# --- the full matrix of illegal (state, to) pairs ----------------------------------------------

ILLEGAL = [(source, target) for source in State for target in State if (source, target) not in TRANSITIONS]


def test_matrix_size() -> None:
    assert len(TRANSITIONS) + len(ILLEGAL) == 36
    assert len(ILLEGAL) == 27


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_illegal_transition_names_the_state(source: State, target: State) -> None:
    payload = sign(unsigned(source, target), KEYS)
    error = refused(state_in(source), payload, "illegal-transition")
    assert error.details["state"] == str(source)
    assert str(source) in error.message
    with pytest.raises(PeerProtocolError) as info:  # the stateless receipt rule refuses it too
        check_payload("lifecycle", payload)
    assert info.value.reason == "illegal-transition"


@pytest.mark.parametrize("target", list(State))
def test_deprecated_is_terminal(target: State) -> None:
    payload = sign(unsigned(State.ACTIVE, target) | {"from": "DEPRECATED"}, KEYS)
    error = refused(state_in(State.DEPRECATED), payload, "illegal-transition")
    assert error.details["state"] == "DEPRECATED"


# --- each allowed transition, refused for bad authority --------------------------------------


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_with_an_unregistered_key(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    payload = unsigned(source, target, **options)
    party = required_signers(payload)[0]
    payload = signed(payload, {**KEYS, party: STRANGER})
    error = refused(state_in(source), payload, "unknown-signer")
    assert error.details["party"] == party


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_without_a_party_signature(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    payload = signed(unsigned(source, target, **options))
    missing = required_signers(payload)[0]
    payload["signatures"] = [entry for entry in payload["signatures"] if entry["party"] != missing]
    error = refused(state_in(source), payload, "missing-signature")
    assert missing in error.details["missing"]


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_with_a_forged_signature(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    payload = signed(unsigned(source, target, **options))
    for index in range(len(payload["signatures"])):
        forged = copy.deepcopy(payload)
        entry = forged["signatures"][index]
        raw = bytearray(base64.urlsafe_b64decode(entry["signature"] + "=="))
        raw[17] ^= 0x04  # one flipped bit
        entry["signature"] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        error = refused(state_in(source), forged, "bad-signature")
        assert error.details["party"] == entry["party"]


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_with_signatures_over_another_payload(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    payload = unsigned(source, target, **options)
    other = signed(unsigned(source, target, **options, reason="something else"))
    payload["signatures"] = other["signatures"]
    refused(state_in(source), payload, "bad-signature")


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_for_another_corridor(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    payload = unsigned(source, target, corridor="PAK-UAE", **options)
    payload = signed(payload, UAE_KEYS)
    uae_keys = {p: k.verifier() for p, k in UAE_KEYS.items()}
    assert apply(state_in(source, "PAK-UAE"), payload, uae_keys, **HOOKS).state == target
    error = refused(state_in(source), payload, "wrong-corridor")
    assert error.details == {"expected": "PAK-KSA", "got": "PAK-UAE"}


@pytest.mark.parametrize(("name", "source", "target", "options"), CASES, ids=CASE_IDS)
def test_refused_from_the_wrong_state(
    name: str, source: State, target: State, options: dict[str, Any]
) -> None:
    """A valid, signed transition replayed in another state from which ``to`` is also reachable."""
    payload = signed(unsigned(source, target, **options))
    for other in State:
        if other != source and (other, target) in TRANSITIONS:
            error = refused(state_in(other), payload, "wrong-from-state")
            assert error.details == {"state": str(other), "got": str(source)}


# --- near misses of the stateful rules and of the hooks --------------------------------------


def test_agreement_must_name_the_pending_definition() -> None:
    payload = unsigned(State.PENDING, State.ACTIVE)
    payload["definition_digest"] = "00" * 32
    refused(state_in(State.PENDING), signed(payload), "definition-mismatch")


def test_only_the_suspending_party_resumes() -> None:
    payload = signed(unsigned(State.SUSPENDED, State.ACTIVE, authority="KSA"))
    refused(state_in(State.SUSPENDED), payload, "wrong-authority")  # PAK suspended it


def test_authority_must_be_a_party() -> None:
    payload = unsigned(State.ACTIVE, State.SUSPENDED, authority="UAE")
    payload = sign(payload, {"PAK": KEYS["PAK"]})
    refused(state_in(State.ACTIVE), payload, "bad-authority")


def test_a_signer_outside_the_corridor_is_unknown() -> None:
    payload = sign(unsigned(State.ACTIVE, State.DEPRECATED), {"KSA": KEYS["KSA"], "UAE": UAE_KEYS["UAE"]})
    refused(state_in(State.ACTIVE), payload, "unknown-signer")


def test_a_party_without_a_registered_key_is_unknown() -> None:
    payload = signed(unsigned(State.ACTIVE, State.DEPRECATED))
    with pytest.raises(PeerProtocolError) as info:
        apply(state_in(State.ACTIVE), payload, {"PAK": REGISTERED["PAK"]})
    assert info.value.reason == "unknown-signer"
    assert info.value.details["party"] == "KSA"


def test_a_party_signs_once() -> None:
    payload = signed(unsigned(State.ACTIVE, State.DEPRECATED))
    payload["signatures"] = [payload["signatures"][1], payload["signatures"][1]]
    refused(state_in(State.ACTIVE), payload, "duplicate-signer")


@pytest.mark.parametrize(
    ("source", "target", "field", "value"),
    [
        (State.DRAFT, State.PENDING, "definition_digest", None),
        (State.ACTIVE, State.SUSPENDED, "authority", None),
        (State.ACTIVE, State.HALTED, "evidence", None),
        (State.HALTED, State.ACTIVE, "resolution", None),
        (State.ACTIVE, State.DEPRECATED, "evidence", EVIDENCE),
        (State.ACTIVE, State.SUSPENDED, "definition_digest", DEF_HEX),
        (State.DRAFT, State.PENDING, "authority", "PAK"),
    ],
)
def test_fields_follow_the_table(source: State, target: State, field: str, value: Any) -> None:
    payload = unsigned(source, target)
    if value is None:
        del payload[field]
        reason = "missing-field"
    else:
        payload[field] = value
        reason = "unexpected-field"
    error = refused(state_in(source), sign(payload, KEYS), reason)
    assert error.details["fields"] == [field]


def test_schema_violation_is_refused_first() -> None:
    payload = signed(unsigned(State.ACTIVE, State.DEPRECATED))
    payload["memo"] = "x"
    error = refused(state_in(State.ACTIVE), payload, "schema-violation")
    assert error.details["schema"] == "payload.lifecycle"


def test_halt_needs_evidence_that_verifies() -> None:
    bad = unsigned(State.ACTIVE, State.HALTED)
    bad["evidence"]["body"] = {"valid": False}
    refused(state_in(State.ACTIVE), signed(bad), "bad-evidence")
    wrong = unsigned(State.ACTIVE, State.HALTED)
    wrong["evidence"]["digest_sha256"] = "00" * 32
    error = refused(state_in(State.ACTIVE), signed(wrong), "evidence-digest-mismatch")
    assert error.details["expected"] == EVIDENCE["digest_sha256"]


def test_halt_without_an_evidence_verifier_is_a_local_error() -> None:
    before = state_in(State.ACTIVE)
    with pytest.raises(LocalProtocolError) as info:
        apply(before, signed(unsigned(State.ACTIVE, State.HALTED)), REGISTERED)
    assert info.value.reason == "no-evidence-verifier"
    assert before == state_in(State.ACTIVE)


def test_quorum_resolution_uses_the_quorum_hook() -> None:
    payload = unsigned(State.HALTED, State.ACTIVE, method="quorum")
    payload["resolution"]["certificate"] = {"ok": False}
    refused(state_in(State.HALTED), signed(payload), "no-quorum")
    with pytest.raises(LocalProtocolError) as info:
        apply(
            state_in(State.HALTED), signed(unsigned(State.HALTED, State.ACTIVE, method="quorum")), REGISTERED
        )
    assert info.value.reason == "no-quorum-verifier"


def test_a_resolved_fork_cannot_halt_the_corridor_again() -> None:
    """The same evidence once a resolution settled it is refused; other evidence still halts."""
    halted = apply(state_in(State.ACTIVE), signed(unsigned(State.ACTIVE, State.HALTED)), REGISTERED, **HOOKS)
    assert halted.state == State.HALTED and halted.halt_evidence == EVIDENCE["digest_sha256"]
    resumed = apply(halted, signed(unsigned(State.HALTED, State.ACTIVE)), REGISTERED, **HOOKS)
    assert resumed.state == State.ACTIVE and resumed.settled_evidence == {EVIDENCE["digest_sha256"]}
    again = signed(unsigned(State.ACTIVE, State.HALTED, reason="the same fork again"))
    error = refused(resumed, again, "evidence-settled", **HOOKS)
    assert error.details["digest"] == EVIDENCE["digest_sha256"]
    other = unsigned(State.ACTIVE, State.HALTED, reason="another fork")
    body = {"type": "log-equivocation", "a": "receipt-3", "b": "receipt-4"}
    other["evidence"] = {"type": "log-equivocation", "body": body,
                         "digest_sha256": hashlib.sha256(canonical(body)).hexdigest()}  # fmt: skip
    assert apply(resumed, signed(other), REGISTERED, **HOOKS).state == State.HALTED


def test_two_party_resolution_needs_both() -> None:
    payload = sign(unsigned(State.HALTED, State.ACTIVE), {"PAK": KEYS["PAK"]})
    error = refused(state_in(State.HALTED), payload, "missing-signature")
    assert error.details["missing"] == ["KSA"]


def test_signature_is_over_the_domain_and_the_digest_without_signatures() -> None:
    payload = signed(unsigned(State.ACTIVE, State.DEPRECATED))
    unsigned_part = {k: v for k, v in payload.items() if k != "signatures"}
    digest = hashlib.sha256(canonical(unsigned_part)).digest()
    assert signing_digest(payload) == digest
    for entry in payload["signatures"]:
        raw = base64.urlsafe_b64decode(entry["signature"] + "==")
        assert REGISTERED[entry["party"]].verify(SIGNATURE_DOMAIN + digest, raw)
        assert entry["verificationMethod"] == REGISTERED[entry["party"]].verification_method


def test_bad_corridor_id_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        CorridorState(corridor_id="PAK-PAK")


# --- the receipt layer ------------------------------------------------------------------------


def test_lifecycle_is_a_receipt_kind_whose_payload_is_schema_checked() -> None:
    assert "lifecycle" in KNOWN_KINDS
    key = KEYS["PAK"]
    common: dict[str, Any] = {
        "key": key, "corridor_id": CORRIDOR, "sequence": 0, "timestamp": "2026-11-27T10:00:00Z",
        "prev_root": genesis_root(CORRIDOR, key.name), "kind": "lifecycle",
    }  # fmt: skip
    payload = signed(unsigned(State.DRAFT, State.PENDING))
    receipt = build_receipt(payload=payload, **common)
    assert apply(CorridorState(corridor_id=CORRIDOR), receipt.payload, REGISTERED).state == State.PENDING
    with pytest.raises(PeerProtocolError) as info:
        build_receipt(payload={**payload, "to": "LIMBO"}, **common)
    assert info.value.reason == "schema-violation"


def test_check_payload_as_the_receipt_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook proposed for protocol/receipts.py: ``"lifecycle": check_payload`` in _PAYLOAD_RULES."""
    monkeypatch.setitem(receipts._PAYLOAD_RULES, "lifecycle", check_payload)
    key = KEYS["PAK"]
    common: dict[str, Any] = {
        "key": key, "corridor_id": CORRIDOR, "sequence": 0, "timestamp": "2026-11-27T10:00:00Z",
        "prev_root": genesis_root(CORRIDOR, key.name), "kind": "lifecycle",
    }  # fmt: skip
    build_receipt(payload=signed(unsigned(State.DRAFT, State.PENDING)), **common)
    with pytest.raises(PeerProtocolError) as info:
        build_receipt(payload=sign(unsigned(State.DRAFT, State.PENDING), {"PAK": key}), **common)
    assert info.value.reason == "missing-signature"


def test_check_payload_is_the_stateless_rule() -> None:
    check_payload("lifecycle", signed(unsigned(State.DRAFT, State.PENDING)))
    with pytest.raises(PeerProtocolError) as info:
        check_payload("lifecycle", sign(unsigned(State.DRAFT, State.PENDING), {"PAK": KEYS["PAK"]}))
    assert info.value.reason == "missing-signature"


# --- allowed kinds ---------------------------------------------------------------------------


def test_allowed_kinds_table() -> None:
    for state in State:
        assert "lifecycle" in allowed_kinds(state)
        assert ("transfer" in allowed_kinds(state)) == (state == State.ACTIVE)
        assert ("settlement" in allowed_kinds(state)) == (state == State.ACTIVE)
    assert allowed_kinds(State.ACTIVE) >= KNOWN_KINDS
    assert {s for s in State if "ack" in allowed_kinds(s)} == {
        State.PENDING, State.ACTIVE, State.SUSPENDED, State.DEPRECATED,
    }  # fmt: skip
    assert allowed_kinds(State.DRAFT) == {"lifecycle"}
    assert allowed_kinds(State.HALTED) == {"lifecycle", "watcher.slash"}
    assert "watcher.bond" not in allowed_kinds(State.DEPRECATED)


def test_diagram_is_generated_from_the_table() -> None:
    text = mermaid()
    for source, target in TRANSITIONS:
        assert f"{source} --> {target}" in text


# --- fold -------------------------------------------------------------------------------------

STORY = [
    unsigned(State.DRAFT, State.PENDING),
    unsigned(State.PENDING, State.ACTIVE),
    unsigned(State.ACTIVE, State.SUSPENDED, authority="KSA"),
    unsigned(State.SUSPENDED, State.ACTIVE, authority="KSA"),
    unsigned(State.ACTIVE, State.HALTED),
    unsigned(State.HALTED, State.ACTIVE, method="quorum"),
    unsigned(State.ACTIVE, State.SUSPENDED),
    unsigned(State.SUSPENDED, State.DEPRECATED),
]


def test_fold_derives_state_and_history() -> None:
    payloads = [signed(p) for p in STORY]
    result = fold(CORRIDOR, payloads, REGISTERED, **HOOKS)
    assert result.state == CorridorState(
        corridor_id=CORRIDOR, state=State.DEPRECATED, definition_digest=DEF_HEX, suspended_by="PAK",
        settled_evidence=frozenset({EVIDENCE["digest_sha256"]}),  # the story's halt was resolved
    )  # fmt: skip
    assert [(t.from_state, t.to_state) for t in result.history] == [
        (State(p["from"]), State(p["to"])) for p in STORY
    ]
    assert [t.index for t in result.history] == list(range(len(STORY)))
    assert result.history[0].signers == ("KSA", "PAK")
    assert result.history[2].signers == ("KSA",)
    assert result.history[4].signers == ("KSA",)
    assert result.history[0].digest == signing_digest(payloads[0]).hex()
    assert fold(CORRIDOR, [], REGISTERED).state == CorridorState(corridor_id=CORRIDOR)


def test_fold_names_the_first_bad_payload() -> None:
    payloads = [signed(p) for p in STORY]
    payloads[3] = signed(unsigned(State.SUSPENDED, State.ACTIVE, authority="PAK"))
    with pytest.raises(PeerProtocolError) as info:
        fold(CORRIDOR, payloads, REGISTERED, **HOOKS)
    assert info.value.reason == "wrong-authority"
    assert info.value.details["index"] == 3


# --- property: random sequences stay inside the table -----------------------------------------

STEP = st.tuples(
    st.sampled_from(list(State)),  # target
    st.sampled_from(["good", "stranger", "unsigned", "forged"]),
    st.sampled_from(["PAK", "KSA"]),  # authority
    st.sampled_from(["two-party", "quorum"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_random_sequences_never_leave_the_table(steps: list[tuple[State, str, str, str]]) -> None:
    current = CorridorState(corridor_id=CORRIDOR)
    seen_deprecated = False
    for target, signing, authority, method in steps:
        payload = unsigned(current.state, target, authority=authority, method=method)
        if signing == "good":
            payload = sign(payload, KEYS)
        elif signing == "stranger":
            payload = sign(payload, {"PAK": STRANGER, "KSA": KEYS["KSA"]})
        elif signing == "forged":
            payload = sign(payload, KEYS)
            payload["signatures"][0]["signature"] = "A" * 86
        expected = (
            (current.state, target) in TRANSITIONS
            and signing == "good"
            and not (
                current.state == State.SUSPENDED
                and target == State.ACTIVE
                and authority != current.suspended_by
            )
        )
        before = current
        try:
            current = apply(current, payload, REGISTERED, **HOOKS)
        except PeerProtocolError:
            assert current == before
            assert not expected, (before, payload)
        else:
            assert expected, (before, payload)
            assert (before.state, current.state) in TRANSITIONS
        assert current.state in set(State)
        if seen_deprecated:
            assert current.state == State.DEPRECATED
        seen_deprecated = current.state == State.DEPRECATED


# --- both logs of a corridor ------------------------------------------------------------------


def _activation() -> list[dict[str, Any]]:
    return [signed(unsigned(State.DRAFT, State.PENDING)), signed(unsigned(State.PENDING, State.ACTIVE))]


def test_merge_reads_one_transition_recorded_in_both_logs_once() -> None:
    steps = _activation()
    for logs in ([steps, steps], [steps, []], [[], steps], [steps[:1], steps]):
        merged = merge(CORRIDOR, logs, REGISTERED)
        assert merged.lifecycle.state.state == State.ACTIVE
        assert [t.to_state for t in merged.lifecycle.history] == [State.PENDING, State.ACTIVE]
        assert merged.rejected == () and merged.waiting == (0, 0)


def test_merge_interleaves_the_logs_whatever_the_order() -> None:
    """PENDING->ACTIVE in one log, then a suspension in the other: both orders of the logs agree."""
    first, second = _activation()
    suspend = signed(unsigned(State.ACTIVE, State.SUSPENDED, authority="KSA"))
    resume = signed(unsigned(State.SUSPENDED, State.ACTIVE, authority="KSA"))
    a, b = [first, second, resume], [suspend]
    for logs in ([a, b], [b, a]):
        merged = merge(CORRIDOR, logs, REGISTERED)
        assert [t.to_state for t in merged.lifecycle.history] == [
            State.PENDING, State.ACTIVE, State.SUSPENDED, State.ACTIVE,
        ]  # fmt: skip
    # Without the suspension the resumption waits; nothing is rejected.
    merged = merge(CORRIDOR, [a, []], REGISTERED)
    assert merged.lifecycle.state.state == State.ACTIVE and merged.waiting == (1, 0)


def test_merge_rejects_a_forged_payload_and_goes_on() -> None:
    first, second = _activation()
    forged = copy.deepcopy(second)
    forged["signatures"][0]["signature"] = forged["signatures"][1]["signature"]
    stranger = sign(unsigned(State.PENDING, State.ACTIVE), {"PAK": STRANGER, "KSA": KEYS["KSA"]})
    merged = merge(CORRIDOR, [[first, forged, stranger, second], []], REGISTERED)
    assert merged.lifecycle.state.state == State.ACTIVE
    assert [(r.position, r.reason) for r in merged.rejected] == [(1, "bad-signature"), (2, "unknown-signer")]


def test_merge_refuses_another_corridors_payload() -> None:
    other = sign(unsigned(State.DRAFT, State.PENDING, corridor="PAK-UAE"), UAE_KEYS)
    merged = merge(CORRIDOR, [[other], []], REGISTERED)
    assert merged.lifecycle.state.state == State.DRAFT
    assert [r.reason for r in merged.rejected] == ["wrong-corridor"]
