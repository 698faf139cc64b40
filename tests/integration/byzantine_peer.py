"""A misbehaving corridor peer: a bare node.p2p host that publishes crafted gossip, driven by a test.

    python byzantine_peer.py --key FILE --listen MULTIADDR --allow PEER_ID --connect MULTIADDR
                             --corridor PAK-KSA [--messages FILE]

It subscribes to ``/sez/1/<corridor>/{receipts,checkpoints,cosignatures}`` (so the node grafts it into
its meshes and forwards it what it accepts), dials ``--connect`` and, when ``--messages`` names a JSON
file ``[{"topic": "receipts" | "checkpoints" | "cosignatures", "hex": "<payload>"}, ...]``, waits
until the dialled peer is in its mesh of every topic used and publishes each payload in order.
The payloads are crafted by the test (``test_two_nodes.py``); this process only carries them.

On stdout (one line each, flushed):
    READY <listen multiaddr with /p2p/id>     host up and subscribed
    CONNECTED <peer id> | CONNECT-FAILED <error>
    MESH-TIMEOUT <topic>                      the dialled peer never joined our mesh (bounded, 15 s)
    PUBLISHED <count>                         every crafted message was handed to gossipsub
and, for each command on stdin:
    PEERS -> PEERS <comma-separated connected peer ids, or ->
    QUIT (or end of input) -> BYE, then a clean exit (status 0).
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import trio

from node.p2p import P2PHost, configure_libp2p_logging, load_or_create_identity, open_host

KINDS = ("receipts", "checkpoints", "cosignatures")
MESH_TIMEOUT = 15.0
CONNECT_TIMEOUT = 10.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def drain(messages: trio.MemoryReceiveChannel[object]) -> None:
    async with messages:
        async for _ in messages:
            pass


async def attack(host: P2PHost, target: str, corridor: str, path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        crafted = json.load(handle)
    topics = {f"/sez/1/{corridor}/{item['topic']}" for item in crafted}
    for topic in sorted(topics):
        with trio.move_on_after(MESH_TIMEOUT):
            while target not in host.mesh_peers(topic):
                await trio.sleep(0.05)
        if target not in host.mesh_peers(topic):
            say(f"MESH-TIMEOUT {topic}")
            return
    for item in crafted:
        await host.publish(f"/sez/1/{corridor}/{item['topic']}", bytes.fromhex(item["hex"]))
    say(f"PUBLISHED {len(crafted)}")


async def main(args: argparse.Namespace) -> None:
    key = load_or_create_identity(args.key)
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
            say(f"CONNECT-FAILED {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        if target is not None and args.messages:
            await attack(host, target, args.corridor, args.messages)
        await serve_commands(host)
        nursery.cancel_scope.cancel()
    say("BYE")


async def serve_commands(host: P2PHost) -> None:
    """Answer PEERS until QUIT or the end of stdin."""
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    buffer = b""
    while chunk := await stdin.receive_some(4096):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            word = line.decode().strip()
            if word == "PEERS":
                say(f"PEERS {','.join(sorted(host.connected_peers())) or '-'}")
            elif word == "QUIT":
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--corridor", required=True)
    parser.add_argument("--messages")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    configure_libp2p_logging()
    trio.run(main, arguments)
