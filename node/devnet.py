"""``sez-node devnet``: a local multi-jurisdiction network on loopback (design §15).

Starts PAK, KSA, UAE and CHN ``sez-node run`` processes (three corridors: PAK-KSA, PAK-UAE,
PAK-CHN), each in its own folder with fresh keys (or the folder given by ``--dir``, which is kept),
drives transfers both ways in every corridor at ``--rate`` per second through the HTTP API, shows
live progress, then waits for the replicas to converge, prints a summary, verifies one random
receipt per corridor as a light client would (proof bundle from the counterparty's node, checked
offline with only the writer's verifier key), and stops every process cleanly. Ctrl-C stops early
and still stops every process.

Watchers, the corridor lifecycle and quorum finality join the devnet with their issues; the
summary already has the shape the full devnet reports (per corridor and origin: submitted,
stored, replicated, cosigned, lost).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from protocol.keys import SigningKey
from protocol.lifecycle import activation, definition_digest
from protocol.light import verify_receipt_bundle

from .config import JURISDICTION_NAMES, write_initial_config
from .keyfile import write_secret_file

__all__ = ["add_devnet_command", "run_devnet"]

JURISDICTIONS = ("PAK", "KSA", "UAE", "CHN")
CORRIDORS = ("PAK-KSA", "PAK-UAE", "PAK-CHN")
COUNTRY = {"PAK": "PAK", "KSA": "SAU", "UAE": "ARE", "CHN": "CHN"}
CURRENCIES = {
    "PAK-KSA": ("PKR", "SAR", "USD"),
    "PAK-UAE": ("PKR", "AED", "USD"),
    "PAK-CHN": ("PKR", "CNY", "USD"),
}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The shipped corridor definitions (``configs/corridors/<id>.json``) and devnet description."""
ACTIVATION_RECEIPTS = 2
READY_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 120.0


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class _Node:
    jurisdiction: str
    directory: Path
    key: SigningKey
    p2p_port: int
    http_port: int
    peer_id: str = ""
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def name(self) -> str:
        return JURISDICTION_NAMES[self.jurisdiction]

    def origin(self, corridor: str) -> str:
        return f"{self.name}/corridor/{corridor}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class _Traffic:
    submitted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, origin: str, count: int, refused: int) -> None:
        with self.lock:
            self.submitted[origin] = self.submitted.get(origin, 0) + count
            self.refused[origin] = self.refused.get(origin, 0) + refused


def _write_network(base: Path) -> dict[str, _Node]:
    from .p2p.identity import generate_identity, peer_id_of, save_identity  # noqa: PLC0415 - libp2p is slow to import

    ports = _free_ports(2 * len(JURISDICTIONS))
    nodes: dict[str, _Node] = {}
    identities = {}
    for index, jurisdiction in enumerate(JURISDICTIONS):
        identity = generate_identity()
        identities[jurisdiction] = identity
        nodes[jurisdiction] = _Node(
            jurisdiction, base / jurisdiction, SigningKey.generate(JURISDICTION_NAMES[jurisdiction]),
            ports[2 * index], ports[2 * index + 1], peer_id_of(identity),
        )  # fmt: skip
    for jurisdiction, node in nodes.items():
        entries = []
        for corridor in CORRIDORS:
            parties = corridor.split("-")
            if jurisdiction not in parties:
                continue
            other = nodes[parties[1] if parties[0] == jurisdiction else parties[0]]
            entries.append({
                "id": corridor, "origin": node.origin(corridor),
                "counterparty_origin": other.origin(corridor),
                "counterparty_vkey": SigningKey(other.origin(corridor), other.key.seed).verifier().to_vkey(),
                "peers": [f"/ip4/127.0.0.1/tcp/{other.p2p_port}/p2p/{other.peer_id}"],
                "checkpoint_every": 200, "checkpoint_interval": 1,
                "definition": str(CONFIGS / "corridors" / f"{corridor}.json"),
            })  # fmt: skip
        write_initial_config(
            node.directory, jurisdiction=jurisdiction, listen=f"/ip4/127.0.0.1/tcp/{node.p2p_port}",
            http=f"127.0.0.1:{node.http_port}", corridors=entries,
        )  # fmt: skip
        write_secret_file(node.directory / "signing.key", node.key.to_private_line() + "\n", overwrite=True)
        save_identity(identities[jurisdiction], node.directory / "identity.key")
        node.token = (node.directory / "api.token").read_text(encoding="utf-8").strip()
    return nodes


def _start(node: _Node) -> None:
    log = open(node.directory / "node.log", "ab")  # noqa: SIM115 - handed to the child, closed on stop
    node.process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--config", str(node.directory / "node.toml")],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    log.close()


def _wait_ready(node: _Node, deadline: float) -> None:
    assert node.process is not None and node.process.stdout is not None
    while time.monotonic() < deadline:
        line = node.process.stdout.readline()
        if not line:
            break
        try:
            if json.loads(line).get("event") == "ready":
                return
        except ValueError:
            continue
    raise RuntimeError(f"{node.jurisdiction} did not become ready; see {node.directory / 'node.log'}")


