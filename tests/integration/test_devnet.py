"""``sez-node devnet`` end to end: four real nodes and real watchers, three corridors, traffic both ways.

* the short run CI keeps: every corridor ACTIVE through the lifecycle, four bonded watchers, every log
  quorum-final at its head, nothing lost, three light-client checks passed under the trust policy
  with the quorum rule, every store passing fsck;
* ``--watchers 0``: bilateral (bootstrap) finality only, still nothing lost;
* Ctrl-C mid-traffic: exit 130 and every child process gone;
* ``--anchor`` is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from node.devnet import run_devnet
from node.devnet_topology import WATCHER_STAKE

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


def _check_summary(summary: dict[str, Any], watchers: int) -> None:
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
        assert [line.split(":")[0] for line in check["checks"]] == [
            "ok bundle", "ok receipt", "ok origin", "ok index", "ok log signature", "ok inclusion",
            "ok receipt signature", "ok cosignatures", "ok quorum",
        ]  # fmt: skip


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


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_ctrl_c_mid_traffic_stops_every_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(SEZ_NODE), "devnet", "--duration", "120", "--rate", "20", "--watchers", "2",
         "--dir", str(tmp_path / "net")],
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
        assert len(pids) == 6  # four nodes, two watchers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        reader.join(10)  # the devnet has exited: its stdout is at EOF
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        output = "".join(seen + rest)
        assert "devnet: interrupted (SIGINT); stopping every process" in output
        for label in ("PAK", "KSA", "UAE", "CHN", "watcher1", "watcher2"):
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


def test_anchor_is_refused_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_devnet(
        rate=10, duration=1, directory=tmp_path / "net", summary_path=tmp_path / "s.json", anchor=True
    )
    assert status == 2
    assert "anchoring is not in this build" in capsys.readouterr().err
    assert not (tmp_path / "net").exists() and not (tmp_path / "s.json").exists()
