"""Shipped corridor definitions and the devnet description: schema-valid, consistent, refused corrupted."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import rfc8785

from protocol.errors import PeerProtocolError
from protocol.lifecycle import ISO3166, check_definition, definition_digest
from protocol.schemas import load_schema, validate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CORRIDOR_FILES = sorted((CONFIGS / "corridors").glob("*.json"))
CORRIDOR_IDS = [path.stem for path in CORRIDOR_FILES]


def load(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return value


DEVNET = load(CONFIGS / "devnet.json")
HOSTS = {j["code"]: j["host"] for j in DEVNET["jurisdictions"]}
CURRENCIES = {j["code"]: j["currency"] for j in DEVNET["jurisdictions"]}


def schema_errors(schema: str, value: Any) -> list[str]:
    """JSON paths of every error jsonschema's 2020-12 validator reports."""
    validator = jsonschema.Draft202012Validator(load_schema(schema))
    return sorted(error.json_path for error in validator.iter_errors(value))


def test_the_three_corridors_ship() -> None:
    assert CORRIDOR_IDS == ["PAK-CHN", "PAK-KSA", "PAK-UAE"]


@pytest.mark.parametrize("path", CORRIDOR_FILES, ids=CORRIDOR_IDS)
def test_corridor_validates_and_is_consistent(path: Path) -> None:
    definition = load(path)
    jsonschema.Draft202012Validator.check_schema(load_schema("corridor"))
    jsonschema.Draft202012Validator(load_schema("corridor")).validate(definition)
    check_definition(definition)  # the runtime validator and the consistency rules
    corridor_id = definition["id"]
    assert corridor_id == path.stem
    first, second = (party["jurisdiction"] for party in definition["parties"])
    assert (first, corridor_id) == ("PAK", f"PAK-{second}")
    for party in definition["parties"]:
        code = party["jurisdiction"]
        assert party["iso3166"] == ISO3166[code]
        assert party["origin"] == f"{HOSTS[code]}/corridor/{corridor_id}"
    assert definition["settlement"]["currencies"] == ["PKR", CURRENCIES[second], "USD"]
    policy = definition["policy"]
    assert policy["quorum"] == "2/3"
    assert policy["penalties"] == {
        "equivocation_percent": 100, "rollback_percent": 50, "whistleblower_fraction": "1/64",
        "liveness_percent": 1,
    }  # fmt: skip
    assert policy["min_watchers"] <= DEVNET["watchers"]["count"]
    assert definition["anchoring"]["enabled"] is False


def test_devnet_validates_and_names_every_corridor() -> None:
    jsonschema.Draft202012Validator(load_schema("devnet")).validate(DEVNET)
    validate("devnet", DEVNET)
    assert DEVNET["watchers"]["count"] == 4
    assert load_schema("devnet")["properties"]["watchers"]["properties"]["count"]["default"] == 4
    assert [j["code"] for j in DEVNET["jurisdictions"]] == ["PAK", "KSA", "UAE", "CHN"]
    assert CURRENCIES == {"PAK": "PKR", "KSA": "SAR", "UAE": "AED", "CHN": "CNY"}
    for jurisdiction in DEVNET["jurisdictions"]:
        assert jurisdiction["iso3166"] == ISO3166[jurisdiction["code"]]
    assert sorted(c["id"] for c in DEVNET["corridors"]) == CORRIDOR_IDS
    for corridor in DEVNET["corridors"]:
        definition = load(CONFIGS / corridor["definition"])
        assert definition["id"] == corridor["id"]
        assert {p["jurisdiction"] for p in definition["parties"]} <= set(HOSTS)


def test_definition_digest_is_sha256_of_jcs() -> None:
    definition = load(CONFIGS / "corridors" / "PAK-KSA.json")
    digest = definition_digest(definition)
    assert digest == hashlib.sha256(rfc8785.dumps(definition)).digest()
    assert definition_digest(dict(reversed(list(definition.items())))) == digest  # key order is irrelevant
    other = copy.deepcopy(definition)
    other["policy"]["min_watchers"] += 1
    assert definition_digest(other) != digest
    assert len({definition_digest(load(path)) for path in CORRIDOR_FILES}) == 3


