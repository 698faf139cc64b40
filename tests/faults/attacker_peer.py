"""A byzantine corridor peer that runs an attack plan against one node, over gossip and ``/sez/sync/1``.

    python -m tests.faults.attacker_peer --key FILE --listen MULTIADDR --allow PEER_ID
                                         --connect MULTIADDR --corridor PAK-KSA --plan FILE

It extends ``tests/integration/byzantine_peer.py`` (gossip only, crafted messages published once) with
raw sync streams and floods. The plan is a JSON list of steps, run in order:

* ``{"gossip": "receipts" | "checkpoints" | "cosignatures", "hex": "..."}``: publish the payload on
  ``/sez/1/<corridor>/<topic>`` (after the target joined our mesh of that topic);
* ``{"sync": "<hex>"}``: open a ``/sez/sync/1`` stream, send the bytes as they are (a garbage,
  oversized or truncated frame, or a valid request), half-close, and read until the node closes or
  resets the stream (bounded by ``SYNC_TIMEOUT``);
* ``{"flood": topic, "count": N, "size": S}``: publish N distinct garbage payloads of S bytes, paced.

On stdout (one line each, flushed): ``READY <addr>``, ``CONNECTED <peer id>`` or ``CONNECT-FAILED``,
``MESH-TIMEOUT <topic>``, one ``SYNC <outcome> <bytes received>`` per sync step (outcome ``closed``,
``reset``, or ``open`` when the node still held the stream after ``SYNC_TIMEOUT``), ``DONE <steps>``
and, on stdin ``PEERS``, ``PEERS <ids or ->``; ``QUIT``
(or end of input) ends it with ``BYE``. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import trio

from node.p2p import P2PHost, configure_libp2p_logging, load_or_create_identity, open_host
from tests.integration.byzantine_peer import KINDS, drain, say, serve_commands

MESH_TIMEOUT = 15.0
CONNECT_TIMEOUT = 10.0
SYNC_TIMEOUT = 3.0
SYNC = "/sez/sync/1"
FLOOD_PAUSE = 0.002
"""Seconds between flood messages: py-libp2p drops the oldest of more than 100 messages queued for one
peer, so an unpaced burst mostly dies in the attacker's own queue and never reaches the node."""


async def wait_mesh(host: P2PHost, target: str, topic: str) -> bool:
    with trio.move_on_after(MESH_TIMEOUT):
        while target not in host.mesh_peers(topic):
            await trio.sleep(0.05)
    return target in host.mesh_peers(topic)


async def sync_step(host: P2PHost, target: str, data: bytes) -> str:
    """Send ``data`` on a fresh sync stream; return how the node ended it and how much it answered."""
    received = 0
    outcome = "open"
    try:
        with trio.move_on_after(SYNC_TIMEOUT):
            stream = await host.open_stream(target, SYNC)
            try:
                await stream.send_all(data)
                while chunk := await stream.receive_some(65536):
                    received += len(chunk)
                outcome = "closed"
            finally:
                await stream.aclose()
    except Exception:  # the node reset the stream: the outcome the test reads
        outcome = "reset"
    return f"{outcome} {received}"


async def run_plan(host: P2PHost, target: str, corridor: str, plan: list[dict[str, Any]]) -> None:
    topics = {
        f"/sez/1/{corridor}/{step.get('gossip') or step.get('flood')}" for step in plan if "sync" not in step
    }
    for topic in sorted(topics):
        if not await wait_mesh(host, target, topic):
            say(f"MESH-TIMEOUT {topic}")
            return
    for step in plan:
        if "gossip" in step:
            await host.publish(f"/sez/1/{corridor}/{step['gossip']}", bytes.fromhex(step["hex"]))
        elif "sync" in step:
            say(f"SYNC {await sync_step(host, target, bytes.fromhex(step['sync']))}")
        elif "flood" in step:
            for _ in range(int(step["count"])):
                await host.publish(
                    f"/sez/1/{corridor}/{step['flood']}", b"\xc1" + os.urandom(int(step["size"]))
                )
                await trio.sleep(FLOOD_PAUSE)
    say(f"DONE {len(plan)}")


async def main(args: argparse.Namespace) -> None:
    key = load_or_create_identity(args.key)
    with open(args.plan, encoding="utf-8") as handle:
        plan = json.load(handle)
    async with (
        open_host(key, listen_addr=args.listen, allowlist=args.allow) as host,
        trio.open_nursery() as nursery,
    ):
        for kind in KINDS:
            nursery.start_soon(drain, await host.subscribe(f"/sez/1/{args.corridor}/{kind}"))
        say(f"READY {host.listen_addr}")
        target = None
        try:
            target = await host.connect(args.connect, timeout=CONNECT_TIMEOUT)
            say(f"CONNECTED {target}")
        except Exception as exc:  # the test reads the outcome
            say(f"CONNECT-FAILED {type(exc).__name__}")
        if target is not None:
            await run_plan(host, target, args.corridor, plan)
        await serve_commands(host)
        nursery.cancel_scope.cancel()
    say("BYE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--corridor", required=True)
    parser.add_argument("--plan", required=True)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    configure_libp2p_logging()
    trio.run(main, arguments)
