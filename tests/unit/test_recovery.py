"""What own-log recovery needs from the lifecycle (design §8 "Recovery"), checked without processes.

* merge: each party records its own halt (its own evidence spelling); the second halt used to wait
  forever in front of the resolution its log records next, so a resolution in the other log never
  applied (regression);
* fork evidence at or below a resolved branch's size is settled by the resolution, whatever its
  spelling; a fork beyond it still halts;
* a writer hold refuses every kind with ``recovering`` and nothing is written; a resolution that names
  our log's branch with another root holds our writer (the guard) before any task noticed it, and
  one that names the branch our log is on does not.

The process tests (tests/integration/test_recovery_processes.py) run the whole recovery.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from node.lifecycle import _within_branch
from protocol.errors import PeerProtocolError
from protocol.jcs import canonical
from protocol.lifecycle import State, activation, merge, sign
from tests.unit.test_lifecycle import CORRIDOR as LC_CORRIDOR
from tests.unit.test_lifecycle import HOOKS, KEYS, REGISTERED, signed, unsigned
from tests.unit.test_node_lifecycle import CORRIDOR, DEF_HEX, PARTIES, pair, refused  # noqa: F401
from tests.unit.test_witness_acks import transfer


def test_each_party_halting_does_not_block_the_resolution_behind_the_second_halt() -> None:
    """PAK and KSA each record ACTIVE -> HALTED on the same fork (two payloads, two digests), and KSA
    records the resolution after its halt: in both orders of the logs the corridor ends ACTIVE."""
    first = signed(unsigned(State.DRAFT, State.PENDING))
    second = signed(unsigned(State.PENDING, State.ACTIVE))
    ours = sign(unsigned(State.ACTIVE, State.HALTED, reason="PAK saw the fork"), {"PAK": KEYS["PAK"]})
    theirs = sign(unsigned(State.ACTIVE, State.HALTED, reason="KSA saw the fork"), {"KSA": KEYS["KSA"]})
    resolution = signed(unsigned(State.HALTED, State.ACTIVE))
    pak_log, ksa_log = [first, second, ours], [first, second, theirs, resolution]
    for logs in ([pak_log, ksa_log], [ksa_log, pak_log]):
        merged = merge(LC_CORRIDOR, logs, REGISTERED, **HOOKS)
        assert merged.lifecycle.state.state == State.ACTIVE, merged
        assert [t.to_state for t in merged.lifecycle.history][-2:] == [State.HALTED, State.ACTIVE]
        assert merged.waiting == (0, 0)


def _halt_on(body: dict[str, Any], party: str) -> dict[str, Any]:
    payload = unsigned(State.ACTIVE, State.HALTED, reason=f"{party} saw the fork")
    payload["evidence"] = {
        "type": "log-equivocation", "body": body, "digest_sha256": hashlib.sha256(canonical(body)).hexdigest()
    }  # fmt: skip
    return sign(payload, {party: KEYS[party]})


def test_a_quorum_resolution_may_name_the_halt_the_other_party_recorded() -> None:
    """PAK halts on one spelling of the fork, KSA on another and resolves by quorum naming *its* halt.
    Merged in origin order PAK's halt comes first; KSA's is a second record of it, and the
    certificate naming KSA's evidence must still resolve the corridor (it did not: ``wrong-fork``),
    settling both spellings. A certificate naming evidence no halt recorded is still refused."""
    first = signed(unsigned(State.DRAFT, State.PENDING))
    second = signed(unsigned(State.PENDING, State.ACTIVE))
    pak_body = {"type": "log-equivocation", "spelling": "receipts"}
    ksa_body = {"type": "log-equivocation", "spelling": "checkpoints"}
    ksa_digest = hashlib.sha256(canonical(ksa_body)).hexdigest()
    seen: list[str | None] = []

    def verify_quorum(resolution: Any, halt: str | None) -> None:
        seen.append(halt)
        if resolution["certificate"]["evidence"] != halt:
            raise PeerProtocolError("wrong-fork", "the certificate resolves another halt")

    def resolution(evidence: str) -> dict[str, Any]:
        payload = unsigned(State.HALTED, State.ACTIVE, method="quorum")
        payload["resolution"]["certificate"] = {"evidence": evidence}
        return sign(payload, {"KSA": KEYS["KSA"]})

    hooks = {"verify_evidence": HOOKS["verify_evidence"], "verify_quorum": verify_quorum}
    pak_log = [first, second, _halt_on(pak_body, "PAK")]
    ksa_log = [first, second, _halt_on(ksa_body, "KSA"), resolution(ksa_digest)]
    merged = merge(LC_CORRIDOR, [pak_log, ksa_log], REGISTERED, **hooks)
    state = merged.lifecycle.state
    assert state.state == State.ACTIVE and merged.rejected == (), merged
    assert seen == [ksa_digest]
    assert state.settled_evidence == {ksa_digest, hashlib.sha256(canonical(pak_body)).hexdigest()}
    assert state.also_halted == frozenset()

    stranger = hashlib.sha256(b"no halt recorded this").hexdigest()
    ksa_log[-1] = resolution(stranger)
    merged = merge(LC_CORRIDOR, [pak_log, ksa_log], REGISTERED, **hooks)
    assert merged.lifecycle.state.state == State.HALTED
    assert [r.reason for r in merged.rejected] == ["wrong-fork"]


def test_a_forged_second_halt_is_reported_and_adds_nothing() -> None:
    first = signed(unsigned(State.DRAFT, State.PENDING))
    second = signed(unsigned(State.PENDING, State.ACTIVE))
    forged = _halt_on({"type": "log-equivocation", "valid": False}, "KSA")
    merged = merge(
        LC_CORRIDOR,
        [[first, second, _halt_on({"type": "x"}, "PAK")], [first, second, forged]],
        REGISTERED,
        **HOOKS,
    )
    assert merged.lifecycle.state.state == State.HALTED and merged.lifecycle.state.also_halted == frozenset()
    assert [r.reason for r in merged.rejected] == ["bad-evidence"]


def test_a_resolution_settles_every_spelling_of_the_fork_up_to_its_branch() -> None:
    origin = "sez.gov.pk/corridor/PAK-KSA"
    receipt = {"origin": origin, "receipts": [{"sequence": 41}, {"sequence": 41}]}
    checkpoint = {"origin": origin, "checkpoints": [f"{origin}\n42\nAAAA\n\n", f"{origin}\n42\nBBBB\n\n"]}
    assert _within_branch(receipt, {origin: 42}) and _within_branch(checkpoint, {origin: 42})
    assert not _within_branch(receipt, {origin: 41}) and not _within_branch(checkpoint, {origin: 41})
    assert not _within_branch(receipt, {"sez.gov.sa/corridor/PAK-KSA": 100})
    assert not _within_branch({"origin": origin, "receipts": "garbage"}, {origin: 100})


async def _activate(corridor: Any) -> None:
    for payload in activation(CORRIDOR, PARTIES, DEF_HEX):
        await corridor.writer.submit("lifecycle", payload)


async def test_a_writer_hold_refuses_everything_and_writes_nothing(pair: Any) -> None:  # noqa: F811
    pak, _ = pair
    await _activate(pak)
    size = pak.store.head(pak.origin).size
    pak.lifecycle.hold("test", "checking our own log")
    error = await refused(pak, "transfer", transfer(1), "recovering")
    assert "checking our own log" in error.message and pak.store.head(pak.origin).size == size
    assert pak.status()["recovery"]["recovering"]
    pak.lifecycle.release("test")
    await pak.writer.submit("transfer", transfer(2))
    assert pak.store.head(pak.origin).size == size + 1


async def _halt_and_resolve(pak: Any, size: int, root: str) -> None:
    """Halt PAK's corridor on (stand-in) evidence and resume it with a resolution naming PAK's branch."""
    body = {"type": "log-equivocation", "a": "x", "b": "y"}
    digest = hashlib.sha256(canonical(body)).hexdigest()
    pak.lifecycle.verify_evidence = lambda evidence: bytes.fromhex(digest)
    halt = {"corridor_id": CORRIDOR, "from": "ACTIVE", "to": "HALTED", "reason": "fork",
            "evidence": {"type": "log-equivocation", "digest_sha256": digest, "body": body}}  # fmt: skip
    await pak.writer.submit("lifecycle", sign(halt, PARTIES))
    resolution = {"corridor_id": CORRIDOR, "from": "HALTED", "to": "ACTIVE", "reason": "resolved",
                  "resolution": {"method": "two-party",
                                 "branch": {"origin": pak.origin, "size": size, "root": root}}}  # fmt: skip
    await pak.writer.submit("lifecycle", sign(copy.deepcopy(resolution), PARTIES))


async def test_a_resolution_naming_another_branch_of_our_log_holds_our_writer(pair: Any) -> None:  # noqa: F811
    pak, _ = pair
    await _activate(pak)
    await pak.writer.submit("transfer", transfer(1))
    size = pak.store.head(pak.origin).size
    await _halt_and_resolve(pak, size, "ab" * 32)
    assert pak.lifecycle.state().state == State.ACTIVE
    head = pak.store.head(pak.origin).size
    error = await refused(pak, "transfer", transfer(2), "recovering")
    assert "canonical branch" in error.message and pak.store.head(pak.origin).size == head


async def test_a_resolution_naming_our_own_branch_leaves_the_writer_alone(pair: Any) -> None:  # noqa: F811
    pak, _ = pair
    await _activate(pak)
    await pak.writer.submit("transfer", transfer(1))
    size = pak.store.head(pak.origin).size
    await _halt_and_resolve(pak, size, pak.store.root_at(pak.origin, size).hex())
    await pak.writer.submit("transfer", transfer(2))
    assert not pak.status()["recovery"]["recovering"]
