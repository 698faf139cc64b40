"""The p2p layer (node.p2p) against real py-libp2p hosts over TCP on 127.0.0.1, in one process.

Every wait is bounded by ``trio.fail_after``; conditions are polled with short checkpoints, never
waited for with fixed sleeps. Ports are chosen by the OS.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import libp2p.security.secio.transport as secio
import msgpack
import multiaddr
import pytest
import trio
import trio.testing
from libp2p import new_host
from libp2p.crypto.rsa import create_new_key_pair as create_rsa_key_pair
from libp2p.identity_utils import save_identity as libp2p_save_identity
from libp2p.network.config import RetryConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from node.p2p import (
    DialError,
    GossipMessage,
    MsgpackStream,
    P2PError,
    P2PHost,
    P2PStream,
    PeerAllowlist,
    RedialPolicy,
    StreamOpenError,
    Verdict,
    configure_libp2p_logging,
    generate_identity,
    load_identity,
    load_or_create_identity,
    open_host,
    peer_id_of,
    save_identity,
)
from protocol.errors import LocalProtocolError, PeerProtocolError

WAIT = 5.0
ECHO = "/sez/test-echo/1"
TOPIC = "/sez/1/test/receipts"
FAST_REDIAL = RedialPolicy(initial_delay=0.05, max_delay=0.2, stable_after=1.0)


@pytest.fixture(autouse=True, scope="module")
def libp2p_logging() -> None:
    """Run these tests with libp2p's logging routed the way the daemon routes it."""
    configure_libp2p_logging()


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


@asynccontextmanager
async def hosts(
    n: int, *, allow: Callable[[int, int], bool] = lambda i, j: True
) -> AsyncIterator[list[P2PHost]]:
    """``n`` running hosts; host i allows host j when ``allow(i, j)``."""
    keys = [generate_identity() for _ in range(n)]
    ids = [peer_id_of(k) for k in keys]
    async with AsyncExitStack() as stack:
        running = []
        for i, key in enumerate(keys):
            allowed = [ids[j] for j in range(n) if j != i and allow(i, j)]
            running.append(
                await stack.enter_async_context(open_host(key, allowlist=allowed, redial=FAST_REDIAL))
            )
        yield running


async def echo_handler(stream: P2PStream) -> None:
    channel = MsgpackStream(stream)
    async for obj in channel:
        if obj == "batch":
            await channel.send_many({"n": i} for i in range(50))
        else:
            await channel.send({"echo": obj, "peer": stream.peer_id})


async def wait_mesh(topic: str, links: Sequence[tuple[P2PHost, P2PHost]]) -> None:
    await wait_until(
        lambda: all(b.peer_id in a.mesh_peers(topic) and a.peer_id in b.mesh_peers(topic) for a, b in links)
    )


async def receive(channel: trio.MemoryReceiveChannel[GossipMessage]) -> GossipMessage:
    with trio.fail_after(WAIT):
        return await channel.receive()


