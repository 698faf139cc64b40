"""A short devnet run: four real nodes, three corridors, traffic both ways, nothing lost, proofs verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEZ_NODE = Path(sys.executable).parent / "sez-node"


def test_short_devnet_converges_and_loses_nothing(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [str(SEZ_NODE), "devnet", "--duration", "4", "--rate", "20", "--dir", str(tmp_path / "net"),
         "--summary", str(summary_path)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["lost"] == 0
    assert set(summary["corridors"]) == {"PAK-KSA", "PAK-UAE", "PAK-CHN"}
    for corridor, origins in summary["corridors"].items():
        assert len(origins) == 2, corridor
        for origin, row in origins.items():
            assert row["submitted"] > 0 and row["refused"] == 0, (origin, row)
            assert row["stored"] == row["submitted"] + row["acks"] + row["lifecycle"], (origin, row)
            assert row["replicated"] == row["stored"], (origin, row)  # the counterparty holds all of it
            assert row["counterparty_cosigned"] > 0, (origin, row)
    assert proc.stdout.count("light client:") == 3
    assert proc.stdout.count("verified offline") == 3
    for jurisdiction in ("PAK", "KSA", "UAE", "CHN"):
        assert f"devnet: {jurisdiction} stopped (exit 0)" in proc.stdout
    # The nodes' folders are kept with --dir, and every store passes fsck.
    for jurisdiction in ("PAK", "KSA", "UAE", "CHN"):
        data_dir = tmp_path / "net" / jurisdiction / "data"
        check = subprocess.run([str(SEZ_NODE), "fsck", "--data-dir", str(data_dir)],
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
