"""node.p2p across real OS processes (``p2p_peer.py``) over TCP on 127.0.0.1.

Each child prints ``READY <multiaddr>`` once its host listens (the OS picks the port), echoes the
gossip it receives as ``GOT <hex>`` lines and answers commands on stdin (see p2p_peer.py). Every
wait for a line is bounded by ``trio.fail_after``; there are no fixed sleeps. Children are always
killed and reaped, also when an assertion fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.p2p import generate_identity, peer_id_of, save_identity

PEER = Path(__file__).with_name("p2p_peer.py")
ROOT = Path(__file__).resolve().parents[2]
TOPIC = "/sez/1/test/receipts"
READY_TIMEOUT = 20.0
"""Seconds a child may take to start: interpreter start-up and importing libp2p take 2-3 s alone."""
STEP_TIMEOUT = 10.0

pytestmark = pytest.mark.slow


class Peer:
    """One child process and the lines it printed."""

    def __init__(self, name: str, process: trio.Process, peer_id: str, log: Path) -> None:
        self.name = name
        self.process = process
        self.peer_id = peer_id
        self.log = log
        self.addr = ""
        self._buffer = b""
        self._backlog: list[str] = []

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def expect(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        """Return (and consume) the first line starting with ``prefix``; keep the others."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while True:
                for i, line in enumerate(self._backlog):
                    if line.startswith(prefix):
                        del self._backlog[i]
                        return line
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(
                        f"{self.name} exited before printing {prefix!r}; stderr:\n{self.log.read_text()}"
                    )
                self._buffer += chunk
                *lines, self._buffer = self._buffer.split(b"\n")
                self._backlog.extend(line.decode() for line in lines)

    async def command(self, line: str, reply: str) -> str:
        await self.send(line)
        return await self.expect(reply)


@asynccontextmanager
async def peers(tmp_path: Path, allow: dict[str, list[str]]) -> AsyncIterator[dict[str, Peer]]:
    """Start one child per name, allowing the named others (or raw peer ids); wait for READY."""
    keys = {name: generate_identity() for name in allow}
    ids = {name: peer_id_of(key) for name, key in keys.items()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    running: dict[str, Peer] = {}
    try:
        for name, key in keys.items():
            key_path = save_identity(key, tmp_path / f"{name}.key")
            log = tmp_path / f"{name}.log"
            argv = [sys.executable, str(PEER), "--key", str(key_path), "--topic", TOPIC]
            for other in allow[name]:
                argv += ["--allow", ids.get(other, other)]
            with log.open("wb") as stderr:
                process = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=env
                )
            running[name] = Peer(name, process, ids[name], log)
        for peer in running.values():
            peer.addr = (await peer.expect("READY ", READY_TIMEOUT)).split()[1]
            assert peer.addr.endswith(f"/p2p/{peer.peer_id}")
        yield running
    finally:
        with trio.CancelScope(shield=True):
            for peer in running.values():
                peer.process.kill()
            for peer in running.values():
                with trio.move_on_after(5):
                    await peer.process.wait()


async def quit_cleanly(peer: Peer) -> None:
    await peer.command("QUIT", "BYE")
    with trio.fail_after(STEP_TIMEOUT):
        assert await peer.process.wait() == 0


async def test_two_processes_gossip_both_ways_and_stream_request(tmp_path: Path) -> None:
    async with peers(tmp_path, {"a": ["b"], "b": ["a"]}) as running:
        a, b = running["a"], running["b"]
        assert await b.command(f"CONNECT {a.addr}", "CONNECT") == f"CONNECTED {a.peer_id}"
        assert await a.command(f"WAITMESH {b.peer_id}", "MESH") == f"MESH {b.peer_id}"
        assert await b.command(f"WAITMESH {a.peer_id}", "MESH") == f"MESH {a.peer_id}"

        from_a, from_b = b"receipts batch from a".hex(), b"receipts batch from b".hex()
        await a.command(f"PUBLISH {from_a}", "PUBLISHED")
        await b.command(f"PUBLISH {from_b}", "PUBLISHED")
        assert await b.expect("GOT ") == f"GOT {from_a}"
        assert await a.expect("GOT ") == f"GOT {from_b}"

        ping = b"\x00sync request\xff".hex()
        assert await b.command(f"REQUEST {a.peer_id} {ping}", "REPLY") == f"REPLY {ping}"
        assert await a.command(f"REQUEST {b.peer_id} {ping}", "REPLY") == f"REPLY {ping}"

        await quit_cleanly(a)
        await quit_cleanly(b)
        # Neither received its own publish, nor anything twice.
        assert not [line for peer in (a, b) for line in peer._backlog if line.startswith("GOT ")]


async def test_process_with_unknown_peer_id_is_refused(tmp_path: Path) -> None:
    # a allows one peer, not c; c allows a.
    async with peers(tmp_path, {"a": [peer_id_of(generate_identity())], "c": ["a"]}) as running:
        a, c = running["a"], running["c"]
        assert await c.command(f"CONNECT {a.addr}", "CONNECT") == "CONNECT-FAILED DialError"
        assert await c.command(f"REQUEST {a.peer_id} 00", "REQUEST") == "REQUEST-FAILED StreamOpenError"
        await quit_cleanly(a)
        await quit_cleanly(c)
        refusals = [
            line
            for line in a.log.read_text().splitlines()
            if "refused inbound connection" in line and c.peer_id in line
        ]
        assert refusals, a.log.read_text()
