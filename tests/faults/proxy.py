"""A loopback TCP proxy that can cut, drop and delay a link between two nodes' libp2p ports.

Why a proxy: this sandbox lets root create network namespaces and veth pairs, but the kernel has no
``sch_netem`` (``tc qdisc add ... netem`` answers "Specified qdisc kind is unknown" and there is no
``modprobe``), so loss and delay cannot be shaped with tc.

Why namespaces too: a proxy on the shared loopback is not enough. libp2p learns the peer's real
listen address (identify) and, once the proxied connection is cut, dials it directly (measured:
both nodes reconnected around the proxies within a second). So each node runs in its own network
namespace holding only a loopback interface (:class:`NetNamespace`, root only), and the only path
between them is a proxy whose listening socket lives in one namespace while it dials into the other:
in node B's namespace, ``127.0.0.1:<A's port>`` is the proxy to A, so even the address B learns
from A leads through it. The sockets are made in the right namespace by a thread that called
``setns(2)`` (a per-thread setting on Linux; Python 3.11 has no ``os.setns``, hence ctypes).

:class:`LinkProxy` listens on 127.0.0.1 and forwards every accepted connection to ``target_port``:

* :meth:`cut` closes every open connection and refuses (accepts, then closes) new ones until
  :meth:`heal`: a partition that both sides see as a dead peer;
* ``delay`` (seconds) holds every chunk before forwarding it;
* ``drop`` (probability per chunk) resets the connection carrying that chunk: TCP never loses bytes
  inside a stream, so loss at this level is a broken connection the transport must redial.

Threads, not trio: the proxy runs inside the test or report process beside blocking HTTP clients.
Every thread is a daemon and :meth:`close` ends them all (bounded).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LinkProxy", "NetNamespace", "netns_available"]

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

CHUNK = 65536
ACCEPT_POLL = 0.2
"""Seconds the accept loop waits before checking whether it was closed."""


def netns_available() -> bool:
    """Whether this process may create network namespaces (root and ``ip netns`` working)."""
    if os.geteuid() != 0:
        return False
    probe = f"sezprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True


class NetNamespace:
    """A named network namespace holding only a loopback interface (``ip netns``; root only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def enter_current_thread(self) -> None:
        """Move the calling thread (only) into this namespace."""
        _setns(f"/var/run/netns/{self.name}")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path}) failed")
    finally:
        os.close(fd)


def _in_namespace(namespace: NetNamespace | None, make: Callable[[], T]) -> T:
    """``make()`` run by a short-lived thread inside ``namespace`` (None: this thread's namespace)."""
    if namespace is None:
        return make()
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            namespace.enter_current_thread()
            result.append(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]
    assert result, "the namespace thread did not finish"
    return result[0]


class LinkProxy:
    """One direction of dialling: ``127.0.0.1:port`` in ``listen_ns`` -> ``127.0.0.1:target_port`` in
    ``target_ns`` (None: the caller's namespace). ``port`` 0 picks a free one."""

    def __init__(
        self,
        target_port: int,
        *,
        port: int = 0,
        listen_ns: NetNamespace | None = None,
        target_ns: NetNamespace | None = None,
        seed: int = 0,
    ) -> None:
        self.target_port = target_port
        self.target_ns = target_ns
        self.delay = 0.0
        self.drop = 0.0
        self.connections_accepted = 0
        self.connections_refused = 0
        self.connections_dropped = 0
        self._rng = random.Random(seed)
        self._cut = False
        self._closed = False
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            sock.settimeout(ACCEPT_POLL)
            return sock

        self._listener = _in_namespace(listen_ns, listen)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"proxy-{self.port}")
        self._thread.start()

    # -- control ----------------------------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Close every open connection and refuse new ones until :meth:`heal`."""
        with self._lock:
            self._cut = True
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _abort(sock)

    def heal(self) -> None:
        """Accept and forward connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop accepting, close every connection, wait (bounded) for the accept thread."""
        self._closed = True
        self.cut()
        self._thread.join(timeout=2 * ACCEPT_POLL + 1)
        self._listener.close()

    # -- threads ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        if self.target_ns is not None:
            self.target_ns.enter_current_thread()  # dials go into the target's namespace
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut:
                self.connections_refused += 1
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                self.connections_refused += 1
                _abort(client)
                continue
            self.connections_accepted += 1
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._cut:
                    _abort(client)
                    _abort(upstream)
                    continue
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if self.drop and self._rng.random() < self.drop:
                    self.connections_dropped += 1
                    break
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _abort(source)
            _abort(sink)


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` at once (shutdown wakes a thread blocked in recv on it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
