"""Receipts (design §4): digests recomputed with the rfc8785 reference, near misses refused by reason."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import PeerProtocolError
from protocol.keys import SigningKey
from protocol.receipts import (
    MAX_RECEIPT_BYTES,
    SIGNATURE_DOMAIN,
    Receipt,
    build_receipt,
    check_chain,
    genesis_root,
    payload_digest,
    verify_receipt,
)
from protocol.schemas import load_schema

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KEY = SigningKey(ORIGIN, bytes(range(32)))
OTHER = SigningKey(ORIGIN, bytes(range(1, 33)))
TRANSFER = {
    "transfer_id": "PK-SA-000001",
    "sender": {"entity_id": "pk-entity-1", "jurisdiction": "PAK"},
    "receiver": {"entity_id": "sa-entity-9", "jurisdiction": "SAU"},
    "currency": "PKR",
    "amount": "123456789012345678901234567890",
}


def make(
    sequence: int = 0, payload: dict[str, Any] | None = None, kind: str = "transfer", **kw: Any
) -> Receipt:
    return build_receipt(
        key=kw.pop("key", KEY),
        corridor_id=kw.pop("corridor_id", "PAK-KSA"),
        sequence=sequence,
        timestamp=kw.pop("timestamp", "2026-11-27T10:00:00Z"),
        prev_root=kw.pop("prev_root", genesis_root("PAK-KSA", ORIGIN)),
        kind=kind,
        payload=payload if payload is not None else TRANSFER,
        **kw,
    )


def reference_next_root(body: dict[str, Any]) -> bytes:
    """design §4, straight from the text, with the rfc8785 package."""
    stripped = {k: v for k, v in body.items() if k not in ("proof", "next_root")}
    return hashlib.sha256(rfc8785.dumps(stripped)).digest()


def resign(body: dict[str, Any], key: SigningKey = KEY) -> bytes:
    """Recompute digests and the signature after a mutation, so only the mutated rule can fail."""
    body["transition"]["payload_sha256"] = hashlib.sha256(
        rfc8785.dumps(body["transition"]["payload"])
    ).hexdigest()
    next_root = reference_next_root(body)
    body["next_root"] = next_root.hex()
    sig = key.sign(SIGNATURE_DOMAIN + next_root)
    body["proof"]["signature"] = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    return rfc8785.dumps(body)


def test_genesis_root_follows_design() -> None:
    expected = hashlib.sha256(
        rfc8785.dumps({"tag": "sez.genesis/v1", "corridor_id": "PAK-KSA", "origin": ORIGIN})
    ).digest()
    assert genesis_root("PAK-KSA", ORIGIN) == expected
    assert genesis_root("PAK-UAE", ORIGIN) != expected


def test_built_receipt_matches_the_reference_rules() -> None:
    receipt = make()
    body = json.loads(receipt.raw)
    assert receipt.raw == rfc8785.dumps(body)
    assert receipt.next_root == reference_next_root(body)
    assert body["transition"]["payload_sha256"] == hashlib.sha256(rfc8785.dumps(TRANSFER)).hexdigest()
    assert payload_digest(TRANSFER).hex() == body["transition"]["payload_sha256"]
    assert body["proof"]["verificationMethod"] == KEY.verifier().verification_method
    sig = base64.urlsafe_b64decode(body["proof"]["signature"] + "==")
    assert KEY.verifier().verify(SIGNATURE_DOMAIN + receipt.next_root, sig)
    again = Receipt.from_bytes(receipt.raw)
    assert again == receipt
    assert verify_receipt(again, KEY.verifier()).receipt is again


def test_non_ascii_payload_round_trips() -> None:
    payload = dict(TRANSFER, reference='تحويل 上海 \U0001f600 "quoted" \\ back')
    receipt = make(payload=payload)
    assert not receipt.raw.isascii()
    assert Receipt.from_bytes(receipt.raw).next_root == reference_next_root(json.loads(receipt.raw))


ADVERSARIAL = st.lists(
    st.sampled_from([*'abc"\\,:{}[]', '"next_root":"', ',"proof":{', "\u00e9", "\U0001f600", "\n"]),
    max_size=20,
).map("".join)


@settings(max_examples=300)
@given(subject=ADVERSARIAL, sequence=st.integers(min_value=0, max_value=2**53 - 1))
def test_next_root_cut_from_bytes_equals_reference(subject: str, sequence: int) -> None:
    """The hot path cuts next_root and proof out of the canonical bytes; the reference re-serializes."""
    payload = {"subject": subject or "s", "attestation_type": "licence", "digest_sha256": "ab" * 32}
    receipt = make(sequence, payload, kind="attestation")
    assert receipt.next_root == reference_next_root(json.loads(receipt.raw))
    assert Receipt.from_bytes(receipt.raw).next_root == receipt.next_root


def test_next_root_lookalike_member_in_payload_does_not_fool_the_cut() -> None:
    base = make()
    sneaky = {
        "subject": f',"next_root":"{base.next_root.hex()}"',
        "attestation_type": "x",
        "digest_sha256": "0" * 64,
    }
    receipt = make(payload=sneaky, kind="attestation")
    assert receipt.next_root == reference_next_root(json.loads(receipt.raw))


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for name in parents:
            target = target[name]
        target[last] = value

    mutate.path = path  # type: ignore[attr-defined]
    return mutate


def _delete(path: str) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = body
        for name in parents:
            target = target[name]
        del target[last]

    mutate.path = path  # type: ignore[attr-defined]
    return mutate


# Each row changes one thing, re-signs so that only that rule can fail, and names the reason expected.
NEAR_MISSES: list[tuple[str, Mutation, str]] = [
    ("type", _set("type", "sez.receipt/v2"), "schema-violation"),
    ("digest algorithm", _set("digest_algorithm", "sha3-256"), "schema-violation"),
    ("corridor id lowercase", _set("corridor_id", "pak-ksa"), "schema-violation"),
    ("origin with a space", _set("origin", "sez.gov.pk/corridor PAK"), "schema-violation"),
    ("origin with a plus", _set("origin", "sez.gov.pk+x"), "schema-violation"),
    ("negative sequence", _set("sequence", -1), "schema-violation"),
    ("sequence as string", _set("sequence", "1"), "schema-violation"),
    ("sequence as bool", _set("sequence", True), "schema-violation"),
    ("timestamp without Z", _set("timestamp", "2026-11-27T10:00:00"), "schema-violation"),
    ("timestamp month 13", _set("timestamp", "2026-13-27T10:00:00Z"), "schema-violation"),
    ("timestamp Feb 30", _set("timestamp", "2026-02-30T10:00:00Z"), "bad-timestamp"),
    ("prev_root uppercase", _set("prev_root", "AB" * 32), "schema-violation"),
    ("prev_root short", _set("prev_root", "ab" * 31), "schema-violation"),
    ("extra top-level field", _set("note", "x"), "schema-violation"),
    ("missing lawpack set", _delete("lawpack_digest_set"), "schema-violation"),
    ("unsorted digest set", _set("lawpack_digest_set", ["bb" * 32, "aa" * 32]), "unsorted-digest-set"),
    ("duplicate digests", _set("ruleset_digest_set", ["aa" * 32, "aa" * 32]), "schema-violation"),
    ("bad digest in set", _set("ruleset_digest_set", ["xyz"]), "schema-violation"),
    ("unknown kind", _set("transition.kind", "teleport"), "unknown-kind"),
    ("kind with capitals", _set("transition.kind", "Transfer"), "schema-violation"),
    ("extra transition field", _set("transition.memo", "x"), "schema-violation"),
    ("payload not an object", _set("transition.payload", ["x"]), "schema-violation"),
    ("negative amount", _set("transition.payload.amount", "-5"), "schema-violation"),
    ("amount with leading zero", _set("transition.payload.amount", "05"), "schema-violation"),
    ("amount as number", _set("transition.payload.amount", 5), "schema-violation"),
    ("currency lowercase", _set("transition.payload.currency", "pkr"), "schema-violation"),
    ("extra payload field", _set("transition.payload.memo", "x"), "schema-violation"),
    ("missing payload field", _delete("transition.payload.receiver"), "schema-violation"),
    ("sender without jurisdiction", _delete("transition.payload.sender.jurisdiction"), "schema-violation"),
    ("proof type", _set("proof.type", "sez.ecdsa/v1"), "schema-violation"),
    (
        "verification method not did:key",
        _set("proof.verificationMethod", "did:web:sez.gov.pk"),
        "schema-violation",
    ),
    ("extra proof field", _set("proof.created", "x"), "schema-violation"),
]


@pytest.mark.parametrize(("name", "mutate", "reason"), NEAR_MISSES, ids=[row[0] for row in NEAR_MISSES])
def test_near_miss_is_refused_with_its_reason(name: str, mutate: Mutation, reason: str) -> None:
    body = json.loads(make().raw)
    mutate(body)
    data = resign(body)
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(data)
    assert info.value.reason == reason, info.value.message


PAYLOAD_PREFIX = "transition.payload."


@pytest.mark.parametrize(("name", "mutate", "reason"), NEAR_MISSES, ids=[row[0] for row in NEAR_MISSES])
def test_schema_files_decide_like_the_code(name: str, mutate: Mutation, reason: str) -> None:
    """schemas/receipt.json and payload.<kind>.json, under the jsonschema reference validator, refuse
    exactly the rows the code refuses as schema-violation (the hand-written envelope check and the
    compiled payload schema); rules JSON Schema cannot state (sorted sets, real dates, known kinds)
    are the code's alone."""
    body = json.loads(make().raw)
    receipt_schema = jsonschema.Draft202012Validator(load_schema("receipt"))
    payload_schema = jsonschema.Draft202012Validator(load_schema("payload.transfer"))
    assert receipt_schema.is_valid(body) and payload_schema.is_valid(body["transition"]["payload"])
    mutate(body)
    resign(body)
    in_payload = getattr(mutate, "path", "").startswith(PAYLOAD_PREFIX)
    valid = receipt_schema.is_valid(body) and (
        not in_payload or payload_schema.is_valid(body["transition"]["payload"])
    )
    assert valid == (reason != "schema-violation")


