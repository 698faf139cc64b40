"""Setting a log's tail aside: the orphaned receipts of a losing fork branch (design §8 "Recovery").

Theory of operation
-------------------
A node whose own log is on the losing branch of a fork (restored from an old backup, say) must
shorten its log to the last receipt both branches share, then fetch the canonical branch. The
receipts it drops are evidence of what it signed: they are *moved* into the ``orphans`` database,
never deleted, and nothing ever deletes from ``orphans``.

:func:`set_aside` does it in **one LMDB write transaction**: it copies receipts
``from_sequence..head`` (and the checkpoints signed beyond ``from_sequence``) into ``orphans`` under
a new recovery number, deletes those receipts, their digest-index entries, the MMR nodes beyond the
shorter tree and those checkpoints, and rewrites the head (size, root, last ``next_root``). A crash
at any moment leaves either the old log or the new one. The store's in-memory top-of-tree cache of
the log (``LogStore._tops``) is dropped after the commit: MMR nodes are otherwise write-once and the
cache relies on that.

The ``orphans`` named database, keys built for ordered prefix scans:

==========================================================  ==========================================
key                                                         value
==========================================================  ==========================================
``b"s"`` ‖ origin id u32 ‖ recovery u32                     msgpack record (:class:`OrphanSet`)
``b"r"`` ‖ origin id u32 ‖ recovery u32 ‖ sequence u64      the orphaned receipt's canonical bytes
``b"c"`` ‖ origin id u32 ‖ recovery u32 ‖ size u64          a checkpoint signed over the orphaned tree
==========================================================  ==========================================

Recovery numbers count from 1 per origin, so several recoveries of one log never collide. The
record keeps when, why and on which evidence the tail was set aside, the old head, and the SHA-256 of
the orphaned receipts' ``next_root`` values in order (``digest``), which :func:`check_orphans` (run
by ``fsck``) recomputes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import weakref
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from protocol import mmr
from protocol.receipts import genesis_root

from .errors import StoreError
from .logstore import Head, LogStore

__all__ = [
    "OrphanSet",
    "check_orphans",
    "open_orphans",
    "orphan_checkpoints",
    "orphan_receipts",
    "orphan_sets",
    "set_aside",
]

_DB_NAME = b"orphans"
_ID_REC = struct.Struct(">II")
_ID_REC_U64 = struct.Struct(">IIQ")
_ID_U64 = struct.Struct(">IQ")
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">Q32s32s")


@dataclass(frozen=True, slots=True)
class OrphanSet:
    """One set-aside of a log's tail.

    Attributes:
        origin: the log.
        recovery: 1 for the first set-aside of this log, then 2, ...
        from_sequence: the first orphaned sequence (the log's size after the set-aside).
        count: how many receipts were set aside (``old_size - from_sequence``).
        old_size, old_root: the head before (root in hex).
        new_root: the root of the shortened log (hex).
        checkpoints: sizes of the checkpoints set aside with the receipts.
        at: when (``YYYY-MM-DDTHH:MM:SSZ``, the caller's clock).
        reason: why (free text, e.g. the resolution that named the canonical branch).
        evidence: digests (hex) of the fork evidence behind it, if any.
        digest: SHA-256 over the orphaned receipts' ``next_root`` bytes in order (hex).
    """

    origin: str
    recovery: int
    from_sequence: int
    count: int
    old_size: int
    old_root: str
    new_root: str
    checkpoints: tuple[int, ...]
    at: str
    reason: str
    evidence: tuple[str, ...]
    digest: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (API ``/v1/corridors/{id}/orphans``)."""
        return {
            "origin": self.origin,
            "recovery": self.recovery,
            "from_sequence": self.from_sequence,
            "count": self.count,
            "old_size": self.old_size,
            "old_root": self.old_root,
            "new_root": self.new_root,
            "checkpoints": list(self.checkpoints),
            "at": self.at,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "digest": self.digest,
        }


_HANDLES: weakref.WeakKeyDictionary[LogStore, Any] = weakref.WeakKeyDictionary()
"""The ``orphans`` handle of each open store, opened once: opening a database takes LMDB's write
lock, which must never be waited for on a path that runs while other threads write."""


def open_orphans(store: LogStore) -> None:
    """Open (create) the ``orphans`` database of ``store`` now, before other threads write to it."""
    _db(store)


def _db(store: LogStore) -> Any:
    """The ``orphans`` database; None in a read-only store that never had one (nothing set aside)."""
    if store in _HANDLES:
        return _HANDLES[store]
    if store._env.flags()["readonly"]:
        try:
            handle = store._env.open_db(_DB_NAME, create=False)
        except lmdb.NotFoundError:
            handle = None
    else:
        handle = store.named_db(_DB_NAME)
    _HANDLES[store] = handle
    return handle


def _decode_set(origin: str, recovery: int, value: bytes) -> OrphanSet:
    r: dict[str, Any] = msgpack.unpackb(value)
    return OrphanSet(
        origin=origin, recovery=recovery, from_sequence=r["from_sequence"], count=r["count"],
        old_size=r["old_size"], old_root=r["old_root"], new_root=r["new_root"],
        checkpoints=tuple(r["checkpoints"]), at=r["at"], reason=r["reason"],
        evidence=tuple(r["evidence"]), digest=r["digest"],
    )  # fmt: skip


def _next_root(raw: bytes) -> bytes:
    try:
        return bytes.fromhex(json.loads(raw)["next_root"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError("corrupt", f"a stored receipt has no readable next_root: {exc}") from exc


def set_aside(
    store: LogStore,
    origin: str,
    from_sequence: int,
    *,
    at: str,
    reason: str,
    evidence: tuple[str, ...] = (),
) -> tuple[Head, OrphanSet | None]:
    """Move receipts ``from_sequence..head`` of ``origin`` into ``orphans``; shorten the log to match.

    One write transaction (all or nothing, durable on return). Afterwards the log's head, root,
    receipts, MMR nodes, digest index and checkpoints are exactly those of a log that only ever held
    its first ``from_sequence`` receipts. ``from_sequence == head.size`` changes nothing and returns
    ``(head, None)``.

    Returns:
        The new head, and the record of what was set aside (None if nothing was).

    Raises:
        StoreError: ``bad-index`` (``from_sequence`` beyond the head or negative), ``unknown-origin``,
            ``corrupt`` (a receipt below the head is missing), ``io``.
    """
    orphans = _db(store)
    with store._txn(write=True) as txn:
        info = store._require_origin(txn, origin)
        head = store._head(txn, info)
        if not 0 <= from_sequence <= head.size:
            raise StoreError(
                "bad-index", f"cannot set aside from {from_sequence}: {origin!r} holds 0..{head.size}"
            )
        if from_sequence == head.size:
            return head, None
        oid = info.id
        # 1. the recovery number: one more than the last set of this origin
        cursor = txn.cursor(db=orphans)
        recovery = 1
        prefix = b"s" + _U32.pack(oid)
        found = cursor.prev() if cursor.set_range(b"s" + _U32.pack(oid + 1)) else cursor.last()
        if found and bytes(cursor.key()).startswith(prefix):
            recovery = _ID_REC.unpack(bytes(cursor.key())[1:])[1] + 1
        # 2. the receipts: copy, then delete them and their digest-index entries
        roots = hashlib.sha256()
        for seq in range(from_sequence, head.size):
            rkey = _ID_U64.pack(oid, seq)
            raw = txn.get(rkey, db=store._receipts)
            if raw is None:
                raise StoreError("corrupt", f"receipt {seq} of {origin!r} is missing from the store")
            raw = bytes(raw)
            next_root = _next_root(raw)
            roots.update(next_root)
            txn.put(b"r" + _ID_REC_U64.pack(oid, recovery, seq), raw, db=orphans)
            txn.delete(rkey, db=store._receipts)
            if txn.get(next_root, db=store._digests) == rkey:
                txn.delete(next_root, db=store._digests)
        # 3. checkpoints signed over a tree larger than the new one
        moved: list[int] = []
        ckeys: list[bytes] = []
        cursor = txn.cursor(db=store._checkpoints)
        if cursor.set_range(_ID_U64.pack(oid, from_sequence + 1)):
            for raw_key, value in cursor:
                ckey = bytes(raw_key)
                if ckey[:4] != _U32.pack(oid):
                    break
                size = _ID_U64.unpack(ckey)[1]
                txn.put(b"c" + _ID_REC_U64.pack(oid, recovery, size), bytes(value), db=orphans)
                moved.append(size)
                ckeys.append(ckey)
        for key in ckeys:
            txn.delete(key, db=store._checkpoints)
        # 4. MMR nodes beyond the shorter tree (positions are post-order: the kept tree is a prefix)
        first_gone = mmr.mmr_size(from_sequence)
        for pos in range(first_gone, mmr.mmr_size(head.size)):
            txn.delete(_ID_U64.pack(oid, pos), db=store._nodes)
        # 5. the new head
        new_root = store._root_at(txn, info, from_sequence)
        if from_sequence == 0:
            last = genesis_root(info.corridor_id, origin)
        else:
            prev = txn.get(_ID_U64.pack(oid, from_sequence - 1), db=store._receipts)
            if prev is None:
                raise StoreError("corrupt", f"receipt {from_sequence - 1} of {origin!r} is missing")
            last = _next_root(bytes(prev))
        txn.put(_U32.pack(oid), _HEAD.pack(from_sequence, new_root, last), db=store._heads)
        record = {
            "from_sequence": from_sequence,
            "count": head.size - from_sequence,
            "old_size": head.size,
            "old_root": head.root.hex(),
            "new_root": new_root.hex(),
            "checkpoints": moved,
            "at": at,
            "reason": reason,
            "evidence": list(evidence),
            "digest": roots.hexdigest(),
        }
        txn.put(b"s" + _ID_REC.pack(oid, recovery), msgpack.packb(record), db=orphans)
    # After the commit: the cached top of the old tree may hold nodes that no longer exist.
    with store._tops_lock:
        store._tops.pop(info.id, None)
    return Head(origin, from_sequence, new_root, last), _decode_set(origin, recovery, msgpack.packb(record))


def orphan_sets(store: LogStore, origin: str) -> list[OrphanSet]:
    """Every set-aside of ``origin``'s log, oldest first (empty if none)."""
    orphans = _db(store)
    out: list[OrphanSet] = []
    if orphans is None:
        return out
    with store._txn() as txn:
        info = store._require_origin(txn, origin)
        prefix = b"s" + _U32.pack(info.id)
        cursor = txn.cursor(db=orphans)
        if cursor.set_range(prefix):
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if not key.startswith(prefix):
                    break
                out.append(_decode_set(origin, _ID_REC.unpack(key[1:])[1], bytes(value)))
    return out


def orphan_receipts(store: LogStore, origin: str, recovery: int) -> list[tuple[int, bytes]]:
    """(sequence, canonical bytes) of the receipts set aside by recovery ``recovery`` of ``origin``."""
    return _scan(store, origin, recovery, b"r")


def orphan_checkpoints(store: LogStore, origin: str, recovery: int) -> list[tuple[int, bytes]]:
    """(size, note) of the checkpoints set aside by recovery ``recovery`` of ``origin``."""
    return _scan(store, origin, recovery, b"c")


def _scan(store: LogStore, origin: str, recovery: int, kind: bytes) -> list[tuple[int, bytes]]:
    orphans = _db(store)
    out: list[tuple[int, bytes]] = []
    if orphans is None:
        return out
    with store._txn() as txn:
        info = store._require_origin(txn, origin)
        prefix = kind + _ID_REC.pack(info.id, recovery)
        cursor = txn.cursor(db=orphans)
        if cursor.set_range(prefix):
            for raw_key, value in cursor:
                key = bytes(raw_key)
                if not key.startswith(prefix):
                    break
                out.append((_ID_U64.unpack(key[5:])[1], bytes(value)))
    return out


def check_orphans(store: LogStore, origin: str) -> list[str]:
    """fsck of ``origin``'s orphans: each set's receipts are contiguous, counted and digested as recorded.

    Returns the problems found (empty: clean). Reads only; never repairs.
    """
    problems: list[str] = []
    for orphan in orphan_sets(store, origin):
        receipts = orphan_receipts(store, origin, orphan.recovery)
        sequences = [seq for seq, _ in receipts]
        expected = list(range(orphan.from_sequence, orphan.from_sequence + orphan.count))
        if sequences != expected:
            problems.append(
                f"orphan set {orphan.recovery}: receipts {sequences[:3]}... are not {expected[:3]}..."
            )
            continue
        roots = hashlib.sha256()
        try:
            for _, raw in receipts:
                roots.update(_next_root(raw))
        except StoreError as exc:
            problems.append(f"orphan set {orphan.recovery}: {exc.message}")
            continue
        if roots.hexdigest() != orphan.digest:
            problems.append(f"orphan set {orphan.recovery}: receipts do not match the recorded digest")
        sizes = [size for size, _ in orphan_checkpoints(store, origin, orphan.recovery)]
        if sizes != list(orphan.checkpoints):
            problems.append(
                f"orphan set {orphan.recovery}: checkpoints {sizes} are not {list(orphan.checkpoints)}"
            )
    return problems
