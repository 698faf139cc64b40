"""Run ``sez-node`` with its wall clock offset: ``python -m tests.faults.skewed_node SKEW [sez-node] ARGS``.

The clock-skew scenario needs one node whose clock is wrong. ``faketime`` is not installed here (and
would also fake the monotonic clocks trio and libp2p time their waits with), and the daemon has no
clock setting: its clocks are constructor defaults (``node.writer.utc_timestamp`` reads
``datetime.now``, ``Corridor``/``QuorumCollector`` take ``time.time``). So this test-only launcher
offsets the *wall* clock of its own process before any ``node`` module is imported: ``time.time``
and ``datetime.datetime.now``/``utcnow`` are replaced, and the defaults bind the replacements.
Monotonic clocks are left alone, as on a real machine whose wall clock is set wrong. Nothing in
production code changes.
"""

from __future__ import annotations

import datetime as _datetime
import sys
import time as _time

_REAL_TIME = _time.time
_REAL_DATETIME = _datetime.datetime


def install(skew: float) -> None:
    """Offset this process's wall clock by ``skew`` seconds (before importing ``node``)."""
    delta = _datetime.timedelta(seconds=skew)

    def skewed_time() -> float:
        return _REAL_TIME() + skew

    class SkewedDateTime(_REAL_DATETIME):
        @classmethod
        def now(cls, tz: _datetime.tzinfo | None = None) -> _datetime.datetime:  # type: ignore[override]
            return _REAL_DATETIME.now(tz) + delta

        @classmethod
        def utcnow(cls) -> _datetime.datetime:  # type: ignore[override]
            return _REAL_DATETIME.now(_datetime.UTC).replace(tzinfo=None) + delta

    _time.time = skewed_time
    _datetime.datetime = SkewedDateTime  # type: ignore[misc]


def main(argv: list[str]) -> int:
    """``argv``: the skew, then the daemon's command as the harness builds it (the ``sez-node`` script
    or ``PYTHON -m node.cli``, dropped here: this process is the daemon), then its arguments."""
    install(float(argv[0]))
    rest = argv[1:]
    if rest and rest[0].endswith("sez-node"):
        rest = rest[1:]
    elif len(rest) >= 3 and rest[1:3] == ["-m", "node.cli"]:
        rest = rest[3:]
    from node.cli import main as node_main  # noqa: PLC0415 - only after the clock is replaced

    return node_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
