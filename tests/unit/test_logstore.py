"""Tests of store.logstore.LogStore and store.fsck against the slow RFC 6962 reference.

What is checked (design §4, §5, §6, §14):

* origins register idempotently, and a second registration with another key or corridor is refused;
* appended batches read back exactly (head, receipts, digest index, checkpoints), and every root,
  inclusion proof and consistency proof the store computes from its nodes equals the reference's and
  verifies with ``protocol.proofs``;
* a batch that fails anywhere (wrong sequence, prev_root, corridor or key in its 3rd receipt, a lazy
  iterable that raises, a bad checkpoint from the signer) leaves the store's contents byte for byte as
  they were: the LMDB databases are dumped with the ``lmdb`` package and compared;
* replicas' ``add_checkpoint`` accepts, refuses and reports as documented;
* fsck passes a clean store and names each corruption made directly in LMDB, one per test.

Every refusal asserts its ``reason``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import lmdb
import pytest

from protocol import mmr
from protocol.checkpoints import Checkpoint, add_signatures, cosign, open_checkpoint, sign_checkpoint
from protocol.errors import PeerProtocolError, SezError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from protocol.notes import format_note, parse_note
from protocol.proofs import verify_consistency, verify_inclusion
from protocol.receipts import Receipt, VerifiedReceipt, build_receipt, genesis_root, verify_receipt
from store import LogStore, StoreError
from store.fsck import fsck
from tests.reference_rfc6962 import ReferenceTree

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
CORRIDOR = "PAK-KSA"
KEY = SigningKey(ORIGIN, bytes([7]) * 32)
VKEY = KEY.verifier()
IMPOSTOR = SigningKey(ORIGIN, bytes([8]) * 32)
"""Same name as the log key, different key: what a key swap looks like."""
ORIGIN_B = "sez.gov.sa/corridor/PAK-KSA"
KEY_B = SigningKey(ORIGIN_B, bytes([9]) * 32)
WITNESS = SigningKey("watcher.example/w1", bytes([10]) * 32)
TIMESTAMP = "2026-11-27T10:00:00Z"
MAP_SIZE = 64 * 1024**2
DB_NAMES = (b"meta", b"origins", b"heads", b"receipts", b"nodes", b"digests", b"checkpoints")
GENESIS = genesis_root(CORRIDOR, ORIGIN)


# --------------------------------------------------------------------------- helpers


def reason(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    value = exc_info.value
    assert isinstance(value, SezError), f"not a SezError: {value!r}"
    return value.reason


def payload(i: int) -> dict[str, Any]:
    return {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "pk-bank-1", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "sa-bank-2", "jurisdiction": "SAU"},
        "currency": "PKR",
        "amount": str(1000 + i),
    }


def build(
    seq: int, prev: bytes, *, key: SigningKey = KEY, corridor: str = CORRIDOR, tag: int | None = None
) -> Receipt:
    return build_receipt(
        key=key,
        corridor_id=corridor,
        sequence=seq,
        timestamp=TIMESTAMP,
        prev_root=prev,
        kind="transfer",
        payload=payload(seq if tag is None else tag),
    )


def chain(start: int, count: int, prev: bytes, *, key: SigningKey = KEY) -> list[Receipt]:
    out = []
    for seq in range(start, start + count):
        receipt = build(seq, prev, key=key)
        out.append(receipt)
        prev = receipt.next_root
    return out


@cache
def log_chain(count: int = 70) -> tuple[Receipt, ...]:
    """The first ``count`` receipts of the test log (built once: signing is the slow part)."""
    return tuple(chain(0, count, GENESIS))


def verified(receipts: list[Receipt] | tuple[Receipt, ...], key: VerifierKey = VKEY) -> list[VerifiedReceipt]:
    return [verify_receipt(r, key) for r in receipts]


def sign(cp: Checkpoint) -> bytes:
    return format_note(sign_checkpoint(cp, KEY))


def note_for(size: int, root: bytes, *, key: SigningKey = KEY) -> bytes:
    return format_note(sign_checkpoint(Checkpoint(origin=key.name, size=size, root=root), key))


def reference(receipts: list[Receipt] | tuple[Receipt, ...]) -> ReferenceTree:
    return ReferenceTree([r.next_root for r in receipts])


def open_store(path: Path, **kw: Any) -> LogStore:
    return LogStore(path, map_size=MAP_SIZE, **kw)


def dump_env(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every key and value of every database, read with the ``lmdb`` package (the store must be closed)."""
    env = lmdb.open(str(path), readonly=True, max_dbs=16, map_size=MAP_SIZE, lock=True)
    try:
        out: dict[bytes, list[tuple[bytes, bytes]]] = {}
        with env.begin() as txn:
            out[b""] = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        for name in DB_NAMES:
            db = env.open_db(name, create=False)
            with env.begin() as txn:
                out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)]
        return out
    finally:
        env.close()


