"""sez-watcher: configuration errors, slashing-protection export/import, and POST /add-checkpoint."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.config import ConfigError
from node.p2p import Verdict
from protocol.checkpoints import Checkpoint, parse_checkpoint, sign_checkpoint, verify_cosignatures
from protocol.errors import PeerProtocolError
from protocol.evidence import verify_evidence
from protocol.keys import SigningKey
from protocol.notes import format_note, parse_signature_lines, with_signatures
from protocol.wire import CheckpointAnnouncement, CosignatureAnnouncement, decode, encode
from store import LogStore
from tests.reference_rfc6962 import ReferenceTree
from watcher.cli import main as cli_main
from watcher.config import add_followed_log, load_config, write_initial_config
from watcher.daemon import LogFollower, Watcher, build_app
from watcher.protection import EXPORT_FORMAT, Protection, ProtectionError

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
LOG = SigningKey(ORIGIN, bytes(range(32)))
OTHER = SigningKey(ORIGIN, bytes(range(1, 33)))
TREE = ReferenceTree([bytes([i]) * 32 for i in range(40)])
FORK = ReferenceTree([bytes([i]) * 32 for i in range(5)] + [bytes([0xEE]) * 32] * 35)
PEER = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWFfH4YZbe97YEzKChY7fzEirpULdqZjYhGoauzfXoB4oQ"


def cp(size: int, tree: ReferenceTree = TREE) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=size, root=tree.root(size))


def note(size: int, key: SigningKey = LOG, tree: ReferenceTree = TREE) -> bytes:
    return format_note(sign_checkpoint(cp(size, tree), key))


def body(old: int, new_note: bytes, proof: list[bytes] | None = None) -> bytes:
    lines = [f"old {old}".encode()] + [base64.b64encode(h) for h in (proof or [])]
    return b"\n".join(lines) + b"\n\n" + new_note


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = write_initial_config(tmp_path / "w", "watcher1.example", "/ip4/127.0.0.1/tcp/0", "127.0.0.1:0")
    add_followed_log(path, corridor="PAK-KSA", origin=ORIGIN, vkey=LOG.verifier().to_vkey(), peers=[PEER])
    return path


@pytest.fixture
def store(config_path: Path) -> Iterator[LogStore]:
    with LogStore(load_config(config_path).data_dir) as opened:
        yield opened


# ------------------------------------------------------------------ config


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('name = "watcher1.example"', 'name = "bad name"', "watcher.name"),
        ('listen = "/ip4/127.0.0.1/tcp/0"', 'listen = "tcp:4001"', "watcher.listen"),
        ('http = "127.0.0.1:0"', 'http = "nowhere"', "watcher.http"),
        ('log_level = "info"', 'log_level = "loud"', "watcher.log_level"),
        ('corridor = "PAK-KSA"', 'corridor = "pak"', "logs[0].corridor"),
        (f'origin = "{ORIGIN}"', 'origin = "someone-else"', "logs[0].vkey"),
        ("/p2p/12D3", "/x/12D3", "logs[0].peers[0]"),
        ('signing_key = "signing.key"', 'signing_key = "missing.key"', "watcher.signing_key"),
    ],
)
def test_config_errors_name_the_field(config_path: Path, old: str, new: str, field: str) -> None:
    _edit(config_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(config_path)
    assert info.value.where == field


def test_config_vkey_must_be_a_log_key(config_path: Path) -> None:
    cosigner = SigningKey(ORIGIN, bytes(32)).verifier(0x04).to_vkey()
    _edit(config_path, LOG.verifier().to_vkey(), cosigner)
    with pytest.raises(ConfigError) as info:
        load_config(config_path)
    assert info.value.where == "logs[0].vkey"


def test_missing_field_and_unknown_field(config_path: Path) -> None:
    _edit(config_path, 'data_dir = "data"\n', "")
    with pytest.raises(ConfigError, match="data_dir"):
        load_config(config_path)
    _edit(config_path, "[watcher]\n", '[watcher]\ndata_dir = "data"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_config(config_path)


def test_follow_refuses_a_duplicate_and_leaves_the_file(config_path: Path) -> None:
    before = config_path.read_text()
    with pytest.raises(ConfigError) as info:
        add_followed_log(
            config_path, corridor="PAK-KSA", origin=ORIGIN, vkey=LOG.verifier().to_vkey(), peers=[PEER]
        )
    assert info.value.where == "logs[1].origin"
    assert config_path.read_text() == before


def test_cli_errors_are_one_line(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "--config", str(config_path.parent / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sez-watcher: bad-config:") and err.count("\n") == 1


# -------------------------------------------------------------- protection


def test_protection_round_trip(config_path: Path, tmp_path: Path, store: LogStore) -> None:
    config = load_config(config_path)
    protection = Protection(store)
    protection.commit_cosigned(cp(10), note(10))
    protection.commit_cosigned(cp(25), note(25))
    assert protection.keep_evidence(ORIGIN, note(25, tree=FORK), "conflict")
    document = protection.export(config.cosigner_key(), [ORIGIN])
    assert document == {
        "format": EXPORT_FORMAT,
        "watcher": config.cosigner_key().to_vkey(),
        "logs": {
            ORIGIN: {
                "size": 25,
                "root": TREE.root(25).hex(),
                "note": note(25).decode(),
                "cosigned": [note(10).decode(), note(25).decode()],
                "evidence": [{"note": note(25, tree=FORK).decode(), "reason": "conflict"}],
            }
        },
    }
    assert json.loads(json.dumps(document)) == document
    with LogStore(tmp_path / "elsewhere") as other:
        moved = Protection(other).import_(document, config.cosigner_key(), config.log_keys)
        assert moved == [ORIGIN]
        assert Protection(other).last(ORIGIN) == cp(25)
        assert Protection(other).last_note(ORIGIN) == note(25)
        assert Protection(other).cosigned_history(ORIGIN) == [note(10), note(25)]
        assert Protection(other).evidence(ORIGIN) == [{"note": note(25, tree=FORK), "reason": "conflict"}]
        # importing the same document again is a no-op
        assert Protection(other).import_(document, config.cosigner_key(), config.log_keys) == []


def test_history_is_kept(store: LogStore) -> None:
    protection = Protection(store)
    for size in (5, 10, 25):
        protection.commit_cosigned(cp(size), note(size))
    protection.commit_cosigned(cp(25), note(25))  # the checkpoint held again: not kept twice
    assert protection.cosigned_history(ORIGIN) == [note(5), note(10), note(25)]
    assert protection.keep_evidence(ORIGIN, note(25, tree=FORK), "equivocation")
    assert not protection.keep_evidence(ORIGIN, note(25, tree=FORK), "equivocation")
    assert not protection.keep_evidence(ORIGIN, note(25, tree=FORK), "another reason")
    assert protection.keep_evidence(ORIGIN, note(10, tree=FORK), "rollback")
    assert [item["note"] for item in protection.evidence(ORIGIN)] == [
        note(25, tree=FORK),
        note(10, tree=FORK),
    ]
    assert protection.last(ORIGIN) == cp(25)


def test_history_is_never_truncated(store: LogStore) -> None:
    """Every cosigned checkpoint stays, in order, however many (the old record kept 1,000)."""
    protection = Protection(store)
    items = [f"checkpoint {i}".encode() for i in range(1500)]
    for item in items:
        assert store.add_witness_history(ORIGIN, "cosigned", item)
    assert store.witness_history_count(ORIGIN, "cosigned") == 1500
    assert protection.cosigned_history(ORIGIN) == items
    assert store.witness_history(ORIGIN, "cosigned", start=1498) == items[1498:]
    assert store.witness_history_count(ORIGIN, "evidence") == 0
    assert store.witness_history(ORIGIN + "x", "cosigned") == []  # a longer origin is another log


def _document(config_path: Path, size: int, tree: ReferenceTree = TREE) -> dict[str, object]:
    vkey = load_config(config_path).cosigner_key().to_vkey()
    entry = {"size": size, "root": tree.root(size).hex(), "note": note(size, tree=tree).decode()}
    return {"format": EXPORT_FORMAT, "watcher": vkey, "logs": {ORIGIN: entry}}


@pytest.mark.parametrize(
    ("size", "tree", "reason"), [(10, TREE, "protection-rollback"), (25, FORK, "protection-conflict")]
)
def test_import_of_an_older_record_is_refused(
    config_path: Path, store: LogStore, size: int, tree: ReferenceTree, reason: str
) -> None:
    config = load_config(config_path)
    protection = Protection(store)
    protection.commit_cosigned(cp(25), note(25))
    before = protection.record(ORIGIN)
    with pytest.raises(ProtectionError) as info:
        protection.import_(_document(config_path, size, tree), config.cosigner_key(), config.log_keys)
    assert info.value.reason == reason and ORIGIN in info.value.message
    assert protection.record(ORIGIN) == before


def test_import_checks_everything_before_writing(config_path: Path, store: LogStore) -> None:
    config = load_config(config_path)
    protection = Protection(store)
    document = _document(config_path, 30)
    logs = document["logs"]
    assert isinstance(logs, dict)
    logs["zzz.example/corridor/PAK-KSA"] = {"size": 1, "root": "00" * 32, "note": "garbage"}
    with pytest.raises(ProtectionError, match="zzz"):
        protection.import_(document, config.cosigner_key(), config.log_keys)
    assert protection.record(ORIGIN) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other/v1"),
        lambda d: d.update(watcher="someone+00000000+BAAA"),
        lambda d: d["logs"][ORIGIN].update(size=11),
        lambda d: d["logs"][ORIGIN].update(root="zz"),
        lambda d: d["logs"][ORIGIN].update(note=note(10, key=OTHER).decode()),
        lambda d: d["logs"][ORIGIN].update(cosigned="not a list"),
        lambda d: d["logs"][ORIGIN].update(cosigned=["garbage"]),
        lambda d: d["logs"][ORIGIN].update(cosigned=[note(5).decode().replace(ORIGIN, "other.example/x", 1)]),
        lambda d: d["logs"][ORIGIN].update(evidence=[{"note": "x"}]),
    ],
)
def test_import_refuses_malformed_documents(config_path: Path, store: LogStore, mutate: object) -> None:
    config = load_config(config_path)
    document = _document(config_path, 10)
    mutate(document)  # type: ignore[operator]
    with pytest.raises(ProtectionError) as info:
        Protection(store).import_(document, config.cosigner_key(), config.log_keys)
    assert info.value.reason == "bad-protection-file"
    assert Protection(store).record(ORIGIN) is None
    assert Protection(store).cosigned_history(ORIGIN) == []


def test_cli_export_import(config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(config_path)
    with LogStore(config.data_dir) as opened:
        Protection(opened).commit_cosigned(cp(25), note(25))
    out = tmp_path / "protection.json"
    assert cli_main(["protection", "export", "--config", str(config_path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["logs"][ORIGIN]["size"] == 25
    out.write_text(json.dumps(_document(config_path, 10)))
    assert cli_main(["protection", "import", "--config", str(config_path), str(out)]) == 1
    assert "protection-rollback" in capsys.readouterr().err
    with LogStore(config.data_dir) as opened:
        assert Protection(opened).last(ORIGIN) == cp(25)


# ---------------------------------------------------------- /add-checkpoint


async def _post(watcher: Watcher, data: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(watcher))
    async with httpx.AsyncClient(transport=transport, base_url="http://watcher") as client:
        return await client.post("/add-checkpoint", content=data)


async def test_add_checkpoint_matrix(config_path: Path, store: LogStore) -> None:
    watcher = Watcher(load_config(config_path), store, now=lambda: 1700000000)
    protection = watcher.protection
    elsewhere = format_note(
        sign_checkpoint(
            Checkpoint(origin="elsewhere", size=1, root=b"\0" * 32), SigningKey("elsewhere", bytes(32))
        )
    )
    assert (await _post(watcher, b"nonsense")).status_code == 400
    assert (await _post(watcher, body(0, elsewhere))).status_code == 404
    assert (await _post(watcher, body(0, note(10, key=OTHER)))).status_code == 403
    assert protection.record(ORIGIN) is None

    first = await _post(watcher, body(0, note(10)))
    assert first.status_code == 200
    assert protection.last(ORIGIN) == cp(10)  # persisted before the answer
    lines = parse_signature_lines(first.content)
    cosigned = with_signatures(parse_checkpoint(note(10))[1], lines)
    assert verify_cosignatures(cosigned, cp(10), [watcher.vkey]) == {"watcher1.example": 1700000000}

    stale = await _post(watcher, body(0, note(25)))
    assert stale.status_code == 409 and stale.text == "10\n"
    assert stale.headers["content-type"].startswith("text/x.tlog.size")
    bad_proof = await _post(watcher, body(10, note(25), TREE.consistency(10, 25)[:-1]))
    assert bad_proof.status_code == 422
    assert protection.evidence(ORIGIN)[-1]["note"] == note(25)
    same_size_fork = await _post(watcher, body(10, note(10, tree=FORK)))
    assert same_size_fork.status_code == 409 and same_size_fork.text == "10\n"  # c2sp: 409
    assert note(10, tree=FORK) in [item["note"] for item in protection.evidence(ORIGIN)]
    assert protection.last(ORIGIN) == cp(10)

    second = await _post(watcher, body(10, note(25), TREE.consistency(10, 25)))
    assert second.status_code == 200
    assert protection.record(ORIGIN)["size"] == 25  # type: ignore[index]
    record = protection.record(ORIGIN)
    again = await _post(watcher, body(10, note(25), TREE.consistency(10, 25)))
    assert again.status_code == 409  # old size is no longer what it last cosigned
    repeat = await _post(watcher, body(25, note(25)))
    assert repeat.status_code == 200
    assert protection.record(ORIGIN) == record  # an identical checkpoint changes nothing


async def test_add_checkpoint_body_limit_and_state(config_path: Path, store: LogStore) -> None:
    watcher = Watcher(load_config(config_path), store)
    assert (await _post(watcher, b"x" * (300 * 1024))).status_code == 413
    assert (await _post(watcher, body(0, note(7)))).status_code == 200
    transport = httpx.ASGITransport(app=build_app(watcher))
    async with httpx.AsyncClient(transport=transport, base_url="http://watcher") as client:
        health = await client.get("/healthz")
        state = (await client.get("/v1/state")).json()
    assert health.status_code == 200
    assert state["logs"][ORIGIN]["size"] == 7
    assert state["logs"][ORIGIN]["root"] == TREE.root(7).hex()
    assert state["vkey"] == watcher.vkey.to_vkey()


# ---------------------------------------------------------------- gossip path


class FakeHost:
    """Records what the follower publishes, and the protection record at that moment."""

    def __init__(self, protection: Protection) -> None:
        self.protection = protection
        self.published: list[tuple[str, bytes, int | None]] = []

    async def publish(self, topic: str, data: bytes) -> None:
        last = self.protection.last(ORIGIN)
        self.published.append((topic, data, None if last is None else last.size))


def _follower(config_path: Path, store: LogStore) -> tuple[Watcher, LogFollower, FakeHost]:
    config = load_config(config_path)
    watcher = Watcher(config, store, now=lambda: 1700000000)
    host = FakeHost(watcher.protection)
    return watcher, LogFollower(watcher, config.logs[0], host), host  # type: ignore[arg-type]


def test_checkpoint_gossip_validator(config_path: Path, store: LogStore) -> None:
    _, follower, _ = _follower(config_path, store)

    def announce(corridor: str, origin: str, data: bytes) -> bytes:
        return encode(CheckpointAnnouncement(corridor=corridor, origin=origin, note=data))

    assert follower.validate("p", announce("PAK-KSA", ORIGIN, note(10))) is Verdict.ACCEPT
    assert follower.validate("p", announce("PAK-KSA", "sez.gov.sa/corridor/PAK-KSA", b"x")) is Verdict.IGNORE
    assert follower.validate("p", announce("PAK-KSA", ORIGIN, note(10, key=OTHER))) is Verdict.REJECT
    assert follower.validate("p", announce("PAK-UAE", ORIGIN, note(10))) is Verdict.REJECT
    assert follower.validate("p", b"\x00garbage") is Verdict.REJECT


async def test_gossip_cosign_persists_before_publishing(config_path: Path, store: LogStore) -> None:
    watcher, follower, host = _follower(config_path, store)
    assert await follower._cosign(None, cp(10), note(10), []) == (True, 10)
    assert await follower._cosign(cp(10), cp(25), note(25), TREE.consistency(10, 25)) == (True, 25)
    assert [size for _, _, size in host.published] == [10, 25]  # the record was written first
    topic_name, data, _ = host.published[-1]
    assert topic_name == "/sez/1/PAK-KSA/cosignatures"
    message = decode(data, max_bytes=1 << 20)
    assert isinstance(message, CosignatureAnnouncement) and message.cosigner == "watcher1.example"
    checkpoint, signed = parse_checkpoint(message.note)
    assert checkpoint == cp(25)
    assert verify_cosignatures(signed, checkpoint, [watcher.vkey]) == {"watcher1.example": 1700000000}
    # the same checkpoint again: nothing new; a stale "last": retry; a fork at 25: evidence, refused
    assert await follower._cosign(cp(25), cp(25), note(25), []) == (True, None)
    assert await follower._cosign(cp(10), cp(30), note(30), TREE.consistency(10, 30)) == (False, None)
    with pytest.raises(PeerProtocolError, match="equivocation"):
        await follower._cosign(cp(25), cp(25, FORK), note(25, tree=FORK), [])
    with pytest.raises(PeerProtocolError, match="inconsistent"):
        await follower._cosign(cp(25), cp(30, FORK), note(30, tree=FORK), TREE.consistency(25, 30))
    assert [item["reason"] for item in watcher.protection.evidence(ORIGIN)] == [
        "equivocation",
        "inconsistent",
    ]
    assert watcher.protection.last(ORIGIN) == cp(25) and len(host.published) == 2


async def test_a_same_size_fork_is_gossiped_as_log_equivocation(config_path: Path, store: LogStore) -> None:
    """A watcher refusing a validly signed checkpoint of the cosigned size with another root builds
    ``log-equivocation`` evidence from the two notes and gossips it (nodes verify it and halt)."""
    watcher = Watcher(load_config(config_path), store, now=lambda: 1700000000)
    sent: list[tuple[str, bytes]] = []

    async def publish(corridor: str, data: bytes) -> None:
        sent.append((corridor, data))

    watcher.publish_evidence = publish
    assert (await _post(watcher, body(0, note(10)))).status_code == 200
    assert (await _post(watcher, body(10, note(25), TREE.consistency(10, 25)[:-1]))).status_code == 422
    assert sent == []  # a bad proof is kept as evidence, but proves no fork by itself
    assert (await _post(watcher, body(10, note(10, tree=FORK)))).status_code == 409
    ((corridor, data),) = sent
    verified = verify_evidence(data, log_keys={ORIGIN: LOG.verifier()}, now=0, window=1, max_skew=2**40)
    assert corridor == "PAK-KSA" and (verified.kind, verified.offender) == ("log-equivocation", ORIGIN)
    assert watcher.state()["stats"]["forks_reported"] == 1
