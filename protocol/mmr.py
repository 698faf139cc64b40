"""Merkle Mountain Range math with RFC 6962 hashing: positions, appending, roots and proofs.

No I/O happens here. The MMR's nodes live wherever the caller keeps them (``store`` keeps them in LMDB):

* :class:`MMRAppender` reports every node it creates to a ``visit(position, hash)`` callback and keeps only
  the peak hashes, so ``store``, not ``protocol``, decides what to persist.
* :func:`root_at`, :func:`inclusion_proof` and :func:`consistency_proof` read stored nodes through a
  ``get_node(position) -> bytes`` callback, in O(log n) reads and never by rebuilding the tree.

Theory of operation
-------------------
Nodes are numbered in post-order from 0: every perfect subtree is stored right after its two children, so
the tree over leaves ``[0, n)`` occupies positions ``[0, mmr_size(n))`` and appending never moves a node.
The MMR of ``n`` leaves is the list of its *peaks*: one perfect subtree for each set bit of ``n``, largest
(leftmost) first. Two counting facts carry all the arithmetic below:

* a perfect subtree of height ``h`` holds ``2**(h+1) - 1`` nodes, and
* ``mmr_size(n) = 2n - popcount(n)``: each set bit ``2**h`` of ``n`` is a peak of ``2**(h+1) - 1`` nodes.

Hashing is RFC 6962 (RFC 9162 §2.1.1): a leaf is ``SHA-256(0x00 || data)`` and an interior node is
``SHA-256(0x01 || left || right)``. The root bags the peaks right to left with the node hash,
``H(0x01 || p0 || H(0x01 || p1 || ...))``, and the empty tree's root is ``SHA-256("")``. The RFC's split
point ``k`` (the largest power of two below ``n``) is exactly the first peak, so this root *is* the RFC 6962
Merkle Tree Hash, and every subtree the RFC's proofs name is either one stored perfect node or a suffix
``[k, n)`` whose hash is the right-to-left bag of the peaks of ``n`` inside it. That is how
:func:`inclusion_proof` and :func:`consistency_proof` produce exactly RFC 6962's PATH and PROOF.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from hashlib import sha256 as _sha256
from typing import Final, TypeAlias

from protocol.errors import LocalProtocolError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "GetNode",
    "MMRAppender",
    "Visit",
    "bag_peaks",
    "consistency_proof",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "leaf_position",
    "mmr_size",
    "node_position",
    "peak_positions",
    "peaks",
    "root_at",
]

LEAF_PREFIX: Final = b"\x00"
"""RFC 6962 domain-separation prefix of a leaf hash."""
NODE_PREFIX: Final = b"\x01"
"""RFC 6962 domain-separation prefix of an interior node hash."""
HASH_SIZE: Final = 32
"""Length in bytes of every SHA-256 tree hash."""
EMPTY_ROOT: Final = _sha256(b"").digest()
"""Root of the empty tree, SHA-256 of the empty string (RFC 9162 §2.1.1)."""

GetNode: TypeAlias = Callable[[int], bytes]
"""Reads the stored hash at an MMR position; may raise whatever the store raises for a missing node."""
Visit: TypeAlias = Callable[[int, bytes], None]
"""Receives each new ``(position, hash)`` in post-order."""


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


# --------------------------------------------------------------------------------------------------------
# Position arithmetic


def _check_count(n: int, what: str) -> None:
    if n < 0:
        raise LocalProtocolError("bad-size", f"{what} must be >= 0, got {n}", **{what: n})


def mmr_size(n_leaves: int) -> int:
    """Return the number of MMR nodes over ``n_leaves`` leaves, ``2n - popcount(n)``.

    Raises:
        LocalProtocolError: ``bad-size`` if ``n_leaves < 0``.
    """
    _check_count(n_leaves, "n_leaves")
    return 2 * n_leaves - n_leaves.bit_count()


def leaf_position(index: int) -> int:
    """Return the post-order position of leaf ``index``: ``mmr_size(index)``, as the leaf follows them all.

    Raises:
        LocalProtocolError: ``bad-index`` if ``index < 0``.
    """
    if index < 0:
        raise LocalProtocolError("bad-index", f"leaf index must be >= 0, got {index}", index=index)
    return 2 * index - index.bit_count()


def node_position(level: int, index: int) -> int:
    """Return the position of the perfect node ``(level, index)``.

    The node covers leaves ``[index * 2**level, (index+1) * 2**level)``. It is stored right after its last
    leaf ``last`` and the ``level`` ancestors of that leaf that complete on the way up, so its position is
    ``leaf_position(last) + level``.

    Raises:
        LocalProtocolError: ``bad-index`` if ``level < 0`` or ``index < 0``.
    """
    if level < 0 or index < 0:
        raise LocalProtocolError(
            "bad-index", f"level and index must be >= 0, got ({level}, {index})", level=level, index=index
        )
    last = ((index + 1) << level) - 1
    return 2 * last - last.bit_count() + level


def peaks(n_leaves: int) -> list[tuple[int, int]]:
    """Return the peaks of the MMR of ``n_leaves`` leaves as ``(level, index)``, left to right, largest first.

    There is one peak per set bit of ``n_leaves``; a peak at ``level`` starts at the leaf count of the peaks
    to its left, so its index at that level is that count shifted right by ``level``.

    Raises:
        LocalProtocolError: ``bad-size`` if ``n_leaves < 0``.
    """
    _check_count(n_leaves, "n_leaves")
    out: list[tuple[int, int]] = []
    start = 0
    for level in range(n_leaves.bit_length() - 1, -1, -1):
        if (n_leaves >> level) & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def peak_positions(n_leaves: int) -> list[int]:
    """Return the MMR positions of the peaks of ``n_leaves`` leaves, left to right.

    Raises:
        LocalProtocolError: ``bad-size`` if ``n_leaves < 0``.
    """
    out: list[int] = []
    end = -1  # position of the previous peak; a peak of height h ends 2**(h+1) - 1 nodes after it
    for level, _ in peaks(n_leaves):
        end += (2 << level) - 1
        out.append(end)
    return out


# --------------------------------------------------------------------------------------------------------
# Appending and roots


def bag_peaks(peak_hashes: Sequence[bytes]) -> bytes:
    """Return the root over ``peak_hashes`` (left to right): ``H(0x01 || p0 || H(0x01 || p1 || ...))``.

    The bag runs right to left, which makes it the RFC 6962 Merkle Tree Hash; no peaks give ``EMPTY_ROOT``.
    """
    if not peak_hashes:
        return EMPTY_ROOT
    acc = peak_hashes[-1]
    for i in range(len(peak_hashes) - 2, -1, -1):
        acc = _sha256(NODE_PREFIX + peak_hashes[i] + acc).digest()
    return acc


class MMRAppender:
    """Appends leaves to an MMR whose nodes someone else stores; keeps only the peak hashes.

    Args:
        n_leaves: the current number of leaves.
        peak_hashes: the current peak hashes, left to right (``len(peaks(n_leaves))`` of them, 32 bytes each).

    Raises:
        LocalProtocolError: ``bad-size`` if ``n_leaves < 0``; ``bad-peak-count`` if the number of peak hashes
            does not match ``n_leaves``; ``bad-hash-length`` if a peak hash is not 32 bytes.
    """

    __slots__ = ("_n", "_peaks")

    def __init__(self, n_leaves: int = 0, peak_hashes: Sequence[bytes] = ()) -> None:
        _check_count(n_leaves, "n_leaves")
        if len(peak_hashes) != n_leaves.bit_count():
            raise LocalProtocolError(
                "bad-peak-count",
                f"an MMR of {n_leaves} leaves has {n_leaves.bit_count()} peaks, got {len(peak_hashes)}",
                n_leaves=n_leaves,
                want=n_leaves.bit_count(),
                got=len(peak_hashes),
            )
        for i, h in enumerate(peak_hashes):
            _check_local_hash(h, f"peak {i}")
        self._n = n_leaves
        self._peaks: list[bytes] = list(peak_hashes)

    @classmethod
    def from_store(cls, n_leaves: int, get_node: GetNode) -> MMRAppender:
        """Build an appender for the stored MMR of ``n_leaves`` leaves, reading its ``popcount(n)`` peaks."""
        return cls(n_leaves, [get_node(p) for p in peak_positions(n_leaves)])

    @property
    def n_leaves(self) -> int:
        """The number of leaves appended so far."""
        return self._n

    @property
    def node_count(self) -> int:
        """The number of MMR nodes, ``mmr_size(n_leaves)``: the position the next leaf will take."""
        return 2 * self._n - self._n.bit_count()

    @property
    def peak_hashes(self) -> tuple[bytes, ...]:
        """The current peak hashes, left to right."""
        return tuple(self._peaks)

    def append(self, leaf_hash: bytes, visit: Visit | None = None) -> int:
        """Append one leaf (already hashed with :func:`hash_leaf`) and return its leaf index.

        Reports the leaf and then each parent it completes, in post-order, as ``visit(position, hash)``: one
        leaf plus one node per trailing one bit of the old leaf count, so O(log n) hashes and amortised two
        nodes per leaf.

        Atomicity: the appender changes only after every ``visit`` call has returned. If ``visit`` raises,
        the appender is unchanged, and the caller discards whatever it recorded (abort the write batch).

        Raises:
            LocalProtocolError: ``bad-hash-length`` if ``leaf_hash`` is not 32 bytes.
        """
        _check_local_hash(leaf_hash, "leaf hash")
        n = self._n
        stack = self._peaks
        pos = 2 * n - n.bit_count()  # mmr_size(n): the leaf goes right after every existing node
        if visit is not None:
            visit(pos, leaf_hash)
        h = leaf_hash
        keep = len(stack)
        m = n
        while m & 1:  # each trailing 1 bit of n is a peak of equal height to merge with
            keep -= 1
            h = _sha256(NODE_PREFIX + stack[keep] + h).digest()
            pos += 1  # a parent directly follows its right child in post-order
            if visit is not None:
                visit(pos, h)
            m >>= 1
        del stack[keep:]
        stack.append(h)
        self._n = n + 1
        return n

    def root(self) -> bytes:
        """Return the current root, which equals the RFC 6962 Merkle Tree Hash; ``EMPTY_ROOT`` if empty."""
        return bag_peaks(self._peaks)


def _check_local_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise LocalProtocolError(
            "bad-hash-length", f"{what} must be {HASH_SIZE} bytes, got {len(h)}", got=len(h)
        )


# --------------------------------------------------------------------------------------------------------
# Reading roots and proofs from stored nodes


def _bag_low_peaks(n: int, levels: int, get_node: GetNode) -> bytes:
    """Bag, right to left, the peaks of ``n`` at the levels set in ``levels`` (a non-zero low part of ``n``).

    The rightmost peak is the MMR's last node, ``mmr_size(n) - 1``; each peak to its left ends just before
    the first node of the peak after it, which is ``2**(h+1) - 1`` nodes long for height ``h``.
    """
    pos = 2 * n - n.bit_count() - 1
    level = (levels & -levels).bit_length() - 1  # lowest set bit: the smallest, rightmost peak
    acc = get_node(pos)
    levels &= levels - 1  # clear it
    while levels:
        pos -= (2 << level) - 1
        level = (levels & -levels).bit_length() - 1
        acc = _sha256(NODE_PREFIX + get_node(pos) + acc).digest()
        levels &= levels - 1
    return acc


def root_at(size: int, get_node: GetNode) -> bytes:
    """Return the root of the tree of ``size`` leaves from stored nodes (``popcount(size)`` reads).

    Any stored MMR of at least ``size`` leaves will do: nodes never move, so it holds every node of every
    smaller tree. Returns ``EMPTY_ROOT`` for ``size == 0``.

    Raises:
        LocalProtocolError: ``bad-size`` if ``size < 0``.
    """
    _check_count(size, "size")
    if size == 0:
        return EMPTY_ROOT
    return _bag_low_peaks(size, size, get_node)


def _path(pos: int, level: int, index: int, size: int, get_node: GetNode) -> list[bytes]:
    """Return the RFC 6962 audit path of the perfect node ``(level, index)`` (stored at ``pos``) in ``size``.

    The node lies inside one peak of ``size``, at the ``fork`` level where its first leaf ``s`` and ``size``
    first differ (there ``s`` has 0 and ``size`` has 1). The path is, bottom up: the node's siblings inside
    that peak (stored nodes), then the bag of the peaks to the right of it (one RFC subtree ``[k, size)``),
    then each peak to its left, nearest first.
    """
    fork = ((index << level) ^ size).bit_length() - 1
    # 1. Siblings inside the peak. A left child of height h has its sibling 2**(h+1) - 1 positions later and
    #    its parent right after that; a right child has its sibling 2**(h+1) - 1 positions earlier and its
    #    parent right after itself.
    out: list[bytes] = []
    append = out.append
    step = (2 << level) - 1  # 2**(h+1) - 1 for the current height h
    for _ in range(fork - level):
        if index & 1:
            append(get_node(pos - step))
            pos += 1
        else:
            append(get_node(pos + step))
            pos += step + 1
        index >>= 1
        step += step + 1
    # 2. The peaks right of the fork are the set bits of size below the fork level.
    low = size & ((1 << fork) - 1)
    if low:
        append(_bag_low_peaks(size, low, get_node))
    # 3. The peaks left of the fork are the set bits of size above the fork level, taken nearest first. The
    #    peak left of one of height h ending at pos ends 2**(h+1) - 1 positions earlier.
    high = size & ~((2 << fork) - 1)
    h = fork
    while high:
        pos -= (2 << h) - 1
        append(get_node(pos))
        h = (high & -high).bit_length() - 1  # this peak's height
        high &= high - 1
    return out


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """Return the RFC 6962 audit path ``PATH(index, D[size])`` for leaf ``index`` (RFC 9162 §2.1.3.1).

    Hashes are ordered from the leaf's sibling up to the root's child, as the RFC defines. Requires
    ``0 <= index < size``; costs O(log size) ``get_node`` reads plus at most ``popcount(size) - 1`` hashes.

    Raises:
        LocalProtocolError: ``bad-index`` unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise LocalProtocolError(
            "bad-index", f"requires 0 <= index < size, got index {index}, size {size}", index=index, size=size
        )
    return _path(2 * index - index.bit_count(), 0, index, size, get_node)


def consistency_proof(old_size: int, new_size: int, get_node: GetNode) -> list[bytes]:
    """Return the RFC 6962 consistency proof ``PROOF(old_size, D[new_size])`` (RFC 9162 §2.1.4.1).

    The proof is the last peak of the old tree (omitted when ``old_size`` is a power of two, since it is
    then the old root itself) followed by that peak's audit path in the new tree. ``old_size == 0`` and
    ``old_size == new_size`` give the empty proof. Requires ``0 <= old_size <= new_size``.

    Raises:
        LocalProtocolError: ``bad-size`` unless ``0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise LocalProtocolError(
            "bad-size",
            f"requires 0 <= old_size <= new_size, got {old_size}, {new_size}",
            old_size=old_size,
            new_size=new_size,
        )
    if old_size in (0, new_size):
        return []
    # The old tree's last peak has the height of old_size's lowest set bit and is the old MMR's last node.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    pos = 2 * old_size - old_size.bit_count() - 1
    out = _path(pos, level, index, new_size, get_node)
    if index:  # old_size is not a power of two: the verifier needs this peak as its seed
        out.insert(0, get_node(pos))
    return out
