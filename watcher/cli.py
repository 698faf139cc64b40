"""``sez-watcher``: entry point of the watcher daemon.

The watcher daemon is built under issue "Watchers: cosigning, bonded stake and
quorum finality"; until then this command says so and exits non-zero rather
than pretending to work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Report that the watcher daemon is not available in this build."""
    print("sez-watcher: not-implemented: the watcher daemon is not part of this build yet", file=sys.stderr)
    return 1
