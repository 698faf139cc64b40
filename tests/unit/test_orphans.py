"""Tests of store.orphans.set_aside: a log's tail set aside is a log that never had it (design §8).

The oracle is a second store that only ever held the kept receipts, built with the same batches: after
the set-aside every database of the log store (receipts, nodes, digests, checkpoints, heads) is byte
for byte that store's, proofs and roots agree, and appending the same continuation to both keeps them
equal. The orphans keep every receipt and checkpoint set aside, under one recovery number per
set-aside, and fsck checks them.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from protocol.receipts import Receipt
from store import LogStore, StoreError
from store.fsck import fsck
from store.orphans import orphan_checkpoints, orphan_receipts, orphan_sets, set_aside
from tests.unit.test_logstore import (
    CORRIDOR,
    DB_NAMES,
    MAP_SIZE,
    ORIGIN,
    VKEY,
    build,
    dump_env,
    log_chain,
    open_store,
    reason,
    sign,
    verified,
)

BATCH = 5
AT = "2026-11-27T10:00:00Z"


def _fill(store: LogStore, receipts: tuple[Receipt, ...] | list[Receipt], *, upto: int | None = None) -> None:
    """Append ``receipts[:upto]`` in batches of BATCH, each signed; a last partial batch unsigned."""
    store.register_origin(ORIGIN, CORRIDOR, VKEY)
    end = len(receipts) if upto is None else upto
    start = store.head(ORIGIN).size
    for offset in range(start, end, BATCH):
        piece = list(receipts[offset : min(offset + BATCH, end)])
        full = offset + BATCH <= end or upto is None
        store.append(ORIGIN, verified(piece), sign=sign if full else None)


def _branch(start: int, count: int, prev: bytes, tag: int) -> list[Receipt]:
    out = []
    for seq in range(start, start + count):
        receipt = build(seq, prev, tag=tag + seq)
        out.append(receipt)
        prev = receipt.next_root
    return out


def _dump(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    dump = dump_env(path)
    dump.pop(b"")  # the main database lists the named ones: ``orphans`` is extra on one side
    return dump


def _proofs(store: LogStore) -> list[object]:
    size = store.head(ORIGIN).size
    out: list[object] = [store.root_at(ORIGIN, s) for s in range(size + 1)]
    out += [store.inclusion_proof(ORIGIN, i, size) for i in range(size)]
    out += [store.consistency_proof(ORIGIN, old, size) for old in range(size + 1)]
    return out


@pytest.mark.parametrize("keep", [0, 1, 7, 10, 12, 29])
def test_set_aside_leaves_exactly_the_log_that_never_had_the_tail(tmp_path: Path, keep: int) -> None:
    receipts = log_chain(30)
    with open_store(tmp_path / "a") as a, open_store(tmp_path / "b") as b:
        _fill(a, receipts)
        _fill(b, receipts, upto=keep)
        _proofs(a)  # fill the top-of-tree cache of the long log: it must not survive
        head, orphan = set_aside(a, ORIGIN, keep, at=AT, reason="test", evidence=("ab" * 32,))
        assert head == b.head(ORIGIN)
        assert _proofs(a) == _proofs(b)
        assert orphan is not None and orphan.recovery == 1
        assert (orphan.from_sequence, orphan.count, orphan.old_size) == (keep, 30 - keep, 30)
        assert orphan.evidence == ("ab" * 32,)
        assert orphan.checkpoints == tuple(s for s in range(BATCH, 31, BATCH) if s > keep)
        assert orphan_receipts(a, ORIGIN, 1) == [(r.sequence, r.raw) for r in receipts[keep:]]
        assert [s for s, _ in orphan_checkpoints(a, ORIGIN, 1)] == list(orphan.checkpoints)
        # The same continuation (another branch) appended to both stays equal.
        prev = head.last_next_root
        more = _branch(keep, 8, prev, tag=1000)
        for store in (a, b):
            store.append(ORIGIN, verified(more[:3]), sign=sign)
            store.append(ORIGIN, verified(more[3:]), sign=sign)
        assert a.head(ORIGIN) == b.head(ORIGIN)
        assert _proofs(a) == _proofs(b)
        assert fsck(a).ok and fsck(b).ok, (fsck(a).logs, fsck(b).logs)
        assert orphan_sets(a, ORIGIN) == [orphan]
    a_dump, b_dump = _dump(tmp_path / "a"), _dump(tmp_path / "b")
    for name in DB_NAMES:
        assert a_dump[name] == b_dump[name], name


def test_nothing_to_set_aside_changes_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path / "a") as a:
        _fill(a, log_chain(10))
        before = a.head(ORIGIN)
        assert set_aside(a, ORIGIN, 10, at=AT, reason="test") == (before, None)
        assert orphan_sets(a, ORIGIN) == []
    with open_store(tmp_path / "e") as empty:
        empty.register_origin(ORIGIN, CORRIDOR, VKEY)
        head, orphan = set_aside(empty, ORIGIN, 0, at=AT, reason="test")
        assert orphan is None and head.size == 0


@pytest.mark.parametrize("from_sequence", [11, 2**40, -1])
def test_set_aside_beyond_the_head_is_refused_and_changes_nothing(tmp_path: Path, from_sequence: int) -> None:
    with open_store(tmp_path / "a") as a:
        _fill(a, log_chain(10))
    before = _dump(tmp_path / "a")
    with open_store(tmp_path / "a") as a, pytest.raises(StoreError) as exc:
        set_aside(a, ORIGIN, from_sequence, at=AT, reason="test")
    assert reason(exc) == "bad-index"
    after = _dump(tmp_path / "a")
    for name in DB_NAMES:
        assert after[name] == before[name], name


def test_two_set_asides_keep_both_tails_under_their_own_numbers(tmp_path: Path) -> None:
    receipts = log_chain(20)
    with open_store(tmp_path / "a") as a:
        _fill(a, receipts)
        head, first = set_aside(a, ORIGIN, 12, at=AT, reason="first")
        other = _branch(12, 6, head.last_next_root, tag=5000)
        a.append(ORIGIN, verified(other), sign=sign)
        _, second = set_aside(a, ORIGIN, 9, at=AT, reason="second")
        assert first is not None and second is not None
        assert (first.recovery, second.recovery) == (1, 2)
        assert orphan_receipts(a, ORIGIN, 1) == [(r.sequence, r.raw) for r in receipts[12:]]
        assert orphan_receipts(a, ORIGIN, 2) == [(r.sequence, r.raw) for r in [*receipts[9:12], *other]]
        assert [o.reason for o in orphan_sets(a, ORIGIN)] == ["first", "second"]
        assert a.head(ORIGIN).size == 9 and a.root_at(ORIGIN) == a.root_at(ORIGIN, 9)
        report = fsck(a)
        assert report.ok, report.logs
        # Everything set aside, and the log starts again from its genesis.
        head, third = set_aside(a, ORIGIN, 0, at=AT, reason="third")
        assert third is not None and third.recovery == 3 and head.size == 0
        a.append(ORIGIN, verified(list(receipts[:3])), sign=sign)
        assert a.head(ORIGIN).size == 3 and fsck(a).ok


def test_fsck_names_a_damaged_orphan_set(tmp_path: Path) -> None:
    with open_store(tmp_path / "a") as a:
        _fill(a, log_chain(10))
        set_aside(a, ORIGIN, 4, at=AT, reason="test")
        assert fsck(a).ok
    env = lmdb.open(str(tmp_path / "a"), max_dbs=16, map_size=MAP_SIZE)
    try:
        db = env.open_db(b"orphans", create=False)
        with env.begin(write=True) as txn:
            keys = [bytes(k) for k, _ in txn.cursor(db=db) if bytes(k).startswith(b"r")]
            txn.delete(keys[2], db=db)
    finally:
        env.close()
    with LogStore(tmp_path / "a", readonly=True, map_size=MAP_SIZE) as a:
        report = fsck(a)
    assert not report.ok
    assert any("orphan set 1" in text for text in report.logs[0].problems), report.logs[0].problems
