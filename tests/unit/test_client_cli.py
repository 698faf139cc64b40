"""``sez-node init``, ``peer add``, ``submit``, ``status``, ``proof``.

The API commands run against a real HTTP server: the node's Starlette app over a real
``LogStore`` with ``LogWriter``s, served by hypercorn on an OS-chosen loopback port inside the
test's trio loop, while the CLI (synchronous httpx) runs in a worker thread.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from light import cli as light_cli
from node.api import ApiContext, build_app
from node.cli import main
from node.config import ConfigError, load_config
from node.keyfile import load_signing_key
from node.p2p.identity import load_identity, peer_id_of
from node.writer import LogWriter
from protocol.errors import LocalProtocolError
from protocol.jcs import canonical
from protocol.keys import SigningKey, VerifierKey
from protocol.light import verify_receipt_bundle
from protocol.receipts import Receipt, verify_receipt
from store import LogStore, StoreError

PAK_KSA = "sez.gov.pk/corridor/PAK-KSA"
KSA_PAK = "sez.gov.sa/corridor/PAK-KSA"
UAE_PAK = "sez.gov.ae/corridor/PAK-UAE"
CLI_DEADLINE = 30


def transfer(i: int, amount: str | None = None) -> dict[str, Any]:
    return {
        "kind": "transfer",
        "payload": {
            "transfer_id": f"t-{i}",
            "sender": {"entity_id": "a", "jurisdiction": "PAK"},
            "receiver": {"entity_id": "b", "jurisdiction": "SAU"},
            "currency": "PKR",
            "amount": amount if amount is not None else str(1000 + i),
        },
    }


def jsonl(*items: Any) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def run_in_thread(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a worker thread so that the server in this trio loop keeps serving."""
    with trio.fail_after(CLI_DEADLINE):
        status = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def init(capsys: pytest.CaptureFixture[str], out: Path, jurisdiction: str, *extra: str) -> dict[str, Any]:
    status, stdout, err = run(capsys, "init", "--jurisdiction", jurisdiction, "--out", str(out), *extra)
    assert status == 0, err
    printed: dict[str, Any] = json.loads(stdout)
    return printed


def set_http(config_path: Path, http: str) -> None:
    document = tomllib.loads(config_path.read_text())
    document["node"]["http"] = http
    config_path.write_text(tomli_w.dumps(document))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- init and peer add ---------------------------------------------------------------------------


def test_init_writes_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pak"
    printed = init(capsys, out, "PAK")
    assert set(printed) == {"config", "jurisdiction", "peer_id", "listen", "http", "origins"}
    assert printed["config"] == str((out / "node.toml").resolve())
    assert printed["jurisdiction"] == "PAK"
    for name in ("signing.key", "api.token", "identity.key"):
        assert (out / name).stat().st_mode & 0o777 == 0o600, name
    peer_id = peer_id_of(load_identity(out / "identity.key"))
    assert printed["peer_id"] == peer_id
    assert printed["listen"] == f"/ip4/127.0.0.1/tcp/7101/p2p/{peer_id}"
    assert printed["http"] == "127.0.0.1:8101"
    seed = load_signing_key(out / "signing.key").seed
    assert set(printed["origins"]) == {"PAK-KSA", "PAK-UAE", "PAK-CHN"}
    for corridor_id, entry in printed["origins"].items():
        origin = f"sez.gov.pk/corridor/{corridor_id}"
        assert entry == {"origin": origin, "vkey": SigningKey(origin, seed).verifier().to_vkey()}
    document = tomllib.loads((out / "node.toml").read_text())
    assert document["node"]["listen"] == "/ip4/127.0.0.1/tcp/7101"
    assert document["node"]["identity_key"] == "identity.key"
    counterparties = {c["id"]: c["counterparty_origin"] for c in document["corridors"]}
    assert counterparties == {
        "PAK-KSA": KSA_PAK,
        "PAK-UAE": UAE_PAK,
        "PAK-CHN": "sez.gov.cn/corridor/PAK-CHN",
    }
    assert all(c["peers"] == [] for c in document["corridors"])


