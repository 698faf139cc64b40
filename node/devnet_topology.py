"""The devnet's network on disk: four nodes, N watchers, three corridors (``sez-node devnet``).

:func:`write_network` creates, under one folder, a folder per node (``PAK``, ``KSA``, ``UAE``,
``CHN``: ``node.toml``, signing key, libp2p identity, API token) and per watcher (``watcher1`` ...:
``watcher.toml``, cosigning key, identity), all listening on free loopback ports. Every watcher
serves all three corridors, so:

* each node lists, in every corridor's ``peers`` (its allowlist), the counterparty **and every
  watcher**: a watcher may read the corridor's logs over sync and cosign on its gossip topic;
* each watcher follows both logs of every corridor (``[[logs]]``: origin, the log's verifier key,
  the two parties' addresses as peers).

Watcher folders are made by ``sez-watcher init`` (run as processes, all at once: ``node/`` does not
import ``watcher/``); their ``[[logs]]`` are then added here.

With ``anchor_rpc`` (``sez-node devnet --anchor``), every corridor entry of every node also gets an
``anchor`` table (:data:`ANCHOR_CADENCE`, on the devnet's anvil chain) and its own sending key, written
as ``anchor-<corridor>.key`` (mode 0600): one of anvil's funded dev accounts per log
(:data:`node.devnet_chain.DEV_KEYS`).

The corridor definitions are the shipped ones (``configs/corridors/<id>.json``). Nothing here starts
a process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomli_w

from protocol.errors import LocalProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from protocol.lifecycle import check_definition
from protocol.schemas import validate

from .config import JURISDICTION_NAMES
from .config import write_initial_config as write_node_config
from .devnet_chain import CHAIN_ID, DEV_KEYS
from .keyfile import load_signing_key, write_secret_file

__all__ = [
    "ANCHOR_CADENCE",
    "CONFIGS",
    "CORRIDORS",
    "COUNTRY",
    "DESCRIPTION",
    "JURISDICTIONS",
    "WATCHER_COUNT",
    "WATCHER_STAKE",
    "DevnetNode",
    "DevnetWatcher",
    "check_description",
    "corridor_currencies",
    "corridor_definition",
    "definition_path",
    "write_network",
]

CONFIGS: Final = Path(__file__).resolve().parents[1] / "configs"
"""The shipped devnet description (``devnet.json``) and corridor definitions (``corridors/<id>.json``)."""
DESCRIPTION: Final[dict[str, Any]] = json.loads((CONFIGS / "devnet.json").read_text(encoding="utf-8"))
"""The devnet description: jurisdictions, corridors (with their definition files), watcher count and stake.
Checked against ``schemas/devnet.json`` by :func:`check_description` before a run."""
JURISDICTIONS: Final = tuple(str(j["code"]) for j in DESCRIPTION["jurisdictions"])
CORRIDORS: Final = tuple(str(c["id"]) for c in DESCRIPTION["corridors"])
COUNTRY: Final = {str(j["code"]): str(j["iso3166"]) for j in DESCRIPTION["jurisdictions"]}
"""Jurisdiction code -> ISO 3166 alpha-3 (a transfer's ``jurisdiction``)."""
WATCHER_COUNT: Final = int(DESCRIPTION["watchers"]["count"])
WATCHER_STAKE: Final = str(DESCRIPTION["watchers"]["stake"])
"""Each watcher's bond per corridor, in minor units of the corridor's stake currency."""


ANCHOR_CADENCE: Final[dict[str, Any]] = {
    "every_checkpoints": 3, "every_seconds": 2, "confirmations": 2, "poll_seconds": 0.5,
    "stuck_seconds": 10.0,
}  # fmt: skip
"""The ``anchor`` table's cadence under ``--anchor``, suited to a demo: an anchor every 3 new quorum-final
checkpoints or every 2 s with a new one, confirmed 2 blocks deep (anvil mines a block a second)."""


def definition_path(corridor: str) -> Path:
    """The definition file of ``corridor`` named by the devnet description."""
    entry = next(c for c in DESCRIPTION["corridors"] if c["id"] == corridor)
    return CONFIGS / str(entry["definition"])


def corridor_definition(corridor: str) -> dict[str, Any]:
    """The shipped definition of ``corridor``."""
    definition: dict[str, Any] = json.loads(definition_path(corridor).read_text(encoding="utf-8"))
    return definition


def check_description() -> None:
    """Validate the description (schema ``devnet``) and every corridor definition it names.

    Raises:
        PeerProtocolError(schema-violation): with the failing path (``protocol.schemas.validate``).
    """
    validate("devnet", DESCRIPTION)
    for corridor in CORRIDORS:
        check_definition(corridor_definition(corridor))


def corridor_currencies(corridor: str) -> tuple[str, ...]:
    """The settlement currencies of ``corridor`` (its definition's ``settlement.currencies``)."""
    return tuple(corridor_definition(corridor)["settlement"]["currencies"])


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports free right now (all held open together while chosen)."""
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
class DevnetNode:
    """One jurisdiction's node: its folder, signing key, ports, libp2p peer id and API token."""

    jurisdiction: str
    directory: Path
    key: SigningKey
    p2p_port: int
    http_port: int
    peer_id: str = ""
    token: str = ""

    @property
    def name(self) -> str:
        """The node's key name, e.g. ``sez.gov.pk``."""
        return JURISDICTION_NAMES[self.jurisdiction]

    def origin(self, corridor: str) -> str:
        """This node's log origin in ``corridor``."""
        return f"{self.name}/corridor/{corridor}"

    def log_key(self, corridor: str) -> VerifierKey:
        """The verifier key of this node's log in ``corridor`` (same seed, origin-named)."""
        return SigningKey(self.origin(corridor), self.key.seed).verifier()

    @property
    def url(self) -> str:
        """The node's HTTP API base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def addr(self) -> str:
        """The node's libp2p multiaddr with its peer id."""
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"


@dataclass
class DevnetWatcher:
    """One watcher: its folder, configuration, cosigning key, ports and peer id."""

    label: str
    directory: Path
    config: Path
    key: SigningKey
    p2p_port: int
    http_port: int
    peer_id: str

    @property
    def vkey(self) -> str:
        """The watcher's cosigner verifier key (cosignature/v1, type 0x04)."""
        return self.key.verifier(ALG_COSIGNATURE_V1).to_vkey()

    @property
    def addr(self) -> str:
        """The watcher's libp2p multiaddr with its peer id."""
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"


def _watcher_argv() -> list[str]:
    return [sys.executable, "-m", "watcher.cli"]


def _write_watchers(base: Path, count: int) -> list[DevnetWatcher]:
    """``sez-watcher init`` for every watcher, all at once (the watcher's own code writes its folder)."""
    ports = free_ports(2 * count)
    runs = []
    for index in range(count):
        label = f"watcher{index + 1}"
        listen, http = f"/ip4/127.0.0.1/tcp/{ports[2 * index]}", f"127.0.0.1:{ports[2 * index + 1]}"
        argv = [
            *_watcher_argv(), "init", "--name", f"{label}.devnet.example", "--out", str(base / label),
            "--listen", listen, "--http", http,
        ]  # fmt: skip
        runs.append((label, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    results = [(label, process, *process.communicate(timeout=120)) for label, process in runs]
    watchers = []
    for index, (label, process, out, err) in enumerate(results):
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip()
            raise LocalProtocolError("watcher-init-failed", f"sez-watcher init of {label} failed: {detail}")
        info = json.loads(out)
        directory = base / label
        key = load_signing_key(directory / "signing.key")
        config = Path(info["config"])
        signing = SigningKey(info["name"], key.seed)
        p2p_port, http_port = ports[2 * index], ports[2 * index + 1]
        watchers.append(
            DevnetWatcher(label, directory, config, signing, p2p_port, http_port, info["peer_id"])
        )
    return watchers


def _follow(watcher: DevnetWatcher, logs: list[dict[str, Any]]) -> None:
    """Add ``[[logs]]`` entries to a watcher's configuration, as ``sez-watcher follow`` does one at a time.

    (``node/`` may not import ``watcher/``; the watcher validates the whole file when it starts, so an
    entry it does not accept stops the devnet at start-up with the watcher's own message.)
    """
    document = tomllib.loads(watcher.config.read_text(encoding="utf-8"))
    document.setdefault("logs", []).extend(logs)
    ordered = {"watcher": document["watcher"], **{k: v for k, v in document.items() if k != "watcher"}}
    watcher.config.write_text(tomli_w.dumps(ordered), encoding="utf-8")


def write_network(
    base: Path, watcher_count: int, anchor_rpc: str | None = None
) -> tuple[dict[str, DevnetNode], list[DevnetWatcher]]:
    """Write every node's and watcher's folder under ``base`` (see the module docstring).

    ``anchor_rpc``: the devnet chain's JSON-RPC URL; every corridor of every node is then anchored on it.
    """
    from .p2p.identity import generate_identity, peer_id_of, save_identity  # noqa: PLC0415 - slow import

    watchers = _write_watchers(base, watcher_count)
    ports = free_ports(2 * len(JURISDICTIONS))
    nodes: dict[str, DevnetNode] = {}
    identities = {}
    for index, jurisdiction in enumerate(JURISDICTIONS):
        identity = generate_identity()
        identities[jurisdiction] = identity
        nodes[jurisdiction] = DevnetNode(
            jurisdiction, base / jurisdiction, SigningKey.generate(JURISDICTION_NAMES[jurisdiction]),
            ports[2 * index], ports[2 * index + 1], peer_id_of(identity),
        )  # fmt: skip
    dev_keys = iter(DEV_KEYS)
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
                "counterparty_vkey": other.log_key(corridor).to_vkey(),
                "peers": [other.addr, *(w.addr for w in watchers)],
                "checkpoint_every": 200, "checkpoint_interval": 1,
                "definition": str(definition_path(corridor)),
            })  # fmt: skip
            if anchor_rpc is not None:
                key_file = f"anchor-{corridor}.key"
                node.directory.mkdir(parents=True, exist_ok=True)
                write_secret_file(node.directory / key_file, next(dev_keys) + "\n")
                entries[-1]["anchor"] = {
                    "chain_id": CHAIN_ID, "rpc_url": anchor_rpc, "key_file": key_file, **ANCHOR_CADENCE,
                }  # fmt: skip
        write_node_config(
            node.directory, jurisdiction=jurisdiction, listen=f"/ip4/127.0.0.1/tcp/{node.p2p_port}",
            http=f"127.0.0.1:{node.http_port}", corridors=entries,
        )  # fmt: skip
        write_secret_file(node.directory / "signing.key", node.key.to_private_line() + "\n", overwrite=True)
        save_identity(identities[jurisdiction], node.directory / "identity.key")
        node.token = (node.directory / "api.token").read_text(encoding="utf-8").strip()
    for watcher in watchers:
        logs: list[dict[str, Any]] = []
        for corridor in CORRIDORS:
            pair = [nodes[p] for p in corridor.split("-")]
            logs += [
                {"corridor": corridor, "origin": party.origin(corridor),
                 "vkey": party.log_key(corridor).to_vkey(), "peers": [p.addr for p in pair]}
                for party in pair
            ]  # fmt: skip
        _follow(watcher, logs)
    return nodes, watchers
