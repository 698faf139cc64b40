"""The node's real Starlette app, around a real LMDB store and log writer, served in this process.

Why HTTP on loopback and not schemathesis' ASGI loader: the app and its :class:`~node.writer.LogWriter`
run on trio (the writer is a trio task the submit route awaits), while schemathesis drives an ASGI app
from its own asyncio portal. So the app runs where it runs in the daemon, on hypercorn under trio, in a
background thread of the test process, bound to a free port; schemathesis talks to it over HTTP.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from node.api import ApiContext, build_app
from node.writer import LogWriter
from protocol.errors import LocalProtocolError
from protocol.keys import SigningKey
from store import LogStore

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KEY = SigningKey(ORIGIN, bytes(range(32)))
TOKEN = "t" * 43
START_TIMEOUT = 30.0


def transfer(i: int) -> dict[str, Any]:
    return {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "a", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "b", "jurisdiction": "KSA"},
        "currency": "PKR",
        "amount": str(10 + i),
    }


class _Status:
    """The daemon's status answers for one corridor, PAK-KSA, in DRAFT; other ids are unknown (404)."""

    def _known(self, corridor_id: str) -> None:
        if corridor_id != "PAK-KSA":
            raise LocalProtocolError(
                "unknown-corridor", f"this node is not a party to corridor {corridor_id!r}"
            )

    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        self._known(corridor_id)
        return {"corridor": corridor_id}

    def corridor_lifecycle(self, corridor_id: str) -> dict[str, Any]:
        self._known(corridor_id)
        return {
            "corridor": corridor_id, "state": "DRAFT", "allowed_kinds": ["transfer"], "history": [],
            "rejected": [], "waiting": {},
        }  # fmt: skip


@dataclass
class ServedApi:
    url: str
    token: str
    origin: str


RECEIPTS = 3
"""Transfers in the served log before the tests start."""


@contextmanager
def served_api(data_dir: Path, *, receipts: int = RECEIPTS) -> Iterator[ServedApi]:
    """Serve the app on 127.0.0.1 (a free port) with ``receipts`` transfers already in the log.

    The server thread is stopped (its trio run cancelled and joined, bounded) on exit, also on failure.
    """
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = (
        queue.Queue()
    )

    async def main() -> None:
        with LogStore(data_dir) as store:
            writer = LogWriter(store, "PAK-KSA", KEY)
            app = build_app(
                ApiContext(store=store, writers={"PAK-KSA": writer}, token=TOKEN, status=_Status())
            )
            config = HypercornConfig()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            config.graceful_timeout = 1.0
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                for i in range(receipts):
                    await writer.submit("transfer", transfer(i))
                bound = await nursery.start(serve, app, config)
                started.put((bound[0], trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test thread, which raises it
            started.put(exc)

    thread = threading.Thread(target=run, name="served-api", daemon=True)
    thread.start()
    item = started.get(timeout=START_TIMEOUT)
    if isinstance(item, BaseException):
        raise RuntimeError("the API server did not start") from item
    url, token, scope = item
    try:
        yield ServedApi(url=url, token=TOKEN, origin=ORIGIN)
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(timeout=START_TIMEOUT)
        assert not thread.is_alive(), "the API server thread did not stop"
