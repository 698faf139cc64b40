"""One real ``sez-watcher run`` process following both logs of a PAK-KSA pair of ``sez-node run`` processes.

The watcher's peer id is added to both nodes' corridor peers; the watcher follows both logs through
both nodes. After transfers, its ``/v1/state`` shows both origins cosigned at sizes > 0, each a
checkpoint whose log signature verifies. SIGKILLed and restarted, it keeps its protection record
(the state is not smaller) and the checkpoints it cosigns never shrink.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.p2p import load_or_create_identity, peer_id_of
from protocol.checkpoints import open_checkpoint, parse_checkpoint
from store import LogStore
from tests.integration.netharness import (
    ROOT,
    ChildProcess,
    Network,
    free_ports,
    make_network,
    transfer,
    wait_until,
)
from watcher.config import add_followed_log, load_config, write_initial_config
from watcher.protection import Protection

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C = "PAK-KSA"
READY_TIMEOUT = 30.0
COSIGN_TIMEOUT = 60.0


def _watcher_argv() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "sez-watcher"
    return [str(venv)] if venv.exists() else ["python", "-m", "watcher.cli"]


class WatcherProcess:
    def __init__(self, child: ChildProcess, config: Path, http_port: int) -> None:
        self.child = child
        self.config = config
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10.0)

    def start(self) -> dict[str, Any]:
        self.child.spawn([*_watcher_argv(), "run", "--config", str(self.config)])
        line = self.child.read_line(time.monotonic() + READY_TIMEOUT, lambda text: '"ready"' in text)
        ready: dict[str, Any] = json.loads(line)
        return ready

    def state(self) -> dict[str, Any]:
        response = self.http.get("/v1/state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Network, WatcherProcess]]:
    p2p_port, http_port = free_ports(2)
    directory = tmp_path / "watcher"
    config_path = write_initial_config(
        directory, "watcher1.example", f"/ip4/127.0.0.1/tcp/{p2p_port}", f"127.0.0.1:{http_port}"
    )
    peer_id = peer_id_of(load_or_create_identity(directory / "identity.key"))
    addr = f"/ip4/127.0.0.1/tcp/{p2p_port}/p2p/{peer_id}"
    network = make_network(
        tmp_path / "net", ["PAK", "KSA"], corridors=[C], extra_peers={C: {"PAK": [addr], "KSA": [addr]}}
    )
    for spec in network.specs.values():
        add_followed_log(
            config_path, corridor=C, origin=spec.origin(C), vkey=spec.log_key(C).to_vkey(),
            peers=[s.addr for s in network.specs.values()],
        )  # fmt: skip
    watcher = WatcherProcess(network.child("watcher"), config_path, http_port)
    try:
        yield network, watcher
    finally:
        network.close()
        watcher.http.close()


def _cosigned(watcher: WatcherProcess, minimum: dict[str, int]) -> dict[str, Any]:
    """The state's logs once every origin reached its minimum size, else {} (not yet)."""
    logs: dict[str, Any] = watcher.state()["logs"]
    if all(logs[origin]["size"] >= size for origin, size in minimum.items()):
        return logs
    return {}


def test_watcher_cosigns_both_logs_and_survives_sigkill(setup: tuple[Network, WatcherProcess]) -> None:
    network, watcher = setup
    network.start()
    ready = watcher.start()
    assert ready["event"] == "ready"
    origins = {name: spec.origin(C) for name, spec in network.specs.items()}
    keys = {spec.origin(C): spec.log_key(C) for spec in network.specs.values()}
    assert sorted(ready["logs"]) == sorted(origins.values())

    for index in range(5):
        for name, other in (("PAK", "KSA"), ("KSA", "PAK")):
            response = network[name].submit(C, transfer(f"{name}-{index}", name, other))
            assert response.status_code == 201, response.text
    logs = wait_until(
        lambda: _cosigned(watcher, dict.fromkeys(origins.values(), 5)),
        COSIGN_TIMEOUT, "the watcher to cosign both logs at size >= 5", network=network,
    )  # fmt: skip
    for origin, entry in logs.items():
        cp, _ = open_checkpoint(entry["note"].encode(), keys[origin])
        assert cp.size == entry["size"] and cp.root.hex() == entry["root"]
    before = {origin: entry["size"] for origin, entry in logs.items()}

    watcher.child.kill()
    restarted = watcher.start()
    assert restarted["peer_id"] == ready["peer_id"]
    after = watcher.state()["logs"]
    assert all(after[origin]["size"] >= size for origin, size in before.items()), (before, after)

    for index in range(5, 10):
        response = network["PAK"].submit(C, transfer(f"PAK-{index}", "PAK", "KSA"))
        assert response.status_code == 201, response.text
    pak = origins["PAK"]
    wait_until(
        lambda: _cosigned(watcher, {pak: before[pak] + 5}),
        COSIGN_TIMEOUT, "the restarted watcher to cosign PAK's grown log", network=network,
    )  # fmt: skip
    assert watcher.child.stop() == 0

    config = load_config(watcher.config)
    with LogStore(config.data_dir) as store:
        protection = Protection(store)
        for origin in origins.values():
            sizes = [parse_checkpoint(note)[0].size for note in protection.cosigned_history(origin)]
            assert sizes and sizes == sorted(sizes) and len(set(sizes)) == len(sizes), (origin, sizes)
            assert not protection.evidence(origin)
