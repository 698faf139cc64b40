"""Verified misbehaviour evidence in LMDB (design §7, §14), one copy per evidence digest.

Theory of operation
-------------------
One more named database, ``evidence``, in the :class:`~store.logstore.LogStore`'s environment, opened
here so that ``logstore`` stays as it is. Two kinds of key share it:

=====================================  =================================================
key                                    value
=====================================  =================================================
``b"e"`` ‖ corridor (7) ‖ u64 ‖ digest msgpack {kind, origin, offender, time, received, raw}
``b"d"`` ‖ digest (32)                 the ``b"e"`` key of that evidence
=====================================  =================================================

The u64 is the unix second the node first stored it, so a prefix scan lists a corridor's evidence
oldest first; the ``d`` index makes :meth:`EvidenceStore.add` idempotent: adding a digest already
held changes nothing and answers False (a duplicate is quiet, style rule 9). Only
:class:`~protocol.evidence.VerifiedEvidence` can be added: verification happens before, in the
caller, with the corridor's keys and policy (``node.evidence_pool``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from protocol.evidence import VerifiedEvidence

from .errors import StoreError
from .logstore import LogStore

__all__ = ["EvidenceRecord", "EvidenceStore"]

_DB_NAME = b"evidence"
_U64 = struct.Struct(">Q")
_CORRIDOR_LEN = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRecord:
    """One stored piece of evidence.

    Attributes:
        corridor_id, kind, origin, offender: as verified.
        digest: hex evidence digest (the idempotence key).
        time: unix seconds of the misbehaviour, or None (checkpoint-form log equivocation).
        received: unix seconds when this node first stored it.
        raw: the evidence's canonical bytes.
    """

    corridor_id: str
    digest: str
    kind: str
    origin: str
    offender: str
    time: int | None
    received: int
    raw: bytes


def _corridor_key(corridor_id: str) -> bytes:
    key = corridor_id.encode("ascii")
    if len(key) != _CORRIDOR_LEN:
        raise StoreError("bad-corridor", f"corridor id {corridor_id!r} is not AAA-BBB")
    return key


class EvidenceStore:
    """The ``evidence`` database of a :class:`LogStore` (see the module docstring).

    Raises:
        StoreError(io): the database cannot be opened (a read-only store without it reads as empty).
    """

    def __init__(self, store: LogStore) -> None:
        self._store = store
        env = store._env  # the store package owns the environment; logstore opens no handle for us
        self._db: Any = None
        try:
            if env.flags()["readonly"]:
                try:
                    self._db = env.open_db(_DB_NAME, create=False)
                except lmdb.NotFoundError:
                    self._db = None
            else:
                with env.begin(write=True) as txn:
                    self._db = env.open_db(_DB_NAME, txn=txn, create=True)
        except lmdb.Error as exc:
            raise StoreError("io", f"cannot open the evidence database: {exc}") from exc

    def add(self, evidence: VerifiedEvidence, *, received: int) -> bool:
        """Store verified ``evidence`` unless its digest is held; True if it was new.

        One write transaction: the record and its digest index commit together or not at all.
        """
        if self._db is None:
            raise StoreError("read-only", "this store is open read-only")
        index_key = b"d" + evidence.digest
        key = b"e" + _corridor_key(evidence.corridor_id) + _U64.pack(received) + evidence.digest
        value = msgpack.packb(
            {
                "kind": evidence.kind,
                "origin": evidence.origin,
                "offender": evidence.offender,
                "time": evidence.time,
                "received": received,
                "raw": evidence.raw,
            },
            use_bin_type=True,
        )
        with self._store._txn(write=True) as txn:
            if not txn.put(index_key, key, db=self._db, overwrite=False):
                return False
            txn.put(key, value, db=self._db)
        return True

    def get(self, digest: bytes) -> EvidenceRecord | None:
        """The evidence with ``digest``, or None."""
        if self._db is None:
            return None
        with self._store._txn() as txn:
            key = txn.get(b"d" + digest, db=self._db)
            if key is None:
                return None
            value = txn.get(bytes(key), db=self._db)
        return None if value is None else _record(bytes(key), bytes(value))

    def list(self, corridor_id: str, *, limit: int = 1000) -> list[EvidenceRecord]:
        """A corridor's evidence, oldest first, at most ``limit`` items."""
        if self._db is None:
            return []
        prefix = b"e" + _corridor_key(corridor_id)
        records: list[EvidenceRecord] = []
        with self._store._txn() as txn, txn.cursor(db=self._db) as cursor:
            if not cursor.set_range(prefix):
                return records
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if not key.startswith(prefix) or len(records) >= limit:
                    break
                records.append(_record(key, bytes(value)))
        return records


def _record(key: bytes, value: bytes) -> EvidenceRecord:
    fields: dict[str, Any] = msgpack.unpackb(value)
    return EvidenceRecord(
        corridor_id=key[1 : 1 + _CORRIDOR_LEN].decode("ascii"),
        digest=key[-32:].hex(),
        kind=fields["kind"],
        origin=fields["origin"],
        offender=fields["offender"],
        time=fields["time"],
        received=fields["received"],
        raw=fields["raw"],
    )