def test_tampered_digests_and_signatures_are_refused() -> None:
    receipt = make()
    body = json.loads(receipt.raw)

    wrong_payload_digest = copy.deepcopy(body)
    wrong_payload_digest["transition"]["payload_sha256"] = "00" * 32
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(rfc8785.dumps(wrong_payload_digest))
    assert info.value.reason == "payload-digest-mismatch"

    wrong_next_root = copy.deepcopy(body)
    wrong_next_root["next_root"] = "00" * 32
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(rfc8785.dumps(wrong_next_root))
    assert info.value.reason == "next-root-mismatch"

    changed_amount = copy.deepcopy(body)
    changed_amount["transition"]["payload"]["amount"] = "1"
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(rfc8785.dumps(changed_amount))
    assert info.value.reason == "payload-digest-mismatch"

    flipped = copy.deepcopy(body)
    sig = bytearray(base64.urlsafe_b64decode(flipped["proof"]["signature"] + "=="))
    sig[10] ^= 1
    flipped["proof"]["signature"] = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    parsed = Receipt.from_bytes(rfc8785.dumps(flipped))  # well formed: the signature is not yet checked
    with pytest.raises(PeerProtocolError) as info:
        verify_receipt(parsed, KEY.verifier())
    assert info.value.reason == "bad-signature"


