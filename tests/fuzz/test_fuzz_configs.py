"""Fuzzing the configuration loaders: node and watcher TOML, mutated as bytes and edited as values.

The property: :func:`load_config` returns a configuration or raises ``ConfigError`` (reason
``bad-config``, naming a field or the file): an operator's typo must never end in a traceback.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from node.config import ConfigError
from node.config import load_config as load_node_config
from node.config import write_initial_config as write_node_config
from protocol.keys import SigningKey
from tests.fuzz.mutations import FUZZ, json_edited, mutated, rejects_cleanly
from watcher.config import add_followed_log
from watcher.config import load_config as load_watcher_config
from watcher.config import write_initial_config as write_watcher_config

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PAK = SigningKey("sez.gov.pk/corridor/PAK-KSA", bytes(range(32)))
KSA = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(1, 33)))
PEER = "/ip4/127.0.0.1/tcp/7002/p2p/12D3KooWLsSWaRsoCejZ6RMsGqdftpKbohczNqs3jvNfPgRwrMp2"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid node folder (with a corridor definition) and a valid watcher folder following one log."""
    base = tmp_path_factory.mktemp("fuzz-configs")
    node = write_node_config(
        base / "node", jurisdiction="PAK", listen="/ip4/127.0.0.1/tcp/7001", http="127.0.0.1:8001",
        corridors=[{
            "id": "PAK-KSA", "origin": PAK.name, "counterparty_origin": KSA.name,
            "counterparty_vkey": KSA.verifier().to_vkey(), "peers": [PEER], "checkpoint_every": 50,
            "checkpoint_interval": 2, "definition": "PAK-KSA.json",
        }],
    )  # fmt: skip
    shutil.copy(ROOT / "configs" / "corridors" / "PAK-KSA.json", node.parent / "PAK-KSA.json")
    watcher = write_watcher_config(
        base / "watcher", "w1.example", "/ip4/127.0.0.1/tcp/7101", "127.0.0.1:8101"
    )
    add_followed_log(
        watcher, corridor="PAK-KSA", origin=PAK.name, vkey=PAK.verifier().to_vkey(), peers=[PEER]
    )
    load_node_config(node)
    load_watcher_config(watcher)
    return {"node": node, "watcher": watcher}


def _load(seed: Path, text: bytes, kind: str) -> Any:
    """Load ``text`` as a configuration beside ``seed`` (so its relative paths still resolve)."""
    target = seed.with_name(f"fuzzed-{kind}.toml")
    target.write_bytes(text)
    loader = load_node_config if kind == "node" else load_watcher_config
    config = rejects_cleanly(lambda: loader(target), ConfigError)
    return config


@FUZZ
@given(st.sampled_from(["node", "watcher"]), st.data())
def test_mutated_toml_loads_or_names_the_problem(
    folders: dict[str, Path], kind: str, data: st.DataObject
) -> None:
    seed = folders[kind]
    _load(seed, data.draw(mutated(seed.read_bytes())), kind)


@FUZZ
@given(st.sampled_from(["node", "watcher"]), st.data())
def test_edited_values_load_or_name_the_field(
    folders: dict[str, Path], kind: str, data: st.DataObject
) -> None:
    seed = folders[kind]
    edited = data.draw(json_edited(tomllib.loads(seed.read_text(encoding="utf-8")), max_edits=2))
    if not isinstance(edited, dict):
        return  # a TOML document is always a table
    try:
        text = tomli_w.dumps(edited).encode()
    except (TypeError, ValueError):  # not representable in TOML (a null somewhere)
        return
    config = _load(seed, text, kind)
    if config is not None:
        assert config.path.name == f"fuzzed-{kind}.toml"


@FUZZ
@given(st.data())
def test_edited_corridor_definitions_are_config_errors(folders: dict[str, Path], data: st.DataObject) -> None:
    seed = folders["node"]
    definition = json.loads((ROOT / "configs" / "corridors" / "PAK-KSA.json").read_text(encoding="utf-8"))
    edited = data.draw(json_edited(definition, max_edits=2))
    target = seed.with_name("fuzzed-definition.json")
    target.write_bytes(data.draw(mutated(json.dumps(edited).encode(), max_ops=1)))
    raw = tomllib.loads(seed.read_text(encoding="utf-8"))
    raw["corridors"][0]["definition"] = target.name
    _load(seed, tomli_w.dumps(raw).encode(), "node")


@pytest.mark.parametrize("kind", ["node", "watcher"])
def test_deeply_nested_toml_is_a_config_error(folders: dict[str, Path], kind: str) -> None:
    """tomllib recurses once per bracket: 100,000 of them used to escape as RecursionError."""
    seed = folders[kind]
    target = seed.with_name(f"deep-{kind}.toml")
    target.write_text("a = " + "[" * 100_000, encoding="utf-8")
    loader = load_node_config if kind == "node" else load_watcher_config
    with pytest.raises(ConfigError) as info:
        loader(target)
    assert str(target) in info.value.message


def test_a_deeply_nested_corridor_definition_is_a_config_error(folders: dict[str, Path]) -> None:
    seed = folders["node"]
    target = seed.with_name("deep-definition.json")
    target.write_text("[" * 100_000, encoding="utf-8")
    raw = tomllib.loads(seed.read_text(encoding="utf-8"))
    raw["corridors"][0]["definition"] = target.name
    config = seed.with_name("deep-definition.toml")
    config.write_text(tomli_w.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_node_config(config)
    assert info.value.where == "corridors[0].definition"


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("node", "data_dir"),
        ("node", "signing_key"),
        ("node", "identity_key"),
        ("node", "api_token_file"),
        ("watcher", "data_dir"),
        ("watcher", "signing_key"),
        ("watcher", "identity_key"),
    ],
)
def test_a_path_with_a_nul_character_is_a_config_error(folders: dict[str, Path], kind: str, key: str) -> None:
    """A TOML ``\\u0000`` escape in a path used to escape as ValueError from pathlib (found by the fuzzer)."""
    seed = folders[kind]
    raw = tomllib.loads(seed.read_text(encoding="utf-8"))
    raw[kind][key] = "\x00" + raw[kind][key]
    target = seed.with_name(f"nul-{kind}.toml")
    target.write_text(tomli_w.dumps(raw), encoding="utf-8")
    loader = load_node_config if kind == "node" else load_watcher_config
    with pytest.raises(ConfigError) as info:
        loader(target)
    assert info.value.where == f"{kind}.{key}"


def test_a_definition_path_with_a_nul_character_is_a_config_error(folders: dict[str, Path]) -> None:
    seed = folders["node"]
    raw = tomllib.loads(seed.read_text(encoding="utf-8"))
    raw["corridors"][0]["definition"] = "PAK\x00-KSA.json"
    target = seed.with_name("nul-definition.toml")
    target.write_text(tomli_w.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_node_config(target)
    assert info.value.where == "corridors[0].definition"