@contextmanager
def raw_txn(path: Path) -> Iterator[tuple[lmdb.Environment, lmdb.Transaction]]:
    """A write transaction on the store's environment, bypassing LogStore (the store must be closed)."""
    env = lmdb.open(str(path), max_dbs=16, map_size=MAP_SIZE, lock=True)
    try:
        with env.begin(write=True) as txn:
            yield env, txn
    finally:
        env.close()


def db(env: lmdb.Environment, txn: lmdb.Transaction, name: bytes) -> Any:
    return env.open_db(name, txn=txn, create=False)


def rkey(origin_id: int, n: int) -> bytes:
    """Key of receipts, nodes and checkpoints: origin id u32 ‖ u64 (module docstring of store.logstore)."""
    return origin_id.to_bytes(4, "big") + n.to_bytes(8, "big")


def public_state(store: LogStore, origin: str = ORIGIN) -> dict[str, Any]:
    head = store.head(origin)
    return {
        "head": head,
        "receipts": store.count_receipts(origin),
        "nodes": store.count_nodes(origin),
        "checkpoint_sizes": store.checkpoint_sizes(origin),
        "stat": store.stat(),
        "raws": store.receipts(origin, 0, head.size),
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(path: Path) -> Iterator[LogStore]:
    s = open_store(path)
    s.register_origin(ORIGIN, CORRIDOR, VKEY)
    try:
        yield s
    finally:
        s.close()


# --------------------------------------------------------------------------- origins


def test_register_origin_is_idempotent(path: Path) -> None:
    with open_store(path) as s:
        first = s.register_origin(ORIGIN, CORRIDOR, VKEY)
        again = s.register_origin(ORIGIN, CORRIDOR, VKEY)
        assert first == again
        assert first.id == 1 and first.key == VKEY and first.corridor_id == CORRIDOR
        second = s.register_origin(ORIGIN_B, CORRIDOR, KEY_B.verifier())
        assert second.id == 2
        assert [o.origin for o in s.origins()] == sorted([ORIGIN, ORIGIN_B])
        assert s.origin(ORIGIN) == first
        head = s.head(ORIGIN)
        assert (head.size, head.root, head.last_next_root) == (0, mmr.EMPTY_ROOT, GENESIS)
    # survives a reopen
    with open_store(path) as s:
        assert s.register_origin(ORIGIN, CORRIDOR, VKEY) == first


@pytest.mark.parametrize(
    ("key", "corridor"),
    [(IMPOSTOR.verifier(), CORRIDOR), (VKEY, "PAK-UAE"), (VKEY.with_alg(ALG_COSIGNATURE_V1), CORRIDOR)],
    ids=["other-key", "other-corridor", "other-key-type"],
)
def test_register_origin_again_with_different_binding_is_refused(
    store: LogStore, key: VerifierKey, corridor: str
) -> None:
    before = store.origin(ORIGIN)
    with pytest.raises(StoreError) as exc_info:
        store.register_origin(ORIGIN, corridor, key)
    assert reason(exc_info) == "key-mismatch"
    assert store.origin(ORIGIN) == before


def test_register_origin_refuses_key_named_otherwise(path: Path) -> None:
    with open_store(path) as s:
        with pytest.raises(StoreError) as exc_info:
            s.register_origin(ORIGIN, CORRIDOR, KEY_B.verifier())
        assert reason(exc_info) == "key-mismatch"
        assert s.origins() == []


def test_unknown_origin(store: LogStore) -> None:
    for call in (
        lambda: store.origin("nope"),
        lambda: store.head("nope"),
        lambda: store.checkpoint("nope"),
        lambda: store.receipt("nope", 0),
        lambda: store.append("nope", []),
        lambda: store.add_checkpoint("nope", note_for(0, mmr.EMPTY_ROOT)),
    ):
        with pytest.raises(StoreError) as exc_info:
            call()
        assert reason(exc_info) == "unknown-origin"


# --------------------------------------------------------------------------- append and read back


def test_append_batches_and_read_back(store: LogStore) -> None:
    receipts = log_chain()[:20]
    ref = reference(receipts)
    sizes = []
    size = 0
    for count in (1, 2, 5, 8, 4):
        batch = receipts[size : size + count]
        result = store.append(ORIGIN, verified(batch), sign=sign)
        size += count
        sizes.append(size)
        assert result.head.size == size
        assert result.head.root == ref.root(size)
        assert result.head.last_next_root == batch[-1].next_root
        assert store.head(ORIGIN) == result.head
        assert result.checkpoint is not None
        cp, _ = open_checkpoint(result.checkpoint, VKEY)
        assert (cp.origin, cp.size, cp.root) == (ORIGIN, size, ref.root(size))
        assert store.checkpoint(ORIGIN) == result.checkpoint
        assert store.checkpoint(ORIGIN, size) == result.checkpoint
    assert store.checkpoint_sizes(ORIGIN) == sizes
    for s in sizes:
        cp, _ = open_checkpoint(store.checkpoint(ORIGIN, s), VKEY)
        assert (cp.size, cp.root) == (s, ref.root(s))
    raws = [r.raw for r in receipts]
    assert store.receipts(ORIGIN, 0, 20) == raws
    assert store.receipts(ORIGIN, 3, 9) == raws[3:9]
    assert store.receipts(ORIGIN, -5, 2) == raws[:2]
    assert store.receipts(ORIGIN, 15, 1000) == raws[15:]
    assert store.receipts(ORIGIN, 9, 3) == []
    assert store.receipts(ORIGIN, 20, 25) == []
    assert list(store.iter_receipts(ORIGIN, 18)) == [(18, raws[18]), (19, raws[19])]
    for i, r in enumerate(receipts):
        assert store.receipt(ORIGIN, i) == r.raw
        assert store.find_digest(r.next_root) == (ORIGIN, i)
        assert store.digest_entry(r.next_root) == (1, i)
    assert store.find_digest(hashlib.sha256(b"absent").digest()) is None
    assert store.count_receipts(ORIGIN) == 20
    assert store.count_nodes(ORIGIN) == mmr.mmr_size(20)
    assert store.stat()["receipts"] == 20
    assert store.stat()["checkpoints"] == len(sizes)


def test_append_without_signer_stores_no_checkpoint(store: LogStore) -> None:
    receipts = log_chain()[:6]
    store.append(ORIGIN, verified(receipts[:3]), sign=sign)
    result = store.append(ORIGIN, verified(receipts[3:]))
    assert result.checkpoint is None
    assert result.head.size == 6
    assert store.checkpoint_sizes(ORIGIN) == [3]
    cp, _ = open_checkpoint(store.checkpoint(ORIGIN), VKEY)
    assert cp.size == 3
    with pytest.raises(StoreError) as exc_info:
        store.checkpoint(ORIGIN, 6)
    assert reason(exc_info) == "not-found"


def test_no_checkpoint_yet_is_not_found(store: LogStore) -> None:
    with pytest.raises(StoreError) as exc_info:
        store.checkpoint(ORIGIN)
    assert reason(exc_info) == "not-found"


def test_latest_checkpoint_is_per_origin(store: LogStore) -> None:
    """The latest-checkpoint scan stops at the origin boundary in both directions."""
    store.register_origin(ORIGIN_B, CORRIDOR, KEY_B.verifier())
    b_chain = chain(0, 4, genesis_root(CORRIDOR, ORIGIN_B), key=KEY_B)

    def sign_b(cp: Checkpoint) -> bytes:
        return format_note(sign_checkpoint(cp, KEY_B))

    store.append(ORIGIN_B, verified(b_chain[:2], KEY_B.verifier()), sign=sign_b)
    with pytest.raises(StoreError) as exc_info:
        store.checkpoint(ORIGIN)  # origin id 1 has none; id 2's must not be returned
    assert reason(exc_info) == "not-found"
    store.append(ORIGIN, verified(log_chain()[:3]), sign=sign)
    store.append(ORIGIN_B, verified(b_chain[2:], KEY_B.verifier()), sign=sign_b)
    assert open_checkpoint(store.checkpoint(ORIGIN), VKEY)[0].size == 3
    assert open_checkpoint(store.checkpoint(ORIGIN_B), KEY_B.verifier())[0].size == 4
    assert store.checkpoint_sizes(ORIGIN) == [3]
    assert store.checkpoint_sizes(ORIGIN_B) == [2, 4]
    assert store.find_digest(b_chain[1].next_root) == (ORIGIN_B, 1)


def test_empty_batch_is_a_no_op_with_checkpoint(store: LogStore) -> None:
    store.append(ORIGIN, verified(log_chain()[:2]), sign=sign)
    result = store.append(ORIGIN, [], sign=sign)
    assert result.head.size == 2
    assert store.checkpoint_sizes(ORIGIN) == [2]


def test_roots_equal_reference_for_many_sizes(store: LogStore) -> None:
    receipts = log_chain()
    ref = reference(receipts)
    size = 0
    for count in (1, 1, 2, 3, 5, 8, 13, 21, 16):
        store.append(ORIGIN, verified(receipts[size : size + count]))
        size += count
        assert store.root_at(ORIGIN) == ref.root(size)
        assert store.count_nodes(ORIGIN) == mmr.mmr_size(size)
    assert size == 70
    for s in range(size + 1):
        assert store.root_at(ORIGIN, s) == ref.root(s), s
    assert store.root_at(ORIGIN, 0) == mmr.EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.fixture
def full_store(store: LogStore) -> LogStore:
    store.append(ORIGIN, verified(log_chain()), sign=sign)
    return store


def test_inclusion_proofs_verify_and_equal_reference(full_store: LogStore) -> None:
    receipts = log_chain()
    ref = reference(receipts)
    for size in range(1, len(receipts) + 1):
        root = full_store.root_at(ORIGIN, size)
        for index in range(size):
            proof = full_store.inclusion_proof(ORIGIN, index, size)
            assert proof == ref.inclusion(index, size), (index, size)
            verify_inclusion(index, size, mmr.hash_leaf(receipts[index].next_root), proof, root)
    # default size is the whole log
    assert full_store.inclusion_proof(ORIGIN, 5) == ref.inclusion(5, 70)


def test_consistency_proofs_verify_and_equal_reference(full_store: LogStore) -> None:
    ref = reference(log_chain())
    n_max = len(log_chain())
    for new in range(n_max + 1):
        for old in range(new + 1):
            proof = full_store.consistency_proof(ORIGIN, old, new)
            assert proof == ref.consistency(old, new), (old, new)
            if old > 0:
                verify_consistency(old, new, ref.root(old), ref.root(new), proof)
    assert full_store.consistency_proof(ORIGIN, 17) == ref.consistency(17, n_max)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.root_at(ORIGIN, 71),
        lambda s: s.root_at(ORIGIN, -1),
        lambda s: s.inclusion_proof(ORIGIN, 70),
        lambda s: s.inclusion_proof(ORIGIN, -1),
        lambda s: s.inclusion_proof(ORIGIN, 5, 5),
        lambda s: s.inclusion_proof(ORIGIN, 0, 71),
        lambda s: s.inclusion_proof(ORIGIN, 0, 0),
        lambda s: s.consistency_proof(ORIGIN, 5, 3),
        lambda s: s.consistency_proof(ORIGIN, -1, 3),
        lambda s: s.consistency_proof(ORIGIN, 71),
        lambda s: s.consistency_proof(ORIGIN, 0, 71),
        lambda s: s.receipt(ORIGIN, 70),
        lambda s: s.receipt(ORIGIN, -1),
        lambda s: s.receipt(ORIGIN, 2**64 - 1),
    ],
    ids=[
        "root-beyond-head",
        "root-negative",
        "inclusion-index-eq-size",
        "inclusion-negative",
        "inclusion-index-eq-given-size",
        "inclusion-size-beyond-head",
        "inclusion-empty-tree",
        "consistency-old-gt-new",
        "consistency-negative",
        "consistency-old-beyond-head",
        "consistency-new-beyond-head",
        "receipt-eq-size",
        "receipt-negative",
        "receipt-u64-max",
    ],
)
def test_bad_indices(full_store: LogStore, call: Any) -> None:
    with pytest.raises(StoreError) as exc_info:
        call(full_store)
    assert reason(exc_info) == "bad-index"


