"""A small harness for multi-process tests of ``sez-node run``: node directories, processes, waits.

* :func:`free_ports` asks the OS for free TCP ports on 127.0.0.1.
* :func:`make_network` writes one node directory per jurisdiction (``node.toml``, signing key,
  API token, libp2p identity), like ``sez-node init`` would, with every node's peers filled in
  from the others' identities and ports. ``extra_peers`` adds more allowed peers to a corridor of
  one node (for instance a byzantine peer, :func:`make_peer_identity`, that the node accepts).
* :class:`NodeProcess` runs one daemon: ``start()`` waits for its ``{"event": "ready"}`` line
  (bounded), ``stop()`` sends SIGTERM and waits (bounded, then SIGKILL), ``kill()`` sends SIGKILL.
  Its stderr (JSON log lines) goes to ``<node dir>/stderr.log``, appended across restarts; every
  failure message of the harness ends with the last lines of the nodes' stderr.
* :func:`wait_until` polls a predicate every ~50 ms up to a deadline: multi-process tests wait on
  states (an API answer, a port, a line), never on fixed sleeps.
* Read-back: :func:`read_log_http` (GET ``/v1/logs/{origin}/receipts/{n}`` of a running node),
  :func:`read_log_store` and :func:`fsck_data_dir` (the LMDB store of a stopped node, read-only).

Every process the harness starts is registered with its :class:`Network` and ended by
:meth:`Network.close` (SIGTERM, then SIGKILL after a bound), which the tests call from ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import tomli_w

from node.config import JURISDICTION_NAMES, write_initial_config
from node.keyfile import write_secret_file
from node.p2p import generate_identity, peer_id_of, save_identity
from protocol.keys import SigningKey, VerifierKey
from protocol.lifecycle import activation, definition_digest
from store import LogStore
from store.fsck import FsckReport, fsck

__all__ = [
    "ROOT",
    "ChildProcess",
    "Network",
    "NodeProcess",
    "NodeSpec",
    "PeerIdentity",
    "free_ports",
    "fsck_data_dir",
    "make_network",
    "make_peer_identity",
    "read_log_http",
    "read_log_store",
    "transfer",
    "wait_stable",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
"""Seconds a daemon may take to print its ready line: interpreter start-up and importing libp2p
take 2-3 s alone, more on a loaded 2-core CI machine."""
STOP_TIMEOUT = 15.0
"""Seconds a daemon may take to exit after SIGTERM before it is killed."""
POLL = 0.05
HTTP_TIMEOUT = 30.0

T = TypeVar("T")


def _sez_node_argv() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "sez-node"
    if venv.exists():
        return [str(venv)]
    return [sys.executable, "-m", "node.cli"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def transfer(transfer_id: str, sender: str = "PAK", receiver: str = "KSA", amount: int = 1) -> dict[str, Any]:
    """A valid ``transfer`` payload."""
    return {
        "transfer_id": transfer_id,
        "sender": {"entity_id": f"acct-{sender}", "jurisdiction": sender},
        "receiver": {"entity_id": f"acct-{receiver}", "jurisdiction": receiver},
        "currency": "USD",
        "amount": str(amount),
    }


# ------------------------------------------------------------------------------ node directories


@dataclass(frozen=True)
class PeerIdentity:
    """A libp2p identity with a chosen port, for a peer process that is not a node."""

    key_file: Path
    peer_id: str
    port: int

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    @property
    def listen(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}"


def make_peer_identity(directory: Path, port: int | None = None) -> PeerIdentity:
    """Create ``directory/identity.key`` and pick a free port for it."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_identity()
    path = save_identity(key, directory / "identity.key")
    return PeerIdentity(path, peer_id_of(key), port if port is not None else free_ports(1)[0])