@pytest.mark.parametrize(
    ("jurisdiction", "corridors", "p2p", "http"),
    [("KSA", ["PAK-KSA"], 7102, 8102), ("UAE", ["PAK-UAE"], 7103, 8103), ("CHN", ["PAK-CHN"], 7104, 8104)],
)
def test_init_defaults_follow_the_jurisdiction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], jurisdiction: str, corridors: list[str], p2p: int,
    http: int,
) -> None:  # fmt: skip
    printed = init(capsys, tmp_path / "n", jurisdiction)
    assert sorted(printed["origins"]) == corridors
    assert printed["listen"].startswith(f"/ip4/127.0.0.1/tcp/{p2p}/p2p/12D3KooW")
    assert printed["http"] == f"127.0.0.1:{http}"


def test_init_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed = init(
        capsys, tmp_path / "n", "PAK", "--listen", "/ip4/0.0.0.0/tcp/9000", "--http", "127.0.0.1:9001",
        "--corridor", "PAK-UAE",
    )  # fmt: skip
    assert printed["listen"] == f"/ip4/0.0.0.0/tcp/9000/p2p/{printed['peer_id']}"
    assert printed["http"] == "127.0.0.1:9001"
    assert list(printed["origins"]) == ["PAK-UAE"]


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pak"
    init(capsys, out, "PAK")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    status, stdout, err = run(capsys, "init", "--jurisdiction", "PAK", "--out", str(out))
    assert status == 1
    assert stdout == ""
    assert err.startswith("sez-node: file-exists: ") and "refusing to overwrite" in err
    assert err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_init_refuses_a_partial_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pak"
    out.mkdir()
    (out / "identity.key").write_bytes(b"old")
    status, _, err = run(capsys, "init", "--jurisdiction", "PAK", "--out", str(out))
    assert status == 1
    assert "sez-node: file-exists: " in err
    assert sorted(p.name for p in out.iterdir()) == ["identity.key"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--corridor", "KSA-UAE"], "bad-corridor"),
        (["--corridor", "PAK-XYZ"], "bad-corridor"),
        (["--corridor", "PAK-KSA", "--corridor", "PAK-KSA"], "bad-corridor"),
        (["--listen", "127.0.0.1:7101"], "bad-listen"),
        (["--http", "localhost"], "bad-http"),
        (["--http", "127.0.0.1:99999"], "bad-http"),
    ],
)
def test_init_refuses_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], reason: str
) -> None:
    out = tmp_path / "pak"
    status, _, err = run(capsys, "init", "--jurisdiction", "PAK", "--out", str(out), *extra)
    assert status == 1
    assert err.startswith(f"sez-node: {reason}: "), err
    assert not (out / "node.toml").exists()


def test_init_unknown_jurisdiction_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["init", "--jurisdiction", "XYZ", "--out", str(tmp_path / "n")])
    assert exc.value.code == 2


@dataclass
class Nodes:
    pak: Path
    ksa: Path
    uae: Path
    printed: dict[str, dict[str, Any]]


@pytest.fixture
def fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Nodes:
    """PAK (in PAK-KSA and PAK-UAE), KSA and UAE, just initialised."""
    printed = {
        "PAK": init(capsys, tmp_path / "pak", "PAK", "--corridor", "PAK-KSA", "--corridor", "PAK-UAE"),
        "KSA": init(capsys, tmp_path / "ksa", "KSA"),
        "UAE": init(capsys, tmp_path / "uae", "UAE"),
    }
    return Nodes(tmp_path / "pak/node.toml", tmp_path / "ksa/node.toml", tmp_path / "uae/node.toml", printed)


def peer_add(capsys: pytest.CaptureFixture[str], config: Path, corridor: str, other: dict[str, Any]) -> None:
    status, _, err = run(
        capsys, "peer", "add", "--config", str(config), "--corridor", corridor,
        "--vkey", other["origins"][corridor]["vkey"], "--peer", other["listen"],
    )  # fmt: skip
    assert status == 0, err


@pytest.fixture
def nodes(fresh: Nodes, capsys: pytest.CaptureFixture[str]) -> Nodes:
    """As ``fresh``, with PAK's two corridors filled in by ``peer add``."""
    peer_add(capsys, fresh.pak, "PAK-KSA", fresh.printed["KSA"])
    peer_add(capsys, fresh.pak, "PAK-UAE", fresh.printed["UAE"])
    return fresh


