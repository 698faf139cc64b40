"""The MMR (``protocol.mmr``) and the proof verifiers (``protocol.proofs``) against a slow RFC 6962 oracle.

``tests/reference_rfc6962.py`` transcribes RFC 6962 §2.1 recursively. The MMR is built one leaf at a time
into a dict (the stand-in for the LMDB store); its roots, inclusion proofs and consistency proofs must be
byte-for-byte the reference's, and every mutated proof must be refused with the specific reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from hashlib import sha256
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, PeerProtocolError, RootMismatchError
from protocol.mmr import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    MMRAppender,
    bag_peaks,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    leaf_position,
    mmr_size,
    node_position,
    peak_positions,
    peaks,
    root_at,
)
from protocol.proofs import (
    root_from_consistency,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)
from tests.reference_rfc6962 import ReferenceTree

MAX_LEAVES = 1_100
EXHAUSTIVE = 70
SEEDS = [1, 2, 3]
RANDOM_PAIRS = 300


def _leaf_data(i: int) -> bytes:
    """Distinct leaf data, so that no two leaves (or subtrees) share a hash."""
    return b"receipt-" + i.to_bytes(4, "big")


@dataclass(frozen=True)
class Built:
    """An MMR of MAX_LEAVES leaves stored in a dict, and the reference tree over the same leaves."""

    ref: ReferenceTree
    nodes: dict[int, bytes]

    def get(self, position: int) -> bytes:
        return self.nodes[position]


@cache
def built() -> Built:
    leaves = [_leaf_data(i) for i in range(MAX_LEAVES)]
    nodes: dict[int, bytes] = {}
    appender = MMRAppender()
    for data in leaves:
        appender.append(hash_leaf(data), nodes.__setitem__)
    return Built(ReferenceTree(leaves), nodes)


def _flip(h: bytes, bit: int) -> bytes:
    """Return ``h`` with one bit flipped."""
    b = bytearray(h)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def _reason(fn: Callable[..., None], *args: Any) -> str | None:
    """Run a verifier; return None if it accepts, else the reason of the PeerProtocolError it raised."""
    try:
        fn(*args)
    except PeerProtocolError as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------------------------------------
# Hashing and position arithmetic


def test_hashing_is_rfc6962() -> None:
    assert LEAF_PREFIX == b"\x00"
    assert NODE_PREFIX == b"\x01"
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # RFC 6962 test data: the leaf hash of the empty string.
    assert hash_leaf(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    a, b = sha256(b"a").digest(), sha256(b"b").digest()
    assert hash_children(a, b) == sha256(b"\x01" + a + b).digest()
    assert hash_children(a, b) != hash_children(b, a)


@pytest.mark.parametrize(
    ("n", "size"), [(0, 0), (1, 1), (2, 3), (3, 4), (4, 7), (5, 8), (6, 10), (7, 11), (8, 15), (11, 19)]
)
def test_mmr_size_table(n: int, size: int) -> None:
    assert mmr_size(n) == size


def test_leaf_positions_table() -> None:
    assert [leaf_position(i) for i in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]


@pytest.mark.parametrize(
    ("level", "index", "position"),
    [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 5), (2, 0, 6), (1, 2, 9), (2, 1, 13), (3, 0, 14), (0, 10, 18)],
)
def test_node_position_table(level: int, index: int, position: int) -> None:
    assert node_position(level, index) == position


@pytest.mark.parametrize(
    ("n", "want_peaks", "want_positions"),
    [
        (0, [], []),
        (1, [(0, 0)], [0]),
        (2, [(1, 0)], [2]),
        (3, [(1, 0), (0, 2)], [2, 3]),
        (7, [(2, 0), (1, 2), (0, 6)], [6, 9, 10]),
        (8, [(3, 0)], [14]),
        (11, [(3, 0), (1, 4), (0, 10)], [14, 17, 18]),
    ],
)
def test_peaks_table(n: int, want_peaks: list[tuple[int, int]], want_positions: list[int]) -> None:
    assert peaks(n) == want_peaks
    assert peak_positions(n) == want_positions
    assert [node_position(level, index) for level, index in peaks(n)] == want_positions


def test_every_stored_perfect_node_is_the_reference_subtree() -> None:
    b = built()
    checked = 0
    level = 0
    while (1 << level) <= MAX_LEAVES:
        for index in range(MAX_LEAVES >> level):
            lo = index << level
            assert b.nodes[node_position(level, index)] == b.ref.mth(lo, lo + (1 << level)), (level, index)
            checked += 1
        level += 1
    assert checked == mmr_size(MAX_LEAVES)  # every stored node is a perfect subtree, and vice versa


@pytest.mark.parametrize(
    ("fn", "args", "reason"),
    [
        (mmr_size, (-1,), "bad-size"),
        (leaf_position, (-1,), "bad-index"),
        (node_position, (-1, 0), "bad-index"),
        (node_position, (0, -1), "bad-index"),
        (peaks, (-1,), "bad-size"),
        (peak_positions, (-1,), "bad-size"),
    ],
)
def test_position_preconditions(fn: Callable[..., object], args: tuple[int, ...], reason: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        fn(*args)
    assert info.value.reason == reason


# --------------------------------------------------------------------------------------------------------
# Appending and roots


def test_roots_equal_reference_for_every_size() -> None:
    """Append 1,100 leaves one at a time; the root equals the reference MTH after each, and the visited
    positions are exactly 0 .. mmr_size(n) - 1 in order."""
    ref = built().ref
    appender = MMRAppender()
    visited: list[int] = []
    nodes: dict[int, bytes] = {}

    def visit(position: int, h: bytes) -> None:
        visited.append(position)
        nodes[position] = h

    assert appender.root() == ref.root(0) == EMPTY_ROOT
    for n in range(1, MAX_LEAVES + 1):
        assert appender.append(hash_leaf(_leaf_data(n - 1)), visit) == n - 1
        assert appender.n_leaves == n
        assert appender.node_count == mmr_size(n)
        assert visited == list(range(mmr_size(n)))
        assert appender.root() == ref.root(n), n
        assert appender.peak_hashes == tuple(nodes[p] for p in peak_positions(n))
        assert bag_peaks(appender.peak_hashes) == appender.root()
    assert nodes == built().nodes


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 100, 511, 512, 1000])
def test_appender_resumes_from_store(n: int) -> None:
    b = built()
    nodes = {p: h for p, h in b.nodes.items() if p < mmr_size(n)}
    appender = MMRAppender.from_store(n, nodes.__getitem__)
    assert appender.root() == b.ref.root(n)
    for i in range(n, min(n + 40, MAX_LEAVES)):
        appender.append(hash_leaf(_leaf_data(i)), nodes.__setitem__)
        assert appender.root() == b.ref.root(i + 1)
    assert all(b.nodes[p] == h for p, h in nodes.items())


@pytest.mark.parametrize(("n", "count"), [(0, 1), (1, 0), (1, 2), (3, 1), (4, 2), (7, 2), (8, 4)])
def test_appender_rejects_wrong_peak_count(n: int, count: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        MMRAppender(n, [EMPTY_ROOT] * count)
    assert info.value.reason == "bad-peak-count"


def test_appender_rejects_bad_hashes_and_sizes() -> None:
    with pytest.raises(LocalProtocolError) as info:
        MMRAppender(1, [b"\x00" * 31])
    assert info.value.reason == "bad-hash-length"
    with pytest.raises(LocalProtocolError) as info:
        MMRAppender(-1, [])
    assert info.value.reason == "bad-size"
    appender = MMRAppender()
    with pytest.raises(LocalProtocolError) as info:
        appender.append(b"\x00" * 33)
    assert info.value.reason == "bad-hash-length"
    assert appender.n_leaves == 0


def test_appender_is_unchanged_when_visit_raises() -> None:
    """A store that fails mid-append aborts its batch; the appender must not have moved on."""
    appender = MMRAppender()
    for i in range(3):
        appender.append(hash_leaf(_leaf_data(i)))
    before = (appender.n_leaves, appender.peak_hashes, appender.root())
    calls: list[int] = []

    def failing_visit(position: int, h: bytes) -> None:
        calls.append(position)
        if len(calls) == 3:  # the leaf, the first merge, then fail on the second merge
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        appender.append(hash_leaf(_leaf_data(3)), failing_visit)
    assert calls == [4, 5, 6]
    assert (appender.n_leaves, appender.peak_hashes, appender.root()) == before
    appender.append(hash_leaf(_leaf_data(3)))
    assert appender.root() == built().ref.root(4)


def test_bag_peaks() -> None:
    a, b, c = (sha256(x).digest() for x in (b"a", b"b", b"c"))
    assert bag_peaks([]) == EMPTY_ROOT
    assert bag_peaks([a]) == a
    assert bag_peaks([a, b, c]) == hash_children(a, hash_children(b, c))


def test_root_at_every_size() -> None:
    b = built()
    for n in range(MAX_LEAVES + 1):
        assert root_at(n, b.get) == b.ref.root(n), n


# --------------------------------------------------------------------------------------------------------
# Proof generation from stored nodes equals the reference, and verifies


def _check_inclusion(b: Built, index: int, size: int) -> None:
    proof = inclusion_proof(index, size, b.get)
    assert proof == b.ref.inclusion(index, size), (index, size)
    leaf = b.ref.leaf_hash(index)
    assert root_from_inclusion(index, size, leaf, proof) == b.ref.root(size)
    verify_inclusion(index, size, leaf, proof, b.ref.root(size))


def _check_consistency(b: Built, old: int, new: int) -> None:
    proof = consistency_proof(old, new, b.get)
    assert proof == b.ref.consistency(old, new), (old, new)
    if old > 0 or new == 0:  # a proof from the empty tree is meaningless and refused (see proofs.py)
        assert root_from_consistency(old, new, b.ref.root(old), proof) == b.ref.root(new)
        verify_consistency(old, new, b.ref.root(old), b.ref.root(new), proof)


def test_inclusion_proofs_exhaustive() -> None:
    b = built()
    for size in range(1, EXHAUSTIVE + 1):
        for index in range(size):
            _check_inclusion(b, index, size)


def test_consistency_proofs_exhaustive() -> None:
    b = built()
    for new in range(EXHAUSTIVE + 1):
        for old in range(new + 1):
            _check_consistency(b, old, new)


@pytest.mark.parametrize("seed", SEEDS)
def test_inclusion_proofs_random_pairs(seed: int) -> None:
    b = built()
    rng = random.Random(seed)
    for _ in range(RANDOM_PAIRS):
        size = rng.randint(1, MAX_LEAVES)
        _check_inclusion(b, rng.randrange(size), size)


@pytest.mark.parametrize("seed", SEEDS)
def test_consistency_proofs_random_pairs(seed: int) -> None:
    b = built()
    rng = random.Random(seed)
    for _ in range(RANDOM_PAIRS):
        new = rng.randint(1, MAX_LEAVES)
        _check_consistency(b, rng.randint(1, new), new)


def test_empty_consistency_proofs() -> None:
    b = built()
    for n in (0, 1, 5, 64, MAX_LEAVES):
        assert consistency_proof(0, n, b.get) == []
        assert consistency_proof(n, n, b.get) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_proofs_read_few_nodes_and_only_their_tree(seed: int) -> None:
    """O(log n) reads, and never a node younger than the tree the proof is for."""
    b = built()
    rng = random.Random(seed)
    for _ in range(RANDOM_PAIRS):
        size = rng.randint(1, MAX_LEAVES)
        calls: list[tuple[Callable[..., object], tuple[int, ...], int]] = [
            (inclusion_proof, (rng.randrange(size), size), 2 * size.bit_length()),
            (consistency_proof, (rng.randint(0, size), size), 2 * size.bit_length() + 1),
            (root_at, (size,), size.bit_count()),
        ]
        for fn, args, limit in calls:
            reads: list[int] = []

            def counting_get(position: int, reads: list[int] = reads) -> bytes:
                reads.append(position)
                return b.nodes[position]

            fn(*args, counting_get)
            assert max(reads, default=0) < mmr_size(size), (fn.__name__, args)
            assert len(reads) <= limit, (fn.__name__, args, len(reads))


@pytest.mark.parametrize(
    ("fn", "args", "reason"),
    [
        (inclusion_proof, (-1, 5), "bad-index"),
        (inclusion_proof, (5, 5), "bad-index"),
        (inclusion_proof, (0, 0), "bad-index"),
        (consistency_proof, (3, 2), "bad-size"),
        (consistency_proof, (-1, 2), "bad-size"),
        (root_at, (-1,), "bad-size"),
    ],
)
def test_proof_generation_preconditions(
    fn: Callable[..., object], args: tuple[int, ...], reason: str
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        fn(*args, built().get)
    assert info.value.reason == reason


# --------------------------------------------------------------------------------------------------------
# Negative tests: near misses, one change per row, each refused with its specific reason

NEGATIVE_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 31, 32, 33, 64, 65, 100, 1023, 1024, 1025, MAX_LEAVES]


def _indices(size: int) -> list[int]:
    return sorted({i for i in (0, 1, 2, size // 2, size - 2, size - 1) if 0 <= i < size})


INCLUSION_CASES = [(i, n) for n in NEGATIVE_SIZES for i in _indices(n)]
CONSISTENCY_CASES = [(m, n) for n in NEGATIVE_SIZES[1:] for m in _indices(n) if m > 0]

Mutation = tuple[str, tuple[Any, ...], str]


def _expected_inclusion_reason(b: Built, index: int, size: int, proof: Sequence[bytes]) -> str:
    """What a changed (index, size) must be refused with, given the unchanged proof."""
    if not 0 <= index < size:
        return "bad-index"
    if len(b.ref.inclusion(index, size)) != len(proof):
        return "bad-proof-length"
    return "root-mismatch"


def _inclusion_mutations(b: Built, index: int, size: int) -> list[Mutation]:
    proof = inclusion_proof(index, size, b.get)
    leaf = b.ref.leaf_hash(index)
    root = b.ref.root(size)
    extra = sha256(b"extra").digest()
    out: list[Mutation] = []
    for j in range(len(proof)):
        for bit in (0, 7, 255):
            flipped = [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
            out.append((f"flip proof[{j}] bit {bit}", (index, size, leaf, flipped, root), "root-mismatch"))
        out.append(
            (f"remove proof[{j}]", (index, size, leaf, proof[:j] + proof[j + 1 :], root), "bad-proof-length")
        )
        out.append(
            (
                f"insert before proof[{j}]",
                (index, size, leaf, [*proof[:j], extra, *proof[j:]], root),
                "bad-proof-length",
            )
        )
        out.append(
            (
                f"truncate proof[{j}]",
                (index, size, leaf, [*proof[:j], proof[j][:31], *proof[j + 1 :]], root),
                "bad-hash-length",
            )
        )
        out.append(
            (
                f"garbage byte after proof[{j}]",
                (index, size, leaf, [*proof[:j], proof[j] + b"\x00", *proof[j + 1 :]], root),
                "bad-hash-length",
            )
        )
        if j + 1 < len(proof):
            swapped = [*proof[:j], proof[j + 1], proof[j], *proof[j + 2 :]]
            out.append(
                (f"swap proof[{j}] and proof[{j + 1}]", (index, size, leaf, swapped, root), "root-mismatch")
            )
    out += [
        ("append a hash", (index, size, leaf, [*proof, extra], root), "bad-proof-length"),
        ("append the root", (index, size, leaf, [*proof, root], root), "bad-proof-length"),
        ("prepend the leaf", (index, size, leaf, [leaf, *proof], root), "bad-proof-length"),
        ("empty hash prepended", (index, size, leaf, [b"", *proof], root), "bad-proof-length"),
        ("flip leaf bit", (index, size, _flip(leaf, 3), proof, root), "root-mismatch"),
        ("flip root bit", (index, size, leaf, proof, _flip(root, 200)), "root-mismatch"),
        ("empty root", (index, size, leaf, proof, b""), "root-mismatch"),
        ("empty-tree root", (index, size, leaf, proof, EMPTY_ROOT), "root-mismatch"),
        ("short leaf", (index, size, leaf[:31], proof, root), "bad-hash-length"),
        ("leaf data instead of leaf hash", (index, size, _leaf_data(index), proof, root), "bad-hash-length"),
        ("size * 2", (index, size * 2, leaf, proof, root), "bad-proof-length"),
        ("size 0", (index, 0, leaf, proof, root), "bad-index"),
        ("negative index", (-1, size, leaf, proof, root), "bad-index"),
    ]
    if size > 1:
        out.append(("root of size - 1", (index, size, leaf, proof, b.ref.root(size - 1)), "root-mismatch"))
    for desc, i2, n2 in [
        ("index + 1", index + 1, size),
        ("index - 1", index - 1, size),
        ("index ^ 2", index ^ 2, size),
        ("index ^ 1", index ^ 1, size),
        ("size // 2", index, size // 2),
    ]:
        out.append((desc, (i2, n2, leaf, proof, root), _expected_inclusion_reason(b, i2, n2, proof)))
    return out


def _expected_consistency_reason(b: Built, old: int, new: int, proof: Sequence[bytes]) -> str:
    """What a changed (size1, size2) must be refused with, given the unchanged, non-empty proof."""
    if not 0 < old <= new:
        return "bad-size"
    if len(b.ref.consistency(old, new)) != len(proof):  # includes old == new: the proof must be empty
        return "bad-proof-length"
    return "root-mismatch"


def _consistency_mutations(b: Built, old: int, new: int) -> list[Mutation]:
    proof = consistency_proof(old, new, b.get)
    r1, r2 = b.ref.root(old), b.ref.root(new)
    extra = sha256(b"extra").digest()
    out: list[Mutation] = []
    for j in range(len(proof)):
        for bit in (0, 7, 255):
            flipped = [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
            out.append((f"flip proof[{j}] bit {bit}", (old, new, r1, r2, flipped), "root-mismatch"))
        out.append((f"remove proof[{j}]", (old, new, r1, r2, proof[:j] + proof[j + 1 :]), "bad-proof-length"))
        out.append(
            (
                f"insert before proof[{j}]",
                (old, new, r1, r2, [*proof[:j], extra, *proof[j:]]),
                "bad-proof-length",
            )
        )
        out.append(
            (
                f"truncate proof[{j}]",
                (old, new, r1, r2, [*proof[:j], proof[j][:31], *proof[j + 1 :]]),
                "bad-hash-length",
            )
        )
    out += [
        ("empty proof", (old, new, r1, r2, []), "bad-proof-length"),
        ("append a hash", (old, new, r1, r2, [*proof, extra]), "bad-proof-length"),
        ("append root1", (old, new, r1, r2, [*proof, r1]), "bad-proof-length"),
        ("prepend root2", (old, new, r1, r2, [r2, *proof]), "bad-proof-length"),
        ("empty hash appended", (old, new, r1, r2, [*proof, b""]), "bad-proof-length"),
        ("flip root1 bit", (old, new, _flip(r1, 9), r2, proof), "root-mismatch"),
        ("flip root2 bit", (old, new, r1, _flip(r2, 9), proof), "root-mismatch"),
        ("swap roots", (old, new, r2, r1, proof), "root-mismatch"),
        ("root1 is the empty-tree root", (old, new, EMPTY_ROOT, r2, proof), "root-mismatch"),
        ("short root1", (old, new, r1[:31], r2, proof), "bad-hash-length"),
        ("size2 * 2", (old, new * 2, r1, r2, proof), "bad-proof-length"),
        ("size1 > size2", (new + 1, new, r1, r2, proof), "bad-size"),
        ("size1 = 0", (0, new, r1, r2, proof), "bad-size"),
    ]
    for desc, m2, n2 in [
        ("size1 + 1", old + 1, new),
        ("size1 - 1", old - 1, new),
        ("size1 ^ 2", old ^ 2, new),
        ("size2 // 2", old, new // 2),
    ]:
        out.append((desc, (m2, n2, r1, r2, proof), _expected_consistency_reason(b, m2, n2, proof)))
    return out


def _run_table(verifier: Callable[..., None], mutations: list[Mutation]) -> list[str]:
    """Run every row; return one line per failure, so a broken verifier reports all of them at once."""
    failures = []
    for desc, args, want in mutations:
        try:
            got = _reason(verifier, *args)
        except Exception as exc:  # a verifier must raise nothing but PeerProtocolError
            got = f"{type(exc).__name__}: {exc}"
        if got != want:
            failures.append(f"{desc}: want {want}, got {got or 'accepted'}")
    return failures


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES, ids=[f"{i}-of-{n}" for i, n in INCLUSION_CASES])
def test_inclusion_near_misses(index: int, size: int) -> None:
    mutations = _inclusion_mutations(built(), index, size)
    failures = _run_table(verify_inclusion, mutations)
    assert not failures, f"{len(failures)} out of {len(mutations)} failures:\n" + "\n".join(failures)


@pytest.mark.parametrize(("old", "new"), CONSISTENCY_CASES, ids=[f"{m}-to-{n}" for m, n in CONSISTENCY_CASES])
def test_consistency_near_misses(old: int, new: int) -> None:
    mutations = _consistency_mutations(built(), old, new)
    failures = _run_table(verify_consistency, mutations)
    assert not failures, f"{len(failures)} out of {len(mutations)} failures:\n" + "\n".join(failures)


def test_root_mismatch_carries_both_roots() -> None:
    b = built()
    proof = inclusion_proof(5, 10, b.get)
    wrong = b.ref.root(9)
    with pytest.raises(RootMismatchError) as info:
        verify_inclusion(5, 10, b.ref.leaf_hash(5), proof, wrong)
    assert info.value.reason == "root-mismatch"
    assert info.value.expected == wrong
    assert info.value.calculated == b.ref.root(10)


def test_consistency_between_equal_and_empty_sizes() -> None:
    b = built()
    r5 = b.ref.root(5)
    verify_consistency(5, 5, r5, r5, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert _reason(verify_consistency, 5, 5, r5, b.ref.root(4), []) == "root-mismatch"
    assert _reason(verify_consistency, 5, 5, r5, r5, [r5]) == "bad-proof-length"
    assert _reason(verify_consistency, 0, 0, r5, r5, []) == "root-mismatch"  # size 0 has one possible root
    assert _reason(verify_consistency, 0, 5, EMPTY_ROOT, r5, []) == "bad-size"  # meaningless, refused
    assert _reason(verify_consistency, -1, 5, EMPTY_ROOT, r5, []) == "bad-size"


def test_inclusion_tree_size_is_bound_by_the_checkpoint_not_the_proof() -> None:
    """Known RFC 9162 property, pinned here: a proof binds the tree size only through its shape.

    The path of leaf 0 in a tree of 3 leaves has the same shape as in a tree of 4, so the size-3 proof
    also "verifies" against size 4 with the size-3 root. No real tree of size 4 has that root (it would take
    a leaf hash equal to a node hash), so a caller must take (size, root) together from a signed checkpoint.
    """
    b = built()
    verify_inclusion(0, 4, b.ref.leaf_hash(0), inclusion_proof(0, 3, b.get), b.ref.root(3))
    verify_consistency(2, 4, b.ref.root(2), b.ref.root(3), consistency_proof(2, 3, b.get))


# --------------------------------------------------------------------------------------------------------
# Properties

SIZES = st.integers(min_value=1, max_value=MAX_LEAVES)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_inclusion_round_trip(data: st.DataObject) -> None:
    b = built()
    size = data.draw(SIZES, label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, size, b.get)
    assert proof == b.ref.inclusion(index, size)
    verify_inclusion(index, size, b.ref.leaf_hash(index), proof, root_at(size, b.get))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_consistency_round_trip(data: st.DataObject) -> None:
    b = built()
    new = data.draw(SIZES, label="new")
    old = data.draw(st.integers(1, new), label="old")
    proof = consistency_proof(old, new, b.get)
    assert proof == b.ref.consistency(old, new)
    verify_consistency(old, new, root_at(old, b.get), root_at(new, b.get), proof)


def _mutate_proof(data: st.DataObject, proof: list[bytes]) -> list[bytes]:
    """Flip one bit, remove one hash or insert one hash, anywhere in the proof."""
    kinds = ["insert"] + (["flip", "remove", "truncate"] if proof else [])
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "insert":
        at = data.draw(st.integers(0, len(proof)), label="at")
        return [*proof[:at], data.draw(st.binary(min_size=32, max_size=32), label="hash"), *proof[at:]]
    at = data.draw(st.integers(0, len(proof) - 1), label="at")
    if kind == "flip":
        bit = data.draw(st.integers(0, 255), label="bit")
        return [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
    if kind == "truncate":
        return [*proof[:at], proof[at][: data.draw(st.integers(0, 31))], *proof[at + 1 :]]
    return proof[:at] + proof[at + 1 :]


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_inclusion_mutation_is_rejected(data: st.DataObject) -> None:
    b = built()
    size = data.draw(SIZES, label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, size, b.get)
    leaf, root = b.ref.leaf_hash(index), b.ref.root(size)
    target = data.draw(st.sampled_from(["proof", "leaf", "root", "index", "size*2"]), label="target")
    args: tuple[Any, ...]
    if target == "proof":
        args = (index, size, leaf, _mutate_proof(data, proof), root)
    elif target == "leaf":
        args = (index, size, _flip(leaf, data.draw(st.integers(0, 255))), proof, root)
    elif target == "root":
        args = (index, size, leaf, proof, _flip(root, data.draw(st.integers(0, 255))))
    elif target == "index":  # any other index: leaves are distinct, so the claim is false
        other = data.draw(st.integers(-2, 2 * MAX_LEAVES).filter(lambda i: i != index), label="other")
        args = (other, size, leaf, proof, root)
    else:
        args = (index, size * 2, leaf, proof, root)
    with pytest.raises(PeerProtocolError):
        verify_inclusion(*args)


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_any_consistency_mutation_is_rejected(data: st.DataObject) -> None:
    b = built()
    new = data.draw(st.integers(2, MAX_LEAVES), label="new")
    old = data.draw(st.integers(1, new - 1), label="old")
    proof = consistency_proof(old, new, b.get)
    r1, r2 = b.ref.root(old), b.ref.root(new)
    target = data.draw(st.sampled_from(["proof", "root1", "root2", "size1", "size2*2"]), label="target")
    args: tuple[Any, ...]
    if target == "proof":
        args = (old, new, r1, r2, _mutate_proof(data, proof))
    elif target == "root1":
        args = (old, new, _flip(r1, data.draw(st.integers(0, 255))), r2, proof)
    elif target == "root2":
        args = (old, new, r1, _flip(r2, data.draw(st.integers(0, 255))), proof)
    elif target == "size1":  # r1 is the root of `old` leaves only
        other = data.draw(st.integers(-2, 2 * MAX_LEAVES).filter(lambda m: m != old), label="other")
        args = (other, new, r1, r2, proof)
    else:
        args = (old, new * 2, r1, r2, proof)
    with pytest.raises(PeerProtocolError):
        verify_consistency(*args)
