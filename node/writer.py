"""The log writer: turns submitted transitions into signed, durable receipts of our own log.

Theory of operation
-------------------
Submitters (the HTTP API, the ack recorder) call :meth:`LogWriter.submit`. It
checks the transition first (known kind, payload schema, no floats) so a bad
request is refused at once and never reaches the log, then queues it on a
bounded channel and waits for its receipt.

One writer task (:meth:`LogWriter.run`) owns the log: it takes every queued
submission up to :attr:`max_batch`, builds and signs the receipts from the
current head, checks each with the same ``verify_receipt`` followers use (one
rulebook), and appends the batch with a checkpoint signed over the new tree in
one LMDB write transaction, in a worker thread, shielded from cancellation so
that an in-flight batch always completes. Only then does it wake the
submitters: an acknowledged receipt is durable (design §14). Each committed
batch is handed to ``on_batch`` (gossip) afterwards.

On shutdown, submissions still queued are answered with ``shutting-down``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import trio

from protocol import schemas
from protocol.checkpoints import Checkpoint, sign_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.jcs import canonical
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.receipts import KNOWN_KINDS, Receipt, build_receipt, verify_receipt
from store import AppendResult, LogStore

__all__ = ["Admitter", "CommittedBatch", "LogWriter", "WriterStatistics"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 512
"""Receipts per write transaction and per gossip message (``protocol.wire.MAX_BATCH_RECEIPTS``)."""
QUEUE_SIZE = 4096
"""Submissions waiting for the writer; beyond this, submit() waits (back-pressure to HTTP clients)."""


def utc_timestamp() -> str:
    """Now, as a receipt timestamp ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Admitter(Protocol):
    """Decides, receipt by receipt in sequence order, whether a batch may hold a transition.

    :class:`node.lifecycle.LifecycleGate` is the one the daemon uses (the corridor lifecycle).
    """

    def admit(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Raise a :class:`SezError` (the submitter's answer) to refuse; return to admit."""


@dataclass(slots=True)
class _Submission:
    kind: str
    payload: dict[str, Any]
    done: trio.Event = field(default_factory=trio.Event)
    receipt: Receipt | None = None
    error: SezError | None = None


@dataclass(frozen=True, slots=True)
class CommittedBatch:
    """A batch now durable in our log: its receipts and the checkpoint signed over them."""

    origin: str
    corridor_id: str
    start: int
    receipts: tuple[Receipt, ...]
    checkpoint: bytes


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    """Counters for /metrics."""

    queued: int
    batches: int
    receipts: int
    refused: int


class LogWriter:
    """The single writer of one origin's log.

    Args:
        store: the open store (the origin is registered on construction).
        corridor_id: the corridor of the log.
        key: the signing key; its name is the origin.
        on_batch: awaited after each committed batch (e.g. gossip); its errors are logged, never fatal.
        max_batch: receipts per write transaction.
        now: timestamp source (tests pass a fixed clock).
    """

    def __init__(
        self,
        store: LogStore,
        corridor_id: str,
        key: SigningKey,
        *,
        on_batch: Callable[[CommittedBatch], Awaitable[None]] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        now: Callable[[], str] = utc_timestamp,
        gate: Callable[[], Admitter] | None = None,
    ) -> None:
        self.store = store
        self.corridor_id = corridor_id
        self.key = key
        self.origin = key.name
        self.verifier = key.verifier()
        self.max_batch = max_batch
        self._now = now
        self._on_batch = on_batch
        self.gate = gate
        """Admits each receipt of a batch (the corridor lifecycle); None admits every kind."""
        self._send, self._receive = trio.open_memory_channel[_Submission](QUEUE_SIZE)
        self._batches = 0
        self._receipts = 0
        self._refused = 0
        self._closed = False
        store.register_origin(self.origin, corridor_id, self.verifier)

    def statistics(self) -> WriterStatistics:
        """A snapshot of the writer's counters."""
        return WriterStatistics(
            queued=self._send.statistics().current_buffer_used,
            batches=self._batches,
            receipts=self._receipts,
            refused=self._refused,
        )

    @staticmethod
    def check_transition(kind: Any, payload: Any) -> None:
        """Refuse a transition that could never become a receipt.

        Raises:
            PeerProtocolError: ``unknown-kind``, ``schema-violation``, ``float-refused``,
                ``integer-out-of-range``, ``non-canonical-json``.
        """
        if not isinstance(kind, str) or kind not in KNOWN_KINDS:
            raise PeerProtocolError("unknown-kind", f"unknown transition kind {kind!r}")
        try:
            canonical(payload)
        except LocalProtocolError as exc:
            raise PeerProtocolError(exc.reason, exc.message) from exc
        schemas.validate(f"payload.{kind}", payload)

    async def submit(self, kind: str, payload: Mapping[str, Any]) -> Receipt:
        """Append one transition and return its receipt once it is durable.

        Cancellation: if cancelled while queued, the transition may still be
        written (it is then simply not acknowledged to this caller).

        Raises:
            PeerProtocolError: the transition is invalid (see :meth:`check_transition`).
            LocalProtocolError(shutting-down): the writer stopped before writing it.
        """
        self.check_transition(kind, payload)
        if self._closed:
            raise LocalProtocolError("shutting-down", "the log writer is stopping")
        submission = _Submission(kind, dict(payload))
        try:
            await self._send.send(submission)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise LocalProtocolError("shutting-down", "the log writer is stopping") from exc
        await submission.done.wait()
        if submission.error is not None:
            raise submission.error
        assert submission.receipt is not None
        return submission.receipt

    async def submit_many(self, transitions: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Receipt]:
        """Append several transitions; return their receipts, in order, once all are durable.

        Every transition is checked before any is queued, so an invalid one refuses the
        whole request (its index is in the message). They are queued together and usually
        share one write transaction, but may span two; each returned receipt is durable.

        Raises:
            PeerProtocolError: a transition is invalid (``details["index"]`` names it).
            LocalProtocolError(shutting-down): the writer stopped before writing them all.
        """
        for index, (kind, payload) in enumerate(transitions):
            try:
                self.check_transition(kind, payload)
            except PeerProtocolError as exc:
                raise PeerProtocolError(
                    exc.reason, f"transition {index}: {exc.message}", index=index
                ) from exc
        if self._closed:
            raise LocalProtocolError("shutting-down", "the log writer is stopping")
        submissions = [_Submission(kind, dict(payload)) for kind, payload in transitions]
        try:
            for submission in submissions:
                await self._send.send(submission)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise LocalProtocolError("shutting-down", "the log writer is stopping") from exc
        receipts: list[Receipt] = []
        for submission in submissions:
            await submission.done.wait()
            if submission.error is not None:
                raise submission.error
            assert submission.receipt is not None
            receipts.append(submission.receipt)
        return receipts

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled; on the way out, answer what is still queued."""
        task_status.started()
        try:
            while True:
                first = await self._receive.receive()
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                committed = await self._write(batch)
                if committed is not None and self._on_batch is not None:
                    try:
                        await self._on_batch(committed)
                    except trio.Cancelled:
                        raise
                    except Exception:
                        log.exception("after-batch hook failed", extra={"origin": self.origin})
        finally:
            self._closed = True
            self._send.close()
            self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                submission = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            submission.error = LocalProtocolError("shutting-down", "the log writer stopped first")
            submission.done.set()

    def _build(self, batch: list[_Submission]) -> tuple[list[_Submission], list[Receipt]]:
        head = self.store.head(self.origin)
        timestamp = self._now()
        prev, seq = head.last_next_root, head.size
        accepted: list[_Submission] = []
        receipts: list[Receipt] = []
        gate = self.gate() if self.gate is not None else None
        for submission in batch:
            try:
                receipt = build_receipt(
                    key=self.key, corridor_id=self.corridor_id, sequence=seq, timestamp=timestamp,
                    prev_root=prev, kind=submission.kind, payload=submission.payload,
                )  # fmt: skip
                if gate is not None:  # in sequence order: a lifecycle receipt changes what follows it
                    gate.admit(submission.kind, submission.payload)
            except SezError as exc:
                submission.error = exc
                submission.done.set()
                self._refused += 1
                continue
            accepted.append(submission)
            receipts.append(receipt)
            prev, seq = receipt.next_root, seq + 1
        return accepted, receipts

    def _commit(self, receipts: list[Receipt]) -> AppendResult:
        key = self.key

        def sign(cp: Checkpoint) -> bytes:
            return format_note(sign_checkpoint(cp, key))

        return self.store.append(self.origin, [verify_receipt(r, self.verifier) for r in receipts], sign=sign)

    async def _write(self, batch: list[_Submission]) -> CommittedBatch | None:
        accepted, receipts = self._build(batch)
        if not receipts:
            return None
        try:
            with trio.CancelScope(shield=True):
                result = await trio.to_thread.run_sync(self._commit, receipts)
        except SezError as exc:
            log.error("batch refused by the store: %s", exc, extra={"origin": self.origin})
            for submission in accepted:
                submission.error = exc
                submission.done.set()
            self._refused += len(accepted)
            return None
        for submission, receipt in zip(accepted, receipts, strict=True):
            submission.receipt = receipt
            submission.done.set()
        self._batches += 1
        self._receipts += len(receipts)
        assert result.checkpoint is not None
        return CommittedBatch(
            self.origin, self.corridor_id, receipts[0].sequence, tuple(receipts), result.checkpoint
        )
