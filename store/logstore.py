"""The corridor log store: receipts, MMR nodes, digest index and signed checkpoints in LMDB.

Theory of operation
-------------------
One LMDB environment per process (design §14) holds every log this process
writes or replicates, each identified by its origin. Named databases, with keys
built for ordered scans (a 4-byte origin id, then big-endian numbers):

=============  =============================  ==================================
database       key                            value
=============  =============================  ==================================
``origins``    origin (UTF-8)                 msgpack {id, corridor_id, vkey}
``heads``      origin id (u32)                size u64 ‖ root 32 ‖ last next_root 32
``receipts``   origin id ‖ sequence u64       the receipt's canonical bytes
``nodes``      origin id ‖ position u64       32-byte MMR node hash (post-order)
``digests``    next_root (32)                 origin id ‖ sequence u64
``checkpoints``origin id ‖ size u64           signed checkpoint note bytes
``witness``    origin (UTF-8)                 msgpack witness record (what was last cosigned)
``history``    ``i`` ‖ origin ‖ 0 ‖ kind ‖ 0   an item of the witness's full history (the
               ‖ index u64                    checkpoints it cosigned, the evidence it kept)
               ``d`` ‖ origin ‖ 0 ‖ kind ‖ 0   index u64 (the item's SHA-256: no item is kept twice)
               ‖ SHA-256(item)
``meta``       name                           value (``schema_version``)
=============  =============================  ==================================

Appends are batches: one write transaction holds the receipts, their MMR
nodes, the digest index entries, the new head and (optionally) the checkpoint
signed over the new root. LMDB commits are atomic and durable (fsync on commit),
so a crash at any moment leaves the last committed batch whole and nothing
half-written, and :meth:`LogStore.append` returns only after the commit: that
return is the acknowledgement.

Proofs read O(log n) stored nodes; the tree is never rebuilt.

Everything here is synchronous (LMDB calls do not yield); callers in trio run
long batches in a worker thread or keep them small.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from protocol import mmr
from protocol.checkpoints import Checkpoint, open_checkpoint
from protocol.errors import PeerProtocolError
from protocol.keys import VerifierKey
from protocol.receipts import VerifiedReceipt, check_chain, genesis_root

from .errors import StoreError

__all__ = ["AppendResult", "Head", "LogStore", "OriginInfo"]

SCHEMA_VERSION = b"1"
DEFAULT_MAP_SIZE = 64 * 1024**3
"""Virtual address space reserved for the map; the file grows only as data is written."""

_U32 = struct.Struct(">I")
_ID_U64 = struct.Struct(">IQ")
_HEAD = struct.Struct(">Q32s32s")
_HEAD_SIZE = struct.Struct(">Q")
_U64 = struct.Struct(">Q")
_DB_NAMES = (
    b"meta",
    b"origins",
    b"heads",
    b"receipts",
    b"nodes",
    b"digests",
    b"checkpoints",
    b"witness",
    b"history",
)
_TOP_BITS = 14
"""Proofs keep in memory a log's MMR nodes of height >= bit_length(size) - _TOP_BITS: fewer than
2**(_TOP_BITS + 1) nodes (about 5 MB) per log, whatever its size. See :class:`_TopNodes`."""


@dataclass(frozen=True, slots=True)
class OriginInfo:
    """A log this store holds: its origin, corridor, and the writer's registered key."""

    origin: str
    corridor_id: str
    key: VerifierKey
    id: int