def test_signature_by_another_key_is_refused() -> None:
    forged = make(key=OTHER)  # same origin name, different key: a key swap
    with pytest.raises(PeerProtocolError) as info:
        verify_receipt(forged, KEY.verifier())
    assert info.value.reason == "wrong-key"

    body = json.loads(forged.raw)
    body["proof"]["verificationMethod"] = KEY.verifier().verification_method  # claim the right key
    resign(body, OTHER)
    claimed = Receipt.from_bytes(rfc8785.dumps(body))
    with pytest.raises(PeerProtocolError) as info:
        verify_receipt(claimed, KEY.verifier())
    assert info.value.reason == "bad-signature"


def test_receipt_of_another_origin_is_refused() -> None:
    other_origin = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(32)))
    receipt = make(key=other_origin)
    with pytest.raises(PeerProtocolError) as info:
        verify_receipt(receipt, KEY.verifier())
    assert info.value.reason == "wrong-origin"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad-json"),
        (b"[]", "schema-violation"),
        (b'"receipt"', "schema-violation"),
        (b"\x00\x01garbage", "bad-json"),
        (b'{"a":' + b" " * MAX_RECEIPT_BYTES + b"1}", "too-large"),
        (b'{"sequence":1.5}', "float-refused"),
    ],
)
def test_garbage_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(data)
    assert info.value.reason == reason


