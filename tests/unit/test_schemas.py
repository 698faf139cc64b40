"""JSON Schemas: valid 2020-12 documents, and the compiled runtime validator agrees with jsonschema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.schemas import load_schema, schema_names, validate


def test_expected_schemas_are_bundled() -> None:
    assert {"receipt", "payload.transfer", "payload.ack", "payload.attestation"} <= set(schema_names())


@pytest.mark.parametrize("name", schema_names())
def test_schema_is_valid_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("additionalProperties") is False


def test_unknown_schema() -> None:
    with pytest.raises(LocalProtocolError) as info:
        validate("payload.teleport", {})
    assert info.value.reason == "unknown-schema"


def test_violation_names_the_path() -> None:
    with pytest.raises(PeerProtocolError) as info:
        validate("payload.ack", {"origin": "o", "size": "1", "root": "00" * 32})
    assert info.value.reason == "schema-violation"
    assert info.value.details["path"] == "data.size"


# Values near the schemas' edges: right and wrong types, patterns with and without their anchors' content.
STRINGS = st.sampled_from(
    [
        "",
        "a",
        "PKR",
        "pkr",
        "PKRR",
        "0",
        "5",
        "05",
        "-5",
        "123456789012345678901234567890",
        "x" * 300,
        "ab" * 32,
        "AB" * 32,
        "licence",
        "Licence",
        "sez.gov.sa/corridor/PAK-KSA",
        "with space",
        "a+b",
        "SAU",
    ]
)
LEAVES = st.one_of(STRINGS, st.integers(min_value=-3, max_value=2**53), st.booleans(), st.none())
PARTY = (
    st.fixed_dictionaries({"entity_id": STRINGS, "jurisdiction": STRINGS}, optional={"extra": LEAVES})
    | LEAVES
)
FIELDS = {
    "payload.transfer": st.fixed_dictionaries(
        {},
        optional={
            "transfer_id": STRINGS,
            "sender": PARTY,
            "receiver": PARTY,
            "currency": STRINGS,
            "amount": st.one_of(STRINGS, LEAVES),
            "reference": LEAVES,
            "memo": LEAVES,
        },
    ),
    "payload.ack": st.fixed_dictionaries(
        {}, optional={"origin": STRINGS, "size": LEAVES, "root": STRINGS, "memo": LEAVES}
    ),
    "payload.attestation": st.fixed_dictionaries(
        {},
        optional={"subject": STRINGS, "attestation_type": STRINGS, "digest_sha256": STRINGS, "memo": LEAVES},
    ),
}


def _agree(name: str, value: Any) -> None:
    reference = jsonschema.Draft202012Validator(load_schema(name)).is_valid(value)
    try:
        validate(name, value)
        compiled = True
    except PeerProtocolError:
        compiled = False
    assert compiled == reference, (name, value)


@settings(max_examples=400)
@given(st.sampled_from(sorted(FIELDS)).flatmap(lambda n: st.tuples(st.just(n), FIELDS[n])))
def test_compiled_validator_agrees_with_jsonschema(case: tuple[str, Any]) -> None:
    _agree(*case)


def test_trailing_newline_is_refused_by_the_runtime_validator() -> None:
    """JSON Schema patterns are ECMA-262: "$" does not match before a final newline. The runtime
    validator follows ECMA; jsonschema uses Python's re.search, where it would."""
    with pytest.raises(PeerProtocolError):
        validate(
            "payload.transfer",
            {
                "transfer_id": "t",
                "sender": {"entity_id": "a", "jurisdiction": "PAK"},
                "receiver": {"entity_id": "b", "jurisdiction": "SAU"},
                "currency": "PKR",
                "amount": "5\n",
            },
        )
