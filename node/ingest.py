"""Receipt ingest: bytes from a peer or a client to durable, verified log entries.

The path is the rule of design §4 in order: parse and check each receipt
(canonical bytes, schema, digests: :meth:`Receipt.from_bytes`), verify its
signature under the origin's registered key (:func:`verify_receipt`), then
append the batch in one LMDB write transaction that also checks the chain
(sequence, prev_root) against the stored head (:meth:`LogStore.append`).

Theory of operation
-------------------
Per receipt, parsing costs about 30 µs of Python, the Ed25519 check about
55 µs of libsodium, and the append about 11 µs of Python. libsodium runs
without the GIL, so threads look like the natural way to use several cores,
but they do not help: every receipt needs the GIL back after its signature
check, and with one thread parsing (holding the GIL) and another waiting for
it, the hand-offs cost more than the overlap gains. Measured on the project's
2-core machine, two threads doing parse + verify ran no faster than one, and
the earlier thread-pool ingest ran at 0.5 of the single-core raw verify rate,
the same as a single thread (``tests/bench/README.md`` has the figures).

So :class:`Ingestor` hands chunks of a batch's raw bytes to a pool of worker
*processes*. A worker runs the full checks on every receipt of its chunk
(``Receipt.from_bytes`` and ``verify_receipt``, the same code as everywhere)
and answers only "all accepted" or the first failure (index, reason,
message, details), so almost nothing travels back. The calling process then
rebuilds each accepted receipt from its bytes (:func:`_accepted_receipt`: one
JSON decode of bytes a worker has just checked, no second check) and feeds
them, in order, into the batch's single LMDB write transaction while the
workers check the following chunks. One writer, one transaction: if any
receipt fails, the transaction aborts and nothing is written; the error is
the first failing receipt's :class:`PeerProtocolError`, as the store would
have raised it in order.

:meth:`Ingestor.ingest_many` pipelines a stream of batches (a follower
syncing a log): while batch ``k`` is appended and committed, the workers
already check batches ``k + 1`` and ``k + 2`` (a commit at 1M receipts waits
tens of milliseconds for the disk). Each batch is still its own atomic, durable
transaction; the stream stops at the first failing batch.

Batches smaller than ``inline_below`` (gossip of single receipts) are checked
in the calling thread: a round trip to a worker would cost more than it
saves. ``workers=0`` checks everything in the calling thread.

Workers are started with the ``forkserver`` method, never a plain ``fork()``
of the node: the node holds threads and an open LMDB environment, which must
not be used in a forked child. The fork server preloads this module, so a
worker starts in milliseconds; like every multiprocessing user, the
program's main module must be import-safe (the ``if __name__ == "__main__"``
idiom). Workers ignore SIGINT: the parent decides when to stop them
(:meth:`Ingestor.close`).
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from typing import Any

from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.keys import VerifierKey
from protocol.receipts import Receipt, VerifiedReceipt, verify_receipt
from store import AppendResult, LogStore

__all__ = ["Ingestor"]

_MIN_CHUNK = 16
_MAX_CHUNK = 256
"""Receipts per worker task: a task costs a few hundred µs of hand-off; 256 receipts take about 22 ms."""

_CHUNKS_PER_WORKER = 4
"""Chunks per worker and batch: enough that the writer starts early and the workers finish together."""

INLINE_BELOW = 64
"""Default: batches with fewer receipts are checked in the calling thread."""

_Failure = tuple[int, str, str, str, dict[str, Any]]
"""What a worker reports about the first refused receipt of a chunk: index, whose fault ("peer" or
"local"), reason, message, details (JSON-friendly, so it pickles)."""


# ------------------------------------------------------------------------------------ worker side


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready() -> None:
    """A no-op task: its completion shows a worker process is up."""


@lru_cache(maxsize=64)
def _verifier(name: str, public: bytes, alg: int) -> VerifierKey:
    return VerifierKey(name=name, public=public, alg=alg)


def _check_chunk(raws: Sequence[bytes], name: str, public: bytes, alg: int) -> _Failure | None:
    """Run in a worker process: every check of :meth:`Receipt.from_bytes` and :func:`verify_receipt`."""
    key = _verifier(name, public, alg)
    for index, raw in enumerate(raws):
        try:
            verify_receipt(Receipt.from_bytes(raw), key)
        except SezError as exc:
            fault = "local" if isinstance(exc, LocalProtocolError) else "peer"
            return (index, fault, exc.reason, exc.message, exc.details)
    return None


# ------------------------------------------------------------------------------------ parent side

_decode_json = json.JSONDecoder().decode


def _accepted_receipt(raw: bytes, key: VerifierKey) -> VerifiedReceipt:
    """The :class:`VerifiedReceipt` of ``raw``, which a worker has accepted under ``key``.

    The compact constructor of this module: ``raw`` passed ``Receipt.from_bytes`` and ``verify_receipt``
    in a worker, so it is canonical JSON without floats, its ``next_root`` is its content's digest and its
    signature verifies. What remains is to build the same object those functions built there: the plain
    decoder gives the same body as the strict one for such bytes, ``next_root`` equals the digest
    recomputed in the worker, and the base64url signature of 86 characters needs two ``=`` of padding.
    """
    body: dict[str, Any] = _decode_json(raw.decode("utf-8"))
    transition, proof = body["transition"], body["proof"]
    receipt = Receipt(
        raw=raw,
        body=body,
        corridor_id=body["corridor_id"],
        origin=body["origin"],
        sequence=body["sequence"],
        kind=transition["kind"],
        prev_root=bytes.fromhex(body["prev_root"]),
        next_root=bytes.fromhex(body["next_root"]),
        signature=base64.urlsafe_b64decode(proof["signature"] + "=="),
        verification_method=proof["verificationMethod"],
    )
    return VerifiedReceipt(receipt, key)


def _error(failure: _Failure) -> SezError:
    _, fault, reason, message, details = failure
    if fault == "local":
        return LocalProtocolError(reason, message, **details)
    return PeerProtocolError(reason, message, **details)


_Chunk = tuple[list[bytes], "Future[_Failure | None]"]
"""The bytes of a chunk, exactly as handed to a worker, and the worker's answer."""


