"""Keeping a verified replica of the counterparty's log (design §4, §13).

:class:`Replica` applies what arrives by gossip or sync to the local copy of
one counterparty log, with the same rules the writer applied: each receipt is
parsed, its signature checked under the counterparty's registered key, the
chain checked against the replica head, and the writer's checkpoint checked
against the replica's own tree after the append (``LogStore.add_checkpoint``),
all in one batch. The outcome says what the caller should do next:

* ``APPENDED``: the replica grew; cosign/ack logic may run.
* ``DUPLICATE``: everything was already held (gossip echo, sync overlap): quiet.
* ``GAP``: the batch starts beyond the replica head: pull the range by sync.
* invalid input raises :class:`~protocol.errors.PeerProtocolError` (reject the
  gossip, penalise the peer); nothing stored changes.
* **a fork** raises :class:`ForkDetected` (a ``PeerProtocolError``) carrying
  ``log-equivocation`` evidence (design §8): a receipt validly signed by the writer
  that differs from the one held at its sequence, or a validly signed checkpoint
  with another root than the one held at its size. The caller records and gossips
  the evidence and halts the corridor; nothing stored changes.

A checkpoint whose size is beyond what the replica holds is kept in memory as
the *target* that sync must reach (its signature is verified first).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.checkpoints import Checkpoint, open_checkpoint
from protocol.errors import PeerProtocolError
from protocol.evidence import log_equivocation_from_checkpoints, log_equivocation_from_receipts
from protocol.keys import VerifierKey
from protocol.receipts import Receipt, verify_receipt
from store import LogStore, StoreError

from .ingest import Ingestor

__all__ = ["ForkDetected", "Outcome", "Replica", "ReplicaStatus"]


class ForkDetected(PeerProtocolError):
    """The writer signed two conflicting statements; ``evidence`` is the ``log-equivocation`` JSON."""

    def __init__(self, message: str, evidence: dict[str, Any], **details: Any) -> None:
        super().__init__("log-equivocation", message, **details)
        self.evidence = evidence


class Outcome(enum.Enum):
    """What applying a batch did."""

    APPENDED = "appended"
    DUPLICATE = "duplicate"
    GAP = "gap"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """The replica's position against the best checkpoint seen from the writer."""

    origin: str
    size: int
    target: int

    @property
    def lag(self) -> int:
        """Receipts known to exist (signed by the writer) and not yet held."""
        return max(0, self.target - self.size)


class Replica:
    """The local, verified copy of one counterparty log.

    Args:
        store: the open store.
        corridor_id: the corridor.
        key: the counterparty log's key (name = its origin).
        ingestor: parses and verifies receipts (shared worker processes for large batches).
    """

    def __init__(self, store: LogStore, corridor_id: str, key: VerifierKey, ingestor: Ingestor) -> None:
        self.store = store
        self.origin = key.name
        self.key = key
        self.corridor_id = corridor_id
        self._ingestor = ingestor
        self._target: Checkpoint | None = None
        self._target_note: bytes | None = None
        store.register_origin(self.origin, corridor_id, key)

    def status(self) -> ReplicaStatus:
        """Replica size and the best checkpoint size seen."""
        size = self.store.head(self.origin).size
        target = max(size, self._target.size if self._target else 0)
        return ReplicaStatus(self.origin, size, target)

    def note_checkpoint(self, note: bytes) -> Checkpoint:
        """Check a checkpoint signed by the writer; store it if the replica reaches it, else remember it.

        Raises:
            PeerProtocolError: bad signature, wrong origin, ``checkpoint-conflict``.
        """
        cp, _ = open_checkpoint(note, self.key)
        head = self.store.head(self.origin)
        if cp.size <= head.size:
            self._add_checkpoint(cp, note)
        elif self._target is None or cp.size > self._target.size:
            self._target, self._target_note = cp, note
        return cp

    def _add_checkpoint(self, cp: Checkpoint, note: bytes) -> None:
        """Store a verified checkpoint; a conflicting one at a held size is a fork (:class:`ForkDetected`)."""
        try:
            self.store.add_checkpoint(self.origin, note)
        except PeerProtocolError as exc:
            if exc.reason != "checkpoint-conflict":
                raise
            try:
                held = self.store.checkpoint(self.origin, cp.size)
            except StoreError:
                raise exc from None  # no stored note at that size: the conflict is with our tree only
            evidence = log_equivocation_from_checkpoints(held, note, self.key)
            raise ForkDetected(
                f"{self.origin} signed two checkpoints of size {cp.size} with different roots",
                evidence, size=cp.size,
            ) from exc  # fmt: skip

    def _conflict(self, sequence: int, ours: bytes, theirs: bytes) -> PeerProtocolError:
        """The error for a received receipt that differs from the one held at ``sequence``."""
        try:
            received = verify_receipt(Receipt.from_bytes(theirs), self.key).receipt
        except PeerProtocolError:
            # Not validly signed by the writer: a peer's forgery, not the writer's fork.
            return PeerProtocolError(
                "conflicting-receipt",
                f"receipt {sequence} of {self.origin} differs from the one held",
                sequence=sequence,
            )
        if received.sequence != sequence:
            return PeerProtocolError(
                "bad-batch", f"receipt at position {sequence} carries sequence {received.sequence}"
            )
        evidence = log_equivocation_from_receipts(ours, theirs)
        message = f"{self.origin} signed two different receipts with sequence {sequence}"
        return ForkDetected(message, evidence, sequence=sequence)

    def apply(self, start: int, receipts: Sequence[bytes], checkpoint: bytes | None) -> Outcome:
        """Apply receipts ``start``.. (and the writer's checkpoint covering them, if given).

        Raises:
            PeerProtocolError: an invalid receipt or checkpoint; nothing is stored.
        """
        if checkpoint is not None:
            cp, _ = open_checkpoint(checkpoint, self.key)  # verify before spending work on receipts
            if cp.size < start + len(receipts):
                raise PeerProtocolError(
                    "bad-batch",
                    f"checkpoint size {cp.size} does not cover receipts up to {start + len(receipts)}",
                )
        head = self.store.head(self.origin)
        if start > head.size:
            if checkpoint is not None:
                self.note_checkpoint(checkpoint)
            return Outcome.GAP
        skip = head.size - start
        overlap = receipts[:skip]
        if overlap:
            held = self.store.receipts(self.origin, start, start + len(overlap))
            for offset, (ours, theirs) in enumerate(zip(held, overlap, strict=True)):
                if ours != theirs:
                    raise self._conflict(start + offset, ours, theirs)
        fresh = receipts[skip:]
        if not fresh:
            if checkpoint is not None:
                self.note_checkpoint(checkpoint)
            return Outcome.DUPLICATE
        exact = checkpoint is not None and cp.size == start + len(receipts)
        # A checkpoint that ends where the batch ends is checked inside the batch's transaction, so a
        # validly signed checkpoint that disagrees with the receipts refuses them all.
        self._ingestor.ingest(self.origin, fresh, checkpoint=checkpoint if exact else None)
        if checkpoint is not None and not exact:
            self.note_checkpoint(checkpoint)
        target, target_note = self._target, self._target_note
        if (
            target is not None
            and target_note is not None
            and target.size <= self.store.head(self.origin).size
        ):
            self._target, self._target_note = None, None
            self._add_checkpoint(target, target_note)
        return Outcome.APPENDED