def _activate(nodes: dict[str, _Node]) -> None:
    """Take every corridor from DRAFT to ACTIVE: both parties sign; each records it in its own log."""
    for corridor in CORRIDORS:
        parties = corridor.split("-")
        definition = json.loads((CONFIGS / "corridors" / f"{corridor}.json").read_text(encoding="utf-8"))
        signers = {party: nodes[party].key for party in parties}
        payloads = activation(corridor, signers, definition_digest(definition).hex(), reason="devnet")
        body = {"transitions": [{"kind": "lifecycle", "payload": payload} for payload in payloads]}
        for party in parties:
            node = nodes[party]
            response = httpx.post(
                f"{node.url}/v1/corridors/{corridor}/transitions", json=body,
                headers={"Authorization": f"Bearer {node.token}"}, timeout=30, trust_env=False,
            )  # fmt: skip
            if response.status_code != 201:
                raise RuntimeError(f"{party} refused the activation of {corridor}: {response.text}")
        print(f"devnet: {corridor} DRAFT -> PENDING -> ACTIVE, signed by {' and '.join(parties)}")


def _stop(node: _Node, timeout: float = 15.0) -> int | None:
    if node.process is None or node.process.poll() is not None:
        return node.process.returncode if node.process else None
    node.process.send_signal(signal.SIGTERM)
    try:
        return node.process.wait(timeout)
    except subprocess.TimeoutExpired:
        node.process.kill()
        return node.process.wait(5)


def _drive(  # noqa: PLR0917 - a thread target: its arguments come as one tuple
    node: _Node,
    corridor: str,
    rate: float,
    duration: float,
    traffic: _Traffic,
    stop: threading.Event,
    seed: int,
) -> None:
    """Post transfers from ``node`` into ``corridor`` at ``rate``/s in batches of up to 50."""
    rng = random.Random(seed)
    other = next(p for p in corridor.split("-") if p != node.jurisdiction)
    batch = max(1, min(50, int(rate / 5)))
    interval = batch / rate
    origin = node.origin(corridor)
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node.token}"}, timeout=30,
                      trust_env=False) as client:  # fmt: skip
        start = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - start < duration:
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            transitions = [{"kind": "transfer", "payload": {
                "transfer_id": f"{node.jurisdiction}-{corridor}-{n}-{i}",
                "sender": {"entity_id": f"{node.jurisdiction.lower()}-firm-{rng.randrange(20)}",
                           "jurisdiction": COUNTRY[node.jurisdiction]},
                "receiver": {"entity_id": f"{other.lower()}-firm-{rng.randrange(20)}",
                             "jurisdiction": COUNTRY[other]},
                "currency": rng.choice(CURRENCIES[corridor]), "amount": str(rng.randrange(1, 10**9)),
            }} for i in range(batch)]  # fmt: skip
            try:
                response = client.post(
                    f"/v1/corridors/{corridor}/transitions", json={"transitions": transitions}
                )
                ok = response.status_code == 201
            except httpx.HTTPError:
                ok = False
            traffic.add(origin, batch if ok else 0, 0 if ok else batch)
            n += 1


def _status(node: _Node, corridor: str) -> dict[str, Any]:
    response = httpx.get(f"{node.url}/v1/corridors/{corridor}/status", timeout=5, trust_env=False)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _progress_line(nodes: dict[str, _Node], traffic: _Traffic, elapsed: float) -> str:
    parts = [f"t={elapsed:5.1f}s"]
    for corridor in CORRIDORS:
        a, b = (nodes[p] for p in corridor.split("-"))
        try:
            sa, sb = _status(a, corridor), _status(b, corridor)
            parts.append(
                f"{corridor}: {a.jurisdiction} {sa['log']['size']} (lag {sb['counterparty']['lag']}) "
                f"{b.jurisdiction} {sb['log']['size']} (lag {sa['counterparty']['lag']}) "
                f"cosigned {sa['counterparty_cosigned_size']}/{sb['counterparty_cosigned_size']}"
            )
        except httpx.HTTPError:
            parts.append(f"{corridor}: unavailable")
    return " | ".join(parts)


def _summary(nodes: dict[str, _Node], traffic: _Traffic) -> dict[str, Any]:
    corridors: dict[str, Any] = {}
    lost_total = 0
    for corridor in CORRIDORS:
        entry: dict[str, Any] = {}
        for party in corridor.split("-"):
            writer = nodes[party]
            reader = nodes[next(p for p in corridor.split("-") if p != party)]
            origin = writer.origin(corridor)
            own = _status(writer, corridor)
            remote = _status(reader, corridor)
            submitted = traffic.submitted.get(origin, 0)
            stored = own["log"]["size"]
            acks = own["stats"]["acks_written"]
            lifecycle = ACTIVATION_RECEIPTS  # DRAFT -> PENDING -> ACTIVE, recorded by each party
            lost = max(0, submitted - (stored - acks - lifecycle))
            lost_total += lost
            entry[origin] = {
                "submitted": submitted, "refused": traffic.refused.get(origin, 0), "stored": stored,
                "acks": acks, "lifecycle": lifecycle, "replicated": remote["counterparty"]["size"],
                "counterparty_cosigned": own["counterparty_cosigned_size"], "lost": lost,
            }  # fmt: skip
        corridors[corridor] = entry
    return {"corridors": corridors, "lost": lost_total}