def assert_empty(channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
    with pytest.raises(trio.WouldBlock):
        extra = channel.receive_nowait()
        pytest.fail(f"unexpected message {extra}")


# -- identity ------------------------------------------------------------------------------------


def test_identity_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    key = generate_identity()
    path = save_identity(key, tmp_path / "node.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peer_id_of(load_identity(path)) == peer_id_of(key)
    assert peer_id_of(load_or_create_identity(path)) == peer_id_of(key)
    with pytest.raises(LocalProtocolError) as info:
        save_identity(generate_identity(), path)
    assert info.value.reason == "file-exists"
    assert peer_id_of(load_identity(path)) == peer_id_of(key)


def test_identity_load_refusals(tmp_path: Path) -> None:
    created = load_or_create_identity(tmp_path / "new.key")
    assert peer_id_of(load_identity(tmp_path / "new.key")) == peer_id_of(created)
    with pytest.raises(LocalProtocolError) as info:
        load_identity(tmp_path / "missing.key")
    assert info.value.reason == "key-file-missing"
    os.chmod(tmp_path / "new.key", 0o644)
    with pytest.raises(LocalProtocolError) as info:
        load_identity(tmp_path / "new.key")
    assert info.value.reason == "key-file-permissions"
    (tmp_path / "garbage.key").write_bytes(b"not a key")
    os.chmod(tmp_path / "garbage.key", 0o600)
    with pytest.raises(LocalProtocolError) as info:
        load_identity(tmp_path / "garbage.key")
    assert info.value.reason == "bad-key-file"
    libp2p_save_identity(create_rsa_key_pair(), tmp_path / "rsa.key")
    with pytest.raises(LocalProtocolError) as info:
        load_identity(tmp_path / "rsa.key")
    assert info.value.reason == "bad-key-file"


def test_allowlist_validates_and_replaces_atomically() -> None:
    a, b = peer_id_of(generate_identity()), peer_id_of(generate_identity())
    allowlist = PeerAllowlist([a])
    assert allowlist.allows(a) and not allowlist.allows(b)
    with pytest.raises(LocalProtocolError) as info:
        allowlist.replace([b, "not-a-peer-id"])
    assert info.value.reason == "bad-peer-id"
    assert allowlist.snapshot() == {a}
    assert allowlist.replace([b]) == {a}
    assert b in allowlist and a not in allowlist
    with pytest.raises(LocalProtocolError):
        PeerAllowlist(["12D3KooWx"])


# -- msgpack framing -----------------------------------------------------------------------------


async def test_msgpack_stream_round_trip_fed_byte_by_byte() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = MsgpackStream(left), MsgpackStream(right, read_size=1)
    objs = [{"a": 1}, [1, 2, b"\x00\xff"], "text", None, 2**40]
    await sender.send_many(objs)
    assert sender.pending_bytes == 0
    assert [await receiver.receive() for _ in objs] == objs
    await left.aclose()
    with pytest.raises(trio.EndOfChannel):
        await receiver.receive()


async def test_msgpack_stream_limits_are_peer_faults_and_sticky() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = MsgpackStream(right, max_message_bytes=1000, read_size=64)
    await left.send_all(msgpack.packb(b"x" * 5000))
    with pytest.raises(PeerProtocolError) as info:
        await receiver.receive()
    assert info.value.reason == "message-too-large"
    with pytest.raises(trio.BrokenResourceError):
        await receiver.receive()

    left, right = trio.testing.memory_stream_pair()
    receiver = MsgpackStream(right, max_message_bytes=1000, read_size=64)
    await left.send_all(msgpack.packb(b"x" * 1010))
    with pytest.raises(PeerProtocolError) as info:
        await receiver.receive()
    assert info.value.reason == "bad-msgpack"

    left, right = trio.testing.memory_stream_pair()
    receiver = MsgpackStream(right, max_container_len=10)
    await left.send_all(msgpack.packb(list(range(11))))
    with pytest.raises(PeerProtocolError) as info:
        await receiver.receive()
    assert info.value.reason == "bad-msgpack"

    left, right = trio.testing.memory_stream_pair()
    receiver = MsgpackStream(right)
    await left.send_all(msgpack.packb({"k": "v" * 100})[:-10])
    await left.aclose()
    with pytest.raises(PeerProtocolError) as info:
        await receiver.receive()
    assert info.value.reason == "truncated-message"

    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(LocalProtocolError) as info:
        MsgpackStream(left).pack(object())
    assert info.value.reason == "unpackable-value"


# -- connections and streams ---------------------------------------------------------------------


async def test_host_speaks_only_noise_and_yamux_and_refuses_plaintext_and_secio_dialers() -> None:
    async with hosts(1) as (host,):
        upgrader = host.libp2p_host.get_network().upgrader
        assert list(upgrader.security_multistream.transports) == ["/noise"]
        assert list(upgrader.muxer_multistream.transports) == ["/yamux/1.0.0"]
        for name in ("plaintext", "secio"):
            key = generate_identity()
            host.allowlist.add(peer_id_of(key))  # refused for its security protocol, not its id
            transport = InsecureTransport(key) if name == "plaintext" else secio.Transport(key)
            protocol = PLAINTEXT_PROTOCOL_ID if name == "plaintext" else secio.ID
            dialer = new_host(key_pair=key, sec_opt={protocol: transport})
            dialer.get_network().retry_config = RetryConfig(max_retries=0)  # type: ignore[attr-defined]
            async with dialer.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                with trio.fail_after(WAIT), pytest.raises(Exception, match="unable to connect"):
                    await dialer.connect(info_from_p2p_addr(multiaddr.Multiaddr(host.listen_addr)))
                assert not host.connected_peers()
                await dialer.close()


async def test_connect_stream_and_msgpack_echo() -> None:
    async with hosts(2) as (a, b):
        assert all("/tcp/0/" not in addr and addr.endswith(f"/p2p/{a.peer_id}") for addr in a.listen_addrs)
        a.set_stream_handler(ECHO, echo_handler)
        assert await b.connect(a.listen_addr) == a.peer_id
        await wait_until(lambda: a.is_connected(b.peer_id) and b.is_connected(a.peer_id))
        assert a.connected_peers() == {b.peer_id}
        stream = await b.open_stream(a.peer_id, ECHO)
        try:
            channel = MsgpackStream(stream)
            for i in range(5):
                assert await channel.request({"i": i}) == {"echo": {"i": i}, "peer": b.peer_id}
            await channel.send("batch")
            assert [await channel.receive() for _ in range(50)] == [{"n": i} for i in range(50)]
        finally:
            await stream.aclose()
        # A second connect is a no-op on the existing connection (max one per peer).
        await b.connect(a.listen_addr)
        assert len(b.libp2p_host.get_network().connections[a.libp2p_host.get_id()]) == 1
        with pytest.raises(StreamOpenError):
            await b.open_stream(a.peer_id, "/sez/nobody-speaks-this/1", timeout=2)
        with pytest.raises(LocalProtocolError) as info:
            await b.connect("/ip4/127.0.0.1/tcp/1")
        assert info.value.reason == "bad-multiaddr"


async def test_stream_handler_wrapper_survives_raising_handlers(caplog: pytest.LogCaptureFixture) -> None:
    async def buggy(stream: P2PStream) -> None:
        await MsgpackStream(stream).receive()
        raise RuntimeError("bug in our handler")

    async def strict(stream: P2PStream) -> None:
        await MsgpackStream(stream).receive()
        raise PeerProtocolError("bad-request", "the peer asked for nonsense")

    async with hosts(2) as (a, b):
        a.set_stream_handler(ECHO, echo_handler)
        a.set_stream_handler("/sez/test-buggy/1", buggy)
        a.set_stream_handler("/sez/test-strict/1", strict)
        await b.connect(a.listen_addr)
        for protocol in ("/sez/test-buggy/1", "/sez/test-strict/1"):
            stream = await b.open_stream(a.peer_id, protocol)
            channel = MsgpackStream(stream)
            await channel.send("hello")
            with trio.fail_after(WAIT), pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
                await channel.receive()
            await stream.aclose()
        stats = a.statistics()
        assert stats.handler_errors == 1
        assert stats.peer_faults == {b.peer_id: 1}
        assert any(
            r.name == "node.p2p" and r.exc_info and "bug in our handler" in str(r.exc_info[1])
            for r in caplog.records
        )
        # The connection and the host are unharmed.
        assert a.is_connected(b.peer_id)
        stream = await b.open_stream(a.peer_id, ECHO)
        assert (await MsgpackStream(stream).request(1))["echo"] == 1
        await stream.aclose()


async def test_allowlist_refuses_unknown_dialer_and_updates_at_run_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="node.p2p")
    # a (index 0) does not allow b; b allows a.
    async with hosts(2, allow=lambda i, j: i == 1) as (a, b):
        with pytest.raises(DialError):
            await b.connect(a.listen_addr)
        await wait_until(lambda: a.statistics().refused_inbound == 1)
        assert not b.is_connected(a.peer_id) and not a.is_connected(b.peer_id)
        assert b.connected_peers() == frozenset() and a.connected_peers() == frozenset()
        assert any(
            r.name == "node.p2p" and r.levelno == logging.WARNING and b.peer_id in r.getMessage()
            for r in caplog.records
        )
        # a refuses to dial a peer it does not allow, before touching the network.
        with pytest.raises(LocalProtocolError) as info:
            await a.connect(b.listen_addr)
        assert info.value.reason == "peer-not-allowed"

        await a.set_allowlist([b.peer_id])
        await b.connect(a.listen_addr)
        await wait_until(lambda: a.is_connected(b.peer_id))

        await a.set_allowlist([])
        with trio.fail_after(WAIT):
            await b.wait_disconnected(a.peer_id)
        assert not a.is_connected(b.peer_id)


async def test_redial_restores_dropped_connection_and_survives_dead_peers() -> None:
    dead_key = generate_identity()
    async with open_host(dead_key) as dead:
        dead_addr = dead.listen_addr
    async with hosts(2) as (a, b):
        a.allowlist.add(dead.peer_id)
        a.keep_connected(b.listen_addr)
        a.keep_connected(dead_addr)
        with trio.fail_after(WAIT):
            await a.wait_connected(b.peer_id)
        connections = a.libp2p_host.get_network().connections
        first = connections[b.libp2p_host.get_id()][0]
        await b.disconnect(a.peer_id)
        # b does not dial a; a's re-dial loop brings up a new connection.
        await wait_until(
            lambda: a.is_connected(b.peer_id) and connections[b.libp2p_host.get_id()][0] is not first
        )
        await wait_until(lambda: a.statistics().dial_failures >= 3)
        assert a.statistics().wanted_peers == 2
        a.forget_peer(dead.peer_id)
        assert a.statistics().wanted_peers == 1


async def test_a_connection_that_lasts_resets_the_redial_backoff_without_waiting_for_a_change() -> None:
    """After outages the backoff has grown; once the new connection has lived ``stable_after`` it starts
    again from the first delay. The reset used to wait for the loop's next wake-up (a change, or
    ``max_delay`` later), so a link cut again before that redialled with every earlier outage's backoff."""
    policy = RedialPolicy(initial_delay=0.05, max_delay=30.0, stable_after=0.5)
    b_key = generate_identity()
    async with open_host(b_key) as probe:
        b_addr = probe.listen_addr  # a port that was just free; nobody listens there now
    listen = "/" + "/".join(str(b_addr).split("/")[1:5])  # /ip4/127.0.0.1/tcp/PORT
    async with open_host(generate_identity(), redial=policy) as a:
        a.allowlist.add(peer_id_of(b_key))
        a.keep_connected(b_addr)
        wanted = a._wanted[peer_id_of(b_key)]
        await wait_until(lambda: wanted.failures >= 3)  # 0.05 + 0.1 + 0.2 s of refused dials
        async with open_host(b_key, listen_addr=listen, allowlist=[a.peer_id]):
            with trio.fail_after(WAIT):
                await a.wait_connected(peer_id_of(b_key))
            assert wanted.failures >= 3
            await wait_until(lambda: wanted.failures == 0, timeout=policy.stable_after + 2.0)


# -- gossip --------------------------------------------------------------------------------------


async def test_gossip_three_hosts_each_message_exactly_once_to_the_others() -> None:
    async with hosts(3) as trio_of_hosts:
        a, b, c = trio_of_hosts
        await b.connect(a.listen_addr)
        await c.connect(a.listen_addr)
        await c.connect(b.listen_addr)
        channels = {host.peer_id: await host.subscribe(TOPIC) for host in trio_of_hosts}
        await wait_mesh(TOPIC, [(a, b), (a, c), (b, c)])

        sent: dict[str, list[bytes]] = {}
        for host in trio_of_hosts:
            sent[host.peer_id] = [f"{host.peer_id}/{i}".encode() for i in range(5)]
            for payload in sent[host.peer_id]:
                await host.publish(TOPIC, payload)

        for host in trio_of_hosts:
            expected = Counter(p for origin, ps in sent.items() if origin != host.peer_id for p in ps)
            got: Counter[bytes] = Counter()
            while sum(got.values()) < sum(expected.values()):
                message = await receive(channels[host.peer_id])
                assert message.origin != host.peer_id
                assert message.data.startswith(message.origin.encode())
                got[message.data] += 1
            assert got == expected

        # A second round flushes anything still in flight: nothing from round one may follow.
        for host in trio_of_hosts:
            await host.publish(TOPIC, f"{host.peer_id}/marker".encode())
        for host in trio_of_hosts:
            markers = {await receive(channels[host.peer_id]) for _ in range(2)}
            assert {m.data for m in markers} == {
                f"{other.peer_id}/marker".encode() for other in trio_of_hosts if other is not host
            }
            assert_empty(channels[host.peer_id])
            stats = host.statistics().gossip
            assert stats.published == 6 and stats.delivered == 12 and stats.own_filtered == 6


async def test_rejected_gossip_is_neither_delivered_nor_forwarded() -> None:
    # Line a - b - c: a and c allow only b, so c can hear a only through b.
    async with hosts(3, allow=lambda i, j: 1 in (i, j)) as (a, b, c):
        b.set_topic_validator(
            TOPIC, lambda peer, data: Verdict.REJECT if data.startswith(b"bad") else Verdict.ACCEPT
        )
        await a.connect(b.listen_addr)
        await c.connect(b.listen_addr)
        rb, rc = await b.subscribe(TOPIC), await c.subscribe(TOPIC)
        await a.subscribe(TOPIC)
        await wait_mesh(TOPIC, [(a, b), (b, c)])

        await a.publish(TOPIC, b"bad-1")
        await wait_until(lambda: b.statistics().gossip.rejected == 1)
        await a.publish(TOPIC, b"good-1")
        assert (await receive(rb)).data == b"good-1"
        assert (await receive(rc)).data == b"good-1"
        assert_empty(rb)
        assert_empty(rc)
        assert b.statistics().gossip.rejected_by_peer == {a.peer_id: 1}
        assert not a.is_connected(c.peer_id)


async def test_raising_validator_rejects_and_crashes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def validator(peer: str, data: bytes) -> Verdict:
        if data == b"boom":
            raise ValueError("validator bug")
        return Verdict.ACCEPT

    async with hosts(2) as (a, b):
        b.set_topic_validator(TOPIC, validator)
        b.set_stream_handler(ECHO, echo_handler)
        await a.connect(b.listen_addr)
        rb = await b.subscribe(TOPIC)
        await a.subscribe(TOPIC)
        await wait_mesh(TOPIC, [(a, b)])
        await a.publish(TOPIC, b"boom")
        await wait_until(lambda: b.statistics().gossip.validator_errors == 1)
        await a.publish(TOPIC, b"fine")
        assert (await receive(rb)).data == b"fine"
        assert_empty(rb)
        assert b.statistics().gossip.rejected == 1
        assert any(r.exc_info and "validator bug" in str(r.exc_info[1]) for r in caplog.records)
        stream = await a.open_stream(b.peer_id, ECHO)
        assert (await MsgpackStream(stream).request("still up"))["echo"] == "still up"
        await stream.aclose()


async def test_ignored_gossip_is_revalidated_when_it_arrives_again() -> None:
    # py-libp2p caches failed validations by message id; IGNORE must not be cached.
    seen: list[str] = []

    def validator(peer: str, data: bytes) -> Verdict:
        seen.append(peer)
        return Verdict.IGNORE if len(seen) == 1 else Verdict.ACCEPT

    async with hosts(3, allow=lambda i, j: 1 in (i, j)) as (a, b, c):
        b.set_topic_validator(TOPIC, validator)
        await a.connect(b.listen_addr)
        await c.connect(b.listen_addr)
        rb = await b.subscribe(TOPIC)
        await a.subscribe(TOPIC)
        await c.subscribe(TOPIC)
        await wait_mesh(TOPIC, [(a, b), (b, c)])
        await a.publish(TOPIC, b"same payload")
        await wait_until(lambda: b.statistics().gossip.ignored == 1)
        await c.publish(TOPIC, b"same payload")
        message = await receive(rb)
        assert (message.data, message.origin) == (b"same payload", c.peer_id)
        assert seen == [a.peer_id, c.peer_id]


async def test_subscription_channel_lifecycle() -> None:
    async with hosts(2) as (a, b):
        await a.connect(b.listen_addr)
        rb = await b.subscribe(TOPIC)
        with pytest.raises(LocalProtocolError) as info:
            await b.subscribe(TOPIC)
        assert info.value.reason == "already-subscribed"
        await a.subscribe(TOPIC)
        await wait_mesh(TOPIC, [(a, b)])
        # Closing the channel unsubscribes, at the next message.
        await rb.aclose()
        await a.publish(TOPIC, b"one")
        await wait_until(lambda: TOPIC not in b.pubsub.topic_ids)
        # unsubscribe() ends the channel.
        rb = await b.subscribe(TOPIC)
        await b.unsubscribe(TOPIC)
        with trio.fail_after(WAIT), pytest.raises(trio.EndOfChannel):
            await rb.receive()


# -- lifecycle and logging -----------------------------------------------------------------------


async def test_listen_failure_is_reported_as_itself() -> None:
    async with hosts(1) as (first,):
        taken = first.listen_addr.rsplit("/p2p/", 1)[0]
        with pytest.raises(P2PError, match="could not listen"):
            async with open_host(generate_identity(), listen_addr=taken):
                pytest.fail("a second host listened on a port already taken")
    with pytest.raises(LocalProtocolError) as info:
        async with open_host(generate_identity(), listen_addr="not a multiaddr"):
            pass
    assert info.value.reason == "bad-multiaddr"


async def test_host_exits_cleanly_on_cancellation_and_reraises_body_errors() -> None:
    async with hosts(1) as (peer,):
        with trio.move_on_after(0.3) as scope:
            key = generate_identity()
            peer.allowlist.add(peer_id_of(key))
            async with open_host(key, allowlist=[peer.peer_id]) as host:
                await host.connect(peer.listen_addr)
                await host.subscribe(TOPIC)
                while True:
                    await host.publish(TOPIC, b"x" * 100)
        assert scope.cancelled_caught
        await wait_until(lambda: not peer.connected_peers())
    with pytest.raises(ValueError, match="from the body"):
        async with open_host(generate_identity()):
            raise ValueError("from the body")


def test_libp2p_logging_is_one_line_and_noisy_loggers_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    configure_libp2p_logging()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("libp2p.host.basic_host").error("Failed to open stream:\n  Error: x\n  Protocols: y")
    logging.getLogger("libp2p.pubsub.gossipsub").warning("first line\nsecond line")
    try:
        raise KeyError("inner")
    except KeyError:
        logging.getLogger("libp2p.pubsub.gossipsub").exception("with traceback")
    records = [r for r in caplog.records if r.name.startswith("libp2p")]
    assert [r.getMessage() for r in records] == [
        "first line | second line",
        records[1].getMessage(),
    ]
    assert records[1].getMessage().startswith("with traceback [KeyError: 'inner' @ test_p2p.py:")
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
