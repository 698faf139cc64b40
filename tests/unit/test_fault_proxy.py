"""The loopback proxy of ``tests/faults`` (no node processes): forwarding, cut, heal, delay, drop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import Tally
from tests.faults.proxy import LinkProxy
from tests.faults.report import format_table


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def roundtrip(port: int, data: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        return sock.recv(4096)


def test_forwards_then_cut_refuses_and_closes_then_heals(echo_port: int) -> None:
    proxy = LinkProxy(echo_port)
    try:
        assert roundtrip(proxy.port) == b"ping"
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        held.sendall(b"a")
        assert held.recv(10) == b"a"
        proxy.cut()
        assert held.recv(10) == b"", "an open connection survived the cut"
        held.close()
        assert roundtrip(proxy.port) == b"", "a new connection got through while cut"
        assert proxy.connections_refused >= 1
        proxy.heal()
        assert roundtrip(proxy.port) == b"ping"
    finally:
        proxy.close()


def test_delay_and_drop(echo_port: int) -> None:
    proxy = LinkProxy(echo_port)
    try:
        proxy.delay = 0.2
        start = time.monotonic()
        assert roundtrip(proxy.port) == b"ping"
        assert time.monotonic() - start >= 0.4, "each direction should wait the delay"
        proxy.delay, proxy.drop = 0.0, 1.0
        assert roundtrip(proxy.port) == b""
        assert proxy.connections_dropped >= 1
    finally:
        proxy.close()


def test_report_table_flags_loss_and_totals() -> None:
    good = Tally("crash", faults=3, acknowledged=10, converge_seconds=[1.0, 3.0])
    bad = Tally("byzantine", faults=1, bad_inputs=5, bad_inputs_rejected=4, acknowledged=2, lost=1)
    text = format_table([good, bad], {"disk-full": "needs root"})
    assert "FAILED" in text and "5 (4)" in text and "2.00 / 3.00" in text
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split()[1:2] == ["4"] and total.endswith("FAILED"), total
    assert "skipped disk-full: needs root" in text
    assert not bad.ok and good.ok
