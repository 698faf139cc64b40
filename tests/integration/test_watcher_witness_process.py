"""A real ``sez-watcher run`` process as a C2SP tlog-witness: the add-checkpoint matrix over HTTP.

The watcher follows one log whose signing key the test holds (its libp2p peer is a port nobody
listens on: the log reaches it only through ``POST /add-checkpoint``). Every status code of the
spec is provoked on the running process; a validly signed checkpoint inconsistent with the one it
cosigned is refused and kept as evidence; after a SIGKILL the restarted process holds the same
protection record and evidence and still refuses to go backwards; bad requests never stop it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol.checkpoints import Checkpoint, parse_checkpoint, sign_checkpoint, verify_cosignatures
from protocol.keys import SigningKey
from protocol.notes import format_note, parse_signature_lines, with_signatures
from tests.integration.netharness import Network, _child_env, free_ports
from tests.integration.test_watcher_process import WatcherProcess, _watcher_argv
from tests.unit.test_watcher import FORK, LOG, ORIGIN, OTHER, TREE, body, cp, note
from watcher.config import add_followed_log, load_config, write_initial_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NOBODY = "/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWFfH4YZbe97YEzKChY7fzEirpULdqZjYhGoauzfXoB4oQ"


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[WatcherProcess]:
    p2p_port, http_port, unused = free_ports(3)
    config = write_initial_config(
        tmp_path / "watcher", "w1.example", f"/ip4/127.0.0.1/tcp/{p2p_port}", f"127.0.0.1:{http_port}"
    )
    add_followed_log(
        config, corridor="PAK-KSA", origin=ORIGIN, vkey=LOG.verifier().to_vkey(),
        peers=[NOBODY.format(port=unused)],
    )  # fmt: skip
    network = Network(tmp_path / "net", {})
    process = WatcherProcess(network.child("watcher"), config, http_port)
    try:
        assert process.start()["event"] == "ready"
        yield process
    finally:
        network.close()
        process.http.close()


def _add(watcher: WatcherProcess, data: bytes) -> httpx.Response:
    return watcher.http.post("/add-checkpoint", content=data)


def _export(watcher: WatcherProcess) -> dict[str, object]:
    out = watcher.config.parent / "export.json"
    done = subprocess.run(
        [*_watcher_argv(), "protection", "export", "--config", str(watcher.config), "--out", str(out)],
        capture_output=True, text=True, env=_child_env(), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document: dict[str, object] = json.loads(out.read_text())
    return document


def test_add_checkpoint_matrix_on_a_running_watcher(watcher: WatcherProcess) -> None:
    vkey = load_config(watcher.config).cosigner_key()
    elsewhere = format_note(
        sign_checkpoint(
            Checkpoint(origin="elsewhere", size=1, root=bytes(32)), SigningKey("elsewhere", bytes(32))
        )
    )
    for data, status in [
        (b"nonsense", 400),
        (b"\xff" * 70_000, 400),  # oversized / not a request
        (body(0, elsewhere), 404),
        (body(0, note(10, key=OTHER)), 403),
        (body(20, note(10)), 400),  # old size larger than the checkpoint
    ]:
        answer = _add(watcher, data)
        assert answer.status_code == status, (status, answer.text)
    assert watcher.state()["logs"][ORIGIN]["size"] == 0

    first = _add(watcher, body(0, note(10)))
    assert first.status_code == 200, first.text
    cosigned = with_signatures(parse_checkpoint(note(10))[1], parse_signature_lines(first.content))
    assert set(verify_cosignatures(cosigned, cp(10), [vkey])) == {"w1.example"}

    stale = _add(watcher, body(0, note(25), TREE.consistency(0, 25)))
    assert stale.status_code == 409 and stale.text == "10\n"
    assert stale.headers["content-type"].startswith("text/x.tlog.size")
    bad_proof = _add(watcher, body(10, note(25), TREE.consistency(10, 25)[:-1]))
    assert bad_proof.status_code == 422
    # Inconsistent with what it cosigned: a fork of the same log, validly signed, with the proof of
    # the honest tree (no proof from 10 can reach the fork's root).
    fork = _add(watcher, body(10, note(30, tree=FORK), TREE.consistency(10, 30)))
    assert fork.status_code == 422
    same_size_fork = _add(watcher, body(10, note(10, tree=FORK)))
    assert same_size_fork.status_code == 409 and same_size_fork.text == "10\n"  # the C2SP spec's code
    state = watcher.state()["logs"][ORIGIN]
    assert state["size"] == 10 and state["evidence"] == 3, state

    second = _add(watcher, body(10, note(25), TREE.consistency(10, 25)))
    assert second.status_code == 200
    assert watcher.state()["logs"][ORIGIN]["size"] == 25

    # SIGKILL and restart: the record, the cosigned history and the evidence survive.
    watcher.child.kill()
    assert watcher.start()["event"] == "ready"
    state = watcher.state()["logs"][ORIGIN]
    assert (state["size"], state["cosigned"], state["evidence"]) == (25, 2, 3), state
    assert _add(watcher, body(10, note(30), TREE.consistency(10, 30))).status_code == 409  # never backwards
    assert _add(watcher, body(25, note(20))).status_code == 400  # a smaller tree
    document = _export(watcher)
    entry = document["logs"][ORIGIN]  # type: ignore[index]
    assert [parse_checkpoint(n.encode())[0].size for n in entry["cosigned"]] == [10, 25]
    kept = {item["note"].encode() for item in entry["evidence"]}
    assert kept == {note(25), note(30, tree=FORK), note(10, tree=FORK)}
    # And it still serves: the next consistent checkpoint is cosigned.
    assert _add(watcher, body(25, note(30), TREE.consistency(25, 30))).status_code == 200
