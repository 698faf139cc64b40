"""A PAK-KSA network with watcher folders following both logs (tests and benchmarks with watchers).

:func:`make_watched_network` writes everything and starts nothing: the caller wraps each
:class:`WatcherDir` in the process class it needs (``sez-watcher run`` with a ready line, an HTTP
client, ...) and registers it with the network (``network.child``) so that ``network.close`` stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.p2p import load_or_create_identity, peer_id_of
from tests.integration.netharness import Network, free_ports, make_network
from watcher.config import add_followed_log, write_initial_config

__all__ = ["WatcherDir", "make_watched_network"]


@dataclass(frozen=True, slots=True)
class WatcherDir:
    """One watcher's folder: ``name`` (``watcher<i>``), its ``config`` and its HTTP port."""

    name: str
    config: Path
    http_port: int


def make_watched_network(
    base: Path, watchers: int, *, corridor: str = "PAK-KSA", checkpoint_every: int = 1
) -> tuple[Network, list[WatcherDir]]:
    """PAK and KSA under ``base / "net"``, and ``watchers`` watcher folders under ``base``.

    Every watcher follows both logs of ``corridor`` through both nodes, and both nodes have every
    watcher among the corridor's peers. Nothing is started.
    """
    ports = free_ports(2 * watchers)
    folders, addrs = [], []
    for i in range(watchers):
        p2p_port, http_port = ports[2 * i], ports[2 * i + 1]
        directory = base / f"watcher{i + 1}"
        config = write_initial_config(
            directory, f"w{i + 1}.example", f"/ip4/127.0.0.1/tcp/{p2p_port}", f"127.0.0.1:{http_port}"
        )
        peer_id = peer_id_of(load_or_create_identity(directory / "identity.key"))
        addrs.append(f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{peer_id}")
        folders.append(WatcherDir(f"watcher{i + 1}", config, http_port))
    network = make_network(
        base / "net", ["PAK", "KSA"], corridors=[corridor], checkpoint_every=checkpoint_every,
        extra_peers={corridor: {"PAK": addrs, "KSA": addrs}},
    )  # fmt: skip
    peers = [spec.addr for spec in network.specs.values()]
    for folder in folders:
        for spec in network.specs.values():
            origin, vkey = spec.origin(corridor), spec.log_key(corridor).to_vkey()
            add_followed_log(folder.config, corridor=corridor, origin=origin, vkey=vkey, peers=peers)
    return network, folders