class _Pending:
    """One batch on its way through the checks: its chunks with the workers' answers, or (checked inline,
    as it is consumed) the batch itself."""

    __slots__ = ("_chunks", "_inline", "_key")

    def __init__(
        self, key: VerifierKey, *, inline: Sequence[bytes] = (), chunks: Sequence[_Chunk] = ()
    ) -> None:
        self._key = key
        self._inline = inline
        self._chunks = chunks

    def receipts(self) -> Iterator[VerifiedReceipt]:
        """The batch's verified receipts in order; raises the first refused receipt's error at its place."""
        key = self._key
        try:
            for raw in self._inline:
                yield verify_receipt(Receipt.from_bytes(raw), key)
            for raws, future in self._chunks:
                failure = future.result()
                # Rebuilt from the very bytes objects the worker was sent (immutable), never re-read from
                # the caller's sequence, which may have changed since.
                for raw in raws if failure is None else raws[: failure[0]]:
                    yield _accepted_receipt(raw, key)
                if failure is not None:
                    raise _error(failure)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the chunks not started yet (a running chunk finishes; its answer is ignored)."""
        for _, future in self._chunks:
            future.cancel()


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Ingestor:
    """Verifies and appends batches of receipts to a :class:`~store.LogStore`.

    Args:
        store: the open store.
        workers: verification processes (default: the CPUs this process may run on); 0 checks every batch
            in the calling thread. The processes start with the first batch that needs them.
        inline_below: batches with fewer receipts are checked in the calling thread.

    Thread-safe. Use as a context manager, or call :meth:`close`, to stop the processes.
    """

    def __init__(
        self, store: LogStore, *, workers: int | None = None, inline_below: int = INLINE_BELOW
    ) -> None:
        if workers is None:
            workers = _available_cpus()
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.store = store
        self.workers = workers
        self._inline_below = max(1, inline_below)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Stop the verification processes (waits for running chunks). Idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------- pool

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("Ingestor is closed")
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__])
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=context, initializer=_worker_init
                )
            return self._pool

    def start(self) -> None:
        """Start the verification processes now rather than with the first large batch.

        A daemon calls this at start-up, so that neither the first batch nor a benchmark pays for it.
        """
        if self.workers == 0:
            return
        pool = self._get_pool()
        # Each submission finds no idle process and starts one, up to ``workers``.
        for future in [pool.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def _discard_pool(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, raws: Sequence[bytes], key: VerifierKey) -> _Pending:
        if self._closed:
            raise RuntimeError("Ingestor is closed")
        count = len(raws)
        if self.workers == 0 or count < self._inline_below:
            return _Pending(key, inline=raws)
        pool = self._get_pool()
        size = -(-count // (self.workers * _CHUNKS_PER_WORKER))
        size = max(_MIN_CHUNK, min(_MAX_CHUNK, size))
        chunks: list[_Chunk] = []
        try:
            for start in range(0, count, size):
                # bytes() keeps bytes objects as they are and freezes anything mutable.
                chunk = [bytes(raw) for raw in raws[start : start + size]]
                chunks.append((chunk, pool.submit(_check_chunk, chunk, key.name, key.public, key.alg)))
        except BrokenProcessPool:
            self._discard_pool(pool)
            for _, future in chunks:
                future.cancel()
            raise
        return _Pending(key, chunks=chunks)

    def _append(self, origin: str, pending: _Pending, checkpoint: bytes | None = None) -> AppendResult:
        try:
            return self.store.append(origin, pending.receipts(), checkpoint=checkpoint)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the batch was not written; start afresh next time.
            pool = self._pool
            if pool is not None:
                self._discard_pool(pool)
            raise
        finally:
            pending.cancel()  # the store may have refused the batch before reading all of it

    # ------------------------------------------------------------------------------------ API

    def verify(self, raws: Sequence[bytes], key: VerifierKey) -> list[VerifiedReceipt]:
        """Parse and verify ``raws`` (in order) under ``key``.

        Raises:
            PeerProtocolError: the first invalid receipt's reason.
        """
        return list(self._submit(raws, key).receipts())

    def ingest(self, origin: str, raws: Sequence[bytes], *, checkpoint: bytes | None = None) -> AppendResult:
        """Verify ``raws`` under ``origin``'s registered key and append them as one durable batch.

        Atomic: if any receipt is invalid, nothing is written. ``checkpoint`` (a replica's copy of the
        writer's signed checkpoint at the batch's end) is checked and stored with the batch, as
        :meth:`LogStore.append` does.

        Raises:
            PeerProtocolError: an invalid receipt (reason names it).
            StoreError: ``unknown-origin`` and storage failures.
            BrokenProcessPool: a verification process died; nothing was written.
        """
        key = self.store.origin(origin).key
        return self._append(origin, self._submit(raws, key), checkpoint)

    def ingest_many(
        self, origin: str, batches: Iterable[Sequence[bytes]], *, ahead: int = 2
    ) -> Iterator[AppendResult]:
        """Ingest a stream of batches in order, checking up to ``ahead`` later batches while one is appended.

        Yields each batch's :class:`AppendResult` once it is durable. Each batch is atomic, as with
        :meth:`ingest`; on the first failing batch the error is raised and no later batch is appended.
        Looking two batches ahead keeps the workers busy while a commit waits for the disk.

        Raises:
            as :meth:`ingest`.
        """
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        key = self.store.origin(origin).key
        pending: deque[_Pending] = deque()
        try:
            for raws in batches:
                pending.append(self._submit(raws, key))
                if len(pending) > ahead:
                    yield self._append(origin, pending.popleft())
            while pending:
                yield self._append(origin, pending.popleft())
        finally:
            for batch in pending:
                batch.cancel()
