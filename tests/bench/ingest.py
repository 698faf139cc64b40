"""Ingest benchmark (issue 2): receipts through the real store path, against the raw Ed25519 verify rate.

``python -m tests.bench ingest --receipts 1000000`` (see ``tests/bench/README.md``):

1. Prepares N signed receipts of one PAK-KSA log (transfers of about 975 bytes), generated in worker
   processes and cached in the bench directory, so the measured phase excludes generation.
2. Measures the reference: raw pynacl Ed25519 verifies per second, one thread and one thread per CPU.
3. Ingests the receipts into a fresh LMDB store through :class:`node.ingest.Ingestor` in batches (every
   receipt parsed with every check of ``Receipt.from_bytes``, signature verified, chain checked, MMR
   appended, one durable LMDB commit per batch), in segments; after each segment it measures the reference
   again and prints the segment's rate and its ratio to the reference around it.
4. At full size: inclusion and consistency proof generation from the store, proof verification, LMDB
   bytes per receipt.
5. Prints one JSON line with every figure.

Timings are reported, never asserted: ``tests/unit/test_bench_smoke.py`` runs this on a few hundred
receipts and checks only behaviour.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import random
import shutil
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import nacl.signing

from node.ingest import Ingestor
from protocol import mmr
from protocol.jcs import canonical
from protocol.keys import SigningKey
from protocol.proofs import verify_consistency, verify_inclusion
from protocol.receipts import (
    DIGEST_ALGORITHM,
    RECEIPT_TYPE,
    SIGNATURE_DOMAIN,
    build_receipt,
    genesis_root,
    payload_digest,
)
from store import LogStore

CORRIDOR = "PAK-KSA"
ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
SEED = sha256(b"sez-node bench key v1").digest()
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CACHE_MAGIC = b"SEZRCPT1"
_LEN = struct.Struct("<I")
_HEADER = struct.Struct("<8sQ")
_GEN_TASK = 4000
"""Receipts per generation task."""

SUMMARY_KEYS = (
    "receipts",
    "batch",
    "workers",
    "mode",
    "generation",
    "reference",
    "ingest",
    "segments",
    "proofs",
    "lmdb",
)


def default_dir() -> Path:
    """Where receipts are cached and the store is written unless ``--dir`` says otherwise."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / "sez-bench"


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bench_key() -> SigningKey:
    """The log's signing key: fixed, so that cached receipts stay valid across runs."""
    return SigningKey(ORIGIN, SEED)


# --------------------------------------------------------------------------------------- receipts


