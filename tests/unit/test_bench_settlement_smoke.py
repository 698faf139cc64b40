"""The settlement benchmark runs end to end on a few hundred receipts; behaviour only, never a timing."""

from __future__ import annotations

from pathlib import Path

from tests.bench import settlement as bench


def test_settlement_benchmark_nets_the_plain_sum_and_reports_every_figure(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = bench.run_settlement(receipts=300, directory=tmp_path, out=lines.append)
    assert set(bench.SUMMARY_KEYS) <= summary.keys()
    assert summary["receipts"] == 300
    assert summary["figures_match"] is True
    for name in ("propose", "countersign"):
        assert {"seconds", "per_s", "ratio"} <= summary[name].keys()
    assert summary["budget"]["timeout_seconds"] > 0
    assert lines[-1].startswith("{")  # the JSON summary is the last line
