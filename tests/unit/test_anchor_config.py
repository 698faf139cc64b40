"""The optional per-corridor ``anchor`` table: off by default, validated, the key file checked."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from anchor.evm import load_anchor_key, write_anchor_key
from node.config import ConfigError, load_config, write_initial_config
from protocol.errors import LocalProtocolError
from tests.unit.test_config import corridor

KEY = "0x" + "11" * 32


def _config(tmp_path: Path, anchor: dict[str, Any] | None) -> Path:
    entry = corridor() if anchor is None else corridor(anchor=anchor)
    return write_initial_config(
        tmp_path / "pak", jurisdiction="PAK", listen="/ip4/127.0.0.1/tcp/7001", http="127.0.0.1:8001",
        corridors=[entry],
    )  # fmt: skip


def test_anchoring_is_off_by_default(tmp_path: Path) -> None:
    (pak_ksa,) = load_config(_config(tmp_path, None)).corridors
    assert pak_ksa.anchor is None


def test_anchor_table_loads_with_defaults(tmp_path: Path) -> None:
    path = _config(
        tmp_path, {"chain_id": 31337, "rpc_url": "http://127.0.0.1:8545", "key_file": "anchor.key"}
    )
    (pak_ksa,) = load_config(path).corridors
    anchor = pak_ksa.anchor
    assert anchor is not None
    assert anchor.key_file == path.parent / "anchor.key"
    assert (anchor.every_checkpoints, anchor.every_seconds, anchor.confirmations) == (10, 600, 6)


@pytest.mark.parametrize(
    ("anchor", "where"),
    [
        ({"chain_id": 0, "rpc_url": "http://x", "key_file": "k"}, "corridors[0].anchor.chain_id"),
        ({"chain_id": 1, "rpc_url": "ftp://x", "key_file": "k"}, "corridors[0].anchor.rpc_url"),
        ({"chain_id": 1, "rpc_url": "http://x"}, "corridors[0].anchor"),
        ({"chain_id": 1, "rpc_url": "http://x", "key_file": "k", "confirmations": 0},
         "corridors[0].anchor.confirmations"),
        ({"chain_id": 1, "rpc_url": "http://x", "key_file": "k", "private_key": "0x11"},
         "corridors[0].anchor"),  # keys go in files, never in the config
    ],
)  # fmt: skip
def test_bad_anchor_tables_name_the_field(tmp_path: Path, anchor: dict[str, Any], where: str) -> None:
    path = _config(tmp_path, None)
    document = tomllib.loads(path.read_text())
    document["corridors"][0]["anchor"] = anchor
    path.write_text(tomli_w.dumps(document))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.where == where


def test_anchor_key_file_rules(tmp_path: Path) -> None:
    key_file = tmp_path / "anchor.key"
    write_anchor_key(key_file, KEY)
    assert load_anchor_key(key_file).address.startswith("0x")
    with pytest.raises(FileExistsError):
        write_anchor_key(key_file, KEY)
    key_file.chmod(0o644)
    with pytest.raises(LocalProtocolError, match="0600") as info:
        load_anchor_key(key_file)
    assert info.value.reason == "bad-anchor-key"
    bad = tmp_path / "bad.key"
    write_anchor_key(bad, "not a key")
    with pytest.raises(LocalProtocolError) as info:
        load_anchor_key(bad)
    assert info.value.reason == "bad-anchor-key"
    with pytest.raises(LocalProtocolError) as info:
        load_anchor_key(tmp_path / "missing.key")
    assert info.value.reason == "bad-anchor-key"