def test_checkpoint_at_unsigned_size_is_not_found(full_store: LogStore) -> None:
    with pytest.raises(StoreError) as exc_info:
        full_store.checkpoint(ORIGIN, 5)
    assert reason(exc_info) == "not-found"


# --------------------------------------------------------------------------- atomicity


def _third_wrong(kind: str, base: list[Receipt]) -> tuple[list[VerifiedReceipt], type[SezError], str]:
    """Receipts 5, 6, 7 where the 7th (the batch's 3rd) is wrong in one way."""
    good = verified(base[5:7])
    prev = base[6].next_root
    if kind == "sequence":
        bad = verify_receipt(build(8, prev), VKEY)
        return [*good, bad], PeerProtocolError, "seq-gap"
    if kind == "sequence-repeated":
        bad = verify_receipt(build(6, prev, tag=7), VKEY)
        return [*good, bad], PeerProtocolError, "seq-gap"
    if kind == "prev_root":
        bad = verify_receipt(build(7, base[5].next_root), VKEY)
        return [*good, bad], PeerProtocolError, "prev-root-mismatch"
    if kind == "corridor":
        bad = verify_receipt(build(7, prev, corridor="PAK-UAE"), VKEY)
        return [*good, bad], PeerProtocolError, "wrong-corridor"
    if kind == "key":
        bad = verify_receipt(build(7, prev, key=IMPOSTOR), IMPOSTOR.verifier())
        return [*good, bad], StoreError, "key-mismatch"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["sequence", "sequence-repeated", "prev_root", "corridor", "key"])