def test_non_canonical_bytes_are_refused_even_when_valid() -> None:
    receipt = make()
    pretty = json.dumps(json.loads(receipt.raw), indent=1).encode()
    with pytest.raises(PeerProtocolError) as info:
        Receipt.from_bytes(pretty)
    assert info.value.reason == "non-canonical-json"


def test_check_chain() -> None:
    first = make(0)
    check_chain(first, sequence=0, prev_root=genesis_root("PAK-KSA", ORIGIN), corridor_id="PAK-KSA")
    second = make(1, prev_root=first.next_root)
    check_chain(second, sequence=1, prev_root=first.next_root, corridor_id="PAK-KSA")
    cases = [
        (dict(sequence=2, prev_root=first.next_root, corridor_id="PAK-KSA"), "seq-gap"),
        (dict(sequence=0, prev_root=first.next_root, corridor_id="PAK-KSA"), "seq-gap"),
        (dict(sequence=1, prev_root=second.next_root, corridor_id="PAK-KSA"), "prev-root-mismatch"),
        (dict(sequence=1, prev_root=first.next_root, corridor_id="PAK-UAE"), "wrong-corridor"),
    ]
    for kwargs, reason in cases:
        with pytest.raises(PeerProtocolError) as info:
            check_chain(second, **kwargs)
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("transfer", dict(TRANSFER, amount=1.5), "float-refused"),
        ("transfer", dict(TRANSFER, amount="-1"), "schema-violation"),
        ("transfer", {"transfer_id": "x"}, "schema-violation"),
        ("ack", {"origin": "sez.gov.sa/corridor/PAK-KSA", "size": 0, "root": "00" * 32}, "schema-violation"),
        ("teleport", {}, "unknown-kind"),
    ],
)
def test_build_refuses_invalid_transitions(kind: str, payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PeerProtocolError) as info:
        make(payload=payload, kind=kind)
    assert info.value.reason == reason


def test_build_sorts_and_dedups_digest_sets() -> None:
    receipt = make(lawpack_digest_set=["bb" * 32, "aa" * 32, "bb" * 32])
    assert receipt.body["lawpack_digest_set"] == ["aa" * 32, "bb" * 32]


def test_every_kind_with_a_schema_builds() -> None:
    ack = make(kind="ack", payload={"origin": "sez.gov.sa/corridor/PAK-KSA", "size": 10, "root": "ab" * 32})
    att = make(
        kind="attestation",
        payload={"subject": "x", "attestation_type": "licence", "digest_sha256": "cd" * 32},
    )
    assert {ack.kind, att.kind} == {"ack", "attestation"}
