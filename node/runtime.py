"""What the ``sez-node`` and ``sez-watcher`` daemons share about running in the foreground.

:func:`run_foreground` runs a trio main function and turns operator-facing failures (a store that
disagrees with what was signed, a port in use, an unreadable key: ``LocalProtocolError``,
``StoreError``, ``OSError``) into one line ``<prog>: <reason>: <message>`` on stderr and exit
status 1. Anything else, a peer fault that reached the top included, is a bug: it propagates with
its traceback. :class:`Kick` is the level-triggered wake-up both daemons' loops wait on.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from protocol.errors import LocalProtocolError, SezError
from store import StoreError

__all__ = ["Kick", "operator_facing", "run_foreground"]


def operator_facing(exc: BaseException) -> bool:
    """Errors an operator can fix; a peer fault reaching the top is a bug."""
    return isinstance(exc, LocalProtocolError | StoreError | OSError)


def _operator_errors(group: BaseExceptionGroup[Any]) -> list[BaseException] | None:
    """The leaves of ``group`` if every one is operator-facing, else None (a bug: re-raise)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> bool:
        if isinstance(exc, BaseExceptionGroup):
            return all(walk(inner) for inner in exc.exceptions)
        leaves.append(exc)
        return operator_facing(exc)

    return leaves if walk(group) else None


def run_foreground(prog: str, main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(main, *args)``, reporting operator-facing failures in one line each (exit 1)."""
    try:
        return trio.run(main, *args)
    except (LocalProtocolError, StoreError, OSError) as exc:
        errors: list[BaseException] = [exc]
    except BaseExceptionGroup as group:
        found = _operator_errors(group)
        if found is None:
            raise
        errors = found
    for error in errors:
        if isinstance(error, SezError):
            print(f"{prog}: {error.reason}: {error.message}", file=sys.stderr)
        else:
            print(f"{prog}: io: {error}", file=sys.stderr)
    return 1


class Kick:
    """A level-triggered wake-up: ``kick()`` any number of times; ``wait(timeout)`` consumes them."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def kick(self) -> None:
        """Wake the waiter (now, or at its next wait)."""
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Wait for a kick or ``timeout`` seconds, whichever comes first; then re-arm."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()