def _transition(sequence: int) -> tuple[str, dict[str, Any]]:
    timestamp = (EPOCH + timedelta(seconds=sequence)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {
        "transfer_id": f"PK-SA-{sequence:010d}",
        "sender": {"entity_id": f"pk-entity-{sequence % 997:04d}", "jurisdiction": "PAK"},
        "receiver": {"entity_id": f"sa-entity-{sequence % 991:04d}", "jurisdiction": "SAU"},
        "currency": "PKR",
        "amount": str(1000 + (sequence * 7919) % 1_000_000_000),
        "reference": f"invoice {sequence} of corridor {CORRIDOR}",
    }
    return timestamp, payload


def _chain(count: int) -> list[bytes]:
    """The ``next_root`` of receipts 0..count-1, by the formula of design §4 (no signing, so it is fast).

    :func:`_build_range` checks each against :func:`build_receipt`'s, so a drift between this and the
    protocol fails loudly instead of producing receipts the store would refuse.
    """
    roots: list[bytes] = []
    prev = genesis_root(CORRIDOR, ORIGIN)
    for sequence in range(count):
        timestamp, payload = _transition(sequence)
        body = {
            "type": RECEIPT_TYPE,
            "corridor_id": CORRIDOR,
            "origin": ORIGIN,
            "sequence": sequence,
            "timestamp": timestamp,
            "prev_root": prev.hex(),
            "transition": {
                "kind": "transfer",
                "payload": payload,
                "payload_sha256": payload_digest(payload).hex(),
            },
            "lawpack_digest_set": [],
            "ruleset_digest_set": [],
            "digest_algorithm": DIGEST_ALGORITHM,
        }
        prev = sha256(canonical(body)).digest()
        roots.append(prev)
    return roots


def _build_range(start: int, prevs: Sequence[bytes], expected: Sequence[bytes]) -> list[bytes]:
    """Receipts ``start``.. with the given ``prev_root``s, signed; run in a generation worker."""
    key = bench_key()
    out: list[bytes] = []
    for offset, prev in enumerate(prevs):
        sequence = start + offset
        timestamp, payload = _transition(sequence)
        receipt = build_receipt(
            key=key,
            corridor_id=CORRIDOR,
            sequence=sequence,
            timestamp=timestamp,
            prev_root=prev,
            kind="transfer",
            payload=payload,
        )
        if receipt.next_root != expected[offset]:
            raise RuntimeError(f"bench generator disagrees with build_receipt at sequence {sequence}")
        out.append(receipt.raw)
    return out


def _build_task(task: tuple[int, list[bytes], list[bytes]]) -> list[bytes]:
    return _build_range(*task)


def _cache_count(path: Path) -> int:
    try:
        with path.open("rb") as f:
            magic, count = _HEADER.unpack(f.read(_HEADER.size))
    except (OSError, struct.error):
        return -1
    return count if magic == CACHE_MAGIC else -1


def find_cache(directory: Path, count: int) -> Path | None:
    """The smallest cached receipt file holding at least ``count`` receipts (generation is deterministic,
    so a longer file's prefix is the shorter one)."""
    best: tuple[int, Path] | None = None
    for path in directory.glob("receipts-*.v1.bin"):
        have = _cache_count(path)
        if have >= count and (best is None or have < best[0]):
            best = (have, path)
    return None if best is None else best[1]


def generate(directory: Path, count: int, *, processes: int) -> Path:
    """Write ``count`` receipts to ``directory/receipts-<count>.v1.bin`` (atomically) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"receipts-{count}.v1.bin"
    tmp = path.with_suffix(".tmp")
    roots = _chain(count)
    prevs = [genesis_root(CORRIDOR, ORIGIN), *roots[:-1]]
    tasks = [
        (start, prevs[start : start + _GEN_TASK], roots[start : start + _GEN_TASK])
        for start in range(0, count, _GEN_TASK)
    ]
    with tmp.open("wb") as f:
        f.write(_HEADER.pack(CACHE_MAGIC, count))

        def write(raws: list[bytes]) -> None:
            for raw in raws:
                f.write(_LEN.pack(len(raw)))
                f.write(raw)

        if processes <= 1 or count < 4 * _GEN_TASK:
            for task in tasks:
                write(_build_task(task))
        else:
            context = multiprocessing.get_context("forkserver")
            with context.Pool(processes) as pool:
                for raws in pool.imap(_build_task, tasks):
                    write(raws)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def read_receipts(path: Path, count: int) -> list[bytes]:
    """The first ``count`` receipts of a cache file."""
    out: list[bytes] = []
    with path.open("rb") as f:
        f.seek(_HEADER.size)
        for _ in range(count):
            (length,) = _LEN.unpack(f.read(_LEN.size))
            out.append(f.read(length))
    return out


def iter_segments(path: Path, total: int, segment: int) -> Iterator[list[bytes]]:
    """Consecutive lists of ``segment`` receipts (the last may be shorter), read from one open file."""
    with path.open("rb") as f:
        f.seek(_HEADER.size)
        done = 0
        while done < total:
            take = min(segment, total - done)
            raws: list[bytes] = []
            for _ in range(take):
                (length,) = _LEN.unpack(f.read(_LEN.size))
                raws.append(f.read(length))
            done += take
            yield raws


# -------------------------------------------------------------------------------------- reference


class Reference:
    """Raw pynacl Ed25519 verification, the physical ceiling of ingest (design §3).

    Verifies the same kind of message a receipt signature covers (``SIGNATURE_DOMAIN || next_root``) with
    the same key, in 1 thread and in one thread per CPU (libsodium releases the GIL).
    """

    def __init__(self, samples: Sequence[tuple[bytes, bytes]], public: bytes, threads: int) -> None:
        self._samples = list(samples)
        self._key = nacl.signing.VerifyKey(public)
        self.threads = threads
        self.single: list[float] = []
        self.all: list[float] = []

    def _run(self, seconds: float, counts: list[int], slot: int) -> None:
        verify, samples = self._key.verify, self._samples
        done = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for message, signature in samples:
                verify(message, signature)
            done += len(samples)
        counts[slot] = done

    def _rate(self, threads: int, seconds: float) -> float:
        counts = [0] * threads
        workers = [threading.Thread(target=self._run, args=(seconds, counts, i)) for i in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sum(counts) / (time.perf_counter() - start)

    def measure(self, seconds: float) -> tuple[float, float]:
        """One measurement of each rate (verifies per second); also kept in ``single`` and ``all``."""
        single = self._rate(1, seconds)
        every = self._rate(self.threads, seconds)
        self.single.append(single)
        self.all.append(every)
        return single, every


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------------------ proofs


def _timed(rounds: int, count: int, work: Callable[[], object]) -> tuple[float, float]:
    """Run ``work`` (``count`` operations) ``rounds`` times: (best, median) operations per second.

    The best round is the code's speed with the least interference from the rest of the machine; the
    median shows how much that interference mattered."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        rates.append(count / seconds if seconds > 0 else float("inf"))
    return max(rates), statistics.median(rates)


def measure_proofs(
    store: LogStore, origin: str, count: int, rng: random.Random, rounds: int = 3
) -> dict[str, Any]:
    """Inclusion and consistency proofs at the store's full size: generation from the store, then
    verification with ``protocol.proofs``; each timed ``rounds`` times over the same random set."""
    size = store.head(origin).size
    start = time.perf_counter()
    root = store.root_at(origin)  # the first read of a log loads the top of its tree (LogStore._TopNodes)
    warm_up = time.perf_counter() - start
    indices = [rng.randrange(size) for _ in range(count)]
    old_sizes = [rng.randint(1, size) for _ in range(count)]
    inclusion = [store.inclusion_proof(origin, index) for index in indices]
    consistency = [store.consistency_proof(origin, old) for old in old_sizes]
    # The leaf hashes come from the receipts themselves, the old roots from the store (not timed).
    leaves = [
        mmr.hash_leaf(bytes.fromhex(json.loads(store.receipt(origin, i))["next_root"])) for i in indices
    ]
    old_roots = [store.root_at(origin, old) for old in old_sizes]

    def generate_inclusion() -> None:
        for index in indices:
            store.inclusion_proof(origin, index)

    def generate_consistency() -> None:
        for old in old_sizes:
            store.consistency_proof(origin, old)

    def verify_inclusions() -> None:
        for index, leaf, proof in zip(indices, leaves, inclusion, strict=True):
            verify_inclusion(index, size, leaf, proof, root)

    def verify_consistencies() -> None:
        for old, old_root, proof in zip(old_sizes, old_roots, consistency, strict=True):
            verify_consistency(old, size, old_root, root, proof)

    figures: dict[str, Any] = {
        "size": size,
        "count": count,
        "rounds": rounds,
        "first_read_seconds": warm_up,
        "mean_inclusion_hashes": sum(map(len, inclusion)) / count,
        "mean_consistency_hashes": sum(map(len, consistency)) / count,
    }
    for name, work in (
        ("inclusion_generation", generate_inclusion),
        ("consistency_generation", generate_consistency),
        ("inclusion_verification", verify_inclusions),
        ("consistency_verification", verify_consistencies),
    ):
        best, median = _timed(rounds, count, work)
        figures[f"{name}_per_s"] = best
        figures[f"{name}_median_per_s"] = median
    return figures


# -------------------------------------------------------------------------------------------- run


def _batches(raws: list[bytes], batch: int) -> list[list[bytes]]:
    return [raws[i : i + batch] for i in range(0, len(raws), batch)]


def run_ingest(
    *,
    receipts: int,
    batch: int = 1000,
    workers: int | None = None,
    directory: Path | None = None,
    every: int = 100_000,
    mode: str = "stream",
    proofs: int = 20_000,
    reference_seconds: float = 1.0,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ingest benchmark and return its summary (see the module docstring)."""
    if receipts < 1 or batch < 1 or every < 1:
        raise ValueError("receipts, batch and every must be >= 1")
    if mode not in ("stream", "batch"):
        raise ValueError(f"mode must be 'stream' or 'batch', got {mode!r}")
    directory = default_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    workers = cpus() if workers is None else workers
    threads = cpus()
    out(
        f"sez-node ingest benchmark: {receipts} receipts, batches of {batch}, {workers} worker processes, "
        f"mode {mode}, {threads} CPUs, dir {directory}"
    )

    # 1. receipts, generated once and cached
    cache = find_cache(directory, receipts)
    generation: dict[str, Any]
    if cache is None:
        start = time.perf_counter()
        cache = generate(directory, receipts, processes=threads)
        generation = {"cached": False, "seconds": time.perf_counter() - start, "processes": threads}
        out(
            f"receipts: generated {receipts} in {generation['seconds']:.1f} s with {threads} processes "
            f"-> {cache} (not part of any figure below)"
        )
    else:
        generation = {"cached": True, "seconds": 0.0, "processes": 0}
        out(
            f"receipts: cached in {cache} (holds {_cache_count(cache)}); "
            "generation is excluded from every figure"
        )
    generation["file"] = str(cache)

    # 2. a fresh store
    store_dir = directory / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    key = bench_key()
    store = LogStore(store_dir)
    store.register_origin(ORIGIN, CORRIDOR, key.verifier())
    first = read_receipts(cache, min(receipts, 256))
    samples = [
        (SIGNATURE_DOMAIN + bytes.fromhex(json.loads(raw)["next_root"]), _signature(raw)) for raw in first
    ]
    reference = Reference(samples, key.public, threads)
    raw_bytes = 0

    ingestor = Ingestor(store, workers=workers)
    try:
        ingestor.start()  # the processes' start-up is a one-time cost of a daemon, not of ingest
        single, every_cpu = reference.measure(reference_seconds)
        out(
            f"reference: raw pynacl Ed25519 verify {single:,.0f}/s in 1 thread, "
            f"{every_cpu:,.0f}/s in {threads} threads ({every_cpu / single:.2f}x; well below "
            f"{threads}x means something else is using the CPUs and every ratio below is unreliable)"
        )
        out(
            f"{'receipts':>10} {'segment/s':>10} {'ratio 1':>8} {'ratio all':>9} {'total/s':>9}"
            f" {'writer µs':>9}  reference 1 / all"
        )
        segments: list[dict[str, Any]] = []
        done, ingest_seconds = 0, 0.0
        for raws in iter_segments(cache, receipts, every):
            raw_bytes += sum(map(len, raws))
            chunks = _batches(raws, batch)
            start, cpu = time.perf_counter(), time.process_time()
            if mode == "stream":
                for _ in ingestor.ingest_many(ORIGIN, chunks):
                    pass
            else:
                for chunk in chunks:
                    ingestor.ingest(ORIGIN, chunk)
            seconds = time.perf_counter() - start
            writer_us = (time.process_time() - cpu) / len(raws) * 1e6
            before = (reference.single[-1], reference.all[-1])
            after = reference.measure(reference_seconds)
            ref_single, ref_all = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            done += len(raws)
            ingest_seconds += seconds
            rate = len(raws) / seconds
            segments.append(
                {
                    "receipts": done,
                    "per_s": rate,
                    "reference_1_per_s": ref_single,
                    "reference_all_per_s": ref_all,
                    "ratio_1": rate / ref_single,
                    "ratio_all": rate / ref_all,
                    "writer_cpu_us": writer_us,
                }
            )
            out(
                f"{done:>10} {rate:>10,.0f} {rate / ref_single:>8.2f} {rate / ref_all:>9.2f} "
                f"{done / ingest_seconds:>9,.0f} {writer_us:>9.1f}  {ref_single:,.0f} / {ref_all:,.0f}"
            )
    finally:
        ingestor.close()

    head = store.head(ORIGIN)
    if head.size != receipts:
        raise RuntimeError(f"store holds {head.size} receipts, expected {receipts}")
    ref_single, ref_all = _mean(reference.single), _mean(reference.all)
    overall = receipts / ingest_seconds
    ingest = {
        "seconds": ingest_seconds,
        "per_s": overall,
        "ratio_1": overall / ref_single,
        "ratio_all": overall / ref_all,
        "target_ratio_1": 0.7,
    }
    out(
        f"ingest: {receipts} receipts in {ingest_seconds:.1f} s = {overall:,.0f}/s; "
        f"{ingest['ratio_1']:.2f} of the 1-thread raw verify rate ({ref_single:,.0f}/s), "
        f"{ingest['ratio_all']:.2f} of the {threads}-thread rate ({ref_all:,.0f}/s); "
        "target >= 0.70 of 1-thread"
    )

    # 4. proofs and size at full size
    proof_figures = measure_proofs(store, ORIGIN, min(proofs, max(1, receipts)), random.Random(receipts))
    out(
        f"proofs at {receipts}: {proof_figures['count']} random ones of each kind, timed "
        f"{proof_figures['rounds']} times, best (median); the first read of the log, which loads the top "
        f"of its tree into memory, took {proof_figures['first_read_seconds'] * 1000:.0f} ms "
        "and is not counted"
    )
    for label, name in (
        ("inclusion proof generation from the store", "inclusion_generation"),
        ("consistency proof generation from the store", "consistency_generation"),
        ("inclusion proof verification", "inclusion_verification"),
        ("consistency proof verification", "consistency_verification"),
    ):
        target = " (target >= 50,000/s)" if name == "inclusion_generation" else ""
        out(
            f"  {label}: {proof_figures[name + '_per_s']:,.0f}/s "
            f"({proof_figures[name + '_median_per_s']:,.0f}/s){target}"
        )
    stat = store.stat()
    store.close()
    lmdb_figures: dict[str, Any] = {
        "file_bytes": stat["file_bytes"],
        "bytes_per_receipt": stat["file_bytes"] / receipts,
        "receipt_bytes_mean": raw_bytes / receipts,
        "entries": {name: stat[name] for name in ("receipts", "nodes", "digests", "checkpoints")},
        "last_pgno": stat["last_pgno"],
    }
    out(
        f"lmdb: data.mdb {stat['file_bytes']:,} bytes = {lmdb_figures['bytes_per_receipt']:,.0f} bytes per "
        f"receipt (a receipt is {lmdb_figures['receipt_bytes_mean']:,.0f} bytes of JSON); entries "
        + ", ".join(f"{name} {value:,}" for name, value in lmdb_figures["entries"].items())
    )
    summary: dict[str, Any] = {
        "receipts": receipts,
        "batch": batch,
        "workers": workers,
        "mode": mode,
        "generation": generation,
        "reference": {
            "threads": threads,
            "verify_1_per_s": ref_single,
            "verify_all_per_s": ref_all,
            "scaling": ref_all / ref_single,
            "measurements": len(reference.single),
        },
        "ingest": ingest,
        "segments": segments,
        "proofs": proof_figures,
        "lmdb": lmdb_figures,
        "store": str(store_dir),
    }
    out(json.dumps(summary, sort_keys=True))
    return summary


def _signature(raw: bytes) -> bytes:
    text: str = json.loads(raw)["proof"]["signature"]
    return base64.urlsafe_b64decode(text + "==")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tests.bench ingest [options]`` (see ``tests/bench/README.md``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench ingest",
        description="receipts/s through the real store path vs raw Ed25519 verify; proofs; LMDB size",
    )
    parser.add_argument("--receipts", type=int, default=1_000_000, help="receipts to ingest")
    parser.add_argument("--batch", type=int, default=1000, help="receipts per LMDB write transaction")
    parser.add_argument("--workers", type=int, default=None, help="verification processes (default: CPUs)")
    parser.add_argument("--dir", type=Path, default=None, help=f"bench directory (default {default_dir()})")
    parser.add_argument("--every", type=int, default=100_000, help="receipts per reported segment")
    parser.add_argument(
        "--mode",
        choices=("stream", "batch"),
        default="stream",
        help="stream: Ingestor.ingest_many (checks the next batches while one commits); "
        "batch: Ingestor.ingest per batch",
    )
    parser.add_argument("--proofs", type=int, default=20_000, help="proofs of each kind to time")
    parser.add_argument(
        "--reference-seconds", type=float, default=1.0, help="length of each raw verify measurement"
    )
    args = parser.parse_args(argv)
    run_ingest(
        receipts=args.receipts,
        batch=args.batch,
        workers=args.workers,
        directory=args.dir,
        every=args.every,
        mode=args.mode,
        proofs=args.proofs,
        reference_seconds=args.reference_seconds,
    )
    return 0