def _set(value: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    corrupted = copy.deepcopy(value)
    target = corrupted
    for step in path[:-1]:
        target = target[step]
    if new is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return corrupted


_DELETE = object()

# (description, path to change, new value, jsonschema's path, the runtime validator's path)
SCHEMA_CORRUPTIONS = [
    ("quorum as words", ("policy", "quorum"), "two thirds", "$.policy.quorum", "data.policy.quorum"),
    ("quorum as a float", ("policy", "quorum"), 0.66, "$.policy.quorum", "data.policy.quorum"),
    ("unknown ISO code", ("parties", 1, "iso3166"), "XXX", "$.parties[1].iso3166", "data.parties[1].iso3166"),
    ("penalty over 100 %", ("policy", "penalties", "equivocation_percent"), 101,
     "$.policy.penalties.equivocation_percent", "data.policy.penalties.equivocation_percent"),
    ("lowercase currency", ("settlement", "currencies", 0), "pkr",
     "$.settlement.currencies[0]", "data.settlement.currencies[0]"),
    ("extra anchoring key", ("anchoring", "rpc"), "http://x", "$.anchoring", "data.anchoring"),
    ("anchoring enabled as a string", ("anchoring", "enabled"), "no", "$.anchoring.enabled",
     "data.anchoring.enabled"),
    ("missing unbonding period", ("policy", "unbonding_period_seconds"), _DELETE, "$.policy", "data.policy"),
    ("space in an origin", ("parties", 0, "origin"), "sez.gov.pk/corridor/PAK KSA", "$.parties[0].origin",
     "data.parties[0].origin"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desc", "path", "new", "json_path", "data_path"),
    SCHEMA_CORRUPTIONS,
    ids=[c[0] for c in SCHEMA_CORRUPTIONS],
)
def test_corrupted_corridor_is_refused_with_the_path(
    desc: str, path: tuple[Any, ...], new: Any, json_path: str, data_path: str
) -> None:
    corrupted = _set(load(CONFIGS / "corridors" / "PAK-KSA.json"), path, new)
    assert schema_errors("corridor", corrupted) == [json_path]
    with pytest.raises(PeerProtocolError) as info:
        check_definition(corrupted)
    assert info.value.reason == "schema-violation"
    assert info.value.details["path"] == data_path


CONSISTENCY_CORRUPTIONS = [
    ("id names other parties", ("id",), "PAK-UAE", "data.id"),
    ("parties in the wrong order", ("id",), "KSA-PAK", "data.id"),
    ("ISO code of another jurisdiction", ("parties", 1, "iso3166"), "ARE", "data.parties[1].iso3166"),
    ("origin of another corridor", ("parties", 1, "origin"), "sez.gov.sa/corridor/PAK-UAE",
     "data.parties[1].origin"),
    ("origin without a host", ("parties", 0, "origin"), "/corridor/PAK-KSA", "data.parties[0].origin"),
    ("one origin for both", ("parties", 1, "origin"), "sez.gov.pk/corridor/PAK-KSA",
     "data.parties[1].origin"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desc", "path", "new", "data_path"), CONSISTENCY_CORRUPTIONS, ids=[c[0] for c in CONSISTENCY_CORRUPTIONS]
)
def test_inconsistent_corridor_is_refused_with_the_path(
    desc: str, path: tuple[Any, ...], new: Any, data_path: str
) -> None:
    corrupted = _set(load(CONFIGS / "corridors" / "PAK-KSA.json"), path, new)
    assert schema_errors("corridor", corrupted) == []  # schema-valid: only the consistency rules catch it
    with pytest.raises(PeerProtocolError) as info:
        check_definition(corrupted)
    assert info.value.reason == "inconsistent-definition"
    assert info.value.details["path"] == data_path


def test_same_party_twice_is_refused() -> None:
    definition = load(CONFIGS / "corridors" / "PAK-KSA.json")
    definition["parties"][1] = dict(definition["parties"][0])
    definition["id"] = "PAK-PAK"
    with pytest.raises(PeerProtocolError) as info:
        check_definition(definition)
    assert (info.value.reason, info.value.details["path"]) == ("inconsistent-definition", "data.id")


@pytest.mark.parametrize(
    ("path", "new", "json_path"),
    [
        (("watchers", "count"), 0, "$.watchers.count"),
        (("jurisdictions", 1, "iso3166"), "KSA", "$.jurisdictions[1].iso3166"),
        (("corridors", 0, "definition"), "/etc/passwd", "$.corridors[0].definition"),
        (("network",), {}, "$"),
    ],
)
def test_corrupted_devnet_is_refused_with_the_path(path: tuple[Any, ...], new: Any, json_path: str) -> None:
    corrupted = _set(DEVNET, path, new)
    assert schema_errors("devnet", corrupted) == [json_path]
    with pytest.raises(PeerProtocolError) as info:
        validate("devnet", corrupted)
    assert info.value.reason == "schema-violation"
    assert info.value.details["path"] == "data" + json_path[1:]
