"""``sez-light verify``: what it prints, its exit status, and the options around the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from light import cli
from tests.light_fixture import Corridor

C = Corridor(n=4, watchers=4)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "bundle": tmp_path / "bundle.txt",
        "json": tmp_path / "policy.json",
        "tlog": tmp_path / "policy.txt",
        "receipt": tmp_path / "receipt.json",
        "weak": tmp_path / "weak.txt",
    }
    paths["bundle"].write_bytes(C.bundle(index=1))
    paths["json"].write_bytes(C.policy().to_json())
    paths["tlog"].write_text(C.policy().to_tlog_policy())
    paths["receipt"].write_bytes(C.receipts[1].raw + b"\n")
    paths["weak"].write_bytes(C.bundle(index=1, cosigners=[0]))
    return paths


@pytest.mark.parametrize("policy", ["json", "tlog"])
def test_verified_bundle_prints_each_check_and_the_verdict(
    files: dict[str, Path], policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "verify",
        str(files["bundle"]),
        "--policy",
        str(files[policy]),
        "--receipt",
        str(files["receipt"]),
    ]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    for name in ("bundle", "receipt", "receipt file", "origin", "index", "log signature", "inclusion",
                 "receipt signature", "cosignatures", "quorum"):  # fmt: skip
        assert any(line.startswith(f"ok   {name}: ") for line in lines), (name, out)
    assert lines[-1].startswith("VERIFIED: receipt sez.gov.pk/corridor/PAK-KSA#1 (transfer)")


def test_rejected_bundle_exits_1_with_the_reason(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verify", str(files["weak"]), "--policy", str(files["tlog"])]) == 1
    out, err = capsys.readouterr()
    assert "FAIL quorum: " in out
    assert err.startswith("REJECTED: insufficient-stake: ")


def test_json_output(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(files["weak"]), "--policy", str(files["json"]), "--json"]) == 1
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["verified"] is False and report["reason"] == "insufficient-stake"
    assert [c["name"] for c in report["checks"]][-1] == "quorum"


def test_rpc_needs_an_anchored_bundle(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """--rpc checks the bundle's anchor on the chain (tests/integration/test_anchor_processes.py does it
    against anvil); a bundle without an anchor record is refused before any RPC call."""
    argv = ["verify", str(files["bundle"]), "--policy", str(files["json"]), "--rpc", "http://127.0.0.1:9"]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert "VERIFIED" in out and err.startswith("REJECTED: no-anchor: ")
    assert cli.main(["verify", str(files["bundle"]), "--log-key", "x", "--rpc", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("REJECTED: usage: ")


def test_bad_policy_and_missing_files(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.txt"
    broken.write_text("log nonsense\nquorum none\n")
    assert cli.main(["verify", str(files["bundle"]), "--policy", str(broken)]) == 1
    assert capsys.readouterr().err.startswith("REJECTED: bad-policy: ")
    assert cli.main(["verify", str(tmp_path / "absent"), "--policy", str(files["json"])]) == 1
    assert capsys.readouterr().err.startswith("REJECTED: io: ")


def test_log_key_mode_says_the_quorum_is_not_checked(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verify", str(files["weak"]), "--log-key", C.pak.verifier().to_vkey()]) == 0
    out = capsys.readouterr().out
    assert "cosignature quorum: not checked (no --policy)" in out


def test_policy_or_log_key_is_required(files: dict[str, Path]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["verify", str(files["bundle"])])
    assert info.value.code == 2