def test_failed_batch_changes_nothing(path: Path, kind: str) -> None:
    base = list(log_chain()[:8])
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        s.append(ORIGIN, verified(base[:5]), sign=sign)
        before = public_state(s)
    raw_before = dump_env(path)
    batch, error, want = _third_wrong(kind, base)
    with open_store(path) as s:
        with pytest.raises(error) as exc_info:
            s.append(ORIGIN, batch, sign=sign)
        assert reason(exc_info) == want
        assert public_state(s) == before
        assert s.find_digest(base[5].next_root) is None
        # the good receipts still go in afterwards, at the same place
        result = s.append(ORIGIN, verified(base[5:8]), sign=sign)
        assert result.head.root == reference(base).root(8)
    assert dump_env(path) != raw_before


def _assert_unchanged(path: Path, before: dict[str, Any], raw_before: dict[bytes, Any]) -> None:
    with open_store(path) as s:
        assert public_state(s) == before
    assert dump_env(path) == raw_before


@pytest.fixture
def five(path: Path) -> tuple[dict[str, Any], dict[bytes, Any]]:
    """A closed store holding receipts 0..4 with a checkpoint at 5; its state and raw dump."""
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        s.append(ORIGIN, verified(log_chain()[:5]), sign=sign)
        before = public_state(s)
    return before, dump_env(path)


