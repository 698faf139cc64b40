"""``sez-node devnet`` end to end: four real nodes and real watchers, three corridors, traffic both ways.

* the short run CI keeps: every corridor ACTIVE through the lifecycle, four bonded watchers, every log
  quorum-final at its head, nothing lost, three light-client checks passed under the trust policy
  with the quorum rule, every store passing fsck;
* ``--watchers 0``: bilateral (bootstrap) finality only, still nothing lost;
* ``--anchor`` on a real anvil: every log anchored at its head and confirmed on chain, the light-client
  check made on an anchored bundle and verified on chain, anvil stopped at the end;
* Ctrl-C mid-traffic (with and without ``--anchor``): exit 130 and every child process gone, anvil too;
* ``--anchor`` without anvil installed is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import IO, Any

import pytest

import node.devnet
from node.devnet import run_devnet
from node.devnet_topology import WATCHER_STAKE
from tests.integration.anvil import require_anvil

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SEZ_NODE = Path(sys.executable).parent / "sez-node"
CORRIDORS = {"PAK-KSA", "PAK-UAE", "PAK-CHN"}


def _run_devnet(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [str(SEZ_NODE), "devnet", "--dir", str(tmp_path / "net"), "--summary", str(summary_path), *args],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return proc, summary


LIGHT_CHECKS = [
    "ok bundle", "ok receipt", "ok origin", "ok index", "ok log signature", "ok inclusion",
    "ok receipt signature", "ok cosignatures", "ok quorum",
]  # fmt: skip


def _check_summary(summary: dict[str, Any], watchers: int, *, anchored: bool = False) -> None:
    assert summary["ok"] and summary["settled"] and summary["quorum_final"], summary
    assert summary["lost"] == 0
    assert set(summary["corridors"]) == CORRIDORS
    assert len(summary["watchers"]) == watchers
    for corridor, entry in summary["corridors"].items():
        assert entry["lifecycle"] == "ACTIVE", corridor
        assert entry["active_watchers"] == watchers and entry["forks"] == 0, (corridor, entry)
        assert len(entry["origins"]) == 2, corridor
        for origin, row in entry["origins"].items():
            assert row["lifecycle"] == "ACTIVE"
            assert row["submitted"] > 0 and row["refused"] == 0 and row["lost"] == 0, (origin, row)
            assert row["transfers_stored"] == row["submitted"], (origin, row)
            setup = row["setup_receipts"]
            assert setup["lifecycle"] == 2, (origin, row)  # DRAFT -> PENDING -> ACTIVE, recorded by each
            # The corridor's first party writes the watchers' bonds, one batch.
            first = origin.startswith("sez.gov.pk/")
            assert setup.get("watcher.bond", 0) == (watchers if first else 0), (origin, row)
            assert row["stored"] == row["submitted"] + row["acks"] + sum(setup.values()), (origin, row)
            assert row["replicated"] == row["stored"], (origin, row)  # the counterparty holds all of it
            assert row["quorum_final"] == row["stored"] and row["quorum_final_at_head"], (origin, row)
    checks = summary["light_client"]
    assert {c["corridor"] for c in checks} == CORRIDORS
    for check in checks:
        assert check["verified"] and check["message"].startswith("VERIFIED"), check
        assert 0 <= check["sequence"] < check["checkpoint_size"]
        names = [line.split(":")[0] for line in check["checks"]]
        assert names == [*LIGHT_CHECKS, "ok anchor"] if anchored else LIGHT_CHECKS, check
        assert check["anchored"] is anchored and bool(check["on_chain"]) is anchored, check


def test_short_devnet_with_watchers_is_quorum_final_and_loses_nothing(tmp_path: Path) -> None:
    proc, summary = _run_devnet(tmp_path, "--duration", "4", "--rate", "20", "--watchers", "4")
    _check_summary(summary, watchers=4)
    for check in summary["light_client"]:  # the quorum rule, not the bilateral fallback, decided
        stake = 4 * int(WATCHER_STAKE)  # configs/devnet.json: every watcher bonds the same stake
        assert f"4 watchers hold {stake} of {stake} active stake (> 2/3)" in check["checks"][-1], check
    out = proc.stdout
    assert out.count("DRAFT -> PENDING") == 3 and out.count("PENDING -> ACTIVE") == 3
    assert out.index("every corridor has 4 active watchers") < out.index("PAK-KSA PENDING -> ACTIVE")
    assert re.search(r"\] PAK-KSA: PAK \d+ \(lag \d+, final \d+\)  KSA \d+ .* watchers 4  forks 0", out)
    assert out.count("light client:") == 3 and out.count("VERIFIED") == 3
    for label in ("PAK", "KSA", "UAE", "CHN", "watcher1", "watcher2", "watcher3", "watcher4"):
        assert f"devnet: {label} stopped (exit 0)" in out
    # The folders are kept with --dir, and every node's store passes fsck (all four at once).
    fscks = []
    for jurisdiction in ("PAK", "KSA", "UAE", "CHN"):
        argv = [str(SEZ_NODE), "fsck", "--data-dir", str(tmp_path / "net" / jurisdiction / "data")]
        fscks.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for fsck in fscks:
        output, _ = fsck.communicate(timeout=120)
        assert fsck.returncode == 0, output
        assert output.count("ok: ") >= 2, output  # its own logs and its replicas


def test_devnet_without_watchers_is_final_bilaterally(tmp_path: Path) -> None:
    proc, summary = _run_devnet(tmp_path, "--duration", "2", "--rate", "20", "--watchers", "0")
    _check_summary(summary, watchers=0)
    assert "finality is bilateral only" in proc.stdout
    assert not (tmp_path / "net" / "watcher1").exists()


def test_devnet_with_anchor_anchors_every_log_on_chain(tmp_path: Path) -> None:
    require_anvil()
    proc, summary = _run_devnet(tmp_path, "--duration", "3", "--rate", "10", "--watchers", "3", "--anchor")
    _check_summary(summary, watchers=3, anchored=True)
    anchoring = summary["anchoring"]
    assert anchoring["every_log_anchored"] and anchoring["at_head"] and anchoring["chain_id"] == 31337
    for corridor, entry in summary["corridors"].items():
        for origin, row in entry["origins"].items():
            # The writer's confirmed anchor covers the head; the counterparty holds one too, which it
            # stores only after verifying it from the chain itself.
            assert row["anchored"] == row["stored"] >= 1, (corridor, origin, row)
            assert 1 <= row["anchored_at_counterparty"] <= row["stored"], (corridor, origin, row)
    senders = set()
    for check in summary["light_client"]:
        assert 0 <= check["sequence"] < check["checkpoint_size"], check
        on_chain = check["on_chain"]
        assert on_chain[:4] == [
            "ok record digest is the checkpoint body's SHA-256", "ok log signature on the checkpoint",
            "ok transaction, chain and sender", "ok calldata is the tag and the checkpoint digest",
        ], check  # fmt: skip
        assert re.fullmatch(r"ok included in block \d+", on_chain[4]), check
        depth = re.fullmatch(r"ok (\d+) confirmations \(>= 2\)", on_chain[5])
        assert depth is not None and int(depth.group(1)) >= 2, check
        assert f"anchored at size {check['checkpoint_size']} by 0x" in on_chain[6], check
        senders.add(on_chain[6].split(" by ")[1].split()[0])
    assert len(senders) == 3, senders  # every log anchors with its own account
    out = proc.stdout
    assert re.search(r"\] PAK-KSA: PAK \d+ \(lag \d+, final \d+, anchored \d+\)  KSA \d+ ", out), out[-3000:]
    assert out.count("anchored bundle (?anchor=1)") == 3 and out.count("on chain (protocol.anchor") == 3
    assert "every log is anchored at its head" in out and "devnet: anvil stopped (exit 0)" in out
    anvil_pid = re.search(r"devnet: anvil ready \(pid (\d+)\): chain 31337 at http://127\.0\.0\.1:\d+", out)
    assert anvil_pid is not None, out[:2000]
    with pytest.raises(ProcessLookupError):
        os.kill(int(anvil_pid.group(1)), 0)
    net = tmp_path / "net"
    assert (net / "anvil" / "anvil.log").stat().st_size > 0
    for jurisdiction, corridors in (("PAK", CORRIDORS), ("KSA", {"PAK-KSA"})):
        document = tomllib.loads((net / jurisdiction / "node.toml").read_text())
        assert {c["id"] for c in document["corridors"]} == corridors
        for entry in document["corridors"]:
            table = entry["anchor"]
            assert table["chain_id"] == 31337 and table["confirmations"] == 2, table
            key = net / jurisdiction / table["key_file"]
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@pytest.mark.parametrize(
    ("args", "labels"),
    [
        (("--watchers", "2"), ("PAK", "KSA", "UAE", "CHN", "watcher1", "watcher2")),
        (("--watchers", "0", "--anchor"), ("PAK", "KSA", "UAE", "CHN", "anvil")),
    ],
    ids=["watchers", "anchor"],
)
def test_ctrl_c_mid_traffic_stops_every_process(
    tmp_path: Path, args: tuple[str, ...], labels: tuple[str, ...]
) -> None:
    if "--anchor" in args:
        require_anvil()
    proc = subprocess.Popen(
        [str(SEZ_NODE), "devnet", "--duration", "120", "--rate", "20", *args, "--dir", str(tmp_path / "net")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 150
        while not any(re.match(r"\[\s*\d+\.\ds\] PAK-CHN", line) for line in seen):  # a progress line
            assert time.monotonic() < deadline, "".join(seen)
            assert proc.poll() is None, "".join(seen)
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if match := re.search(r" ready \(pid (\d+)\)", line):
                pids.append(int(match.group(1)))
        assert len(pids) == len(labels)  # four nodes and two watchers, or four nodes and anvil
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        reader.join(10)  # the devnet has exited: its stdout is at EOF
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        output = "".join(seen + rest)
        assert "devnet: interrupted (SIGINT); stopping every process" in output
        for label in labels:
            assert f"devnet: {label} stopped (exit 0)" in output, output[-3000:]
        assert "devnet: exit 130" in output
        for pid in pids:  # reaped by the devnet: no process, not even a zombie
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_anchor_without_anvil_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.devnet, "anvil_binary", lambda: None)
    status = run_devnet(
        rate=10, duration=1, directory=tmp_path / "net", summary_path=tmp_path / "s.json", anchor=True
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("sez-node: anvil-missing:") and "run `./run anvil-setup`" in err, err
    assert not (tmp_path / "net").exists() and not (tmp_path / "s.json").exists()


def test_anvil_that_exits_at_start_fails_the_devnet_before_any_node_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEZ_ANVIL", "/bin/false")  # starts, then exits with status 1 at once
    status = run_devnet(
        rate=10, duration=1, directory=tmp_path / "net", summary_path=tmp_path / "s.json", anchor=True
    )
    assert status == 1
    captured = capsys.readouterr()
    assert "sez-node: devnet-failed: anvil exited with status 1 before it answered" in captured.err, captured
    assert "devnet: anvil stopped (exit 1)" in captured.out and " ready (pid" not in captured.out, captured
    assert (tmp_path / "net" / "anvil" / "anvil.log").exists()  # kept for inspection, as on every failure
    assert not (tmp_path / "net" / "PAK").exists() and not (tmp_path / "s.json").exists()
