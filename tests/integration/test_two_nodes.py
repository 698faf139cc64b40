"""Two ``sez-node run`` processes, PAK and KSA, in corridor PAK-KSA (issue 3).

Real OS processes talking libp2p over TCP on 127.0.0.1, real LMDB stores, the real HTTP API
(``netharness.py`` writes the node directories, starts, waits on and stops the processes). Every wait
is bounded and polls a state (the ready line, the API); a failure message ends with the nodes' last
stderr lines. Every process is stopped (SIGTERM, then SIGKILL after a bound) also on failure.

* ``test_traffic_both_ways_*``: 500 transfers submitted to each node by concurrent clients; both
  nodes end with byte-identical copies of both logs, each transfer exactly once, mutually cosigned
  latest checkpoints, clean fsck, exit status 0 on SIGTERM.
* ``test_sigkill_*``: PAK is SIGKILLed at a random point of the stream (the seed is printed); every
  receipt PAK acknowledged (201) is there after the restart with the same sequence and bytes, nothing
  is duplicated, and PAK catches up with KSA.
* ``test_unknown_peer_is_refused``: a libp2p peer whose id no corridor names cannot connect.
* ``test_byzantine_gossip_*``: an allowed peer publishes garbage and forged messages on the three
  topics; the node rejects each for the right reason, blames that peer, stores nothing of it, and the
  honest stream continues.
* ``test_http_api_*``: authentication and malformed requests against the real process.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.checkpoints import open_checkpoint, parse_checkpoint, sign_checkpoint, verify_cosignatures
from protocol.jcs import canonical
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey, key_id
from protocol.notes import NoteSignature, SignedNote, format_note, parse_note
from protocol.receipts import build_receipt, genesis_root
from protocol.wire import CheckpointAnnouncement, CosignatureAnnouncement, ReceiptBatch, encode
from tests.integration.netharness import (
    ACTIVATION_RECEIPTS,
    ChildProcess,
    Network,
    NodeProcess,
    fsck_data_dir,
    make_network,
    make_peer_identity,
    read_log_http,
    read_log_store,
    transfer,
    wait_stable,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C = "PAK-KSA"
BYZANTINE = Path(__file__).with_name("byzantine_peer.py")
CONNECT_TIMEOUT = 30.0
SETTLE_TIMEOUT = 60.0
LOAD_TIMEOUT = 120.0
TRANSFERS = 500
CLIENTS = 8


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def networks(tmp_path: Path) -> Iterator[Callable[..., Network]]:
    """``networks(**make_network options)``: a new network under tmp_path; every process is stopped after."""
    made: list[Network] = []

    def make(name: str = "net", **options: Any) -> Network:
        network = make_network(tmp_path / name, ["PAK", "KSA"], corridors=[C], **options)
        made.append(network)
        return network

    try:
        yield make
    finally:
        for network in made:
            network.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """PAK and KSA running and connected (shared by the read-mostly tests)."""
    network = make_network(tmp_path_factory.mktemp("pair"), ["PAK", "KSA"], corridors=[C])
    try:
        network.start()
        wait_connected(network)
        yield network
    finally:
        network.close()


# ------------------------------------------------------------------------------------- helpers


def wait_connected(network: Network) -> None:
    pak, ksa = network["PAK"], network["KSA"]
    wait_until(
        lambda: pak.status(C)["peers"]["connected"] == [ksa.spec.peer_id]
        and ksa.status(C)["peers"]["connected"] == [pak.spec.peer_id],
        CONNECT_TIMEOUT, "PAK and KSA to connect", network=network,
    )  # fmt: skip


class Load:
    """``count`` transfers submitted to ``node`` by ``clients`` threads; records what each got back."""

    def __init__(self, node: NodeProcess, prefix: str, count: int, *, clients: int = CLIENTS) -> None:
        self.node = node
        self.prefix = prefix
        self.count = count
        self.acked: dict[str, bytes] = {}
        """transfer id -> the receipt answered with 201."""
        self.unknown: set[str] = set()
        """Transfer ids whose request failed in transport (the node died): outcome unknown."""
        self.refused: list[tuple[str, int, str]] = []
        self.reached: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(k, clients), daemon=True, name=f"{prefix}-{k}")
            for k in range(clients)
        ]

    def ids(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]

    def when_acked(self, n: int) -> threading.Event:
        """An event set once ``n`` submissions have been acknowledged (register before start)."""
        return self.reached.setdefault(n, threading.Event())

    def _run(self, first: int, step: int) -> None:
        with self.node.client() as client:
            for i in range(first, self.count, step):
                tid = f"{self.prefix}-{i}"
                try:
                    response = self.node.submit(C, transfer(tid, amount=i + 1), client=client)
                except httpx.TransportError:
                    with self._lock:
                        self.unknown.add(tid)
                    return  # the node is down: this client stops
                with self._lock:
                    if response.status_code == 201:
                        self.acked[tid] = response.content
                        for n, event in self.reached.items():
                            if len(self.acked) >= n:
                                event.set()
                    else:
                        self.refused.append((tid, response.status_code, response.text[:300]))

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float = LOAD_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"submitting to {self.node.name} did not finish in {timeout:g} s: {alive}"


def converged(network: Network, memo: dict[str, Any]) -> tuple[int, str, int, str] | None:
    """(PAK size, root, KSA size, root) when each node holds the other's whole log and both logs are
    cosigned by the counterparty up to their size; else None (the statuses are kept in ``memo``)."""
    p, k = network["PAK"].status(C), network["KSA"].status(C)
    memo["PAK"], memo["KSA"] = p, k
    ok = (
        p["log"]["size"] == k["counterparty"]["size"] == k["counterparty"]["known_size"]
        and k["log"]["size"] == p["counterparty"]["size"] == p["counterparty"]["known_size"]
        and p["counterparty_cosigned_size"] == p["log"]["size"] > 0
        and k["counterparty_cosigned_size"] == k["log"]["size"] > 0
        and p["writer"]["queued"] == k["writer"]["queued"] == 0
    )
    return (p["log"]["size"], p["log"]["root"], k["log"]["size"], k["log"]["root"]) if ok else None


def wait_quiet(network: Network) -> tuple[int, str, int, str]:
    memo: dict[str, Any] = {}

    def describe() -> str:
        brief = {
            name: {
                key: status.get(key) for key in ("log", "counterparty", "counterparty_cosigned_size", "stats")
            }
            for name, status in memo.items()
        }
        return f"both replicas complete and mutually cosigned; last statuses {json.dumps(brief)}"

    return wait_stable(lambda: converged(network, memo), SETTLE_TIMEOUT, describe, network=network)


def check_replicated_and_cosigned(network: Network, state: tuple[int, str, int, str], since: float) -> None:
    """Via the API: same size and root of each log on both nodes; each latest checkpoint cosigned."""
    sizes = {"PAK": (state[0], state[1]), "KSA": (state[2], state[3])}
    for writer, reader in (("PAK", "KSA"), ("KSA", "PAK")):
        spec, other = network.specs[writer], network.specs[reader]
        origin = spec.origin(C)
        size, root = sizes[writer]
        own_status = network[writer].status(C)["log"]
        assert (own_status["size"], own_status["root"]) == (size, root)
        # The writer's latest checkpoint, and the reader's stored copy at that size.
        cp, note = open_checkpoint(network[writer].checkpoint(origin), spec.log_key(C))
        assert (cp.size, cp.root.hex()) == (size, root), f"{writer}'s latest checkpoint is not its head"
        replica_cp, _ = open_checkpoint(network[reader].checkpoint(origin, size), spec.log_key(C))
        assert (replica_cp.size, replica_cp.root.hex()) == (size, root), f"{reader}'s replica of {writer}"
        # The counterparty's cosignature (tlog-cosignature/v1, key type 0x04) on the latest checkpoint.
        cosigner = other.log_key(C).with_alg(ALG_COSIGNATURE_V1)
        assert cosigner.alg == 0x04
        assert other.origin(C) in [sig.name for sig in note.signatures], note
        stamps = verify_cosignatures(note, cp, [cosigner])
        assert set(stamps) == {other.origin(C)}, stamps
        assert since - 5 <= stamps[other.origin(C)] <= time.time() + 5, stamps
        # A cosignature does not verify under another key (the check above is not vacuous).
        impostor = SigningKey(other.origin(C), os.urandom(32)).verifier(ALG_COSIGNATURE_V1)
        assert verify_cosignatures(note, cp, [impostor]) == {}


def transfer_ids(raws: list[bytes]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for raw in raws:
        transition = json.loads(raw)["transition"]
        if transition["kind"] == "transfer":
            ids[transition["payload"]["transfer_id"]] += 1
        else:
            assert transition["kind"] in ("ack", "lifecycle"), transition
    return ids


def stop_all(network: Network) -> None:
    codes = {name: node.stop() for name, node in network.nodes.items() if node.running}
    assert all(code == 0 for code in codes.values()), f"exit statuses {codes}\n{network.tails()}"


def check_stores(network: Network) -> dict[str, dict[str, list[bytes]]]:
    """After stop: fsck both stores; both hold byte-identical copies of both logs. Returns them."""
    origins = [spec.origin(C) for spec in network.specs.values()]
    logs = {}
    for name, spec in network.specs.items():
        fsck_data_dir(spec.data_dir, origins)
        logs[name] = {origin: read_log_store(spec.data_dir, origin) for origin in origins}
    for origin in origins:
        assert logs["PAK"][origin] == logs["KSA"][origin], f"the copies of {origin} differ"
    return logs


# ------------------------------------------------------------------------------------- a: load


def test_traffic_both_ways_replicates_and_cosigns(networks: Callable[..., Network]) -> None:
    network = networks()
    network.start()
    wait_connected(network)
    pak, ksa = network["PAK"], network["KSA"]
    since = time.time()
    loads = [Load(pak, "PAK", TRANSFERS).start(), Load(ksa, "KSA", TRANSFERS).start()]
    for load in loads:
        load.join()
        assert not load.refused and not load.unknown, (load.refused[:5], sorted(load.unknown)[:5])
        assert len(load.acked) == TRANSFERS
        sequences = [json.loads(raw)["sequence"] for raw in load.acked.values()]
        assert len(set(sequences)) == TRANSFERS, "two submissions were acknowledged with one sequence"

    state = wait_quiet(network)
    check_replicated_and_cosigned(network, state, since)
    assert pak.healthy() and ksa.healthy()
    for node in (pak, ksa):
        stats = node.status(C)["stats"]
        assert stats["peer_faults"] == {} and stats["rejected"] == {}, stats

    stop_all(network)
    logs = check_stores(network)
    for load in loads:
        log = logs[load.node.name][network.specs[load.node.name].origin(C)]
        assert transfer_ids(log) == Counter(load.ids()), f"{load.node.name}: each transfer exactly once"
        for tid, raw in load.acked.items():
            assert log[json.loads(raw)["sequence"]] == raw, f"{tid}: stored bytes differ from the 201 body"


# ---------------------------------------------------------------------------------- b: SIGKILL


def test_sigkill_mid_stream_loses_no_acknowledged_receipt(networks: Callable[..., Network]) -> None:
    seed = int(os.environ.get("SEZ_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    kill_after = rng.randrange(40, 400)
    print(f"SEZ_TEST_SEED={seed}: SIGKILL PAK after {kill_after} acknowledged submissions")
    network = networks()
    network.start()
    wait_connected(network)
    pak, ksa = network["PAK"], network["KSA"]
    pak_origin = network.specs["PAK"].origin(C)

    pak_load, ksa_load = Load(pak, "PAK", TRANSFERS), Load(ksa, "KSA", TRANSFERS)
    reached = pak_load.when_acked(kill_after)
    pak_load.start()
    ksa_load.start()
    assert reached.wait(LOAD_TIMEOUT), f"PAK never acknowledged {kill_after} submissions\n{network.tails()}"
    assert pak.kill() == -9
    pak_load.join()
    ksa_load.join()
    acked = dict(pak_load.acked)
    assert not pak_load.refused and not ksa_load.refused, (pak_load.refused[:5], ksa_load.refused[:5])
    assert kill_after <= len(acked) < TRANSFERS, f"the kill was not mid-stream ({len(acked)} acknowledged)"
    assert len(ksa_load.acked) == TRANSFERS

    network.start("PAK")
    # Every acknowledged receipt survived, at its sequence, byte for byte.
    size = pak.status(C)["log"]["size"]
    by_sequence = {json.loads(raw)["sequence"]: (tid, raw) for tid, raw in acked.items()}
    assert len(by_sequence) == len(acked), "two acknowledged submissions share a sequence"
    assert max(by_sequence) < size, f"PAK restarted at size {size} below acknowledged {max(by_sequence)}"
    for sequence, (tid, raw) in sorted(by_sequence.items()):
        assert pak.receipt(pak_origin, sequence) == raw, f"{tid} (sequence {sequence}) changed or was lost"
    # The writer continues the chain from the recovered head.
    after = pak.submit(C, transfer("PAK-after-restart"))
    assert after.status_code == 201, after.text
    assert json.loads(after.content)["sequence"] >= size

    state = wait_quiet(network)
    check_replicated_and_cosigned(network, state, time.time() - 120)
    stop_all(network)
    logs = check_stores(network)
    ids = transfer_ids(logs["PAK"][pak_origin])
    duplicated = {tid: n for tid, n in ids.items() if n > 1}
    assert not duplicated, f"duplicated in PAK's log: {duplicated}"
    assert set(acked) <= set(ids), f"acknowledged but missing: {sorted(set(acked) - set(ids))[:10]}"
    assert set(ids) <= set(pak_load.ids()) | {"PAK-after-restart"}
    assert "PAK-after-restart" in ids
    for sequence, (_, raw) in by_sequence.items():
        assert logs["PAK"][pak_origin][sequence] == raw
    assert transfer_ids(logs["KSA"][network.specs["KSA"].origin(C)]) == Counter(ksa_load.ids())


# ------------------------------------------------------------------------------- c: unknown peer


def start_peer(network: Network, name: str, argv: list[str]) -> ChildProcess:
    child = network.child(name)
    child.spawn([sys.executable, str(BYZANTINE), *argv], stdin=subprocess.PIPE)
    return child


def expect(child: ChildProcess, prefix: str, timeout: float = CONNECT_TIMEOUT) -> str:
    return child.read_line(time.monotonic() + timeout, lambda line: line.startswith(prefix))


def test_unknown_peer_is_refused(pair: Network, tmp_path: Path) -> None:
    pak, ksa = pair["PAK"], pair["KSA"]
    refused_before = pak.metric("sez_connections_refused_total")
    stranger = make_peer_identity(tmp_path / "stranger")
    child = start_peer(pair, "stranger", [
        "--key", str(stranger.key_file), "--listen", stranger.listen, "--allow", pak.spec.peer_id,
        "--connect", pak.spec.addr, "--corridor", C,
    ])  # fmt: skip
    try:
        assert expect(child, "READY ").endswith(stranger.peer_id)
        outcome = expect(child, "CONNECT")
        assert outcome.startswith("CONNECT-FAILED"), outcome
        wait_until(
            lambda: pak.metric("sez_connections_refused_total") > refused_before,
            CONNECT_TIMEOUT, "PAK to count the refused connection", network=pair,
        )  # fmt: skip
        child.send("PEERS")
        assert expect(child, "PEERS ") == "PEERS -", "the stranger holds a connection"
        assert pak.status(C)["peers"]["connected"] == [ksa.spec.peer_id]
        assert pak.metric("sez_peers_connected") == 1
        refusals = [
            line for line in pak.stderr_path.read_text().splitlines()
            if "not in the allowlist" in line and stranger.peer_id in line
        ]  # fmt: skip
        assert refusals, f"PAK logged no refusal of {stranger.peer_id}\n{pair.tails()}"
        child.send("QUIT")
        expect(child, "BYE")
        assert child.wait() == 0
    finally:
        child.close()
    assert pak.healthy() and ksa.healthy()


# ---------------------------------------------------------------------------- d: byzantine gossip


def wrong_key_receipt(origin: str, sequence: int, *, claim_key: VerifierKey | None = None) -> bytes:
    """A well-formed receipt of ``origin`` signed by a stranger's key.

    With ``claim_key``, its ``verificationMethod`` names that (the genuine) key instead of the signer's.
    """
    forger = SigningKey(origin, os.urandom(32))
    receipt = build_receipt(
        key=forger, corridor_id=C, sequence=sequence, timestamp="2025-01-01T00:00:00Z",
        prev_root=genesis_root(C, origin), kind="transfer", payload=transfer(f"forged-{sequence}"),
    )  # fmt: skip
    if claim_key is None:
        return receipt.raw
    body = json.loads(receipt.raw)
    body["proof"]["verificationMethod"] = claim_key.verification_method
    return canonical(body)


def corrupt_log_signature(note_bytes: bytes) -> bytes:
    note = parse_note(note_bytes)
    first = note.signatures[0]
    flipped = bytes([first.signature[0] ^ 0x01]) + first.signature[1:]
    sigs = (NoteSignature(name=first.name, key_id=first.key_id, signature=flipped), *note.signatures[1:])
    return format_note(SignedNote(text=note.text, signatures=sigs))


def forged_cosignature(note_bytes: bytes, cosigner: VerifierKey) -> bytes:
    """The note with a line named after ``cosigner`` and carrying its key id, but random signature bytes."""
    note = parse_note(note_bytes)
    line = NoteSignature(
        name=cosigner.name,
        key_id=key_id(cosigner.name, ALG_COSIGNATURE_V1, cosigner.public),
        signature=int(time.time()).to_bytes(8, "big") + os.urandom(64),
    )
    return format_note(SignedNote(text=note.text, signatures=(*note.signatures, line)))


def test_byzantine_gossip_is_rejected_and_blamed(networks: Callable[..., Network], tmp_path: Path) -> None:
    byz = make_peer_identity(tmp_path / "byzantine")
    network = networks(extra_peers={C: {"PAK": [byz.addr]}})
    pak, ksa = network["PAK"], network["KSA"]
    pak_spec, ksa_spec = network.specs["PAK"], network.specs["KSA"]
    pak_origin, ksa_origin = pak_spec.origin(C), ksa_spec.origin(C)

    # KSA writes a few receipts alone: the attacker gets genuine, validly signed KSA material
    # (checkpoint, receipts) that is ahead of PAK's empty replica, as a real attacker could.
    network.start("KSA")
    for i in range(5):
        assert ksa.submit(C, transfer(f"KSA-early-{i}", "KSA", "PAK")).status_code == 201
    ksa_note = ksa.checkpoint(ksa_origin)
    ksa_cp, _ = open_checkpoint(ksa_note, ksa_spec.log_key(C))
    assert ksa_cp.size == ACTIVATION_RECEIPTS + 5
    genuine = [ksa.receipt(ksa_origin, seq) for seq in range(2)]
    assert ksa.stop() == 0

    network.start("PAK")
    assert pak.submit(C, transfer("PAK-early")).status_code == 201
    pak_note = pak.checkpoint(pak_origin)
    ksa_key = ksa_spec.log_key(C)  # public: what any peer of the corridor knows
    stranger_key = SigningKey(ksa_origin, os.urandom(32))

    def batch(receipts: list[bytes]) -> bytes:
        return encode(ReceiptBatch(corridor=C, origin=ksa_origin, start=0, receipts=tuple(receipts),
                                   checkpoint=ksa_note))  # fmt: skip

    def announce(note: bytes) -> bytes:
        return encode(CheckpointAnnouncement(corridor=C, origin=ksa_origin, note=note))

    crafted = [
        ("receipts", b"\xc1 garbage on the receipts topic"),
        ("checkpoints", b"\xc1 garbage on the checkpoints topic"),
        ("cosignatures", b"\xc1 garbage on the cosignatures topic"),
        ("receipts", batch([wrong_key_receipt(ksa_origin, 0)])),
        ("receipts", batch([wrong_key_receipt(ksa_origin, 0, claim_key=ksa_key)])),
        ("receipts", batch([genuine[1], genuine[0]])),  # out of order: sequence 1 at position 0
        ("receipts", batch([genuine[0], wrong_key_receipt(ksa_origin, 1)])),  # passes the spot check
        ("checkpoints", announce(corrupt_log_signature(ksa_note))),
        ("checkpoints", announce(format_note(sign_checkpoint(ksa_cp, stranger_key)))),
        (
            "cosignatures",
            encode(
                CosignatureAnnouncement(
                    corridor=C,
                    origin=pak_origin,
                    cosigner=ksa_origin,
                    note=forged_cosignature(pak_note, ksa_key),
                )
            ),
        ),
    ]
    expected = {
        "bad-message": 3,  # garbage, once per topic
        "wrong-key": 2,  # a receipt naming another key: by the validator, and by the consumer
        "bad-signature": 1,  # naming KSA's key with a signature it did not make
        "seq-gap": 1,
        "bad-log-signature": 1,
        "missing-log-signature": 1,
        "bad-cosignature": 1,
    }
    messages = tmp_path / "crafted.json"
    messages.write_text(json.dumps([{"topic": t, "hex": data.hex()} for t, data in crafted]))
    child = start_peer(network, "byzantine", [
        "--key", str(byz.key_file), "--listen", byz.listen, "--allow", pak_spec.peer_id,
        "--connect", pak_spec.addr, "--corridor", C, "--messages", str(messages),
    ])  # fmt: skip
    assert expect(child, "READY ").endswith(byz.peer_id)
    assert expect(child, "CONNECTED ") == f"CONNECTED {pak_spec.peer_id}"
    assert expect(child, "PUBLISHED ") == f"PUBLISHED {len(crafted)}"

    memo: dict[str, Any] = {}

    def counted() -> bool:
        memo.update(pak.status(C))
        return bool(memo["stats"]["rejected"] == expected)

    wait_until(counted, SETTLE_TIMEOUT, lambda: f"PAK to reject {expected}; stats {memo.get('stats')}",
               network=network)  # fmt: skip
    assert memo["stats"]["peer_faults"] == {byz.peer_id: len(crafted)}, memo["stats"]
    assert memo["counterparty"]["size"] == 0, "PAK stored something of the forged batches"
    assert memo["counterparty"]["known_size"] == 0, "a rejected batch's checkpoint became the sync target"
    assert pak.healthy()

    # The honest stream goes on: KSA comes back, writes more, and PAK's replica follows it.
    network.start("KSA")
    later = [f"KSA-after-attack-{i}" for i in range(20)]
    for tid in later:
        assert ksa.submit(C, transfer(tid, "KSA", "PAK")).status_code == 201
    ksa_size = ksa.status(C)["log"]["size"]
    wait_until(lambda: pak.status(C)["counterparty"]["size"] >= ksa_size, SETTLE_TIMEOUT,
               f"PAK's replica of KSA to reach {ksa_size}", network=network)  # fmt: skip
    replica = read_log_http(pak, ksa_origin, ksa_size)
    assert replica == read_log_http(ksa, ksa_origin, ksa_size)
    assert set(later) <= set(transfer_ids(replica))
    root = parse_checkpoint(pak.checkpoint(ksa_origin, ksa_size))[0].root
    assert root == parse_checkpoint(ksa.checkpoint(ksa_origin, ksa_size))[0].root
    assert pak.healthy() and ksa.healthy()
    assert pak.status(C)["stats"]["peer_faults"] == {byz.peer_id: len(crafted)}, "honest KSA was blamed"

    child.send("QUIT")
    expect(child, "BYE")
    assert child.wait() == 0
    stop_all(network)
    for spec in network.specs.values():
        fsck_data_dir(spec.data_dir, [pak_origin, ksa_origin])


# ------------------------------------------------------------------------------------ e: HTTP API


def assert_problem(
    response: httpx.Response, status: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail"}, body
    assert body["status"] == response.status_code
    assert body["type"].startswith("urn:sez:problem:") and body["detail"], body
    if reason is not None:
        assert body["type"] == f"urn:sez:problem:{reason}", body
    return dict(body)


def test_http_api_refuses_bad_requests_and_writes_nothing(pair: Network) -> None:
    pak = pair["PAK"]
    origin = pair.specs["PAK"].origin(C)
    path = f"/v1/corridors/{C}/transitions"
    good = {"kind": "transfer", "payload": transfer("API-marker")}
    before = pak.status(C)
    size = before["log"]["size"]

    unauthorized = {
        "no token": {},
        "wrong token": {"Authorization": "Bearer " + "x" * 43},
        "empty token": {"Authorization": "Bearer"},
        "token without scheme": {"Authorization": pair.specs["PAK"].token},
        "basic scheme": {
            "Authorization": "Basic " + base64.b64encode(b"sez:" + pair.specs["PAK"].token.encode()).decode()
        },
    }
    with pak.client(token="") as anonymous:
        for case, headers in unauthorized.items():
            response = anonymous.post(path, json=good, headers=headers)
            body = assert_problem(response, 401, "unauthorized")
            assert response.headers.get("www-authenticate", "").startswith("Bearer"), (case, body)

    raw = {"content-type": "application/json"}
    malformed = {
        "not JSON": (b"{not json", raw),
        "truncated JSON": (b'{"kind": "transfer", "payload": {', raw),
        "a list": (b"[]", raw),
        "missing payload": (b'{"kind": "transfer"}', raw),
        "extra member": (json.dumps({**good, "extra": 1}).encode(), raw),
        "unknown kind": (json.dumps({"kind": "teleport", "payload": {}}).encode(), raw),
        "schema violation": (json.dumps({"kind": "transfer", "payload": {"transfer_id": 7}}).encode(), raw),
        "float amount": (
            json.dumps({"kind": "transfer", "payload": {**transfer("f"), "amount": 1.5}}).encode(),
            raw,
        ),
        "duplicate key": (b'{"kind": "transfer", "kind": "ack", "payload": {}}', raw),
        "wrong media type": (json.dumps(good).encode(), {"content-type": "text/plain"}),
        "too large": (json.dumps({"kind": "transfer", "payload": transfer("x" * 70_000)}).encode(), raw),
    }
    for case, (content, headers) in malformed.items():
        response = pak.http.post(path, content=content, headers=headers)
        try:
            assert_problem(response)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc
    assert_problem(pak.http.post("/v1/corridors/PAK-UAE/transitions", json=good), 404, "unknown-corridor")
    assert_problem(pak.http.get(f"/v1/logs/{origin}/receipts/{size + 1000}"), 404)
    assert_problem(pak.http.get("/v1/no-such-route"), 404)

    # Nothing was written: the log grew by acks only, if at all, and holds no marker.
    after = pak.status(C)
    assert after["writer"]["receipts"] - before["writer"]["receipts"] == after["log"]["size"] - size
    new = [pak.receipt(origin, seq) for seq in range(size, after["log"]["size"])]
    assert all(json.loads(r)["transition"]["kind"] == "ack" for r in new), new
    assert transfer_ids(new) == Counter()

    # The same request with the token is accepted: the refusals above were not a broken server.
    accepted = pak.http.post(path, json=good)
    assert accepted.status_code == 201, accepted.text
    receipt = json.loads(accepted.content)
    assert receipt["transition"]["payload"]["transfer_id"] == "API-marker"
    assert pak.receipt(origin, receipt["sequence"]) == accepted.content


def test_http_api_receipt_index_beyond_u64_is_not_found(pair: Network) -> None:
    pak = pair["PAK"]
    origin = pair.specs["PAK"].origin(C)
    assert_problem(pak.http.get(f"/v1/logs/{origin}/receipts/{2**64}"), 404)
    assert pak.healthy()


def test_padded_cosignature_note_cannot_crash_or_pollute_a_node(
    networks: Callable[..., Network], tmp_path: Path
) -> None:
    """Regression: an allowed peer relayed our checkpoint with the counterparty's one real cosignature
    plus ~100 junk lines under the counterparty's name; the node merged them all, and the second such
    message overflowed the note's signature limit and stopped the daemon."""
    byz = make_peer_identity(tmp_path / "byzantine")
    network = networks(extra_peers={C: {"PAK": [byz.addr]}})
    network.start()
    pak, pak_spec, ksa_spec = network["PAK"], network.specs["PAK"], network.specs["KSA"]
    pak_origin, ksa_origin = pak_spec.origin(C), ksa_spec.origin(C)
    assert pak.submit(C, transfer("padded-1")).status_code == 201
    wait_until(
        lambda: pak.status(C)["counterparty_cosigned_size"] == pak.status(C)["log"]["size"] > 0,
        30, "KSA cosigns PAK's checkpoint", network=network,
    )  # fmt: skip
    size = pak.status(C)["log"]["size"]
    received = pak.status(C)["stats"]["cosignatures_received"]
    note = parse_note(pak.checkpoint(pak_origin, size))
    crafted = []
    for _ in range(2):
        junk = tuple(
            NoteSignature(name=ksa_origin, key_id=os.urandom(4), signature=os.urandom(72))
            for _ in range(100 - len(note.signatures))
        )
        padded = format_note(SignedNote(text=note.text, signatures=note.signatures + junk))
        message = CosignatureAnnouncement(corridor=C, origin=pak_origin, cosigner=ksa_origin, note=padded)
        crafted.append({"topic": "cosignatures", "hex": encode(message).hex()})
    messages = tmp_path / "padded.json"
    messages.write_text(json.dumps(crafted))
    child = start_peer(network, "byzantine", [
        "--key", str(byz.key_file), "--listen", byz.listen, "--allow", pak_spec.peer_id,
        "--connect", pak_spec.addr, "--corridor", C, "--messages", str(messages),
    ])  # fmt: skip
    assert expect(child, "PUBLISHED ") == "PUBLISHED 2"
    wait_until(
        lambda: not pak.running or pak.status(C)["stats"]["cosignatures_received"] >= received + 2,
        15, "PAK processes both padded notes", network=network,
    )  # fmt: skip
    assert pak.running, pak.stderr_tail()
    # The node keeps serving and writing, and the stored note holds exactly one counterparty line.
    assert pak.submit(C, transfer("padded-2")).status_code == 201
    wait_until(
        lambda: pak.healthy() and pak.status(C)["log"]["size"] > size,
        10,
        "PAK still serving",
        network=network,
    )
    stored = parse_note(pak.checkpoint(pak_origin, size))
    assert [sig.name for sig in stored.signatures].count(ksa_origin) == 1
    assert len(stored.signatures) == 2
    assert pak.running