def test_run_time_loading_refuses_the_placeholder(fresh: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(fresh.pak)
    assert exc.value.where == "corridors[0].counterparty_vkey"
    assert "sez-node peer add" in exc.value.message
    status, _, err = run(capsys, "status", "--config", str(fresh.pak))
    assert status == 1
    assert err.startswith("sez-node: bad-config: corridors[0].counterparty_vkey: ")
    assert "is not set yet; run `sez-node peer add" in err


def test_peer_add_completes_the_config(fresh: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    ksa, uae = fresh.printed["KSA"], fresh.printed["UAE"]
    args = [
        "peer", "add", "--config", str(fresh.pak), "--corridor", "PAK-KSA",
        "--vkey", ksa["origins"]["PAK-KSA"]["vkey"], "--peer", ksa["listen"],
    ]  # fmt: skip
    status, out, err = run(capsys, *args)
    assert status == 0, err
    printed = json.loads(out)
    assert printed["pending"] == ["PAK-UAE"]
    assert printed["peers"] == [ksa["listen"]]
    with pytest.raises(ConfigError, match=r"corridors\[1\]\.counterparty_vkey"):
        load_config(fresh.pak)

    status, out, err = run(capsys, *args)  # the same again changes nothing
    assert status == 0, err
    assert json.loads(out)["peers"] == [ksa["listen"]]

    peer_add(capsys, fresh.pak, "PAK-UAE", uae)
    config = load_config(fresh.pak)
    pak_ksa, pak_uae = config.corridors
    assert pak_ksa.counterparty_key == VerifierKey.from_vkey(ksa["origins"]["PAK-KSA"]["vkey"])
    assert pak_ksa.peers == (ksa["listen"],)
    assert pak_ksa.peer_ids == (ksa["peer_id"],)
    assert pak_uae.counterparty_key.name == UAE_PAK
    assert pak_uae.peer_ids == (uae["peer_id"],)
    assert (
        config.signing_key(pak_ksa.origin).verifier().to_vkey()
        == fresh.printed["PAK"]["origins"]["PAK-KSA"]["vkey"]
    )


def test_peer_add_refusals(fresh: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    ksa, uae, pak = fresh.printed["KSA"], fresh.printed["UAE"], fresh.printed["PAK"]
    ksa_vkey = ksa["origins"]["PAK-KSA"]["vkey"]
    other = SigningKey.generate(KSA_PAK).verifier().to_vkey()
    cases = [
        ("PAK-KSA", "garbage", ksa["listen"], "bad-vkey", "verifier key 'garbage'"),
        ("PAK-KSA", ksa_vkey[:-2] + "AA", ksa["listen"], "bad-vkey", "--vkey"),
        ("PAK-UAE", ksa_vkey, uae["listen"], "bad-vkey", f"is {UAE_PAK!r}"),
        ("PAK-KSA", pak["origins"]["PAK-KSA"]["vkey"], ksa["listen"], "bad-vkey", "counterparty's log"),
        ("PAK-CHN", ksa_vkey, ksa["listen"], "unknown-corridor", "has no corridor 'PAK-CHN'"),
        ("PAK-KSA", ksa_vkey, "/ip4/127.0.0.1/tcp/7102", "bad-peer", "/p2p/PEER_ID"),
        ("PAK-KSA", ksa_vkey, "/ip4/127.0.0.1/tcp/7102/p2p/12D3KooWnope", "bad-peer", "no valid public key"),
        ("PAK-KSA", ksa_vkey, pak["listen"], "bad-peer", "this node's own peer id"),
    ]
    before = fresh.pak.read_bytes()
    for corridor, vkey, peer, reason, words in cases:
        status, out, err = run(
            capsys, "peer", "add", "--config", str(fresh.pak), "--corridor", corridor, "--vkey", vkey,
            "--peer", peer,
        )  # fmt: skip
        assert status == 1, (corridor, vkey, peer)
        assert out == ""
        assert err.startswith(f"sez-node: {reason}: "), err
        assert words in err, err
        assert err.count("\n") == 1
        assert fresh.pak.read_bytes() == before

    peer_add(capsys, fresh.pak, "PAK-KSA", ksa)
    mode = fresh.pak.stat().st_mode
    status, _, err = run(
        capsys, "peer", "add", "--config", str(fresh.pak), "--corridor", "PAK-KSA", "--vkey", other,
        "--peer", ksa["listen"],
    )  # fmt: skip
    assert status == 1
    assert err.startswith("sez-node: vkey-exists: corridors[0].counterparty_vkey is already")
    assert fresh.pak.stat().st_mode == mode


def test_peer_add_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "peer", "add", "--config", str(tmp_path / "none.toml"), "--corridor", "PAK-KSA",
        "--vkey", "x", "--peer", "y",
    )  # fmt: skip
    assert status == 1
    assert err.startswith("sez-node: bad-config: ") and "does not exist" in err


# --- against a running API -----------------------------------------------------------------------


class StoreStatus:
    """A trivial status source: the head of both logs of the corridor."""

    def __init__(self, store: LogStore, origins: dict[str, tuple[str, str]]) -> None:
        self.store = store
        self.origins = origins

    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        if corridor_id not in self.origins:
            raise LocalProtocolError("unknown-corridor", f"no corridor {corridor_id!r}")
        result: dict[str, Any] = {"corridor": corridor_id}
        for role, origin in zip(("ours", "theirs"), self.origins[corridor_id], strict=True):
            try:
                size = self.store.head(origin).size
            except StoreError:
                size = 0
            result[role] = {"origin": origin, "size": size}
        return result


@dataclass
class Running:
    nodes: Nodes
    config: Path
    url: str
    store: LogStore
    pak_key: SigningKey
    ksa_key: SigningKey
    ksa_writer: LogWriter
    impostor_writer: LogWriter


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        with trio.fail_after(10):
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.02)


@pytest.fixture
async def node(nodes: Nodes) -> AsyncIterator[Running]:
    """PAK's API on an OS-chosen port, writing PAK-KSA; the store also holds KSA's log of PAK-KSA
    (the real KSA key) and a PAK-UAE log under UAE's origin written by an impostor key."""
    config = load_config(nodes.pak)
    pak_key = config.signing_key(PAK_KSA)
    ksa_key = SigningKey(KSA_PAK, load_signing_key(nodes.ksa.parent / "signing.key").seed)
    with LogStore(config.data_dir) as store:
        pak_writer = LogWriter(store, "PAK-KSA", pak_key)
        ksa_writer = LogWriter(store, "PAK-KSA", ksa_key)
        impostor_writer = LogWriter(store, "PAK-UAE", SigningKey.generate(UAE_PAK))
        status = StoreStatus(
            store, {"PAK-KSA": (PAK_KSA, KSA_PAK), "PAK-UAE": ("sez.gov.pk/corridor/PAK-UAE", UAE_PAK)}
        )
        app: Any = build_app(  # Starlette is an ASGI app; hypercorn's Framework union does not say so
            ApiContext(store=store, writers={"PAK-KSA": pak_writer}, token=config.api_token(), status=status)
        )
        hyper = HyperConfig()
        hyper.bind = ["127.0.0.1:0"]
        hyper.accesslog = None
        hyper.errorlog = None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for writer in (pak_writer, ksa_writer, impostor_writer):
                await nursery.start(writer.run)
            binds = await nursery.start(partial(serve, app, hyper, shutdown_trigger=stop.wait))
            url = binds[0]
            assert url.startswith("http://127.0.0.1:")
            set_http(nodes.pak, url.removeprefix("http://"))
            await wait_ready(url)
            yield Running(nodes, nodes.pak, url, store, pak_key, ksa_key, ksa_writer, impostor_writer)
            stop.set()
            nursery.cancel_scope.cancel()


async def test_submit_prints_durable_receipts(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0), "", transfer(1), transfer(2)))
    status, out, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-KSA", str(lines)
    )
    assert (status, err) == (0, "")
    printed = out.splitlines()
    assert len(printed) == 3
    for sequence, line in enumerate(printed):
        receipt = Receipt.from_bytes(line.encode())
        assert canonical(json.loads(line)) == line.encode()  # canonical JSON, as stored
        assert receipt.sequence == sequence
        assert receipt.origin == PAK_KSA
        verify_receipt(receipt, node.pak_key.verifier())
        assert node.store.receipt(PAK_KSA, sequence) == line.encode()  # acknowledged means durable
    assert node.store.head(PAK_KSA).size == 3


