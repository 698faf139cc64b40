"""A node.p2p host in its own process, driven line by line over stdin/stdout by the tests.

    python p2p_peer.py --key FILE --allow PEER_ID ... --topic TOPIC [--listen MULTIADDR]

On stdout (one line each, flushed):
    READY <listen multiaddr with /p2p/id>   host up, subscribed to TOPIC, echo protocol served
    GOT <hex>                               a gossip message from another peer on TOPIC
    and one reply per command below.
Commands on stdin:
    CONNECT <multiaddr>         -> CONNECTED <peer id> | CONNECT-FAILED <error>
    WAITMESH <peer id>          -> MESH <peer id> | MESH-TIMEOUT <peer id>   (bounded, 5 s)
    PUBLISH <hex>               -> PUBLISHED <hex>
    REQUEST <peer id> <hex>     -> REPLY <hex> | REQUEST-FAILED <error>    (msgpack echo stream)
    QUIT (or end of input)      -> BYE, then a clean exit
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from node.p2p import (
    GossipMessage,
    MsgpackStream,
    P2PHost,
    P2PStream,
    configure_libp2p_logging,
    load_or_create_identity,
    open_host,
)

ECHO = "/sez/test-echo/1"
STEP_TIMEOUT = 5.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def echo(stream: P2PStream) -> None:
    channel = MsgpackStream(stream)
    async for request in channel:
        await channel.send({"echo": request["data"]})


async def print_gossip(messages: trio.MemoryReceiveChannel[GossipMessage]) -> None:
    async with messages:
        async for message in messages:
            say(f"GOT {message.data.hex()}")


async def command(host: P2PHost, topic: str, words: list[str]) -> None:
    verb = words[0]
    if verb == "CONNECT":
        try:
            say(f"CONNECTED {await host.connect(words[1])}")
        except Exception as exc:
            say(f"CONNECT-FAILED {type(exc).__name__}")
    elif verb == "WAITMESH":
        with trio.move_on_after(STEP_TIMEOUT):
            while words[1] not in host.mesh_peers(topic):
                await trio.sleep(0.01)
            say(f"MESH {words[1]}")
            return
        say(f"MESH-TIMEOUT {words[1]}")
    elif verb == "PUBLISH":
        await host.publish(topic, bytes.fromhex(words[1]))
        say(f"PUBLISHED {words[1]}")
    elif verb == "REQUEST":
        try:
            with trio.fail_after(STEP_TIMEOUT):
                stream = await host.open_stream(words[1], ECHO)
                try:
                    reply = await MsgpackStream(stream).request({"data": bytes.fromhex(words[2])})
                finally:
                    await stream.aclose()
            say(f"REPLY {reply['echo'].hex()}")
        except Exception as exc:
            say(f"REQUEST-FAILED {type(exc).__name__}")
    else:
        say(f"UNKNOWN {verb}")


async def main(args: argparse.Namespace) -> None:
    key = load_or_create_identity(args.key)
    async with open_host(key, listen_addr=args.listen, allowlist=args.allow) as host:
        host.set_stream_handler(ECHO, echo)
        messages = await host.subscribe(args.topic)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(print_gossip, messages)
            say(f"READY {host.listen_addr}")
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            buffer = b""
            while True:
                chunk = await stdin.receive_some(4096)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    words = line.decode().split()
                    if not words:
                        continue
                    if words[0] == "QUIT":
                        chunk = b""
                        break
                    await command(host, args.topic, words)
                if not chunk:
                    break
            nursery.cancel_scope.cancel()
    say("BYE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--topic", required=True)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    configure_libp2p_logging()
    trio.run(main, arguments)
