"""Session-wide test settings."""

from __future__ import annotations

import sys

import pytest

_DEFAULT_RECURSION_LIMIT = sys.getrecursionlimit()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Undo what imports did to the recursion limit while the test modules were collected.

    py_ecc (under eth-account, imported by the anchoring tests) raises it to 100,000; the daemons put
    it back after that import (``anchor/evm.py``), and the test process must run like them, or a C
    decoder fed deep input would overflow the C stack instead of raising (a segfault, not a result).
    """
    sys.setrecursionlimit(_DEFAULT_RECURSION_LIMIT)
