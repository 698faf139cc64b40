"""A corridor peer that sends crafted ``/sez/settle/1`` proposals to a node, driven by a test.

    python settle_peer.py --key FILE --listen MULTIADDR --allow PEER_ID --connect MULTIADDR
                          --corridor PAK-KSA

The test crafts each proposal (a statement signed with the proposing party's log key, which the test
holds) and this process only carries it over real libp2p, as a node's settlement service would: one
stream per proposal, one length-prefixed wire frame each way.

On stdout (one line each, flushed):
    READY <listen multiaddr with /p2p/id>
    CONNECTED <peer id> | CONNECT-FAILED <error>
and, for each command on stdin:
    PROPOSE <hex of the statement bytes> -> ANSWER <JSON: {"kind", "reason", "message", "details"}
                                            or {"kind": "settle-accepted", "statement": {...}}>
                                            or ERROR <what failed>
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
from node.settlement import MAX_SETTLE_FRAME, SETTLE_PROTOCOL_ID, SETTLE_TIMEOUT
from protocol.sync import NEED_DATA, FrameDecoder, frame
from protocol.wire import SettleAccepted, SettleProposal, SettleRefused

CONNECT_TIMEOUT = 10.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def propose(host: P2PHost, target: str, corridor: str, statement: bytes) -> str:
    stream = await host.open_stream(target, SETTLE_PROTOCOL_ID)
    async with stream:
        decoder = FrameDecoder(MAX_SETTLE_FRAME)
        with trio.fail_after(SETTLE_TIMEOUT):
            await stream.send_all(frame(SettleProposal(id=7, corridor=corridor, statement=statement)))
            while (answer := decoder.next_message()) is NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return "ERROR stream closed without an answer"
                decoder.receive_data(bytes(data))
    if isinstance(answer, SettleRefused):
        body = {
            "kind": answer.KIND, "reason": answer.reason, "message": answer.message,
            "details": json.loads(answer.details),
        }  # fmt: skip
    elif isinstance(answer, SettleAccepted):
        body = {"kind": answer.KIND, "statement": json.loads(answer.statement)}
    else:
        return f"ERROR unexpected answer {answer!r}"[:300]
    return "ANSWER " + json.dumps(body, sort_keys=True)


async def main(args: argparse.Namespace) -> None:
    key = load_or_create_identity(args.key)
    async with open_host(key, listen_addr=args.listen, allowlist=args.allow) as host:
        say(f"READY {host.listen_addr}")
        target = None
        try:
            target = await host.connect(args.connect, timeout=CONNECT_TIMEOUT)
            say(f"CONNECTED {target}")
        except Exception as exc:  # the test reads the outcome
            say(f"CONNECT-FAILED {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while chunk := await stdin.receive_some(1 << 20):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                word, _, rest = line.decode().strip().partition(" ")
                if word == "QUIT":
                    say("BYE")
                    return
                if word == "PROPOSE" and target is not None:
                    try:
                        say(await propose(host, target, args.corridor, bytes.fromhex(rest)))
                    except Exception as exc:  # the test reads the outcome
                        say(f"ERROR {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    say("BYE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--corridor", required=True)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    configure_libp2p_logging()
    trio.run(main, arguments)