def _verify_random_receipts(nodes: dict[str, _Node], rng: random.Random) -> list[str]:
    lines = []
    for corridor in CORRIDORS:
        writer_j, reader_j = corridor.split("-")[rng.randrange(2)], None
        reader_j = next(p for p in corridor.split("-") if p != writer_j)
        writer, reader = nodes[writer_j], nodes[reader_j]
        origin = writer.origin(corridor)
        size = _status(reader, corridor)["counterparty"]["size"]
        if size == 0:
            lines.append(f"{corridor}: nothing to verify")
            continue
        sequence = rng.randrange(size)
        bundle = httpx.get(f"{reader.url}/v1/logs/{origin}/proof/{sequence}", timeout=10, trust_env=False)
        bundle.raise_for_status()
        key = SigningKey(origin, writer.key.seed).verifier()
        verdict = verify_receipt_bundle(bundle.content, key)
        lines.append(
            f"{corridor}: receipt {origin}#{sequence} ({verdict.receipt.receipt.kind}) "
            f"from {reader_j}'s replica verified offline: {', '.join(verdict.checks)}"
        )
    return lines


def run_devnet(*, rate: float, duration: float, directory: Path | None, summary_path: Path | None) -> int:
    """Run the devnet; return 0 when every corridor converged and nothing was lost."""
    keep = directory is not None
    base = directory if directory is not None else Path(tempfile.mkdtemp(prefix="sez-devnet-"))
    if keep and base.exists() and any(base.iterdir()):
        print(f"sez-node: file-exists: {base} is not empty; choose a new --dir", file=sys.stderr)
        return 1
    base.mkdir(parents=True, exist_ok=True)
    print(f"devnet: writing four nodes under {base}")
    nodes = _write_network(base)
    stop = threading.Event()
    traffic = _Traffic()
    status = 1
    try:
        for node in nodes.values():
            _start(node)
        deadline = time.monotonic() + READY_TIMEOUT
        for node in nodes.values():
            _wait_ready(node, deadline)
            print(f"devnet: {node.jurisdiction} ready: http {node.url}, peer {node.peer_id}")
        _activate(nodes)
        drivers: list[threading.Thread] = []
        for corridor in CORRIDORS:
            for party in corridor.split("-"):
                work = (nodes[party], corridor, rate, duration, traffic, stop, len(drivers))
                thread = threading.Thread(target=_drive, args=work, daemon=True)
                drivers.append(thread)
                thread.start()
        began = time.monotonic()
        while any(t.is_alive() for t in drivers):
            print(_progress_line(nodes, traffic, time.monotonic() - began), flush=True)
            stop.wait(2.0)
        print("devnet: traffic stopped; waiting for every replica to converge")
        converge_deadline = time.monotonic() + CONVERGE_TIMEOUT
        while time.monotonic() < converge_deadline:
            lags = [
                _status(nodes[p], c)["counterparty"]["lag"] for c in CORRIDORS for p in c.split("-")
            ]  # fmt: skip
            sizes_match = all(
                _status(nodes[a], c)["log"]["size"] == _status(nodes[b], c)["counterparty"]["size"]
                for c in CORRIDORS for a, b in (c.split("-"), reversed(c.split("-")))
            )  # fmt: skip
            if not any(lags) and sizes_match:
                break
            time.sleep(0.5)
        print(_progress_line(nodes, traffic, time.monotonic() - began))
        summary = _summary(nodes, traffic)
        print(json.dumps(summary, indent=2))
        for line in _verify_random_receipts(nodes, random.Random(time.time_ns())):
            print(f"light client: {line}")
        if summary_path is not None:
            summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        status = 0 if summary["lost"] == 0 else 1
    except KeyboardInterrupt:
        print("devnet: interrupted; stopping every node", flush=True)
    finally:
        stop.set()
        for node in nodes.values():
            code = _stop(node)
            print(f"devnet: {node.jurisdiction} stopped (exit {code})")
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    return status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_devnet(args: argparse.Namespace) -> int:
    """Entry point of ``sez-node devnet``: SIGINT (Ctrl-C) and SIGTERM both stop every node cleanly."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    return run_devnet(rate=args.rate, duration=args.duration, directory=args.dir, summary_path=args.summary)


def add_devnet_command(sub: Any) -> None:
    """Register ``devnet`` on the ``sez-node`` subparsers."""
    p = sub.add_parser("devnet", help="run PAK, KSA, UAE and CHN nodes on loopback with corridor traffic")
    p.add_argument("--rate", type=float, default=50.0, help="transfers per second per corridor direction")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument(
        "--dir", type=Path, help="keep the nodes' folders here (default: a temporary folder, removed)"
    )
    p.add_argument("--summary", type=Path, help="write the summary as JSON here")
    p.set_defaults(func=cmd_devnet)
