"""``sez-light follow``: consistency is demanded for every newer checkpoint; forks raise the alarm.

The node is a small standard-library HTTP server on loopback that serves the node API's checkpoint and
consistency routes from in-memory trees (an honest one, and a fork that shares the first receipts),
signed with the real log key; the follower is the real ``light.follow`` code and ``sez-light`` CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from light import cli
from light.follow import EXIT_ALARM, NodeClient, follow, state_path
from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint
from protocol.evidence import verify_evidence
from protocol.light_follow import EVIDENCE_TYPE, check_extends, open_followed_checkpoint
from protocol.notes import format_note
from protocol.policy import TrustPolicy
from tests.light_fixture import PAK_ORIGIN, TIME, Corridor
from tests.reference_rfc6962 import ReferenceTree

C = Corridor(n=9, watchers=4)
POLICY = C.policy()
HONEST = C.tree
FORK = ReferenceTree(
    [r.next_root for r in C.receipts[:4]] + [hashlib.sha256(b"fork %d" % i).digest() for i in range(5)]
)


def note(tree: ReferenceTree, size: int, *, cosigned: bool = True) -> bytes:
    cp = Checkpoint(origin=PAK_ORIGIN, size=size, root=tree.root(size))
    lines = [cosign(cp, C.ksa, TIME), *(cosign(cp, k, TIME) for k in C.watcher_keys)] if cosigned else []
    return format_note(add_signatures(sign_checkpoint(cp, C.pak), lines))


class FakeNode:
    """Serves ``/v1/logs/{origin}/checkpoint[?size=]`` and ``/consistency?old=&new=`` from ``tree``."""

    def __init__(self) -> None:
        self.tree = HONEST
        self.size = 5
        self.override: bytes | None = None  # a checkpoint served instead of the tree's
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _problem(self, reason: str, status: int = 404) -> None:
                body = json.dumps({"type": f"urn:sez:problem:{reason}", "detail": reason}).encode()
                self._send(status, body, "application/problem+json")

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
                path = unquote(url.path)
                prefix = f"/v1/logs/{PAK_ORIGIN}/"
                if not path.startswith(prefix):
                    return self._problem("unknown-origin")
                route = path[len(prefix) :]
                if route == "checkpoint":
                    size = query.get("size", node.size)
                    if size > node.size:
                        return self._problem("not-found")
                    if node.override is not None and "size" not in query:
                        return self._send(200, node.override)
                    return self._send(200, note(node.tree, size))
                if route == "consistency":
                    old, new = query["old"], query.get("new", node.size)
                    if not 0 <= old <= new <= node.size:
                        return self._problem("bad-index")
                    hashes = [base64.b64encode(h).decode() for h in node.tree.consistency(old, new)]
                    body = json.dumps({"old": old, "new": new, "hashes": hashes}).encode()
                    return self._send(200, body, "application/json")
                return self._problem("not-found")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def node() -> Iterator[FakeNode]:
    fake = FakeNode()
    try:
        yield fake
    finally:
        fake.close()


def poll(fake: FakeNode, tmp_path: Path, lines: list[str], policy: TrustPolicy = POLICY) -> int:
    return follow(
        NodeClient(fake.url), policy, [PAK_ORIGIN], state_dir=tmp_path / "state",
        evidence_dir=tmp_path / "evidence", interval=0.01, polls=1, out=lines.append, err=lines.append,
    )  # fmt: skip


def test_first_use_then_consistent_growth(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    assert poll(node, tmp_path, lines) == 0
    assert "trusting first checkpoint: size 5" in lines[-1]
    state = state_path(tmp_path / "state", PAK_ORIGIN)
    assert state.read_bytes() == note(HONEST, 5)
    node.size = 9
    assert poll(node, tmp_path, lines) == 0
    assert "consistent 5 -> 9" in lines[-1] and "quorum-final" in lines[-1]
    assert state.read_bytes() == note(HONEST, 9)
    assert poll(node, tmp_path, lines) == 0
    assert "unchanged" in lines[-1]
    assert not (tmp_path / "evidence").exists()


def test_a_forked_log_raises_the_alarm_with_evidence(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    assert poll(node, tmp_path, lines) == 0  # honest size 5 is now trusted
    node.tree, node.size = FORK, 8  # the same log key signs a tree that rewrote receipt 4
    assert poll(node, tmp_path, lines) == EXIT_ALARM
    assert lines[-1].startswith("ALARM: inconsistent-checkpoints: ")
    assert f"old 5/{HONEST.root(5).hex()}" in lines[-1] and f"new 8/{FORK.root(8).hex()}" in lines[-1]
    [evidence_file] = (tmp_path / "evidence").iterdir()
    evidence = json.loads(evidence_file.read_text())
    assert evidence["type"] == EVIDENCE_TYPE and evidence["reason"] == "inconsistent-checkpoints"
    assert evidence["origin"] == PAK_ORIGIN
    old = open_followed_checkpoint(evidence["old"]["checkpoint"].encode(), POLICY, PAK_ORIGIN)
    new = open_followed_checkpoint(evidence["new"]["checkpoint"].encode(), POLICY, PAK_ORIGIN)
    assert (old.checkpoint.size, new.checkpoint.size) == (5, 8)  # both signed by the log: offline-checkable
    proof = [base64.b64decode(h) for h in evidence["consistency_proof"]]
    with pytest.raises(Exception) as info:
        check_extends(old, new, proof)
    assert getattr(info.value, "reason", None) == "inconsistent-checkpoints"
    assert state_path(tmp_path / "state", PAK_ORIGIN).read_bytes() == note(HONEST, 5)  # state unchanged


def test_same_size_other_root_is_a_fork(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    assert poll(node, tmp_path, lines) == 0
    node.tree = FORK
    assert poll(node, tmp_path, lines) == EXIT_ALARM
    assert lines[-1].startswith("ALARM: checkpoint-fork: ")
    # The evidence file carries the network's log-equivocation evidence: a node verifies it and halts.
    [evidence_file] = (tmp_path / "evidence").iterdir()
    carried = json.loads(evidence_file.read_text())["log_equivocation"]
    log_keys = {entry.origin: entry.key for entry in POLICY.logs}
    verified = verify_evidence(carried, log_keys=log_keys, now=0, window=1, max_skew=2**40)
    assert (verified.kind, verified.offender) == ("log-equivocation", PAK_ORIGIN)


def test_a_node_behind_is_not_an_alarm_but_a_fork_behind_is(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    node.size = 7
    assert poll(node, tmp_path, lines) == 0
    node.size = 6
    assert poll(node, tmp_path, lines) == 0
    assert "node is behind (6 < 7)" in lines[-1]
    node.size, node.override = 7, note(HONEST, 6)  # latest shows 6; at our size 7 it shows a fork
    node.tree = FORK
    assert poll(node, tmp_path, lines) == EXIT_ALARM
    assert lines[-1].startswith("ALARM: checkpoint-fork: ")


def test_more_cosignatures_on_the_same_tree_are_kept(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    node.override = note(HONEST, 5, cosigned=False)
    assert poll(node, tmp_path, lines) == 0
    assert "not final" in lines[-1]
    node.override = None
    assert poll(node, tmp_path, lines) == 0
    assert "unchanged" in lines[-1] and "quorum-final" in lines[-1]
    assert state_path(tmp_path / "state", PAK_ORIGIN).read_bytes() == note(HONEST, 5)


def test_a_bad_answer_is_an_error_not_an_alarm(node: FakeNode, tmp_path: Path) -> None:
    lines: list[str] = []
    assert poll(node, tmp_path, lines) == 0
    forged = bytearray(note(HONEST, 9))
    forged[-10] ^= 1
    node.size, node.override = 9, bytes(forged)
    assert poll(node, tmp_path, lines) == 1
    assert lines[-1].startswith(f"error: {PAK_ORIGIN}: ")
    assert state_path(tmp_path / "state", PAK_ORIGIN).read_bytes() == note(HONEST, 5)
    assert not (tmp_path / "evidence").exists()


def test_unreachable_node(tmp_path: Path) -> None:
    lines: list[str] = []
    fake = FakeNode()
    url = fake.url
    fake.close()
    status = follow(
        NodeClient(url, timeout=2), POLICY, [PAK_ORIGIN], state_dir=tmp_path, evidence_dir=tmp_path,
        interval=0.01, polls=2, out=lines.append, err=lines.append,
    )  # fmt: skip
    assert status == 1
    assert all("unreachable" in line for line in lines) and len(lines) == 2


def test_cli_follow_once_and_alarm(
    node: FakeNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text(POLICY.to_tlog_policy())
    argv = ["follow", "--node", node.url, "--policy", str(policy), "--state", str(tmp_path / "s")]
    assert cli.main([*argv, "--origin", PAK_ORIGIN, "--once"]) == 0
    assert "trusting first checkpoint" in capsys.readouterr().out
    node.tree, node.size = FORK, 9
    assert cli.main([*argv, "--origin", PAK_ORIGIN, "--polls", "3", "--interval", "0.01"]) == EXIT_ALARM
    out = capsys.readouterr().out
    assert "ALARM: inconsistent-checkpoints" in out
    assert list((tmp_path / "s" / "evidence").iterdir())
    assert cli.main([*argv, "--origin", "nobody", "--once"]) == 1
    assert "REJECTED: unknown-origin" in capsys.readouterr().err
    bad_url = ["follow", "--node", "127.0.0.1:1", "--policy", str(policy), "--state", str(tmp_path / "t")]
    assert cli.main([*bad_url, "--once"]) == 1
    assert capsys.readouterr().err.startswith("REJECTED: bad-url: ")