@pytest.mark.parametrize("kind", ["sequence", "prev_root", "corridor", "key"])
def test_failed_batch_is_byte_for_byte_unchanged(
    path: Path, five: tuple[dict[str, Any], dict[bytes, Any]], kind: str
) -> None:
    batch, error, want = _third_wrong(kind, list(log_chain()[:8]))
    with open_store(path) as s, pytest.raises(error) as exc_info:
        s.append(ORIGIN, batch, sign=sign)
    assert reason(exc_info) == want
    _assert_unchanged(path, *five)


def test_lazy_batch_raising_midway_writes_nothing(
    path: Path, five: tuple[dict[str, Any], dict[bytes, Any]]
) -> None:
    consumed = []

    def lazy() -> Iterator[VerifiedReceipt]:
        for r in log_chain()[5:8]:
            consumed.append(r.sequence)
            yield verify_receipt(r, VKEY)
        raise RuntimeError("verification worker died")

    with open_store(path) as s, pytest.raises(RuntimeError, match="worker died"):
        s.append(ORIGIN, lazy(), sign=sign)
    assert consumed == [5, 6, 7]
    _assert_unchanged(path, *five)


def test_lazy_batch_with_invalid_receipt_writes_nothing(
    path: Path, five: tuple[dict[str, Any], dict[bytes, Any]]
) -> None:
    """As in node.ingest: the iterable itself raises the peer's error half-way through the batch."""
    tampered = log_chain()[7].raw.replace(b'"amount":"1007"', b'"amount":"1008"')

    def lazy() -> Iterator[VerifiedReceipt]:
        yield from verified(log_chain()[5:7])
        yield verify_receipt(Receipt.from_bytes(tampered), VKEY)

    with open_store(path) as s, pytest.raises(PeerProtocolError) as exc_info:
        s.append(ORIGIN, lazy(), sign=sign)
    assert reason(exc_info) == "payload-digest-mismatch"
    _assert_unchanged(path, *five)


@pytest.mark.parametrize(
    ("signer", "error", "want"),
    [
        (lambda cp: note_for(cp.size, b"\x42" * 32), PeerProtocolError, "checkpoint-conflict"),
        (lambda cp: note_for(cp.size + 1, cp.root), PeerProtocolError, "checkpoint-ahead"),
        (lambda cp: note_for(cp.size, cp.root, key=IMPOSTOR), PeerProtocolError, "missing-log-signature"),
        (lambda cp: b"not a note", PeerProtocolError, "bad-note"),
    ],
    ids=["wrong-root", "wrong-size", "wrong-key", "garbage"],
)
def test_bad_checkpoint_from_signer_aborts_batch(
    path: Path, five: tuple[dict[str, Any], dict[bytes, Any]], signer: Any, error: type[SezError], want: str
) -> None:
    with open_store(path) as s, pytest.raises(error) as exc_info:
        s.append(ORIGIN, verified(log_chain()[5:8]), sign=signer)
    assert reason(exc_info) == want
    _assert_unchanged(path, *five)


def test_signer_checkpoint_with_smaller_size_is_refused(
    path: Path, five: tuple[dict[str, Any], dict[bytes, Any]]
) -> None:
    with open_store(path) as s, pytest.raises(PeerProtocolError):
        s.append(ORIGIN, verified(log_chain()[5:8]), sign=lambda cp: note_for(cp.size - 1, cp.root))
    _assert_unchanged(path, *five)


def test_duplicate_digest_is_refused(path: Path, five: tuple[dict[str, Any], dict[bytes, Any]]) -> None:
    """A next_root already in the digest index is refused even when the chain is right.

    Through the API a duplicate cannot continue a chain (next_root commits to origin, sequence and
    prev_root), so an index entry for the next receipt is planted directly in LMDB.
    """
    nxt = log_chain()[5]
    with raw_txn(path) as (env, txn):
        txn.put(nxt.next_root, rkey(1, 2), db=db(env, txn, b"digests"))
    with open_store(path) as s:
        before = public_state(s)
    raw_before = dump_env(path)
    assert raw_before != five[1]
    with open_store(path) as s, pytest.raises(PeerProtocolError) as exc_info:
        s.append(ORIGIN, verified(log_chain()[5:7]), sign=sign)
    assert reason(exc_info) == "duplicate-digest"
    _assert_unchanged(path, before, raw_before)