async def test_submit_from_stdin(
    node: Running, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(jsonl(transfer(0), transfer(1)).encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    status, out, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-KSA", "-"
    )
    assert (status, err) == (0, "")
    assert [Receipt.from_bytes(line.encode()).sequence for line in out.splitlines()] == [0, 1]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{not json", "bad-json"),
        (json.dumps({"kind": "transfer"}), "bad-request"),
        (json.dumps({"kind": "teleport", "payload": {}}), "unknown-kind"),
        (json.dumps(transfer(9, amount="-1")), "schema-violation"),
        ('{"kind": "transfer", "payload": {"amount": 1.5}}', "float-refused"),
    ],
)
async def test_submit_stops_at_the_first_refusal(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, reason: str
) -> None:
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0), "", bad, transfer(2)))
    status, out, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-KSA", str(lines)
    )
    assert status == 1
    assert len(out.splitlines()) == 1  # the first line's receipt
    assert err.startswith(f"sez-node: {reason}: "), err
    assert err.endswith(" (line 3)\n"), err
    assert err.count("\n") == 1
    assert node.store.head(PAK_KSA).size == 1  # nothing after the refusal was sent


async def test_submit_with_a_wrong_token(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = node.config.parent / "api.token"
    token.write_text("w" * 43 + "\n")
    os.chmod(token, 0o600)
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0)))
    status, out, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-KSA", str(lines)
    )
    assert (status, out) == (1, "")
    assert err == "sez-node: unauthorized: a valid bearer token is required (line 1)\n"
    assert node.store.head(PAK_KSA).size == 0


