"""The ingest benchmark runs end to end on a few hundred receipts; behaviour only, never a timing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from node.ingest import Ingestor
from protocol.errors import PeerProtocolError
from store import LogStore
from store.fsck import fsck
from tests.bench import ingest as bench

RECEIPTS = 500


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], list[str]]:
    directory = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    summary = bench.run_ingest(
        receipts=RECEIPTS,
        batch=100,
        workers=2,
        directory=directory,
        every=250,
        proofs=100,
        reference_seconds=0.02,
        out=lines.append,
    )
    return directory, summary, lines


def test_summary_has_every_figure(run: tuple[Path, dict[str, object], list[str]]) -> None:
    _, summary, lines = run
    assert set(bench.SUMMARY_KEYS) <= summary.keys()
    ingest = summary["ingest"]
    assert isinstance(ingest, dict)
    assert {"per_s", "ratio_1", "ratio_all", "seconds"} <= ingest.keys()
    segments = summary["segments"]
    assert isinstance(segments, list)
    assert [segment["receipts"] for segment in segments] == [250, 500]
    proofs = summary["proofs"]
    assert isinstance(proofs, dict)
    assert proofs["size"] == RECEIPTS
    assert {
        "inclusion_generation_per_s",
        "consistency_generation_per_s",
        "inclusion_verification_per_s",
        "consistency_verification_per_s",
    } <= proofs.keys()
    lmdb = summary["lmdb"]
    assert isinstance(lmdb, dict)
    assert lmdb["entries"]["receipts"] == RECEIPTS
    assert lines[-1].startswith("{")  # the JSON summary is the last line


def test_store_holds_every_receipt_and_passes_fsck(run: tuple[Path, dict[str, object], list[str]]) -> None:
    directory, _, _ = run
    with LogStore(directory / "store", readonly=True) as store:
        assert store.head(bench.ORIGIN).size == RECEIPTS
        assert store.count_receipts(bench.ORIGIN) == RECEIPTS
        report = fsck(store)
    assert report.ok, report.logs[0].problems
    assert report.logs[0].receipts_checked == RECEIPTS


def test_no_worker_process_outlives_the_run(run: tuple[Path, dict[str, object], list[str]]) -> None:
    assert multiprocessing.active_children() == []


def test_a_bad_receipt_in_a_worker_chunk_refuses_the_whole_batch(
    run: tuple[Path, dict[str, object], list[str]], tmp_path: Path
) -> None:
    """The Ingestor's contract through its worker processes: in order, atomic, the first failure's reason."""
    directory, _, _ = run
    cache = bench.find_cache(directory, RECEIPTS)
    assert cache is not None
    raws = bench.read_receipts(cache, 300)
    tampered = list(raws)
    tampered[250] = tampered[250].replace(b'"currency":"PKR"', b'"currency":"USD"')
    with LogStore(tmp_path / "store") as store:
        store.register_origin(bench.ORIGIN, bench.CORRIDOR, bench.bench_key().verifier())
        with Ingestor(store, workers=2, inline_below=1) as ingestor:
            first = ingestor.ingest(bench.ORIGIN, raws[:100])
            assert first.head.size == 100
            with pytest.raises(PeerProtocolError) as info:
                ingestor.ingest(bench.ORIGIN, tampered[100:])
            assert info.value.reason == "payload-digest-mismatch"
            assert store.head(bench.ORIGIN) == first.head  # nothing of the refused batch was written
            with pytest.raises(PeerProtocolError) as gap:
                ingestor.ingest(bench.ORIGIN, raws[101:300])
            assert gap.value.reason == "seq-gap"
            results = list(ingestor.ingest_many(bench.ORIGIN, [raws[100:200], raws[200:300]]))
            assert [result.head.size for result in results] == [200, 300]
        assert multiprocessing.active_children() == []
        assert fsck(store).ok