def test_reappending_stored_receipts_is_refused(store: LogStore) -> None:
    """The store itself is not idempotent for receipts: a repeat does not continue the chain."""
    store.append(ORIGIN, verified(log_chain()[:3]))
    with pytest.raises(PeerProtocolError) as exc_info:
        store.append(ORIGIN, verified(log_chain()[2:3]))
    assert reason(exc_info) == "seq-gap"
    assert store.head(ORIGIN).size == 3


# --------------------------------------------------------------------------- replicas: add_checkpoint


@pytest.fixture
def replica(store: LogStore) -> LogStore:
    """Six receipts appended without any checkpoint, as a follower stores a synced range."""
    store.append(ORIGIN, verified(log_chain()[:6]))
    return store


def test_add_checkpoint_accepts_valid_and_is_idempotent(replica: LogStore) -> None:
    ref = reference(log_chain())
    note = note_for(4, ref.root(4))
    cp = replica.add_checkpoint(ORIGIN, note)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 4, ref.root(4))
    assert replica.checkpoint_sizes(ORIGIN) == [4]
    assert replica.checkpoint(ORIGIN, 4) == note
    assert replica.add_checkpoint(ORIGIN, note) == cp
    assert replica.checkpoint_sizes(ORIGIN) == [4]
    assert replica.checkpoint(ORIGIN) == note
    # at the head and at the empty tree
    replica.add_checkpoint(ORIGIN, note_for(6, ref.root(6)))
    replica.add_checkpoint(ORIGIN, note_for(0, mmr.EMPTY_ROOT))
    assert replica.checkpoint_sizes(ORIGIN) == [0, 4, 6]
    assert open_checkpoint(replica.checkpoint(ORIGIN), VKEY)[0].size == 6


def test_add_checkpoint_keeps_the_more_cosigned_note(replica: LogStore) -> None:
    root = reference(log_chain()).root(4)
    plain = note_for(4, root)
    cp = Checkpoint(origin=ORIGIN, size=4, root=root)
    cosigned = format_note(add_signatures(parse_note(plain), [cosign(cp, WITNESS, 1_795_000_000)]))
    replica.add_checkpoint(ORIGIN, cosigned)
    replica.add_checkpoint(ORIGIN, plain)  # a duplicate with fewer signatures: quiet, and not a downgrade
    assert replica.checkpoint(ORIGIN, 4) == cosigned


def test_add_checkpoint_beyond_head(replica: LogStore) -> None:
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, note_for(7, reference(log_chain()).root(7)))
    assert reason(exc_info) == "checkpoint-ahead"
    assert exc_info.value.details == {"size": 7, "stored": 6}
    assert replica.checkpoint_sizes(ORIGIN) == []


def test_add_checkpoint_conflict_carries_both_roots(replica: LogStore) -> None:
    stored = reference(log_chain()).root(4)
    forged = hashlib.sha256(b"the other history").digest()
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, note_for(4, forged))
    assert reason(exc_info) == "checkpoint-conflict"
    details = exc_info.value.details
    assert details["checkpoint_root"] == forged.hex()
    assert details["stored_root"] == stored.hex()
    assert details["size"] == 4
    assert replica.checkpoint_sizes(ORIGIN) == []


def test_add_checkpoint_conflict_at_size_zero(replica: LogStore) -> None:
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, note_for(0, b"\x01" * 32))
    assert reason(exc_info) == "checkpoint-conflict"


def test_add_checkpoint_bad_signature(replica: LogStore) -> None:
    note = bytearray(note_for(4, reference(log_chain()).root(4)))
    # The signature line ends "<base64>\n"; change one base64 character well inside the signature.
    pos = len(note) - 10
    note[pos : pos + 1] = b"A" if note[pos : pos + 1] != b"A" else b"B"
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, bytes(note))
    assert reason(exc_info) == "bad-log-signature"
    assert replica.checkpoint_sizes(ORIGIN) == []


def test_add_checkpoint_bad_signature_beyond_head_reports_signature(replica: LogStore) -> None:
    """Signatures are checked before sizes: an unsigned claim says nothing about the log."""
    note = bytearray(note_for(9, b"\x05" * 32))
    pos = len(note) - 10
    note[pos : pos + 1] = b"A" if note[pos : pos + 1] != b"A" else b"B"
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, bytes(note))
    assert reason(exc_info) == "bad-log-signature"


@pytest.mark.parametrize(
    ("note", "want"),
    [
        (lambda: note_for(4, b"\x00" * 32, key=IMPOSTOR), "missing-log-signature"),
        (lambda: note_for(4, b"\x00" * 32, key=KEY_B), "wrong-origin"),
    ],
    ids=["impostor-key", "other-origin"],
)
def test_add_checkpoint_wrong_signer(replica: LogStore, note: Any, want: str) -> None:
    with pytest.raises(PeerProtocolError) as exc_info:
        replica.add_checkpoint(ORIGIN, note())
    assert reason(exc_info) == want
    assert replica.checkpoint_sizes(ORIGIN) == []