async def test_submit_refusals_before_sending(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    cases = [
        (["--corridor", "PAK-KSA", str(empty)], "sez-node: empty: "),
        (["--corridor", "PAK-KSA", str(tmp_path / "none.jsonl")], "sez-node: no-file: "),
        (["--corridor", "PAK-CHN", str(empty)], "sez-node: unknown-corridor: "),
    ]
    for extra, start in cases:
        status, out, err = await run_in_thread(capsys, "submit", "--config", str(node.config), *extra)
        assert (status, out) == (1, "")
        assert err.startswith(start), err
    # a corridor of the config that the node writes no log in: the node's refusal
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0)))
    status, _, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-UAE", str(lines)
    )
    assert status == 1
    assert err == "sez-node: unknown-corridor: this node writes no log in corridor 'PAK-UAE' (line 1)\n"


async def test_status(node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await node.ksa_writer.submit("transfer", transfer(0)["payload"])
    status, out, err = await run_in_thread(capsys, "status", "--config", str(node.config))
    assert (status, err) == (0, "")
    everything = json.loads(out)
    assert set(everything) == {"PAK-KSA", "PAK-UAE"}
    assert everything["PAK-KSA"] == {
        "corridor": "PAK-KSA",
        "ours": {"origin": PAK_KSA, "size": 0},
        "theirs": {"origin": KSA_PAK, "size": 1},
    }
    status, out, err = await run_in_thread(
        capsys, "status", "--config", str(node.config), "--corridor", "PAK-UAE"
    )
    assert (status, err) == (0, "")
    assert list(json.loads(out)) == ["PAK-UAE"]
    status, out, err = await run_in_thread(
        capsys, "status", "--config", str(node.config), "--corridor", "PAK-CHN"
    )
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: unknown-corridor: ")


async def test_proof_of_our_own_receipt(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0), transfer(1), transfer(2)))
    status, _, err = await run_in_thread(
        capsys, "submit", "--config", str(node.config), "--corridor", "PAK-KSA", str(lines)
    )
    assert status == 0, err
    bundle = tmp_path / "proof.txt"
    base = ["proof", "--config", str(node.config), "--corridor", "PAK-KSA", "--origin", PAK_KSA]
    status, out, err = await run_in_thread(capsys, *base, "--sequence", "1", "--out", str(bundle))
    assert (status, err) == (0, "")
    printed = json.loads(out)
    assert printed["sequence"] == 1 and printed["size"] == 3 and printed["origin"] == PAK_KSA
    verdict = verify_receipt_bundle(bundle.read_bytes(), node.pak_key.verifier())
    assert verdict.receipt.receipt.sequence == 1
    assert verdict.checkpoint.size == 3
    assert light_cli.main(["verify", str(bundle), "--log-key", node.pak_key.verifier().to_vkey()]) == 0
    capsys.readouterr()

    # against an older checkpoint: each single-line submission was its own batch and checkpoint
    status, out, err = await run_in_thread(
        capsys, *base, "--sequence", "1", "--size", "2", "--out", str(bundle)
    )
    assert (status, err) == (0, "")
    assert verify_receipt_bundle(bundle.read_bytes(), node.pak_key.verifier()).checkpoint.size == 2

    missing = tmp_path / "missing.txt"
    status, out, err = await run_in_thread(capsys, *base, "--sequence", "7", "--out", str(missing))
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: bad-index: "), err
    assert not missing.exists()


