"""Secret files (signing keys, libp2p identities, the API token) must be private to their owner.

A node or watcher refuses to load a configuration whose secret files group or others can access, with a
``ConfigError`` naming the field and the file; ``init`` creates every secret file with mode 0600 whatever
the umask. The same refusal from a real ``sez-node run`` process is in
``tests/integration/test_private_files_process.py``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli import main as node_main
from node.config import ConfigError, write_initial_config
from node.config import load_config as load_node_config
from node.p2p import load_or_create_identity
from node.private_files import require_private
from protocol.errors import LocalProtocolError
from protocol.keys import SigningKey
from watcher.cli import main as watcher_main
from watcher.config import load_config as load_watcher_config

KSA = SigningKey("sez.gov.sa/corridor/PAK-KSA", bytes(range(32)))
PEER = "/ip4/127.0.0.1/tcp/7002/p2p/12D3KooWLsSWaRsoCejZ6RMsGqdftpKbohczNqs3jvNfPgRwrMp2"
LOOSE = [0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o666, 0o610, 0o601, 0o700 | 0o070]
PRIVATE = [0o600, 0o400, 0o700, 0o200]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file created with the default mode would be world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def node_dir(tmp_path: Path, open_umask: None) -> Path:
    """A loadable node folder (``init`` leaves the counterparty's key unset until ``peer add``)."""
    out = tmp_path / "pak"
    write_initial_config(
        out, jurisdiction="PAK", listen="/ip4/127.0.0.1/tcp/7001", http="127.0.0.1:8001",
        corridors=[{
            "id": "PAK-KSA", "origin": "sez.gov.pk/corridor/PAK-KSA",
            "counterparty_origin": KSA.name, "counterparty_vkey": KSA.verifier().to_vkey(), "peers": [PEER],
        }],
    )  # fmt: skip
    load_or_create_identity(out / "identity.key")
    return out


@pytest.fixture
def watcher_dir(tmp_path: Path, open_umask: None, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "w1"
    assert watcher_main(["init", "--name", "w1.example", "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out


@pytest.mark.parametrize("mode", PRIVATE)
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_text("x")
    os.chmod(path, mode)
    require_private(path, "secret")


@pytest.mark.parametrize("mode", LOOSE)
def test_any_group_or_other_bit_is_refused_naming_the_file_and_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    path.write_text("x")
    os.chmod(path, mode)
    with pytest.raises(LocalProtocolError) as info:
        require_private(path, "API token file")
    assert info.value.reason == "key-file-permissions"
    assert str(path) in info.value.message
    assert f"{mode:04o}" in info.value.message
    assert f"chmod 600 {path}" in info.value.message


def test_missing_files_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalProtocolError) as info:
        require_private(tmp_path / "none", "API token file")
    assert info.value.reason == "key-file-missing"
    os.chmod(tmp_path, 0o700)
    with pytest.raises(LocalProtocolError) as info:
        require_private(tmp_path, "API token file")
    assert info.value.reason == "bad-key-file"


def test_node_init_creates_private_files_whatever_the_umask(
    tmp_path: Path, open_umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pak"
    assert node_main(["init", "--jurisdiction", "PAK", "--out", str(out)]) == 0, capsys.readouterr().err
    for name in ("signing.key", "api.token", "identity.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name


def test_node_folders_written_by_the_library_are_private_too(node_dir: Path) -> None:
    for name in ("signing.key", "api.token", "identity.key"):
        assert stat.S_IMODE((node_dir / name).stat().st_mode) == 0o600, name
    load_node_config(node_dir / "node.toml")


def test_watcher_init_creates_private_files_whatever_the_umask(watcher_dir: Path) -> None:
    for name in ("signing.key", "identity.key"):
        assert stat.S_IMODE((watcher_dir / name).stat().st_mode) == 0o600, name
    load_watcher_config(watcher_dir / "watcher.toml")


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("api.token", "node.api_token_file"),
        ("identity.key", "node.identity_key"),
        ("signing.key", "node.signing_key"),
    ],
)
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_node_with_a_loose_secret_does_not_load(node_dir: Path, name: str, where: str, mode: int) -> None:
    os.chmod(node_dir / name, mode)
    with pytest.raises(ConfigError) as info:
        load_node_config(node_dir / "node.toml")
    assert info.value.where == where
    assert str((node_dir / name).resolve()) in info.value.message
    assert info.value.reason == "bad-config"


def test_a_node_without_its_token_does_not_load(node_dir: Path) -> None:
    (node_dir / "api.token").unlink()
    with pytest.raises(ConfigError) as info:
        load_node_config(node_dir / "node.toml")
    assert info.value.where == "node.api_token_file"


def test_a_node_whose_identity_is_not_created_yet_loads(node_dir: Path) -> None:
    """``run`` creates a missing identity (0600), so its absence is not a configuration error."""
    (node_dir / "identity.key").unlink()
    load_node_config(node_dir / "node.toml")


@pytest.mark.parametrize(
    ("name", "where"), [("identity.key", "watcher.identity_key"), ("signing.key", "watcher.signing_key")]
)
@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_watcher_with_a_loose_key_does_not_load(
    watcher_dir: Path, name: str, where: str, mode: int
) -> None:
    os.chmod(watcher_dir / name, mode)
    with pytest.raises(ConfigError) as info:
        load_watcher_config(watcher_dir / "watcher.toml")
    assert info.value.where == where
    assert str((watcher_dir / name).resolve()) in info.value.message