@dataclass
class NodeSpec:
    """What :func:`make_network` wrote for one node."""

    jurisdiction: str
    directory: Path
    config: Path
    p2p_port: int
    http_port: int
    peer_id: str
    token: str
    key: SigningKey
    """The node's signing key (one seed for every origin of the node)."""
    origins: dict[str, str] = field(default_factory=dict)
    """corridor id -> the origin of the log this node writes in it."""
    activations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """corridor id -> the lifecycle payloads (DRAFT -> PENDING -> ACTIVE, signed by both parties)
    this node records in its log when it first becomes ready (empty: the corridor stays DRAFT)."""
    activated: bool = False
    launcher: list[str] = field(default_factory=list)
    """argv put before the daemon's command (e.g. ``ip netns exec NS``, or a wrapper module that
    skews the clock: ``tests/faults``); empty: the daemon runs directly."""

    @property
    def name(self) -> str:
        return JURISDICTION_NAMES.get(self.jurisdiction, f"sez.{self.jurisdiction.lower()}")

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def origin(self, corridor: str) -> str:
        return self.origins[corridor]

    def log_key(self, corridor: str) -> VerifierKey:
        """The Ed25519 (0x01) verifier key of this node's log in ``corridor``."""
        return SigningKey(self.origin(corridor), self.key.seed).verifier()


OWN_LOG_CHECK_TIMEOUT = 3.0
"""The harness's ``node.own_log_check_timeout``: short, so that a node started while its counterparty
is down (several tests do) writes after 3 s instead of the daemon's default 15 s."""


def _set_node_option(config: Path, name: str, value: Any) -> None:
    """Set one ``[node]`` option of a written ``node.toml``."""
    document = tomllib.loads(config.read_text(encoding="utf-8"))
    document["node"][name] = value
    config.write_text(tomli_w.dumps(document), encoding="utf-8")


ACTIVATION_RECEIPTS = 2
"""The lifecycle receipts (DRAFT -> PENDING -> ACTIVE) at the start of every log of an activated network."""


def make_network(
    tmp_path: Path,
    jurisdictions: Sequence[str],
    *,
    corridors: Sequence[str] = ("PAK-KSA",),
    extra_peers: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    checkpoint_every: int = 100,
    checkpoint_interval: int = 1,
    activate: bool = True,
    anchor: Mapping[str, Mapping[str, Any]] | None = None,
    own_log_check_timeout: float = OWN_LOG_CHECK_TIMEOUT,
) -> Network:
    """Write a node directory per jurisdiction under ``tmp_path`` and return the :class:`Network`.

    With ``activate`` (the default), each node records the corridor's activation (the two lifecycle
    transitions DRAFT -> PENDING -> ACTIVE, signed with both parties' keys) as the first two receipts
    of each of its logs when it first becomes ready, so that every log of the network starts with
    exactly those two receipts, whichever node starts first.

    Each corridor ``A-B`` is configured on node A and node B with the other as counterparty (its log's
    origin, verifier key and peer address). ``extra_peers[corridor][jurisdiction]`` lists more peer
    multiaddrs (``.../p2p/<id>``) that node allows and dials in that corridor, after the counterparty.
    ``anchor[jurisdiction]`` is the ``anchor`` table of that node's corridors, with ``key`` (a hex
    secp256k1 key) written to ``anchor.key`` in the node's folder in place of ``key_file``.
    ``own_log_check_timeout`` is each node's ``node.own_log_check_timeout`` (``node.recovery``).
    """
    extra_peers = extra_peers or {}
    ports = free_ports(2 * len(jurisdictions))
    specs: dict[str, NodeSpec] = {}
    identities = {}
    for index, jurisdiction in enumerate(jurisdictions):
        directory = tmp_path / jurisdiction
        directory.mkdir(parents=True)
        identity = generate_identity()
        identities[jurisdiction] = identity
        name = JURISDICTION_NAMES.get(jurisdiction, f"sez.{jurisdiction.lower()}")
        specs[jurisdiction] = NodeSpec(
            jurisdiction=jurisdiction, directory=directory, config=directory / "node.toml",
            p2p_port=ports[2 * index], http_port=ports[2 * index + 1], peer_id=peer_id_of(identity),
            token="", key=SigningKey.generate(name),
        )  # fmt: skip
    for corridor in corridors:
        parties = corridor.split("-")
        if len(parties) != 2 or any(p not in specs for p in parties):
            raise ValueError(f"corridor {corridor} needs both of its parties among {list(specs)}")
        for party in parties:
            specs[party].origins[corridor] = f"{specs[party].name}/corridor/{corridor}"
        if activate:
            signers = {party: specs[party].key for party in parties}
            payloads = activation(corridor, signers, definition_digest({"id": corridor}).hex())
            for party in parties:
                specs[party].activations[corridor] = payloads
    for jurisdiction, spec in specs.items():
        entries = []
        for corridor in corridors:
            parties = corridor.split("-")
            if jurisdiction not in parties:
                continue
            other = specs[parties[1] if parties[0] == jurisdiction else parties[0]]
            entries.append(
                {
                    "id": corridor,
                    "origin": spec.origin(corridor),
                    "counterparty_origin": other.origin(corridor),
                    "counterparty_vkey": other.log_key(corridor).to_vkey(),
                    "peers": [other.addr, *extra_peers.get(corridor, {}).get(jurisdiction, ())],
                    "checkpoint_every": checkpoint_every,
                    "checkpoint_interval": checkpoint_interval,
                }
            )
            if anchor and jurisdiction in anchor:
                table = dict(anchor[jurisdiction])
                key_file = spec.directory / "anchor.key"
                if not key_file.exists():
                    write_secret_file(key_file, str(table.pop("key")) + "\n")
                table.pop("key", None)
                entries[-1]["anchor"] = {**table, "key_file": "anchor.key"}
        write_initial_config(
            spec.directory, jurisdiction=jurisdiction, listen=f"/ip4/127.0.0.1/tcp/{spec.p2p_port}",
            http=f"127.0.0.1:{spec.http_port}", corridors=entries,
        )  # fmt: skip
        _set_node_option(spec.config, "own_log_check_timeout", own_log_check_timeout)
        # write_initial_config made a fresh signing key; use ours, whose public half the peers hold.
        write_secret_file(spec.directory / "signing.key", spec.key.to_private_line() + "\n", overwrite=True)
        save_identity(identities[jurisdiction], spec.directory / "identity.key")
        spec.token = (spec.directory / "api.token").read_text(encoding="utf-8").strip()
    return Network(tmp_path, specs)


