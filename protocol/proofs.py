"""Verification of RFC 6962 / RFC 9162 inclusion and consistency proofs: compute, then compare.

``root_from_inclusion`` and ``root_from_consistency`` compute the root a proof implies; ``verify_inclusion``
and ``verify_consistency`` are thin wrappers that compare it with the expected root and raise
:class:`~protocol.errors.RootMismatchError` on a difference. The structure follows transparency-dev/merkle
``proof/verify.go``; the results are those of the verification algorithms of RFC 9162 §2.1.3.2 and
§2.1.4.2.

Everything a proof is made of came from a peer, so every failure is a
:class:`~protocol.errors.PeerProtocolError` with a stable reason:

* ``bad-index``: the leaf index is not in ``[0, size)``.
* ``bad-size``: the tree sizes are impossible (``size1 > size2``, or a proof from the empty tree).
* ``bad-proof-length``: the proof has more or fewer hashes than the sizes dictate. This is checked before
  any hashing, so extra or missing hashes never get through.
* ``bad-hash-length``: a hash that is fed into SHA-256 (leaf hash, proof element, old root) is not 32 bytes.
* ``root-mismatch``: the computed root differs from the expected one (:class:`RootMismatchError`).

Expected roots that are only compared, never hashed, are not length-checked: a root of the wrong length
simply does not match. (The shared RFC 6962 vectors require accepting equal 12-byte roots for
``size1 == size2``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256 as _sha256

from protocol.errors import PeerProtocolError, RootMismatchError
from protocol.mmr import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX

__all__ = [
    "root_from_consistency",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]


def root_from_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the root that an inclusion proof for leaf ``index`` in a tree of ``size`` leaves implies.

    Implements RFC 9162 §2.1.3.2 (audit path verification) up to the final comparison. Requires
    ``0 <= index < size``, a 32-byte ``leaf_hash`` and exactly as many 32-byte proof hashes as the tree
    shape dictates, all checked before any hashing.

    Raises:
        PeerProtocolError: ``bad-index``, ``bad-hash-length`` or ``bad-proof-length``.
    """
    if not 0 <= index < size:
        raise PeerProtocolError(
            "bad-index", f"requires 0 <= index < size, got index {index}, size {size}", index=index, size=size
        )
    _check_hash(leaf_hash, "leaf hash")
    inner, border = _decomp_inclusion(index, size)
    _check_proof(proof, inner + border)
    res = _chain_inner(leaf_hash, proof, 0, inner, index)
    return _chain_border_right(res, proof, inner)


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``proof`` puts ``leaf_hash`` at ``index`` in the tree of ``size`` leaves with ``root``.

    Requires ``0 <= index < size`` (RFC 9162 §2.1.3.2). The tree size is bound only through the proof's
    shape; binding ``root`` to ``size`` is the job of the signed checkpoint that carries both.

    Raises:
        PeerProtocolError: as :func:`root_from_inclusion`.
        RootMismatchError: the proof leads to a different root.
    """
    calculated = root_from_inclusion(index, size, leaf_hash, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated)


def root_from_consistency(size1: int, size2: int, root1: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the root of the tree of ``size2`` leaves implied by ``root1`` of ``size1`` leaves and ``proof``.

    Implements RFC 9162 §2.1.4.2 up to the final comparison, checking ``root1`` on the way. Requires
    ``0 < size1 <= size2``, or ``size1 == size2 == 0``:

    * ``size1 == size2``: the proof must be empty and the result is ``root1`` (for size 0, ``root1`` must
      be the empty tree's root ``SHA-256("")``).
    * ``0 == size1 < size2``: refused with ``bad-size``. Every tree extends the empty one, so such a proof
      would say nothing and nothing is computed from it; callers skip the check instead.
    * otherwise ``root1`` (32 bytes) and exactly the right number of 32-byte hashes are required.

    Raises:
        PeerProtocolError: ``bad-size``, ``bad-proof-length`` or ``bad-hash-length``.
        RootMismatchError: the proof does not reproduce ``root1`` (``expected`` is ``root1``).
    """
    if not 0 <= size1 <= size2:
        raise PeerProtocolError(
            "bad-size", f"requires 0 <= size1 <= size2, got {size1}, {size2}", size1=size1, size2=size2
        )
    if size1 == size2:
        _check_proof(proof, 0)
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise RootMismatchError(root1, EMPTY_ROOT)
        return root1
    if size1 == 0:
        raise PeerProtocolError(
            "bad-size", "a consistency proof from the empty tree is meaningless", size1=size1, size2=size2
        )
    _check_hash(root1, "root1")

    # The proof is the audit path of the old tree's last peak, the node (shift, (size1-1) >> shift) where
    # shift is the number of trailing zero bits of size1, preceded by that peak's hash unless size1 is a
    # power of two (then the peak is the whole old tree and its hash is root1).
    inner, border = _decomp_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    inner -= shift  # the path starts at level `shift`; shift < inner because size1 < size2
    start = 0 if size1 == 1 << shift else 1
    _check_proof(proof, start + inner + border)
    seed = root1 if start == 0 else proof[0]

    mask = (size1 - 1) >> shift  # the peak's index at level `shift` steers the chaining
    # The old root uses only the hashes left of the path: the old tree has nothing to the right of its end.
    hash1 = _chain_inner_right(seed, proof, start, start + inner, mask)
    hash1 = _chain_border_right(hash1, proof, start + inner)
    if hash1 != root1:
        raise RootMismatchError(root1, hash1)
    hash2 = _chain_inner(seed, proof, start, start + inner, mask)
    return _chain_border_right(hash2, proof, start + inner)


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``size2`` leaves with ``root2`` extends the one of ``size1`` with ``root1``.

    Requires ``0 < size1 <= size2`` or ``size1 == size2 == 0`` (RFC 9162 §2.1.4.2); see
    :func:`root_from_consistency`.

    Raises:
        PeerProtocolError: as :func:`root_from_consistency`.
        RootMismatchError: ``root1`` or ``root2`` does not match what the proof implies.
    """
    calculated = root_from_consistency(size1, size2, root1, proof)
    if calculated != root2:
        raise RootMismatchError(root2, calculated)


# --------------------------------------------------------------------------------------------------------
# Helpers. `proof[lo:hi]` slices are replaced by index ranges to avoid copying.


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise PeerProtocolError(
            "bad-hash-length", f"{what} must be {HASH_SIZE} bytes, got {len(h)}", got=len(h), want=HASH_SIZE
        )


def _check_proof(proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise PeerProtocolError(
            "bad-proof-length", f"proof has {len(proof)} hashes, want {want}", got=len(proof), want=want
        )
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise PeerProtocolError(
                "bad-hash-length",
                f"proof hash {i} must be {HASH_SIZE} bytes, got {len(h)}",
                position=i,
                got=len(h),
                want=HASH_SIZE,
            )


def _decomp_inclusion(index: int, size: int) -> tuple[int, int]:
    """Split the audit path of leaf ``index`` in a tree of ``size`` at the level where the paths to ``index``
    and to the last leaf ``size - 1`` meet. Returns (inner, border): the number of levels below that point,
    and the number of left-hand subtree hashes above it. Their sum is the exact proof length.
    """
    # Below bit_length(index ^ (size-1)) the two paths differ: one sibling hash per level.
    inner = (index ^ (size - 1)).bit_length()
    # Above, the path runs along the right border, which has a left sibling only where index has a 1 bit.
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], lo: int, hi: int, index: int) -> bytes:
    """Hash ``seed`` up through ``proof[lo:hi]``, lowest level first; bit i of ``index`` says which side.

    A 0 bit means the running node is a left child (its sibling is on the right), a 1 bit a right child.
    """
    for i in range(lo, hi):
        if index & 1:
            seed = _sha256(NODE_PREFIX + proof[i] + seed).digest()
        else:
            seed = _sha256(NODE_PREFIX + seed + proof[i]).digest()
        index >>= 1
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], lo: int, hi: int, index: int) -> bytes:
    """Like :func:`_chain_inner`, but keep only left siblings (1 bits of ``index``): that is the hash of the
    same subtree as it was before anything was appended to its right.
    """
    for i in range(lo, hi):
        if index & 1:
            seed = _sha256(NODE_PREFIX + proof[i] + seed).digest()
        index >>= 1
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes], lo: int) -> bytes:
    """Hash ``seed`` up the right border through ``proof[lo:]``, which holds only left-hand siblings."""
    for i in range(lo, len(proof)):
        seed = _sha256(NODE_PREFIX + proof[i] + seed).digest()
    return seed
