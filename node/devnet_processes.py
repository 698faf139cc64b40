"""The devnet's child processes: start, wait for the ready line, stop them all (``sez-node devnet``).

Every node and watcher of the devnet is a separate OS process (``python -m node.cli run`` or
``python -m watcher.cli run``) in its own session, so a Ctrl-C at the terminal reaches only the devnet,
which then stops its children in order (SIGTERM, then SIGKILL after a bounded wait). A child's stderr
(its JSON logs) goes to ``<folder>/<name>.log``; its stdout is read for the one ``{"event": "ready"}``
line, then copied to the same log by a daemon thread so that the pipe never fills and blocks the child.

Resource handling: whoever calls :meth:`Child.start` must call :func:`stop_all` on every path out,
failures included; a child that never started is skipped.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["Child", "ChildFailed", "stop_all"]


class ChildFailed(RuntimeError):
    """A child did not become ready in time, or exited before it did; the message names its log."""


@dataclass
class Child:
    """One devnet process: a node or a watcher.

    Attributes:
        label: what the progress lines call it (``PAK``, ``watcher2``).
        log_path: where its stderr and, after the ready line, its stdout go.
    """

    label: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self.process is None else self.process.pid

    def start(self, argv: Sequence[str]) -> None:
        """Spawn ``argv`` in a new session (a terminal's Ctrl-C does not reach it directly)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        """Read stdout until the ``{"event": "ready"}`` line; raise :class:`ChildFailed` at ``deadline``.

        The wait is bounded even if the child prints nothing: ``select`` with the time left.
        """
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([stdout], [], [], left)
            if not readable:
                break
            line = stdout.readline()
            if not line:
                code = self.process.wait(5)
                raise ChildFailed(
                    f"{self.label} exited with status {code} before it was ready; see {self.log_path}"
                )
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                self.ready = event
                threading.Thread(target=_copy, args=(stdout, self.log_path), daemon=True).start()
                return event
        raise ChildFailed(f"{self.label} did not become ready in time; see {self.log_path}")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None


def _copy(stream: IO[bytes], path: Path) -> None:
    """Copy the rest of a child's stdout to its log until the child closes it."""
    with path.open("ab") as log:
        for line in stream:
            log.write(line)
            log.flush()


def stop_all(children: Iterable[Child], timeout: float = 15.0) -> dict[str, int | None]:
    """SIGTERM every running child at once, then wait for each (SIGKILL after ``timeout``).

    Returns:
        label -> exit status (``None`` for a child never started; negative for one killed by a signal).
    """
    children = list(children)
    for child in children:
        if child.alive():
            assert child.process is not None
            # It may exit between poll() and the signal: wait() reaps it below.
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for child in children:
        if child.process is None:
            codes[child.label] = None
            continue
        try:
            codes[child.label] = child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"devnet: {child.label} did not stop within {timeout:.0f}s; killing it", file=sys.stderr)
            child.process.kill()
            codes[child.label] = child.process.wait(5)
    return codes