# --------------------------------------------------------------------------- opening


def test_readonly_open_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc_info:
        LogStore(tmp_path / "nothing-here", readonly=True)
    assert reason(exc_info) == "not-found"
    assert not (tmp_path / "nothing-here").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError) as exc_info:
        LogStore(tmp_path / "empty", readonly=True)
    assert reason(exc_info) == "not-found"


def test_readonly_store_reads_and_refuses_appends(path: Path) -> None:
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        s.append(ORIGIN, verified(log_chain()[:3]), sign=sign)
    with open_store(path, readonly=True) as s:
        assert s.head(ORIGIN).size == 3
        assert s.root_at(ORIGIN) == reference(log_chain()).root(3)
        with pytest.raises(StoreError) as exc_info:
            s.append(ORIGIN, verified(log_chain()[3:4]))
        assert reason(exc_info) == "io"


def test_readonly_store_refuses_registration_with_store_error(path: Path) -> None:
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
    with open_store(path, readonly=True) as s, pytest.raises(StoreError) as exc_info:
        s.register_origin(ORIGIN_B, CORRIDOR, KEY_B.verifier())
    assert reason(exc_info) == "io"


def test_readonly_open_of_half_initialised_store(path: Path) -> None:
    env = lmdb.open(str(path), max_dbs=16, map_size=MAP_SIZE)
    try:
        env.open_db(b"meta")
        env.open_db(b"origins")  # killed here, before "heads" was created
    finally:
        env.close()
    with pytest.raises(StoreError) as exc_info:
        LogStore(path, readonly=True)
    assert reason(exc_info) in {"not-found", "corrupt"}


def test_reopen_continues(path: Path) -> None:
    receipts = log_chain()[:9]
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        s.append(ORIGIN, verified(receipts[:4]), sign=sign)
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        result = s.append(ORIGIN, verified(receipts[4:]), sign=sign)
        assert result.head.root == reference(receipts).root(9)
        assert s.checkpoint_sizes(ORIGIN) == [4, 9]


# --------------------------------------------------------------------------- fsck


@pytest.fixture
def fsck_store(path: Path) -> Path:
    """A closed store with two logs: A (13 receipts, checkpoints at 5, 9, 13) and B (4 receipts)."""
    receipts = log_chain()[:13]
    b_chain = chain(0, 4, genesis_root(CORRIDOR, ORIGIN_B), key=KEY_B)
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
        s.register_origin(ORIGIN_B, CORRIDOR, KEY_B.verifier())
        for lo, hi in ((0, 5), (5, 9), (9, 13)):
            s.append(ORIGIN, verified(receipts[lo:hi]), sign=sign)
        s.append(
            ORIGIN_B,
            verified(b_chain, KEY_B.verifier()),
            sign=lambda cp: format_note(sign_checkpoint(cp, KEY_B)),
        )
    return path


def run_fsck(path: Path) -> dict[str, Any]:
    with open_store(path, readonly=True) as s:
        report = fsck(s)
    return {log.origin: log for log in report.logs} | {"ok": report.ok}


def problems_of(path: Path) -> list[str]:
    """fsck's problems for log A; log B must stay clean (origin ids keep the logs apart)."""
    logs = run_fsck(path)
    assert logs["ok"] is False
    assert logs[ORIGIN_B].ok, logs[ORIGIN_B].problems
    assert not logs[ORIGIN].ok
    return list(logs[ORIGIN].problems)


def test_fsck_clean_store(fsck_store: Path) -> None:
    logs = run_fsck(fsck_store)
    assert logs["ok"] is True
    a = logs[ORIGIN]
    assert a.ok and a.problems == []
    assert (a.size, a.receipts_checked, a.nodes_checked, a.checkpoints_checked) == (
        13,
        13,
        mmr.mmr_size(13),
        3,
    )
    assert a.root == reference(log_chain()).root(13).hex()
    assert logs[ORIGIN_B].receipts_checked == 4


def test_fsck_empty_store(path: Path) -> None:
    with open_store(path) as s:
        s.register_origin(ORIGIN, CORRIDOR, VKEY)
    logs = run_fsck(path)
    assert logs["ok"] is True
    assert logs[ORIGIN].size == 0


