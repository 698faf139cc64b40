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

A checkpoint whose size is beyond what the replica holds is kept in memory as
the *target* that sync must reach (its signature is verified first).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.checkpoints import Checkpoint, open_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey
from store import LogStore

from .ingest import Ingestor

__all__ = ["Outcome", "Replica", "ReplicaStatus"]


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
            self.store.add_checkpoint(self.origin, note)
        elif self._target is None or cp.size > self._target.size:
            self._target, self._target_note = cp, note
        return cp

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
                    # Validly signed, this is equivocation evidence (issue 5); either way it is not our log.
                    raise PeerProtocolError(
                        "conflicting-receipt",
                        f"receipt {start + offset} of {self.origin} differs from the one held",
                        sequence=start + offset,
                    )
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
            self.store.add_checkpoint(self.origin, target_note)
        return Outcome.APPENDED