@dataclass(frozen=True, slots=True)
class Head:
    """The state of one log: ``size`` receipts, MMR ``root``, and the last receipt's ``next_root``.

    For an empty log ``root`` is SHA-256("") and ``last_next_root`` is the genesis root.
    """

    origin: str
    size: int
    root: bytes
    last_next_root: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a committed batch produced: the new head and the checkpoint stored with it, if any."""

    head: Head
    checkpoint: bytes | None


class _TopNodes:
    """A log's MMR nodes of height >= ``height`` in the tree of ``size`` leaves, by position.

    Every inclusion or consistency proof reads one node per level of the tree (and the peaks), so the
    nodes near the top are read by nearly every proof, while the low ones are different for each. Keeping
    the top in memory leaves about ``height`` LMDB reads per proof instead of about log2(size) + peaks:
    at 1M receipts 6 instead of 24, which is what lets proofs be served at well over 50,000/s.

    This is sound because MMR nodes are write-once: a committed node never changes or moves, and nothing
    in this store deletes one (anything that ever does, e.g. truncating a replica, must drop the cache).
    The nodes are read in read-only transactions, so they are committed; a reader of an older snapshot
    never asks for a position beyond its own tree. ``fsck`` reads through :meth:`LogStore.node`, never
    through this cache.
    """

    __slots__ = ("height", "nodes", "size")

    def __init__(self, height: int) -> None:
        self.height = height
        self.size = 0
        self.nodes: dict[int, bytes] = {}


class LogStore:
    """An LMDB environment holding many corridor logs.

    Args:
        path: the data directory (created if missing unless ``readonly``).
        map_size: LMDB map size in bytes (virtual; the file grows as needed).
        readonly: open without write access (``fsck``, inspection).

    Raises:
        StoreError(io): the directory cannot be opened as an LMDB environment.
    """

    def __init__(self, path: str | Path, *, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not (self.path / "data.mdb").exists():
            raise StoreError("not-found", f"no sez store at {self.path} (missing data.mdb)")
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=16, readonly=readonly, subdir=True, lock=True
            )
        except lmdb.Error as exc:
            raise StoreError("io", f"cannot open LMDB store at {self.path}: {exc}") from exc
        try:
            # All databases are created in one transaction: a first start killed half-way leaves
            # either a complete empty store or none, never one that read-only tools cannot open.
            if readonly:  # a read-only transaction cannot hand out database handles: open them one by one
                dbs = {name: self._env.open_db(name, create=False) for name in _DB_NAMES}
            else:
                with self._env.begin(write=True) as txn:
                    dbs = {name: self._env.open_db(name, txn=txn, create=True) for name in _DB_NAMES}
            with self._env.begin(write=not readonly) as txn:
                version = txn.get(b"schema_version", db=dbs[b"meta"])
                if version is None and not readonly:
                    txn.put(b"schema_version", SCHEMA_VERSION, db=dbs[b"meta"])
                elif version != SCHEMA_VERSION:
                    raise StoreError("io", f"store schema version {version!r} is not {SCHEMA_VERSION!r}")
        except lmdb.NotFoundError as exc:
            self._env.close()
            raise StoreError("not-found", f"{self.path} is not a complete sez store: {exc}") from exc
        except lmdb.Error as exc:
            self._env.close()
            raise StoreError("io", f"cannot open the databases of {self.path}: {exc}") from exc
        except StoreError:
            self._env.close()
            raise
        self._meta = dbs[b"meta"]
        self._origins = dbs[b"origins"]
        self._heads = dbs[b"heads"]
        self._receipts = dbs[b"receipts"]
        self._nodes = dbs[b"nodes"]
        self._digests = dbs[b"digests"]
        self._checkpoints = dbs[b"checkpoints"]
        self._witness = dbs[b"witness"]
        self._history = dbs[b"history"]
        # Read-path caches of immutable data: registered origins, and the top of each log's MMR.
        self._origin_cache: dict[str, OriginInfo] = {}
        self._tops: dict[int, _TopNodes] = {}
        self._tops_lock = threading.Lock()

    @contextmanager
    def _txn(self, *, write: bool = False) -> Iterator[lmdb.Transaction]:
        """A transaction whose LMDB failures surface as ``StoreError(io)`` (never a peer's fault)."""
        try:
            with self._env.begin(write=write) as txn:
                yield txn
        except lmdb.Error as exc:
            raise StoreError(
                "io", f"LMDB {'write' if write else 'read'} on {self.path} failed: {exc}"
            ) from exc

    def named_db(self, name: bytes) -> Any:
        """A further named database of this environment, created on first use (e.g. ``anchors``).

        For the other modules of ``store`` that own their own records (``store.anchors``); the
        databases above are opened with the store, these only by the module that needs them, so a
        store written before that module existed still opens read-only.

        Raises:
            StoreError(io): LMDB refused (e.g. more than ``max_dbs`` databases).
        """
        try:
            return self._env.open_db(name, create=True)
        except lmdb.Error as exc:
            raise StoreError("io", f"cannot open database {name!r} of {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the environment. Idempotent."""
        self._env.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- origins

    def register_origin(self, origin: str, corridor_id: str, key: VerifierKey) -> OriginInfo:
        """Register a log (idempotent): its corridor and the key its receipts and checkpoints verify under.

        Raises:
            StoreError(key-mismatch): the origin is registered with another key or corridor.
        """
        if key.name != origin:
            raise StoreError("key-mismatch", f"key name {key.name!r} is not the origin {origin!r}")
        with self._txn(write=True) as txn:
            existing = self._origin_info(txn, origin)
            if existing is not None:
                if existing.key != key or existing.corridor_id != corridor_id:
                    raise StoreError(
                        "key-mismatch",
                        f"origin {origin!r} is registered for {existing.corridor_id} with key "
                        f"{existing.key.to_vkey()}",
                    )
                return existing
            origin_id = txn.stat(self._origins)["entries"] + 1
            record = {"id": origin_id, "corridor_id": corridor_id, "vkey": key.to_vkey()}
            txn.put(origin.encode(), msgpack.packb(record), db=self._origins)
            empty = _HEAD.pack(0, mmr.EMPTY_ROOT, genesis_root(corridor_id, origin))
            txn.put(_U32.pack(origin_id), empty, db=self._heads)
            return OriginInfo(origin, corridor_id, key, origin_id)

    def origin(self, origin: str) -> OriginInfo:
        """The registered log ``origin``.

        Raises:
            StoreError(unknown-origin): not registered.
        """
        with self._txn() as txn:
            return self._require_origin(txn, origin)

    def origins(self) -> list[OriginInfo]:
        """Every registered log, in origin order."""
        with self._txn() as txn:
            return [self._decode_origin(bytes(k).decode(), bytes(v)) for k, v in txn.cursor(db=self._origins)]

    def _decode_origin(self, origin: str, value: bytes) -> OriginInfo:
        record: dict[str, Any] = msgpack.unpackb(value)
        return OriginInfo(origin, record["corridor_id"], VerifierKey.from_vkey(record["vkey"]), record["id"])

    def _origin_info(self, txn: lmdb.Transaction, origin: str) -> OriginInfo | None:
        value = txn.get(origin.encode(), db=self._origins)
        return None if value is None else self._decode_origin(origin, bytes(value))

    def _require_origin(self, txn: lmdb.Transaction, origin: str) -> OriginInfo:
        info = self._origin_info(txn, origin)
        if info is None:
            raise StoreError("unknown-origin", f"no log with origin {origin!r} in {self.path}")
        return info

    # ------------------------------------------------------------------- heads

    def head(self, origin: str) -> Head:
        """The current head of log ``origin``."""
        with self._txn() as txn:
            return self._head(txn, self._require_origin(txn, origin))

    def _head(self, txn: lmdb.Transaction, info: OriginInfo) -> Head:
        value = txn.get(_U32.pack(info.id), db=self._heads)
        if value is None:
            raise StoreError("corrupt", f"log {info.origin!r} has no head record")
        size, root, last = _HEAD.unpack(value)
        return Head(info.origin, size, root, last)

    # ------------------------------------------------------------------ append

    def append(
        self,
        origin: str,
        batch: Iterable[VerifiedReceipt],
        *,
        sign: Callable[[Checkpoint], bytes] | None = None,
        checkpoint: bytes | None = None,
    ) -> AppendResult:
        """Append ``batch`` to log ``origin`` in one durable write transaction.

        ``batch`` may be a lazy iterable (the ingest pipeline yields receipts as
        worker threads verify them); it is consumed inside the transaction, and
        an exception it raises aborts the batch. Each receipt must have been
        verified under the origin's registered key,
        and must continue the chain (sequence, prev_root, corridor). If ``sign``
        is given (the log writer), it is called with the checkpoint of the new
        tree and must return the signed note; the note is verified with the
        same function followers use before it is stored with the batch.
        A replica passes the writer's signed ``checkpoint`` instead: it must
        verify under the registered key and match the extended tree at its
        size, or the whole batch is refused (``checkpoint-conflict``,
        ``checkpoint-ahead``, signature reasons).

        Atomic: on any error nothing is written. Returns only once durable.

        Raises:
            PeerProtocolError: a receipt does not continue the chain (``seq-gap``,
                ``prev-root-mismatch``, ``wrong-corridor``) or ``duplicate-digest``.
            StoreError: ``unknown-origin``, ``key-mismatch``, ``corrupt``, ``io``.
        """
        with self._txn(write=True) as txn:
            info = self._require_origin(txn, origin)
            head = self._head(txn, info)
            origin_id = info.id
            nodes_db, receipts_db, digests_db = self._nodes, self._receipts, self._digests
            put = txn.put
            appender = mmr.MMRAppender.from_store(head.size, self._node_reader(txn, info))

            def visit(pos: int, node: bytes) -> None:
                put(_ID_U64.pack(origin_id, pos), node, db=nodes_db)

            seq, prev = head.size, head.last_next_root
            for verified in batch:
                receipt = verified.receipt
                if verified.key != info.key:
                    raise StoreError(
                        "key-mismatch", f"receipt verified under a key not registered for {origin!r}"
                    )
                check_chain(receipt, sequence=seq, prev_root=prev, corridor_id=info.corridor_id)
                rkey = _ID_U64.pack(origin_id, seq)
                if not put(receipt.next_root, rkey, db=digests_db, overwrite=False):
                    raise PeerProtocolError(
                        "duplicate-digest",
                        f"a receipt with next_root {receipt.next_root.hex()} is stored",
                    )
                put(rkey, receipt.raw, db=receipts_db)
                appender.append(mmr.hash_leaf(receipt.next_root), visit)
                prev = receipt.next_root
                seq += 1
            root = appender.root()
            put(_U32.pack(origin_id), _HEAD.pack(seq, root, prev), db=self._heads)
            note = None
            if sign is not None:
                note = sign(Checkpoint(origin=origin, size=seq, root=root))
                self._put_checkpoint(txn, info, note, expect=(seq, root))
            elif checkpoint is not None:
                note = checkpoint
                self._put_checkpoint(txn, info, note, expect=None)
            new_head = Head(origin, seq, root, prev)
        return AppendResult(new_head, note)

    # ------------------------------------------------------------- checkpoints

    def add_checkpoint(self, origin: str, note: bytes) -> Checkpoint:
        """Store a checkpoint signed by the log, after checking it against the stored tree.

        Idempotent for a checkpoint already stored at that size.

        Raises:
            PeerProtocolError: bad or missing log signature (from ``open_checkpoint``);
                ``checkpoint-ahead`` (size beyond the stored log: sync first);
                ``checkpoint-conflict`` (validly signed, different root at a stored size:
                evidence of equivocation, with both roots in ``details``).
        """
        with self._txn(write=True) as txn:
            info = self._require_origin(txn, origin)
            return self._put_checkpoint(txn, info, note, expect=None)

    def _put_checkpoint(
        self, txn: lmdb.Transaction, info: OriginInfo, note: bytes, *, expect: tuple[int, bytes] | None
    ) -> Checkpoint:
        cp, _ = open_checkpoint(note, info.key)
        head = self._head(txn, info)
        if cp.size > head.size:
            raise PeerProtocolError(
                "checkpoint-ahead",
                f"checkpoint size {cp.size} is beyond the stored log ({head.size})",
                size=cp.size,
                stored=head.size,
            )
        if expect is not None and cp.size != expect[0]:
            raise PeerProtocolError(
                "checkpoint-conflict", f"checkpoint is for size {cp.size}, the batch ends at {expect[0]}"
            )
        stored_root = expect[1] if expect is not None else self._root_at(txn, info, cp.size)
        if cp.root != stored_root:
            raise PeerProtocolError(
                "checkpoint-conflict",
                f"checkpoint for {info.origin} at size {cp.size} has a root that differs from the stored log",
                size=cp.size,
                checkpoint_root=cp.root.hex(),
                stored_root=stored_root.hex(),
            )
        key = _ID_U64.pack(info.id, cp.size)
        existing = txn.get(key, db=self._checkpoints)
        if existing is None or len(note) > len(existing):
            # A longer note at the same size carries more cosignatures of the same body.
            txn.put(key, note, db=self._checkpoints)
        return cp

    def checkpoint(self, origin: str, size: int | None = None) -> bytes:
        """The signed checkpoint at ``size``, or the latest one.

        Raises:
            StoreError(not-found): no checkpoint signed at that size (or none at all).
        """
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            if size is not None:
                note = txn.get(_ID_U64.pack(info.id, size), db=self._checkpoints)
                if note is None:
                    raise StoreError("not-found", f"no checkpoint of {origin!r} at size {size}")
                return bytes(note)
            cursor = txn.cursor(db=self._checkpoints)
            # Position on the last key of this origin: just before the next origin's first key.
            found = cursor.prev() if cursor.set_range(_U32.pack(info.id + 1)) else cursor.last()
            if found and cursor.key()[:4] == _U32.pack(info.id):
                return bytes(cursor.value())
            raise StoreError("not-found", f"no checkpoint of {origin!r} is stored")

    def checkpoint_sizes(self, origin: str) -> list[int]:
        """Sizes at which a signed checkpoint of ``origin`` is stored, ascending."""
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            return [size for size, _ in self._iter_checkpoints(txn, info)]

    def _iter_checkpoints(self, txn: lmdb.Transaction, info: OriginInfo) -> Iterator[tuple[int, bytes]]:
        prefix = _U32.pack(info.id)
        cursor = txn.cursor(db=self._checkpoints)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if key[:4] != prefix:
                return
            yield _ID_U64.unpack(key)[1], bytes(value)

    # ----------------------------------------------------------------- witness

    def witness_state(self, origin: str) -> dict[str, Any] | None:
        """What this process last cosigned for ``origin`` (design §6), or None if it never did.

        The record is ``{"size", "root" (bytes), "note" (the signed checkpoint cosigned), ...}``
        plus whatever the caller keeps with it (e.g. ``acked_size``).
        """
        with self._txn() as txn:
            value = txn.get(origin.encode(), db=self._witness)
        if value is None:
            return None
        record: dict[str, Any] = msgpack.unpackb(value)
        return record

    def set_witness_states(
        self,
        records: Mapping[str, dict[str, Any]],
        history: Mapping[str, Sequence[tuple[str, bytes]]] | None = None,
    ) -> None:
        """Durably replace several origins' witness records in one write transaction (all or none).

        ``history`` maps origins to ``(kind, item)`` pairs appended to their history in the same
        transaction (see :meth:`witness_history`).
        """
        with self._txn(write=True) as txn:
            for origin, record in records.items():
                txn.put(origin.encode(), msgpack.packb(record, use_bin_type=True), db=self._witness)
            for origin, items in (history or {}).items():
                for kind, item in items:
                    self._append_history(txn, origin, kind, item)

    def set_witness_state(
        self, origin: str, record: dict[str, Any], history: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Durably replace the witness record of ``origin`` (one committed write transaction).

        ``history``: ``(kind, item)`` pairs appended to the origin's history in the same
        transaction. Callers release a cosignature only after this returns (the witness rule).
        """
        self.set_witness_states({origin: record}, {origin: history} if history else None)

    def add_witness_history(self, origin: str, kind: str, item: bytes) -> bool:
        """Durably append ``item`` to the ``kind`` history of ``origin``; False if already kept."""
        with self._txn(write=True) as txn:
            return self._append_history(txn, origin, kind, item)

    @staticmethod
    def _history_prefix(origin: str, kind: str) -> bytes:
        if "\0" in origin or "\0" in kind or not kind:
            raise ValueError(f"bad history key {origin!r}/{kind!r}")
        return origin.encode() + b"\0" + kind.encode() + b"\0"

    def _append_history(self, txn: lmdb.Transaction, origin: str, kind: str, item: bytes) -> bool:
        prefix = self._history_prefix(origin, kind)
        digest_key = b"d" + prefix + hashlib.sha256(item).digest()
        if txn.get(digest_key, db=self._history) is not None:
            return False
        index = self._history_count(txn, prefix)
        txn.put(b"i" + prefix + _U64.pack(index), item, db=self._history)
        txn.put(digest_key, _U64.pack(index), db=self._history)
        return True

    def _history_count(self, txn: lmdb.Transaction, prefix: bytes) -> int:
        """Items in the history under ``prefix`` (the index of the last one + 1)."""
        key_prefix = b"i" + prefix
        cursor = txn.cursor(db=self._history)
        # The first key after every index of this prefix, then one step back.
        if cursor.set_range(key_prefix + b"\xff" * 8 + b"\x00"):
            if not cursor.prev():
                return 0
        elif not cursor.last():
            return 0
        key = bytes(cursor.key())
        if not key.startswith(key_prefix) or len(key) != len(key_prefix) + 8:
            return 0
        return int(_U64.unpack(key[len(key_prefix) :])[0]) + 1

    def witness_history(self, origin: str, kind: str, start: int = 0) -> list[bytes]:
        """Every item of the ``kind`` history of ``origin`` from index ``start``, oldest first.

        Nothing is ever dropped from a history: a watcher keeps every checkpoint it cosigned and
        every piece of evidence it kept (design §6).
        """
        prefix = b"i" + self._history_prefix(origin, kind)
        items: list[bytes] = []
        with self._txn() as txn:
            cursor = txn.cursor(db=self._history)
            if not cursor.set_range(prefix + _U64.pack(start)):
                return items
            for key, value in cursor:
                if not bytes(key).startswith(prefix) or len(key) != len(prefix) + 8:
                    break
                items.append(bytes(value))
        return items

    def witness_history_count(self, origin: str, kind: str) -> int:
        """How many items the ``kind`` history of ``origin`` holds."""
        with self._txn() as txn:
            return self._history_count(txn, self._history_prefix(origin, kind))

    # ---------------------------------------------------------------- receipts

    def receipt(self, origin: str, sequence: int) -> bytes:
        """The canonical bytes of receipt ``sequence`` of ``origin``.

        Raises:
            StoreError: ``bad-index`` if there is no such receipt.
        """
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            raw = (
                txn.get(_ID_U64.pack(info.id, sequence), db=self._receipts) if 0 <= sequence < 2**64 else None
            )
            if raw is None:
                size = self._head(txn, info).size
                raise StoreError("bad-index", f"{origin!r} has no receipt {sequence} (size {size})")
            return bytes(raw)

    def receipts(self, origin: str, start: int, end: int) -> list[bytes]:
        """Receipts ``start`` ≤ sequence < ``end`` (clipped to the log), in order.

        Raises:
            StoreError(corrupt): a receipt below the head is missing.
        """
        out: list[bytes] = []
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            start = max(start, 0)
            end = min(end, self._head(txn, info).size)
            if start >= end:
                return out
            cursor = txn.cursor(db=self._receipts)
            cursor.set_range(_ID_U64.pack(info.id, start))
            for seq in range(start, end):
                if cursor.key() != _ID_U64.pack(info.id, seq):
                    raise StoreError("corrupt", f"receipt {seq} of {origin!r} is missing from the store")
                out.append(bytes(cursor.value()))
                cursor.next()
        return out

    def find_digest(self, next_root: bytes) -> tuple[str, int] | None:
        """(origin, sequence) of the receipt whose ``next_root`` is given, if stored."""
        with self._txn() as txn:
            value = txn.get(next_root, db=self._digests)
            if value is None:
                return None
            origin_id, seq = _ID_U64.unpack(value)
            for key, record in txn.cursor(db=self._origins):
                if msgpack.unpackb(record)["id"] == origin_id:
                    return bytes(key).decode(), seq
        raise StoreError("corrupt", f"digest index names unknown origin id {origin_id}")

    # ------------------------------------------------------------------ proofs

    def _node_reader(self, txn: lmdb.Transaction, info: OriginInfo) -> Callable[[int], bytes]:
        origin_id, nodes_db, get = info.id, self._nodes, txn.get

        def get_node(pos: int) -> bytes:
            node = get(_ID_U64.pack(origin_id, pos), db=nodes_db)
            if node is None:
                raise StoreError("corrupt", f"MMR node {pos} of {info.origin!r} is missing")
            return bytes(node)

        return get_node

    def _root_at(self, txn: lmdb.Transaction, info: OriginInfo, size: int) -> bytes:
        return mmr.root_at(size, self._node_reader(txn, info))

    def _proof_view(
        self, txn: lmdb.Transaction, origin: str, size: int | None
    ) -> tuple[OriginInfo, int, int]:
        """The proof paths' :meth:`_require_origin` and :meth:`_check_size`: (info, head size, size).

        The origin comes from memory after the first time: a registration never changes
        (``register_origin`` refuses another key or corridor) and is never removed, so a registered
        origin once read stays true; an unknown one is looked up every time. Same errors as those two.
        """
        info = self._origin_cache.get(origin)
        if info is None:
            info = self._require_origin(txn, origin)
            self._origin_cache[origin] = info
        value = txn.get(_U32.pack(info.id), db=self._heads)
        if value is None:
            raise StoreError("corrupt", f"log {info.origin!r} has no head record")
        head_size: int = _HEAD_SIZE.unpack_from(value)[0]
        if size is None:
            return info, head_size, head_size
        if not 0 <= size <= head_size:
            raise StoreError("bad-index", f"tree size {size} is outside 0..{head_size} for {info.origin!r}")
        return info, head_size, size

    def _read_failed(self, exc: lmdb.Error) -> StoreError:
        # As _txn says it; the proof paths open their read transaction directly (it is 1 µs cheaper).
        return StoreError("io", f"LMDB read on {self.path} failed: {exc}")

    def _top_nodes(self, txn: lmdb.Transaction, info: OriginInfo, head_size: int) -> dict[int, bytes]:
        """The cached top of the MMR of ``info`` (see :class:`_TopNodes`), extended to ``head_size``."""
        top = self._tops.get(info.id)
        if top is not None and head_size <= top.size:
            return top.nodes
        with self._tops_lock:
            top = self._tops.get(info.id)
            if top is not None and head_size <= top.size:
                return top.nodes
            height = max(0, head_size.bit_length() - _TOP_BITS)
            if top is None or top.height != height:
                top = _TopNodes(height)  # the log doubled: start afresh one level higher
            get, origin_id, nodes = txn.cursor(db=self._nodes).get, info.id, top.nodes
            for level in range(height, head_size.bit_length()):
                for index in range(top.size >> level, head_size >> level):
                    pos = mmr.node_position(level, index)
                    node = get(_ID_U64.pack(origin_id, pos))
                    if node is None:
                        raise StoreError("corrupt", f"MMR node {pos} of {info.origin!r} is missing")
                    nodes[pos] = bytes(node)
            top.size = head_size
            self._tops[info.id] = top
            return nodes

    def _proof_reader(
        self, txn: lmdb.Transaction, info: OriginInfo, head_size: int
    ) -> Callable[[int], bytes]:
        """``get_node`` for read-only transactions: the top of the tree from memory, the rest through one
        cursor (LMDB skips the tree descent when the next node is on the cursor's page)."""
        top_get = self._top_nodes(txn, info, head_size).get
        cursor_get, pack, origin_id = txn.cursor(db=self._nodes).get, _ID_U64.pack, info.id

        def get_node(pos: int) -> bytes:
            node = top_get(pos)
            if node is not None:
                return node
            stored = cursor_get(pack(origin_id, pos))
            if stored is None:
                raise StoreError("corrupt", f"MMR node {pos} of {info.origin!r} is missing")
            return bytes(stored)

        return get_node

    def _check_size(self, txn: lmdb.Transaction, info: OriginInfo, size: int | None) -> int:
        head_size = self._head(txn, info).size
        if size is None:
            return head_size
        if not 0 <= size <= head_size:
            raise StoreError("bad-index", f"tree size {size} is outside 0..{head_size} for {info.origin!r}")
        return size

    def root_at(self, origin: str, size: int | None = None) -> bytes:
        """The RFC 6962 root of the first ``size`` receipts (default: all)."""
        try:
            with self._env.begin() as txn:
                info, head_size, size = self._proof_view(txn, origin, size)
                return mmr.root_at(size, self._proof_reader(txn, info, head_size))
        except lmdb.Error as exc:
            raise self._read_failed(exc) from exc

    def inclusion_proof(self, origin: str, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 inclusion proof of receipt ``index`` in the tree of ``size`` (default: all).

        Raises:
            StoreError(bad-index): ``index`` or ``size`` outside the stored log.
        """
        try:
            with self._env.begin() as txn:
                info, head_size, size = self._proof_view(txn, origin, size)
                if not 0 <= index < size:
                    raise StoreError("bad-index", f"index {index} is outside 0..{size - 1} for {origin!r}")
                return mmr.inclusion_proof(index, size, self._proof_reader(txn, info, head_size))
        except lmdb.Error as exc:
            raise self._read_failed(exc) from exc

    def consistency_proof(self, origin: str, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 consistency proof from tree ``old_size`` to ``new_size`` (default: all).

        Raises:
            StoreError(bad-index): sizes outside the stored log or ``old_size > new_size``.
        """
        try:
            with self._env.begin() as txn:
                info, head_size, new_size = self._proof_view(txn, origin, new_size)
                if not 0 <= old_size <= new_size:
                    raise StoreError(
                        "bad-index", f"old size {old_size} is outside 0..{new_size} for {origin!r}"
                    )
                return mmr.consistency_proof(old_size, new_size, self._proof_reader(txn, info, head_size))
        except lmdb.Error as exc:
            raise self._read_failed(exc) from exc

    # ------------------------------------------------------------- inspection

    def iter_receipts(self, origin: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield (sequence, raw) from ``start`` on, reading in chunks of short read transactions."""
        chunk = 4096
        while True:
            raws = self.receipts(origin, start, start + chunk)
            for offset, raw in enumerate(raws):
                yield start + offset, raw
            if len(raws) < chunk:
                return
            start += chunk

    def node(self, origin: str, position: int) -> bytes | None:
        """The stored MMR node at ``position`` (None if absent). For fsck and tests."""
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            value = txn.get(_ID_U64.pack(info.id, position), db=self._nodes)
            return None if value is None else bytes(value)

    def count_nodes(self, origin: str) -> int:
        """Number of stored MMR nodes of ``origin``."""
        return sum(1 for _ in self._iter_prefix(self._nodes, origin))

    def count_receipts(self, origin: str) -> int:
        """Number of stored receipts of ``origin``."""
        return sum(1 for _ in self._iter_prefix(self._receipts, origin))

    def _iter_prefix(self, db: Any, origin: str) -> Iterator[bytes]:
        with self._txn() as txn:
            info = self._require_origin(txn, origin)
            prefix = _U32.pack(info.id)
            cursor = txn.cursor(db=db)
            if not cursor.set_range(prefix):
                return
            for key in cursor.iternext(keys=True, values=False):
                if key[:4] != prefix:
                    return
                yield bytes(key)

    def digest_entry(self, next_root: bytes) -> tuple[int, int] | None:
        """(origin id, sequence) stored in the digest index for ``next_root``."""
        with self._txn() as txn:
            value = txn.get(next_root, db=self._digests)
            return None if value is None else _ID_U64.unpack(value)

    def stat(self) -> dict[str, int]:
        """LMDB figures: file size in bytes and entries per database."""
        with self._txn() as txn:
            entries = {
                name: txn.stat(db)["entries"]
                for name, db in (
                    ("receipts", self._receipts),
                    ("nodes", self._nodes),
                    ("digests", self._digests),
                    ("checkpoints", self._checkpoints),
                )
            }
        info = self._env.info()
        entries["file_bytes"] = (self.path / "data.mdb").stat().st_size
        entries["last_pgno"] = info["last_pgno"]
        return entries