async def test_proof_of_the_counterpartys_receipt(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        await node.ksa_writer.submit("transfer", transfer(i)["payload"])
    bundle = tmp_path / "ksa.txt"
    status, out, err = await run_in_thread(
        capsys, "proof", "--config", str(node.config), "--corridor", "PAK-KSA", "--origin", KSA_PAK,
        "--sequence", "0", "--out", str(bundle),
    )  # fmt: skip
    assert (status, err) == (0, "")
    assert json.loads(out)["origin"] == KSA_PAK
    ksa_vkey = node.nodes.printed["KSA"]["origins"]["PAK-KSA"]["vkey"]
    verify_receipt_bundle(bundle.read_bytes(), VerifierKey.from_vkey(ksa_vkey))
    assert light_cli.main(["verify", str(bundle), "--log-key", ksa_vkey]) == 0


async def test_proof_refuses_a_bundle_that_does_not_verify(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await node.impostor_writer.submit("transfer", transfer(0)["payload"])
    bundle = tmp_path / "uae.txt"
    status, out, err = await run_in_thread(
        capsys, "proof", "--config", str(node.config), "--corridor", "PAK-UAE", "--origin", UAE_PAK,
        "--sequence", "0", "--out", str(bundle),
    )  # fmt: skip
    assert (status, out) == (1, "")
    assert err.startswith("sez-node: "), err
    assert "does not verify under" in err and f"{bundle} not written" in err
    assert err.count("\n") == 1
    assert not bundle.exists()
    assert not list(tmp_path.glob(".uae.txt.*"))  # no temporary file left behind


async def test_proof_of_an_origin_outside_the_corridor(
    node: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = await run_in_thread(
        capsys, "proof", "--config", str(node.config), "--corridor", "PAK-KSA", "--origin", UAE_PAK,
        "--sequence", "0", "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert status == 1
    assert err.startswith("sez-node: unknown-origin: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--corridor", "PAK-KSA"],
        ["submit", "--corridor", "PAK-KSA", "LINES"],
        ["proof", "--corridor", "PAK-KSA", "--origin", PAK_KSA, "--sequence", "0", "--out", "BUNDLE"],
    ],
)
def test_unreachable_node(
    nodes: Nodes, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    port = closed_port()
    set_http(nodes.pak, f"127.0.0.1:{port}")
    lines = tmp_path / "t.jsonl"
    lines.write_text(jsonl(transfer(0)))
    argv = [
        {"LINES": str(lines), "BUNDLE": str(tmp_path / "b")}.get(a, a) for a in argv
    ]  # fmt: skip
    status, out, err = run(capsys, argv[0], "--config", str(nodes.pak), *argv[1:])
    assert (status, out) == (1, "")
    assert err == f"sez-node: unreachable: node API at http://127.0.0.1:{port} is not answering\n"
    assert not (tmp_path / "b").exists()
