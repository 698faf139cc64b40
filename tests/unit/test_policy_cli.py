"""``sez-node policy export``: prints the node's policy, and refuses one that names keys the node's
configuration does not (the node's API is a small stdlib HTTP server on the configured port)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from node.cli import main
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.policy import LogEntry, TrustPolicy, WatcherEntry, parse_policy
from protocol.quorum import QuorumPolicy
from tests.integration.netharness import Network, make_network

C = "PAK-KSA"


def _policy(network: Network, ksa_key: SigningKey | None = None) -> TrustPolicy:
    pak, ksa = network.specs["PAK"], network.specs["KSA"]
    pak_key = SigningKey(pak.origin(C), pak.key.seed)
    ksa_key = ksa_key or SigningKey(ksa.origin(C), ksa.key.seed)
    watcher = SigningKey("w1.example", b"\x31" * 32).verifier(ALG_COSIGNATURE_V1)
    logs = sorted(
        (LogEntry(key=k.verifier(), cosigner=k.verifier(ALG_COSIGNATURE_V1)) for k in (pak_key, ksa_key)),
        key=lambda e: e.origin,
    )
    return TrustPolicy(
        corridor_id=C, logs=(logs[0], logs[1]), watchers=(WatcherEntry(key=watcher, stake=1000),),
        stake_currency="USD", quorum=QuorumPolicy(),
    )  # fmt: skip


class PolicyServer:
    def __init__(self, port: int) -> None:
        self.status = 200
        self.body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                assert self.path == f"/v1/corridors/{C}/policy"
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Network, PolicyServer]]:
    network = make_network(tmp_path / "net", ["PAK", "KSA"], corridors=[C])
    server = PolicyServer(network.specs["PAK"].http_port)
    try:
        yield network, server
    finally:
        server.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_export_json_and_tlog_policy(
    served: tuple[Network, PolicyServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network, server = served
    policy = _policy(network)
    server.body = policy.to_json()
    config = str(network.specs["PAK"].config)
    status, out, err = run(capsys, "policy", "export", "--config", config, "--corridor", C)
    assert (status, err) == (0, "")
    assert out.encode() == policy.to_json() + b"\n"
    target = tmp_path / "policy.txt"
    status, out, err = run(
        capsys, "policy", "export", "--config", config, "--corridor", C, "--format", "tlog-policy",
        "--out", str(target),
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "policy": str(target), "corridor": C, "format": "tlog-policy", "watchers": 1, "bootstrap": True,
    }  # fmt: skip
    assert parse_policy(target.read_bytes()).to_json() == policy.to_json()


def test_export_refuses_keys_the_configuration_does_not_name(
    served: tuple[Network, PolicyServer], capsys: pytest.CaptureFixture[str]
) -> None:
    network, server = served
    ksa_origin = network.specs["KSA"].origin(C)
    server.body = _policy(network, SigningKey(ksa_origin, b"\x66" * 32)).to_json()
    config = str(network.specs["PAK"].config)
    status, out, err = run(capsys, "policy", "export", "--config", config, "--corridor", C)
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: bad-answer: ") and ksa_origin in err

    server.body = b'{"type": "sez.trust-policy/v1"}'
    status, out, err = run(capsys, "policy", "export", "--config", config, "--corridor", C)
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: bad-answer: ") and "schema-violation" in err

    server.status, server.body = 404, b'{"type": "urn:sez:problem:not-found", "detail": "no policy"}'
    status, out, err = run(capsys, "policy", "export", "--config", config, "--corridor", C)
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: not-found: no policy")
