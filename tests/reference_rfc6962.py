"""A slow, direct RFC 6962 Merkle tree: the test-only oracle for ``protocol.mmr`` and ``protocol.proofs``.

Every function transcribes RFC 6962 §2.1 (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1) recursively over a list of
leaf *data*, with no cleverness: MTH, PATH, PROOF and SUBPROOF. Subtree hashes are memoised by leaf range
only so that exhaustive tests stay fast; the recursion itself is the RFC's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from hashlib import sha256


def _largest_power_of_two_below(n: int) -> int:
    """The RFC's k: the largest power of two smaller than n (requires n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class ReferenceTree:
    """An RFC 6962 Merkle tree over ``leaves`` (raw data, not hashes)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self._mth = lru_cache(maxsize=None)(self._mth_uncached)

    def leaf_hash(self, i: int) -> bytes:
        return sha256(b"\x00" + self.leaves[i]).digest()

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        return self._mth(lo, hi)

    def _mth_uncached(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return sha256(b"").digest()
        if n == 1:
            return sha256(b"\x00" + self.leaves[lo]).digest()
        k = _largest_power_of_two_below(n)
        return sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi)).digest()

    def root(self, size: int) -> bytes:
        """MTH(D[0:size])."""
        return self.mth(0, size)

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m, D[lo:hi]) for 0 <= m < hi - lo."""
        n = hi - lo
        assert 0 <= m < n
        if n == 1:
            return []
        k = _largest_power_of_two_below(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size])."""
        return self.path(index, 0, size)

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[lo:hi], b)."""
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]

    def consistency(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[0:n]) for 0 < m <= n; as RFC 9162, the empty proof for m == 0."""
        assert 0 <= m <= n
        if m == 0:
            return []
        return self.subproof(m, 0, n, True)
