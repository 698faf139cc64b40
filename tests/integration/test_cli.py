"""The ``sez-node`` log CLI, ``sez-light verify`` and ``sez-watcher`` as real processes (README, log CLI).

A module-scoped log is written once through ``keygen`` and three ``log append`` calls (sizes 3, 5, 8);
every test that might write works on a copy of its data directory. Refusals are checked the way a user
sees them: exit status 1, exactly one stderr line ``sez-node: <reason>: <message>`` naming the line where
there is one, no traceback, and the log as it was (``log checkpoint`` output and the head).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import pytest

from protocol import mmr
from protocol.checkpoints import open_checkpoint
from protocol.keys import SigningKey, VerifierKey, public_from_did_key
from protocol.proofs import verify_consistency
from protocol.receipts import Receipt, verify_receipt
from protocol.tlog_proof import TlogProof
from store import LogStore
from tests.reference_rfc6962 import ReferenceTree

BIN = Path(sys.executable).parent
SEZ_NODE = BIN / "sez-node"
SEZ_LIGHT = BIN / "sez-light"
SEZ_WATCHER = BIN / "sez-watcher"
TIMEOUT = 60
"""Seconds any one command may take; a hung command fails its test (and is killed by subprocess.run)."""

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
CORRIDOR = "PAK-KSA"
SIZES = (3, 5, 8)


def run(
    tool: Path, *args: object, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    assert tool.exists(), f"{tool} is missing: install the package into the interpreter's environment"
    return subprocess.run(
        [str(tool), *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def node(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run(SEZ_NODE, *args, stdin=stdin)


def ok(proc: subprocess.CompletedProcess[bytes]) -> bytes:
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode())
    assert proc.stderr == b""
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[bytes], reason: str, *, prog: str = "sez-node") -> str:
    """Assert a clean one-line refusal with ``reason``; return the message after the reason."""
    err = proc.stderr.decode()
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"{prog}: {reason}: " if prog == "sez-node" else f"REJECTED: {reason}: "
    assert lines[0].startswith(prefix), err
    assert proc.stdout == b""
    return lines[0][len(prefix) :]


def transfer(i: int, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "pk-bank-1", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "sa-bank-2", "jurisdiction": "SAU"},
        "currency": "PKR",
        "amount": str(100 * i + 1),
    }
    for key, value in changes.items():
        if value is _DROP:
            del payload[key]
        else:
            payload[key] = value
    return {"kind": "transfer", "payload": payload}


_DROP = object()


def jsonl(*items: dict[str, Any] | str) -> bytes:
    return b"".join((item if isinstance(item, str) else json.dumps(item)).encode() + b"\n" for item in items)


@dataclass
class Log:
    base: Path
    data: Path
    key: Path
    vkey: str
    appends: list[dict[str, Any]]

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey.from_vkey(self.vkey)

    def copy(self, dest: Path) -> Path:
        """A private copy of the data directory (no writer runs on the original)."""
        return Path(shutil.copytree(self.data, dest / "data"))


def append(
    data: Path,
    key: Path,
    source: Path | str,
    *,
    stdin: bytes | None = None,
    corridor: str = CORRIDOR,
    origin: str = ORIGIN,
) -> subprocess.CompletedProcess[bytes]:
    return node(
        "log",
        "append",
        "--data-dir",
        data,
        "--corridor",
        corridor,
        "--origin",
        origin,
        "--key",
        key,
        source,
        stdin=stdin,
    )


def receipt_raw(data: Path, index: int) -> bytes:
    out = ok(node("log", "receipt", "--data-dir", data, "--origin", ORIGIN, "--index", index))
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return out[:-1]


def checkpoint(data: Path, size: int | None = None) -> bytes:
    extra = () if size is None else ("--size", size)
    return ok(node("log", "checkpoint", "--data-dir", data, "--origin", ORIGIN, *extra))


def log_state(data: Path) -> tuple[bytes, Any, int]:
    """What must not change when an append is refused: the latest checkpoint, the head, the receipt count."""
    with LogStore(data, readonly=True) as store:
        head = store.head(ORIGIN)
        count = store.count_receipts(ORIGIN)
    return checkpoint(data), head, count


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    base = tmp_path_factory.mktemp("cli")
    key = base / "log.key"
    out = json.loads(ok(node("keygen", "--name", ORIGIN, "--out", key)))
    data = base / "data"
    data.mkdir()
    appends = []
    n = 0
    for size in SIZES:
        source = base / f"batch-{size}.jsonl"
        source.write_bytes(jsonl(*(transfer(i) for i in range(n, size))))
        appends.append(json.loads(ok(append(data, key, source))))
        n = size
    return Log(base=base, data=data, key=key, vkey=out["vkey"], appends=appends)


@pytest.fixture(scope="module")
def reference(log: Log) -> ReferenceTree:
    raws = [receipt_raw(log.data, i) for i in range(SIZES[-1])]
    return ReferenceTree([bytes.fromhex(json.loads(raw)["next_root"]) for raw in raws])


# --------------------------------------------------------------------------- keygen


def test_keygen_writes_private_key_and_prints_public_forms(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    out = ok(node("keygen", "--name", ORIGIN, "--out", key_file))
    printed = json.loads(out)
    assert set(printed) == {"name", "did", "vkey"}
    assert printed["name"] == ORIGIN
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    verifier = VerifierKey.from_vkey(printed["vkey"])
    assert verifier.name == ORIGIN
    assert public_from_did_key(printed["did"]) == verifier.public
    assert printed["did"] == verifier.did
    signing = SigningKey.from_private_line(key_file.read_text())
    assert signing.name == ORIGIN and signing.public == verifier.public


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    ok(node("keygen", "--name", ORIGIN, "--out", key_file))
    before = key_file.read_bytes()
    message = refused(node("keygen", "--name", ORIGIN, "--out", key_file), "file-exists")
    assert str(key_file) in message
    assert key_file.read_bytes() == before
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_keygen_refuses_bad_name(tmp_path: Path) -> None:
    refused(node("keygen", "--name", "two words", "--out", tmp_path / "k.key"), "bad-key-name")
    assert not (tmp_path / "k.key").exists()


# --------------------------------------------------------------------------- append


def test_append_output_and_receipts(log: Log, reference: ReferenceTree) -> None:
    for size, printed in zip(SIZES, log.appends, strict=True):
        assert set(printed) == {"origin", "size", "root", "final_state_root"}
        assert printed["origin"] == ORIGIN
        assert printed["size"] == size
        assert printed["root"] == reference.root(size).hex()
        assert printed["final_state_root"] == reference.leaves[size - 1].hex()
    prev = None
    for i in range(SIZES[-1]):
        receipt = Receipt.from_bytes(receipt_raw(log.data, i))
        verify_receipt(receipt, log.verifier)
        assert (receipt.origin, receipt.corridor_id, receipt.sequence) == (ORIGIN, CORRIDOR, i)
        assert receipt.payload == transfer(i)["payload"]
        if prev is not None:
            assert receipt.prev_root == prev  # the second and third appends continue the chain
        prev = receipt.next_root


def test_append_from_stdin_continues(log: Log, tmp_path: Path, reference: ReferenceTree) -> None:
    data = log.copy(tmp_path)
    out = json.loads(ok(append(data, log.key, "-", stdin=jsonl(transfer(8), transfer(9)))))
    assert out["size"] == 10
    raws = [receipt_raw(data, i) for i in range(10)]
    assert raws[:8] == [receipt_raw(log.data, i) for i in range(8)]
    ref = ReferenceTree([*reference.leaves, *(bytes.fromhex(json.loads(r)["next_root"]) for r in raws[8:])])
    assert out["root"] == ref.root(10).hex()
    assert json.loads(raws[8])["prev_root"] == reference.leaves[7].hex()
    cp, _ = open_checkpoint(checkpoint(data), log.verifier)
    assert (cp.size, cp.root.hex()) == (10, out["root"])


def test_append_skips_blank_lines(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    out = json.loads(ok(append(data, log.key, "-", stdin=b"\n" + jsonl(transfer(8)) + b"  \n")))
    assert out["size"] == 9


GOOD = transfer(1)
BAD_FILES = [
    ("malformed-json", [GOOD, '{"kind": "transfer", "payload": {'], "bad-json", "{file}:2:"),
    ("not-an-object", ['["transfer", {}]'], "bad-line", "{file}:1:"),
    ("missing-payload", ['{"kind": "transfer"}'], "bad-line", "{file}:1:"),
    ("unknown-kind", [{"kind": "teleport", "payload": GOOD["payload"]}], "unknown-kind", "{file}:1:"),
    ("missing-payload-field", [transfer(1, currency=_DROP)], "schema-violation", "{file}:1:"),
    ("extra-payload-field", [transfer(1, memo="x")], "schema-violation", "{file}:1:"),
    ("float-amount", [transfer(1, amount=5.0)], "float-refused", "{file}:1:"),
    ("negative-amount", [transfer(1, amount="-5")], "schema-violation", "{file}:1:"),
    ("numeric-amount", [transfer(1, amount=5)], "schema-violation", "{file}:1:"),
    ("lowercase-currency", [transfer(1, currency="pkr")], "schema-violation", "{file}:1:"),
    ("duplicate-key", ['{"kind": "transfer", "kind": "ack", "payload": {}}'], "bad-json", "{file}:1:"),
    (
        "bad-line-in-the-middle",
        [transfer(1), transfer(2), transfer(3, currency="pkr"), transfer(4), transfer(5)],
        "schema-violation",
        "{file}:3:",
    ),
    (
        "bad-json-in-the-middle",
        [transfer(1), transfer(2), transfer(3), "{not json}", transfer(5)],
        "bad-json",
        "{file}:4:",
    ),
]


@pytest.mark.parametrize(
    ("lines", "reason", "where"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES]
)
def test_bad_file_is_refused_whole(
    log: Log, tmp_path: Path, lines: list[Any], reason: str, where: str
) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl(*lines))
    message = refused(append(data, log.key, source), reason)
    assert where.format(file=source) in message, message
    assert log_state(data) == before


def test_empty_file_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    source = tmp_path / "empty.jsonl"
    source.write_bytes(b"")
    assert str(source) in refused(append(data, log.key, source), "empty")
    assert "<stdin>" in refused(append(data, log.key, "-", stdin=b"\n\n"), "empty")
    assert log_state(data) == before


def test_bad_stdin_is_refused_whole(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    message = refused(
        append(data, log.key, "-", stdin=jsonl(transfer(1), transfer(2, amount=2.5))), "float-refused"
    )
    assert "<stdin>:2:" in message
    assert log_state(data) == before


def test_non_utf8_file_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    source = tmp_path / "latin1.jsonl"
    source.write_bytes(
        jsonl(transfer(1)) + json.dumps(transfer(2)).encode().replace(b"t-2", b"t-\xff") + b"\n"
    )
    assert f"{source}:2: not UTF-8" in refused(append(data, log.key, source), "bad-json")
    assert log_state(data) == before


def test_non_utf8_stdin_is_refused_under_strict_locale(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    line = json.dumps(transfer(1)).encode().replace(b"t-1", b"t-\xff") + b"\n"
    proc = run(
        SEZ_NODE,
        *("log", "append", "--data-dir", data, "--corridor", CORRIDOR, "--origin", ORIGIN, "--key", log.key),
        "-",
        stdin=line,
        env={"PYTHONIOENCODING": "utf-8:strict"},  # what en_US.UTF-8 gives stdin
    )
    refused(proc, "bad-json")


def test_bad_line_number_counts_blank_lines(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl(transfer(1)) + b"\n" + jsonl(transfer(2, currency="pkr")))
    message = refused(append(data, log.key, source), "schema-violation")
    assert f"{source}:3:" in message, message


def test_refused_first_append_registers_nothing(log: Log, tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    data.mkdir()
    source = tmp_path / "bad.jsonl"
    source.write_bytes(jsonl(transfer(1, currency="pkr")))
    refused(append(data, log.key, source, corridor="PAK-UAE"), "schema-violation")  # a typo'd corridor
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(transfer(1)))
    out = json.loads(ok(append(data, log.key, good)))
    assert out["size"] == 1


def test_key_named_otherwise_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    other = tmp_path / "other.key"
    ok(node("keygen", "--name", "sez.gov.sa/corridor/PAK-KSA", "--out", other))
    source = log.base / "batch-3.jsonl"
    message = refused(append(data, other, source), "key-mismatch")
    assert "sez.gov.sa/corridor/PAK-KSA" in message
    assert log_state(data) == before


def test_other_key_for_registered_origin_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    impostor = tmp_path / "impostor.key"
    ok(node("keygen", "--name", ORIGIN, "--out", impostor))
    refused(append(data, impostor, log.base / "batch-3.jsonl"), "key-mismatch")
    assert log_state(data) == before


def test_other_corridor_for_registered_origin_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    refused(append(data, log.key, log.base / "batch-3.jsonl", corridor="PAK-UAE"), "key-mismatch")
    assert log_state(data) == before


def test_readable_key_file_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    loose = tmp_path / "loose.key"
    shutil.copyfile(log.key, loose)
    os.chmod(loose, 0o644)
    message = refused(append(data, loose, log.base / "batch-3.jsonl"), "key-file-permissions")
    assert "0644" in message
    assert log_state(data) == before


def test_missing_key_file_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    refused(append(data, tmp_path / "absent.key", log.base / "batch-3.jsonl"), "key-file-missing")
    assert log_state(data) == before


def test_missing_transition_file_is_refused(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    before = log_state(data)
    refused(append(data, log.key, tmp_path / "absent.jsonl"), "no-file")
    assert log_state(data) == before


def test_missing_data_dir(log: Log, tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    refused(append(absent, log.key, log.base / "batch-3.jsonl"), "no-data-dir")
    refused(node("log", "checkpoint", "--data-dir", absent, "--origin", ORIGIN), "no-data-dir")
    refused(node("log", "receipt", "--data-dir", absent, "--origin", ORIGIN, "--index", 0), "no-data-dir")
    refused(node("fsck", "--data-dir", absent), "no-data-dir")
    assert not absent.exists()


def test_data_dir_without_store(tmp_path: Path) -> None:
    refused(node("log", "checkpoint", "--data-dir", tmp_path, "--origin", ORIGIN), "not-found")
    assert not (tmp_path / "data.mdb").exists()


# --------------------------------------------------------------------------- reading


def test_checkpoints(log: Log, reference: ReferenceTree) -> None:
    latest, _ = open_checkpoint(checkpoint(log.data), log.verifier)
    assert (latest.origin, latest.size, latest.root) == (ORIGIN, 8, reference.root(8))
    for size in SIZES:
        cp, _ = open_checkpoint(checkpoint(log.data, size), log.verifier)
        assert (cp.size, cp.root) == (size, reference.root(size))
    assert checkpoint(log.data, 8) == checkpoint(log.data)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("log", "receipt", "--index", 999999), "bad-index"),
        (("log", "receipt", "--index", 8), "bad-index"),
        (("log", "proof", "--index", 999999), "bad-index"),
        (("log", "proof", "--index", 3, "--size", 3), "bad-index"),
        (("log", "proof", "--index", 0, "--size", 4), "not-found"),
        (("log", "checkpoint", "--size", 4), "not-found"),
        (("log", "checkpoint", "--size", 9), "not-found"),
        (("log", "consistency", "--old", 5, "--new", 3), "bad-index"),
        (("log", "consistency", "--old", 3, "--new", 9), "bad-index"),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else v,
)
def test_read_refusals(log: Log, args: tuple[object, ...], reason: str) -> None:
    refused(node(*args[:2], "--data-dir", log.data, "--origin", ORIGIN, *args[2:]), reason)


def test_unknown_origin(log: Log) -> None:
    refused(
        node("log", "checkpoint", "--data-dir", log.data, "--origin", "nobody.example/log"), "unknown-origin"
    )


def test_negative_index_is_a_usage_error(log: Log) -> None:
    proc = node("log", "receipt", "--data-dir", log.data, "--origin", ORIGIN, "--index", "-1")
    assert proc.returncode == 2
    assert b"is negative" in proc.stderr
    assert b"Traceback" not in proc.stderr


def prove(log: Log, index: int, size: int | None = None) -> bytes:
    extra = () if size is None else ("--size", size)
    return ok(node("log", "proof", "--data-dir", log.data, "--origin", ORIGIN, "--index", index, *extra))


@pytest.mark.parametrize(("index", "size"), [(0, None), (4, None), (7, None), (0, 3), (2, 3), (4, 5)])
def test_proof_bundle_decodes_and_verifies(
    log: Log, tmp_path: Path, reference: ReferenceTree, index: int, size: int | None
) -> None:
    raw = prove(log, index, size)
    bundle = TlogProof.decode(raw)
    tree = 8 if size is None else size
    assert bundle.index == index
    assert bundle.extra == receipt_raw(log.data, index)
    assert list(bundle.proof) == reference.inclusion(index, tree)
    assert bundle.checkpoint == checkpoint(log.data, tree)
    path = tmp_path / "bundle"
    path.write_bytes(raw)
    out = ok(run(SEZ_LIGHT, "verify", path, "--log-key", log.vkey)).decode()
    assert f"VERIFIED: receipt {ORIGIN}#{index} (transfer) is in the log at tree size {tree}" in out
    assert reference.root(tree).hex() in out
    assert ok(run(SEZ_LIGHT, "verify", "-", "--log-key", log.vkey, stdin=raw)) == out.encode()


def _mutate_receipt(bundle: TlogProof, old: bytes, new: bytes) -> bytes:
    assert bundle.extra is not None and bundle.extra.count(old) == 1
    extra = bundle.extra.replace(old, new)
    assert (
        len(extra) == len(bundle.extra) and sum(a != b for a, b in zip(extra, bundle.extra, strict=True)) == 1
    )
    return TlogProof(
        index=bundle.index, proof=bundle.proof, checkpoint=bundle.checkpoint, extra=extra
    ).encode()


def _flip_b64_char(text: bytes, at: int) -> bytes:
    return text[:at] + (b"B" if text[at : at + 1] == b"A" else b"A") + text[at + 1 :]


def _mutations(bundle: TlogProof, raw: bytes) -> dict[str, tuple[bytes, str]]:
    receipt = json.loads(bundle.extra or b"")
    amount = f'"amount":"{receipt["transition"]["payload"]["amount"]}"'.encode()
    signature = receipt["proof"]["signature"].encode()
    timestamp = receipt["timestamp"].encode()
    proof = list(bundle.proof)
    proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    note = bundle.checkpoint
    root_line = note.split(b"\n")[2]
    sig_at = len(note) - 10  # inside the base64 of the log's signature line
    return {
        "receipt-amount": (
            _mutate_receipt(bundle, amount, amount[:-2] + b"9" + amount[-1:]),
            "payload-digest-mismatch",
        ),
        "receipt-timestamp": (
            _mutate_receipt(
                bundle, timestamp, timestamp[:2] + (b"4" if timestamp[2:3] == b"3" else b"3") + timestamp[3:]
            ),
            "next-root-mismatch",
        ),
        "receipt-signature": (
            _mutate_receipt(bundle, signature, _flip_b64_char(signature, 20)),
            "bad-signature",
        ),
        "proof-hash": (
            TlogProof(index=bundle.index, proof=tuple(proof), checkpoint=note, extra=bundle.extra).encode(),
            "root-mismatch",
        ),
        "checkpoint-root": (raw.replace(root_line, _flip_b64_char(root_line, 10)), "root-mismatch"),
        "checkpoint-signature": (
            raw[: len(raw) - len(note) + sig_at] + _flip_b64_char(note, sig_at)[sig_at:],
            "bad-log-signature",
        ),
        "index": (raw.replace(b"\nindex 4\n", b"\nindex 5\n"), "index-mismatch"),
        "truncated": (raw[:-1], "bad-note"),
    }


MUTATIONS = [
    "receipt-amount",
    "receipt-timestamp",
    "receipt-signature",
    "proof-hash",
    "checkpoint-root",
    "checkpoint-signature",
    "index",
    "truncated",
]


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_tampered_bundle_is_rejected(log: Log, tmp_path: Path, mutation: str) -> None:
    raw = prove(log, 4)
    bundle = TlogProof.decode(raw)
    tampered, reason = _mutations(bundle, raw)[mutation]
    assert tampered != raw
    path = tmp_path / "bundle"
    path.write_bytes(tampered)
    refused(run(SEZ_LIGHT, "verify", path, "--log-key", log.vkey), reason, prog="sez-light")


def test_bundle_under_other_log_key_is_rejected(log: Log, tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    path.write_bytes(prove(log, 4))
    impostor = SigningKey(ORIGIN, b"\x11" * 32).verifier().to_vkey()
    refused(run(SEZ_LIGHT, "verify", path, "--log-key", impostor), "missing-log-signature", prog="sez-light")
    other = SigningKey("sez.gov.sa/corridor/PAK-KSA", b"\x12" * 32).verifier().to_vkey()
    refused(run(SEZ_LIGHT, "verify", path, "--log-key", other), "wrong-origin", prog="sez-light")
    refused(run(SEZ_LIGHT, "verify", path, "--log-key", "garbage"), "bad-vkey", prog="sez-light")
    refused(run(SEZ_LIGHT, "verify", tmp_path / "absent", "--log-key", log.vkey), "io", prog="sez-light")


@pytest.mark.parametrize(("old", "new"), [(3, 5), (3, 8), (5, 8), (1, 8), (5, 5), (0, 8)])
def test_consistency_lines_verify_between_checkpoints(
    log: Log, reference: ReferenceTree, old: int, new: int
) -> None:
    out = ok(
        node("log", "consistency", "--data-dir", log.data, "--origin", ORIGIN, "--old", old, "--new", new)
    )
    lines = out.decode().splitlines()
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{43}=", line) for line in lines), lines
    proof = [base64.b64decode(line) for line in lines]
    assert proof == reference.consistency(old, new)
    if old in SIZES:
        root_old = open_checkpoint(checkpoint(log.data, old), log.verifier)[0].root
        root_new = open_checkpoint(checkpoint(log.data, new), log.verifier)[0].root
        verify_consistency(old, new, root_old, root_new, proof)
    if old in (0, new):
        assert out == b""


# --------------------------------------------------------------------------- fsck


def test_fsck_good_store(log: Log) -> None:
    out = ok(node("fsck", "--data-dir", log.data)).decode()
    assert out.startswith(f"ok: {ORIGIN} ({CORRIDOR}): 8/8 receipts")
    assert f"{mmr.mmr_size(8)} MMR nodes, 3 checkpoints" in out


def test_fsck_fails_after_corruption(log: Log, tmp_path: Path) -> None:
    data = log.copy(tmp_path)
    pos = mmr.leaf_position(5)
    env = lmdb.open(str(data), max_dbs=16, map_size=64 * 1024**2)
    try:
        nodes = env.open_db(b"nodes", create=False)
        with env.begin(write=True) as txn:
            key = (1).to_bytes(4, "big") + pos.to_bytes(8, "big")
            txn.put(key, b"\xee" * 32, db=nodes)
    finally:
        env.close()
    proc = node("fsck", "--data-dir", data)
    assert proc.returncode == 1, proc.stdout.decode()
    out = proc.stdout.decode()
    assert out.startswith(f"FAILED: {ORIGIN}")
    assert f"  - MMR node {pos}: stored {'ee' * 32}" in out
    assert b"Traceback" not in proc.stderr


def test_fsck_empty_data_dir(tmp_path: Path) -> None:
    refused(node("fsck", "--data-dir", tmp_path), "not-found")


# --------------------------------------------------------------------------- sez-watcher


def test_watcher_usage_and_bad_config_are_one_line_errors(tmp_path: Path) -> None:
    proc = run(SEZ_WATCHER)
    assert proc.returncode == 2
    assert b"usage" in proc.stderr
    proc = run(SEZ_WATCHER, "run", "--config", tmp_path / "missing.toml")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("sez-watcher: bad-config:"), err
    assert err.count("\n") == 1 and "Traceback" not in err