def test_fsck_flipped_byte_in_receipt(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        receipts_db = db(env, txn, b"receipts")
        raw = bytearray(txn.get(rkey(1, 3), db=receipts_db))
        at = raw.index(b'"amount":"1003"') + len(b'"amount":"100')
        raw[at] ^= 0x01  # "1003" -> "1002"
        txn.put(rkey(1, 3), bytes(raw), db=receipts_db)
    problems = problems_of(fsck_store)
    assert any(p.startswith("receipt 3: payload-digest-mismatch") for p in problems), problems


def test_fsck_flipped_signature_byte_in_receipt(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        receipts_db = db(env, txn, b"receipts")
        raw = bytearray(txn.get(rkey(1, 8), db=receipts_db))
        at = raw.index(b'"signature":"') + len(b'"signature":"') + 10
        raw[at] = ord("A") if raw[at] != ord("A") else ord("B")
        txn.put(rkey(1, 8), bytes(raw), db=receipts_db)
    problems = problems_of(fsck_store)
    assert any(p.startswith("receipt 8: bad-signature") for p in problems), problems


def test_fsck_deleted_mmr_node(fsck_store: Path) -> None:
    pos = mmr.node_position(2, 1)  # the perfect subtree over leaves 4..7
    with raw_txn(fsck_store) as (env, txn):
        assert txn.delete(rkey(1, pos), db=db(env, txn, b"nodes"))
    problems = problems_of(fsck_store)
    assert any(p.startswith(f"MMR node {pos}: stored nothing") for p in problems), problems


def test_fsck_changed_node_hash(fsck_store: Path) -> None:
    pos = mmr.leaf_position(6)
    with raw_txn(fsck_store) as (env, txn):
        nodes_db = db(env, txn, b"nodes")
        node = bytearray(txn.get(rkey(1, pos), db=nodes_db))
        node[0] ^= 0x80
        txn.put(rkey(1, pos), bytes(node), db=nodes_db)
    problems = problems_of(fsck_store)
    assert any(p.startswith(f"MMR node {pos}: stored {bytes(node).hex()}") for p in problems), problems


def test_fsck_extra_mmr_node(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        txn.put(rkey(1, mmr.mmr_size(13)), b"\x00" * 32, db=db(env, txn, b"nodes"))
    problems = problems_of(fsck_store)
    assert f"{mmr.mmr_size(13) + 1} MMR nodes stored, {mmr.mmr_size(13)} expected" in problems, problems


def test_fsck_checkpoint_signed_over_wrong_root(fsck_store: Path) -> None:
    wrong = hashlib.sha256(b"rewritten history").digest()
    with raw_txn(fsck_store) as (env, txn):
        txn.put(rkey(1, 9), note_for(9, wrong), db=db(env, txn, b"checkpoints"))
    problems = problems_of(fsck_store)
    assert any(p.startswith(f"checkpoint at size 9: root {wrong.hex()}") for p in problems), problems


def test_fsck_checkpoint_with_bad_signature(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        checkpoints_db = db(env, txn, b"checkpoints")
        note = bytearray(txn.get(rkey(1, 5), db=checkpoints_db))
        pos = len(note) - 10
        note[pos] = ord("A") if note[pos] != ord("A") else ord("B")
        txn.put(rkey(1, 5), bytes(note), db=checkpoints_db)
    problems = problems_of(fsck_store)
    assert any(p.startswith("checkpoint at size 5: bad-log-signature") for p in problems), problems


def test_fsck_checkpoint_filed_under_other_size(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        checkpoints_db = db(env, txn, b"checkpoints")
        txn.put(rkey(1, 7), txn.get(rkey(1, 5), db=checkpoints_db), db=checkpoints_db)
    problems = problems_of(fsck_store)
    assert "checkpoint stored under size 7 says size 5" in problems, problems


def test_fsck_deleted_digest_entry(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        assert txn.delete(log_chain()[4].next_root, db=db(env, txn, b"digests"))
    problems = problems_of(fsck_store)
    assert "receipt 4: digest index entry is missing or wrong" in problems, problems


def test_fsck_digest_entry_pointing_elsewhere(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        txn.put(log_chain()[10].next_root, rkey(1, 11), db=db(env, txn, b"digests"))
    problems = problems_of(fsck_store)
    assert "receipt 10: digest index entry is missing or wrong" in problems, problems


def test_fsck_head_root_changed(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        heads_db = db(env, txn, b"heads")
        head = bytearray(txn.get((1).to_bytes(4, "big"), db=heads_db))
        head[8] ^= 0xFF  # first byte of the root, after the u64 size
        txn.put((1).to_bytes(4, "big"), bytes(head), db=heads_db)
    problems = problems_of(fsck_store)
    assert any(p.startswith("recomputed root") and "differs from the head's" in p for p in problems), problems


def test_fsck_deleted_last_receipt(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        assert txn.delete(rkey(1, 12), db=db(env, txn, b"receipts"))
    problems = problems_of(fsck_store)
    assert "12 receipts stored for a head of 13" in problems, problems


def test_receipts_never_returns_another_logs_receipts(fsck_store: Path) -> None:
    with raw_txn(fsck_store) as (env, txn):
        assert txn.delete(rkey(2, 0), db=db(env, txn, b"receipts"))  # log B's first receipt
    with open_store(fsck_store, readonly=True) as s:
        try:
            raws = s.receipts(ORIGIN_B, 0, 4)
        except StoreError as exc:
            assert exc.reason == "corrupt"
            return
    assert all(Receipt.from_bytes(raw).origin == ORIGIN_B for raw in raws)
