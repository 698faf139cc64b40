"""Node configuration: a good file loads; every bad field is named in the error."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from node.config import ConfigError, load_config, write_initial_config
from protocol.keys import SigningKey

KSA_KEY = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(32)))
PEER = "/ip4/127.0.0.1/tcp/7002/p2p/12D3KooWLsSWaRsoCejZ6RMsGqdftpKbohczNqs3jvNfPgRwrMp2"


def corridor(**overrides: Any) -> dict[str, Any]:
    base = {
        "id": "PAK-KSA",
        "origin": "sez.gov.pk/corridor/PAK-KSA",
        "counterparty_origin": "sez.gov.sa/corridor/PAK-KSA",
        "counterparty_vkey": KSA_KEY.verifier().to_vkey(),
        "peers": [PEER],
        "checkpoint_every": 50,
        "checkpoint_interval": 2,
    }
    base.update(overrides)
    return base


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_initial_config(
        tmp_path / "pak", jurisdiction="PAK", listen="/ip4/127.0.0.1/tcp/7001", http="127.0.0.1:8001",
        corridors=[corridor()],
    )  # fmt: skip


def test_initial_config_loads(config_path: Path) -> None:
    config = load_config(config_path)
    assert config.jurisdiction == "PAK"
    assert config.name == "sez.gov.pk"
    assert config.data_dir == config_path.parent / "data"
    assert (config.http_host, config.http_port) == ("127.0.0.1", 8001)
    (pak_ksa,) = config.corridors
    assert pak_ksa.counterparty_key == KSA_KEY.verifier()
    assert pak_ksa.peer_ids == ("12D3KooWLsSWaRsoCejZ6RMsGqdftpKbohczNqs3jvNfPgRwrMp2",)
    assert config.signing_key(pak_ksa.origin).name == pak_ksa.origin
    assert len(config.api_token()) >= 32
    for name in ("signing.key", "api.token"):
        assert (config_path.parent / name).stat().st_mode & 0o777 == 0o600


def test_init_refuses_to_overwrite(config_path: Path) -> None:
    with pytest.raises(Exception, match="refusing to overwrite"):
        write_initial_config(config_path.parent, jurisdiction="PAK", listen="/ip4/127.0.0.1/tcp/1",
                             http="127.0.0.1:1", corridors=[corridor()])  # fmt: skip


def _rewrite(path: Path, change: Any) -> None:
    document = tomllib.loads(path.read_text())
    change(document)
    path.write_text(tomli_w.dumps(document))


CASES: list[tuple[str, Any, str]] = [
    ("missing node section", lambda d: d.pop("node"), "(top level)"),
    ("unknown top-level key", lambda d: d.update(extra=1), "(top level)"),
    ("jurisdiction lowercase", lambda d: d["node"].update(jurisdiction="pak"), "node.jurisdiction"),
    ("listen not a multiaddr", lambda d: d["node"].update(listen="127.0.0.1:7001"), "node.listen"),
    ("http without port", lambda d: d["node"].update(http="localhost"), "node.http"),
    ("log level", lambda d: d["node"].update(log_level="loud"), "node.log_level"),
    ("no corridors", lambda d: d.update(corridors=[]), "corridors"),
    ("corridor id", lambda d: d["corridors"][0].update(id="PAKKSA"), "corridors[0].id"),
    ("not a party", lambda d: d["corridors"][0].update(id="KSA-UAE"), "corridors[0].id"),
    (
        "bad vkey",
        lambda d: d["corridors"][0].update(counterparty_vkey="nonsense"),
        "corridors[0].counterparty_vkey",
    ),
    (
        "vkey of another origin",
        lambda d: d["corridors"][0].update(counterparty_origin="sez.gov.ae/corridor/PAK-KSA"),
        "corridors[0].counterparty_vkey",
    ),
    (
        "peer without id",
        lambda d: d["corridors"][0].update(peers=["/ip4/127.0.0.1/tcp/1"]),
        "corridors[0].peers[0]",
    ),
    ("cadence zero", lambda d: d["corridors"][0].update(checkpoint_every=0), "corridors[0].checkpoint_every"),
    ("unknown corridor key", lambda d: d["corridors"][0].update(colour="blue"), "corridors[0]"),
    ("duplicate corridor", lambda d: d["corridors"].append(dict(d["corridors"][0])), "corridors[1].id"),
]


@pytest.mark.parametrize(("name", "change", "where"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_names_the_field(config_path: Path, name: str, change: Any, where: str) -> None:
    _rewrite(config_path, change)
    with pytest.raises(ConfigError) as info:
        load_config(config_path)
    assert info.value.where == where, info.value.message
    assert info.value.reason == "bad-config"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_key_and_token_files_must_be_private(config_path: Path) -> None:
    config = load_config(config_path)
    os.chmod(config.api_token_file, 0o644)
    with pytest.raises(ConfigError) as info:
        config.api_token()
    assert info.value.where == "node.api_token_file"
    os.chmod(config.signing_key_file, 0o640)
    with pytest.raises(ConfigError) as info:
        load_config(config_path)
    assert info.value.where == "node.signing_key"
