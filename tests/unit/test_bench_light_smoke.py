"""The light benchmark runs end to end on a few iterations; behaviour only, never a timing."""

from __future__ import annotations

from tests.bench import light as bench


def test_light_benchmark_summary_has_every_figure() -> None:
    lines: list[str] = []
    summary = bench.run_light(rounds=2, iterations=3, bundles=2, out=lines.append)
    assert set(bench.SUMMARY_KEYS) <= summary.keys()
    assert summary["cosignatures"] == 7 and summary["signatures"] == 9
    assert len(summary["ratios"]) == 2 and all(r > 0 for r in summary["ratios"])
    assert lines[0].startswith("bundle: PAK-KSA receipt, 7 cosignatures")
    assert lines[-1].startswith("median: verify_bundle ")


def test_light_benchmark_main(capsys: object) -> None:
    assert bench.main(["--rounds", "1", "--iterations", "2", "--bundles", "2", "--json"]) == 0