# ------------------------------------------------------------------------------------ processes


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no stderr file)"
    return "\n".join(text.splitlines()[-lines:])


class ChildProcess:
    """A child process with stderr in a file; ended by SIGTERM, then SIGKILL after a bound."""

    def __init__(self, name: str, stderr_path: Path) -> None:
        self.name = name
        self.stderr_path = stderr_path
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self.lines: list[str] = []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._buffer = b""
        self.lines = []
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("ab") as stderr:
            stderr.write(f"----- {self.name}: {' '.join(argv)}\n".encode())
            stderr.flush()
            self.process = subprocess.Popen(
                list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=_child_env()
            )

    def send(self, line: str) -> None:
        """Write one line to the child's stdin (spawned with ``stdin=subprocess.PIPE``)."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stderr_tail(self, lines: int = 25) -> str:
        return f"--- last stderr lines of {self.name} ({self.stderr_path}):\n{_tail(self.stderr_path, lines)}"

    def read_line(self, deadline: float, predicate: Callable[[str], bool] = lambda line: True) -> str:
        """The first stdout line (from now, or kept in :attr:`lines`) matching ``predicate``, by ``deadline``.

        Raises:
            AssertionError: the deadline passed or the process exited first (with its stderr tail).
        """
        assert self.process is not None and self.process.stdout is not None
        for line in self.lines:
            if predicate(line):
                self.lines.remove(line)
                return line
        fd = self.process.stdout.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: no matching stdout line within the deadline; lines so far: "
                    f"{self.lines[-5:]}\n{self.stderr_tail()}"
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.process.wait(timeout=5)
                raise AssertionError(
                    f"{self.name} exited with status {code} before printing the expected line; "
                    f"lines so far: {self.lines[-5:]}\n{self.stderr_tail()}"
                )
            self._buffer += chunk
            *complete, self._buffer = self._buffer.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                if predicate(line):
                    return line
                self.lines.append(line)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit status (negative: signal)."""
        process = self.process
        if process is None:
            raise RuntimeError(f"{self.name} was never started")
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with self.stderr_path.open("ab") as stderr:
                    stderr.write(
                        f"----- harness: {self.name} ignored SIGTERM for {timeout} s: SIGKILL\n".encode()
                    )
                process.kill()
        return process.wait(timeout=10)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait (bounded) for the process to exit on its own; return the exit status.

        Raises:
            AssertionError: still running after ``timeout`` (with its stderr tail).
        """
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still runs after {timeout:g} s\n{self.stderr_tail()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL and reap; return the exit status."""
        process = self.process
        if process is None:
            raise RuntimeError(f"{self.name} was never started")
        if process.poll() is None:
            process.kill()
        return process.wait(timeout=10)

    def close(self) -> None:
        """End the process if it runs (cleanup: never raises for an already ended process)."""
        if self.process is None:
            return
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(Exception):
            self.stop(timeout=STOP_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


class NodeProcess(ChildProcess):
    """One ``sez-node run`` process of a :class:`NodeSpec`."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec.jurisdiction, spec.directory / "stderr.log")
        self.spec = spec
        self.ready: dict[str, Any] = {}
        self._http: httpx.Client | None = None

    def start(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Spawn the daemon and wait for its ready line; return the ready object."""
        self.spawn([*self.spec.launcher, *_sez_node_argv(), "run", "--config", str(self.spec.config)])
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        line = self.read_line(time.monotonic() + timeout, lambda text: '"ready"' in text)
        ready: dict[str, Any] = json.loads(line)
        assert ready["event"] == "ready", line
        assert ready["peer_id"] == self.spec.peer_id, (ready, self.spec.peer_id)
        self.ready = ready
        self.wait_own_log_checked(max(1.0, timeout))
        if not self.spec.activated:
            self.spec.activated = True
            for corridor, payloads in self.spec.activations.items():
                body = {"transitions": [{"kind": "lifecycle", "payload": p} for p in payloads]}
                response = self.http.post(f"/v1/corridors/{corridor}/transitions", json=body)
                assert response.status_code == 201, (corridor, response.text)
        return ready

    def wait_own_log_checked(self, timeout: float) -> None:
        """Wait (bounded) until every corridor's own-log check has completed (``node.recovery``):
        until then the node refuses submissions with 503 ``recovering``."""
        for corridor in self.spec.origins:

            def checked(corridor: str = corridor) -> bool:
                return bool(self.status(corridor)["recovery"]["state"] != "checking")

            wait_until(checked, timeout, f"{self.name}'s own-log check in {corridor}")

    # -- HTTP -----------------------------------------------------------------------------

    def client(self, *, token: str | None = None) -> httpx.Client:
        """A new HTTP client for this node (with the bearer token unless ``token=""``)."""
        headers = {}
        token = self.spec.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.spec.base_url, headers=headers, timeout=HTTP_TIMEOUT)

    @property
    def http(self) -> httpx.Client:
        """A shared client with the bearer token (use :meth:`client` for one per thread)."""
        if self._http is None:
            self._http = self.client()
        return self._http

    def status(self, corridor: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/corridors/{corridor}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def submit(
        self,
        corridor: str,
        payload: Mapping[str, Any],
        kind: str = "transfer",
        *,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        return (client or self.http).post(
            f"/v1/corridors/{corridor}/transitions", json={"kind": kind, "payload": dict(payload)}
        )

    def receipt(self, origin: str, sequence: int) -> bytes:
        response = self.http.get(f"/v1/logs/{origin}/receipts/{sequence}")
        response.raise_for_status()
        return response.content

    def checkpoint(self, origin: str, size: int | None = None) -> bytes:
        params = {"size": str(size)} if size is not None else None
        response = self.http.get(f"/v1/logs/{origin}/checkpoint", params=params)
        response.raise_for_status()
        return response.content

    def metrics(self) -> str:
        response = self.http.get("/metrics")
        response.raise_for_status()
        return response.text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of ``/metrics`` (0.0 if absent)."""
        wanted = {k: v for k, v in labels.items()}
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            match = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in wanted.items()):
                return float(match.group(3))
        return 0.0

    def healthy(self) -> bool:
        try:
            return bool(self.http.get("/healthz").json() == {"status": "ok"})
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        super().close()
        if self._http is not None:
            self._http.close()
            self._http = None


class Network:
    """The nodes written by :func:`make_network` and every process started for them."""

    def __init__(self, base: Path, specs: dict[str, NodeSpec]) -> None:
        self.base = base
        self.specs = specs
        self.nodes = {name: NodeProcess(spec) for name, spec in specs.items()}
        self.children: list[ChildProcess] = []

    def __getitem__(self, jurisdiction: str) -> NodeProcess:
        return self.nodes[jurisdiction]

    def start(self, *names: str, timeout: float = READY_TIMEOUT) -> None:
        """Start the named nodes (default: all) concurrently and wait until each is ready."""
        chosen = [self.nodes[n] for n in (names or self.nodes)]
        for node in chosen:
            node.spawn([*node.spec.launcher, *_sez_node_argv(), "run", "--config", str(node.spec.config)])
        deadline = time.monotonic() + timeout
        for node in chosen:
            node.wait_ready(max(0.1, deadline - time.monotonic()))

    def child(self, name: str) -> ChildProcess:
        """A registered helper process (stderr in ``<base>/<name>.stderr.log``), ended by :meth:`close`."""
        process = ChildProcess(name, self.base / f"{name}.stderr.log")
        self.children.append(process)
        return process

    def tails(self, lines: int = 25) -> str:
        parts = [node.stderr_tail(lines) for node in self.nodes.values() if node.process is not None]
        parts += [child.stderr_tail(lines) for child in self.children if child.process is not None]
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every process still running (helpers first), SIGTERM then SIGKILL after a bound."""
        for process in [*self.children, *self.nodes.values()]:
            process.close()


# ------------------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    describe: str | Callable[[], str],
    *,
    network: Network | None = None,
    interval: float = POLL,
) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns a truthy value, which is returned.

    HTTP transport errors count as "not yet". On timeout raises AssertionError naming ``describe`` (a
    text, or a function called then for one), the last value or error, and the last stderr lines of
    ``network``'s processes.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            error = None
            if value:
                return value
            last = value
        except (httpx.TransportError, ConnectionError) as exc:
            error = exc
        if time.monotonic() >= deadline:
            details = f"last value: {last!r}" if error is None else f"last error: {error!r}"
            tails = f"\n{network.tails()}" if network is not None else ""
            what = describe if isinstance(describe, str) else describe()
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; {details}{tails}")
        time.sleep(interval)


def wait_stable(
    snapshot: Callable[[], T | None],
    timeout: float,
    describe: str | Callable[[], str],
    *,
    stable_for: float = 2.5,
    network: Network | None = None,
) -> T:
    """Wait until ``snapshot()`` returns the same truthy value for ``stable_for`` seconds; return it.

    For "once quiet" conditions: a converged state that background work (acks, cosignatures) has
    stopped changing. Bounded by ``timeout`` like :func:`wait_until`.
    """
    deadline = time.monotonic() + timeout
    held: Any = None
    since = 0.0

    def settled() -> T | None:
        nonlocal held, since
        value = snapshot()
        now = time.monotonic()
        if not value or value != held:
            held, since = value, now
            return None
        return value if now - since >= stable_for else None

    def what() -> str:
        text = describe if isinstance(describe, str) else describe()
        return f"{text} (stable for {stable_for:g} s; last snapshot {held!r})"

    result = wait_until(settled, max(0.1, deadline - time.monotonic()), what, network=network)
    assert result is not None
    return result


# ------------------------------------------------------------------------------------ read-back


def read_log_http(node: NodeProcess, origin: str, size: int) -> list[bytes]:
    """Receipts ``0..size-1`` of ``origin`` as ``node`` serves them."""
    return [node.receipt(origin, seq) for seq in range(size)]


def read_log_store(data_dir: Path, origin: str) -> list[bytes]:
    """Every receipt of ``origin`` in the (stopped) node's store, in sequence order."""
    with LogStore(data_dir, readonly=True) as store:
        out: list[bytes] = []
        for seq, raw in store.iter_receipts(origin):
            assert seq == len(out), f"{origin}: receipt {seq} stored where {len(out)} was expected"
            out.append(bytes(raw))
        assert len(out) == store.head(origin).size, (
            f"{origin}: {len(out)} receipts for head {store.head(origin)}"
        )
        return out


def fsck_data_dir(data_dir: Path, origins: Iterable[str] = ()) -> FsckReport:
    """fsck a stopped node's store; assert it is clean and holds ``origins``."""
    with LogStore(data_dir, readonly=True) as store:
        report = fsck(store)
    problems = {log.origin: log.problems for log in report.logs if log.problems}
    assert report.ok, f"fsck of {data_dir} found problems: {problems}"
    checked = {log.origin for log in report.logs}
    missing = set(origins) - checked
    assert not missing, f"fsck of {data_dir}: logs {missing} not in the store (has {checked})"
    return report
