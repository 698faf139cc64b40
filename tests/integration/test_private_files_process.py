"""A real ``sez-node run`` / ``sez-watcher run`` refuses to start with a secret file others can read.

Each process must exit with status 1 (bounded wait), say which field and file is wrong on stderr, and
not have opened its store (no data directory) or bound its HTTP port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.netharness import ROOT, _child_env, _sez_node_argv, make_network

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXIT_TIMEOUT = 60.0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("name", "where"), [("api.token", "node.api_token_file"), ("identity.key", "node.identity_key")]
)
def test_node_refuses_to_start_with_a_readable_secret(tmp_path: Path, name: str, where: str) -> None:
    network = make_network(tmp_path, ["PAK", "KSA"])
    spec = network.specs["PAK"]
    secret = spec.directory / name
    os.chmod(secret, 0o644)
    result = subprocess.run(
        [*_sez_node_argv(), "run", "--config", str(spec.config)],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT, env=_child_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert where in result.stderr and str(secret.resolve()) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not spec.data_dir.exists(), "the store was opened before the configuration was refused"
    assert _port_free(spec.http_port)


def test_watcher_refuses_to_start_with_a_readable_identity(tmp_path: Path) -> None:
    out = tmp_path / "w1"
    watcher = [sys.executable, "-m", "watcher.cli"]
    subprocess.run(
        [*watcher, "init", "--name", "w1.example", "--out", str(out), "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT, env=_child_env(), check=True, cwd=ROOT,
    )  # fmt: skip
    os.chmod(out / "identity.key", 0o640)
    result = subprocess.run(
        [*watcher, "run", "--config", str(out / "watcher.toml")],
        capture_output=True, text=True, timeout=EXIT_TIMEOUT, env=_child_env(), check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "watcher.identity_key" in result.stderr, result.stderr
    assert str((out / "identity.key").resolve()) in result.stderr
    assert "Traceback" not in result.stderr
