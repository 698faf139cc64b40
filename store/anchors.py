"""Anchor records in LMDB (design §10, §14): the ``anchors`` named database.

Key: corridor id (UTF-8) ‖ 0x00 ‖ origin (UTF-8) ‖ 0x00 ‖ size (u64 big-endian), so a prefix scan of
a corridor lists its records by origin, then oldest checkpoint first. Value: the record's canonical
JSON (:meth:`protocol.anchor.AnchorRecord.to_bytes`). One record per anchored checkpoint; a state
change replaces it in one committed write transaction.
"""

from __future__ import annotations

import struct

from protocol.anchor import AnchorRecord

from .logstore import LogStore

__all__ = ["AnchorStore"]

_U64 = struct.Struct(">Q")


class AnchorStore:
    """The anchor records held in a :class:`~store.logstore.LogStore`'s environment.

    Satisfies ``anchor.task.AnchorLedger``. Every method is synchronous and commits before it returns.
    """

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._db = store.named_db(b"anchors")

    @staticmethod
    def _key(corridor_id: str, origin: str, size: int) -> bytes:
        return corridor_id.encode() + b"\x00" + origin.encode() + b"\x00" + _U64.pack(size)

    def put_anchor(self, record: AnchorRecord) -> None:
        """Durably store (or replace) the record of (corridor, origin, size)."""
        key = self._key(record.corridor_id, record.origin, record.size)
        with self.store._txn(write=True) as txn:
            txn.put(key, record.to_bytes(), db=self._db)

    def anchor(self, corridor_id: str, origin: str, size: int) -> AnchorRecord | None:
        """The record of one checkpoint, or None."""
        with self.store._txn() as txn:
            value = txn.get(self._key(corridor_id, origin, size), db=self._db)
        return None if value is None else AnchorRecord.from_bytes(bytes(value))

    def anchors(self, corridor_id: str, origin: str | None = None) -> list[AnchorRecord]:
        """The corridor's records (of ``origin`` only, if given), by origin then size."""
        prefix = corridor_id.encode() + b"\x00" + (origin.encode() + b"\x00" if origin else b"")
        out: list[AnchorRecord] = []
        with self.store._txn() as txn:
            cursor = txn.cursor(db=self._db)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    out.append(AnchorRecord.from_bytes(bytes(value)))
        return out
