"""The quorum resolution of a fork (design §8, protocol/fork.py): the certificate and its pure verifier.

The scene: PAK-KSA, PAK's log forked at size 10 (two checkpoints signed by PAK's log key, roots A and B).
Five watchers W0..W4 bonded in PAK's log (sequences 2..6, final). Branch A is cosigned by all five and by
KSA; branch B by W0 and W1, who therefore equivocated and are slashed in KSA's log (sequences 3, 4). The
judging ledger is PAK's prefix [0, 8) (within the fork bound 9, a prefix of A) and KSA's [0, 6).
Each negative case changes one thing and asserts the reason.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint
from protocol.errors import PeerProtocolError
from protocol.evidence import (
    evidence_digest,
    log_equivocation_from_checkpoints,
    watcher_equivocation,
)
from protocol.fork import (
    EMPTY_ROOT,
    ForkContext,
    HeldLedger,
    assess_quorum_certificate,
    fork_bound,
    make_certificate,
    verify_quorum_certificate,
)
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from protocol.lifecycle import CorridorState, State, apply, sign
from protocol.mmr import MMRAppender, consistency_proof, root_at
from protocol.notes import NoteSignature, SignedNote, format_note, parse_note
from protocol.quorum import QuorumPolicy
from protocol.stake import BOND_REQUEST, UNBOND_REQUEST, LedgerEntry, sign_request
from tests.unit.test_evidence import log_fork_receipts

C = "PAK-KSA"
PAK = "sez.gov.pk/corridor/PAK-KSA"
KSA = "sez.gov.sa/corridor/PAK-KSA"
PAK_KEY = SigningKey(PAK, bytes([1]) * 32)
KSA_KEY = SigningKey(KSA, bytes([2]) * 32)
W = [SigningKey(f"w{i}.example", bytes([40 + i]) * 32) for i in range(6)]
WV = [w.verifier(ALG_COSIGNATURE_V1) for w in W]
T0 = 1_795_773_600  # 2026-11-27T10:00:00Z
FORK_SIZE = 10
PREFIX = 8
KSA_SIZE = 6
LOG_KEYS = {PAK: PAK_KEY.verifier(), KSA: KSA_KEY.verifier()}
CONTEXT = ForkContext(
    corridor_id=C,
    log_keys=LOG_KEYS,
    party_cosigners={PAK: KSA_KEY.verifier(ALG_COSIGNATURE_V1), KSA: PAK_KEY.verifier(ALG_COSIGNATURE_V1)},
    policy=QuorumPolicy(min_watchers=3),
    stake_currency="USD",
)


class Tree:
    """An in-memory RFC 6962 tree (the MMR), for roots and consistency proofs."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[int, bytes] = {}
        appender = MMRAppender()
        for leaf in leaves:
            appender.append(hashlib.sha256(b"\0" + leaf).digest(), self.nodes.__setitem__)
        self.size = len(leaves)

    def root(self, size: int) -> bytes:
        return EMPTY_ROOT if size == 0 else root_at(size, self.nodes.__getitem__)

    def proof(self, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self.nodes.__getitem__)


LEAVES = [bytes([i]) * 32 for i in range(FORK_SIZE)]
TREE_A = Tree(LEAVES)
TREE_B = Tree([*LEAVES[:-1], b"\xee" * 32])
TREE_KSA = Tree([bytes([100 + i]) * 32 for i in range(KSA_SIZE)])


def checkpoint(tree: Tree, origin: str = PAK, size: int = FORK_SIZE) -> Checkpoint:
    return Checkpoint(origin=origin, size=size, root=tree.root(size))


def cosigned(
    cp: Checkpoint, watchers: range | list[int], *, party: bool = True, log_key: SigningKey = PAK_KEY
) -> bytes:
    note = sign_checkpoint(cp, log_key)
    lines = [cosign(cp, W[i], T0 + 60) for i in watchers]
    if party:
        lines.append(cosign(cp, KSA_KEY, T0 + 60))
    return format_note(add_signatures(note, lines))


NOTE_A = cosigned(checkpoint(TREE_A), range(5))
NOTE_B = cosigned(checkpoint(TREE_B), [0, 1], party=False)
FORK = log_equivocation_from_checkpoints(NOTE_A, NOTE_B, PAK_KEY.verifier())
FORK_DIGEST = evidence_digest(FORK).hex()


def bond(i: int) -> dict[str, Any]:
    request = {
        "type": BOND_REQUEST, "watcher": WV[i].to_vkey(), "amount": "1000", "currency": "USD",
        "corridors": [C], "collateral_ref": f"escrow-{i}", "timestamp": "2026-11-27T09:00:00Z",
    }  # fmt: skip
    return sign_request(request, W[i])


def entry(
    origin: str, seq: int, kind: str, payload: dict[str, Any], t: str = "2026-11-27T09:00:00Z"
) -> LedgerEntry:
    return LedgerEntry(origin=origin, sequence=seq, timestamp=t, kind=kind, payload=payload)


def slash(i: int) -> dict[str, Any]:
    return {"evidence": watcher_equivocation(NOTE_A, NOTE_B, WV[i]), "reporter": KSA_KEY.verifier().to_vkey()}


BONDS = [entry(PAK, 2 + i, "watcher.bond", bond(i)) for i in range(5)]
SLASHES = [entry(KSA, 3 + i, "watcher.slash", slash(i), "2026-11-27T10:05:00Z") for i in range(2)]


def resolution(note: bytes = NOTE_A, tree: Tree = TREE_A, **changes: Any) -> dict[str, Any]:
    cp = checkpoint(tree)
    ledger = {
        PAK: changes.pop("pak_ledger", (PREFIX, tree.root(PREFIX), PREFIX)),
        KSA: changes.pop("ksa_ledger", (KSA_SIZE, TREE_KSA.root(KSA_SIZE), 2)),
    }
    certificate = make_certificate(
        evidence_digest_hex=FORK_DIGEST, note=note, ledger=ledger,
        forked_proof=changes.pop("proof", tree.proof(PREFIX, FORK_SIZE)),
    )  # fmt: skip
    result = {"method": "quorum", "branch": {"origin": PAK, "size": cp.size, "root": cp.root.hex()},
              "certificate": certificate}  # fmt: skip
    assert not changes, changes
    return result


def holder(
    entries: list[LedgerEntry] | None = None, trees: Mapping[str, Tree] | None = None
) -> Callable[[Mapping[str, Mapping[str, Any]]], HeldLedger]:
    """A node holding branch A of PAK's log and KSA's log, with ``entries`` as their watcher receipts."""
    held_entries = [*BONDS, *SLASHES] if entries is None else entries
    held_trees = trees or {PAK: TREE_A, KSA: TREE_KSA}

    def held(ledger: Mapping[str, Mapping[str, Any]]) -> HeldLedger:
        roots: dict[str, bytes | None] = {}
        for origin, item in ledger.items():
            tree = held_trees[origin]
            roots[origin] = tree.root(item["size"]) if item["size"] <= tree.size else None
        return HeldLedger(roots, held_entries)

    return held


def verify(res: Mapping[str, Any], *, held: Any = None, digest: str | None = FORK_DIGEST,
           evidence: Mapping[str, Any] | None = FORK) -> Any:  # fmt: skip
    return verify_quorum_certificate(
        res, halt_digest=digest, halt_evidence=evidence, context=CONTEXT, held=held or holder()
    )


def reason_of(call: Callable[[], Any]) -> str:
    with pytest.raises(PeerProtocolError) as caught:
        call()
    return caught.value.reason


# ------------------------------------------------------------------------------------------ happy path


def test_the_branch_the_honest_watchers_cosigned_wins_once_the_equivocators_are_slashed() -> None:
    verdict = verify(resolution())
    assert verdict.decision.final and verdict.counterparty_cosigned
    assert verdict.decision.cosigners == tuple(sorted(WV[i].to_vkey() for i in (2, 3, 4)))
    assert (verdict.decision.cosigning_stake, verdict.decision.active_stake) == (3000, 3000)
    assert {vkey for vkey, s in verdict.ledger.watchers.items() if s.removed} == {
        WV[0].to_vkey(),
        WV[1].to_vkey(),
    }


def test_the_other_branch_holds_no_quorum_under_the_same_ledger() -> None:
    res = resolution(NOTE_B, TREE_B)
    # Judged by a node holding branch B (its roots) and the same watcher receipts.
    held = holder(trees={PAK: TREE_B, KSA: TREE_KSA})
    verdict = assess_quorum_certificate(
        res, halt_digest=FORK_DIGEST, halt_evidence=FORK, context=CONTEXT, held=held
    )
    assert not verdict.decision.final
    assert set(verdict.decision.missing) == {"stake", "watchers", "counterparty"}
    assert reason_of(lambda: verify(res, held=held)) == "no-quorum"


def test_without_the_slashes_both_branches_could_not_be_told_apart_by_the_equivocators() -> None:
    # KSA's prefix stops before the slashes: W0 and W1 still count, and B still lacks a quorum (2 of 5).
    res = resolution(ksa_ledger=(3, TREE_KSA.root(3), 2))
    assert verify(res).decision.active_stake == 5000
    held_b = holder(trees={PAK: TREE_B, KSA: TREE_KSA})
    res_b = resolution(NOTE_B, TREE_B, ksa_ledger=(3, TREE_KSA.root(3), 2))
    assert reason_of(lambda: verify(res_b, held=held_b)) == "no-quorum"


def test_the_verdict_is_a_function_of_the_certificate_and_the_logs_only() -> None:
    first, second = verify(resolution()), verify(copy.deepcopy(resolution()))
    assert first.decision == second.decision


def test_receipts_beyond_a_named_prefix_are_not_folded() -> None:
    # A bond in PAK's log at sequence 8 (the fork point side) for a sixth watcher: not in [0, 8), no weight.
    late = entry(PAK, PREFIX, "watcher.bond", bond(5))
    verdict = verify(resolution(), held=holder([*BONDS, *SLASHES, late]))
    assert WV[5].to_vkey() not in verdict.ledger.watchers


def test_fork_bound_of_both_evidence_forms() -> None:
    assert fork_bound(FORK) == (PAK, FORK_SIZE - 1)  # two checkpoints of size 10 share at most 9 leaves
    receipts_form = log_fork_receipts()  # two receipts at sequence 0: nothing precedes the conflict
    assert fork_bound(receipts_form) == (receipts_form["origin"], 0)
    assert reason_of(lambda: fork_bound({"kind": "watcher-rollback", "origin": PAK})) == "not-a-fork"
    assert reason_of(lambda: fork_bound({"kind": "log-equivocation", "origin": PAK})) == "not-a-fork"


# ------------------------------------------------------------------------------------------ negatives


def test_a_branch_root_other_than_the_note_is_refused() -> None:
    res = resolution()
    res["branch"]["root"] = "00" * 32
    assert reason_of(lambda: verify(res)) == "branch-mismatch"


def test_a_branch_size_other_than_the_note_is_refused() -> None:
    res = resolution()
    res["branch"]["size"] = FORK_SIZE + 1
    assert reason_of(lambda: verify(res)) == "branch-mismatch"


def test_a_note_without_the_log_signature_is_refused() -> None:
    cp = checkpoint(TREE_A)
    lines = [cosign(cp, W[i], T0 + 60) for i in range(5)] + [cosign(cp, KSA_KEY, T0 + 60)]
    unsigned = format_note(SignedNote(text=cp.body(), signatures=tuple(lines)))
    assert reason_of(lambda: verify(resolution(unsigned))) == "missing-log-signature"


def test_a_note_signed_by_another_key_under_the_log_name_is_refused() -> None:
    impostor = SigningKey(PAK, bytes([9]) * 32)
    forged = cosigned(checkpoint(TREE_A), range(5), log_key=impostor)
    assert reason_of(lambda: verify(resolution(forged))) == "missing-log-signature"


def test_a_forged_log_signature_is_refused() -> None:
    parsed = parse_note(NOTE_A)
    first = parsed.signatures[0]
    bad = NoteSignature(
        name=first.name,
        key_id=first.key_id,
        signature=first.signature[:-1] + bytes([first.signature[-1] ^ 1]),
    )
    note = SignedNote(text=parsed.text, signatures=(bad, *parsed.signatures[1:]))
    assert reason_of(lambda: verify(resolution(format_note(note)))) == "bad-log-signature"


def test_a_forged_cosignature_of_an_active_watcher_is_refused() -> None:
    parsed = parse_note(NOTE_A)
    lines = list(parsed.signatures)
    target = next(k for k, s in enumerate(lines) if s.name == W[3].name)
    sig = lines[target]
    lines[target] = NoteSignature(
        name=sig.name, key_id=sig.key_id, signature=sig.signature[:-1] + bytes([sig.signature[-1] ^ 1])
    )
    forged = format_note(SignedNote(text=parsed.text, signatures=tuple(lines)))
    assert reason_of(lambda: verify(resolution(forged))) == "bad-cosignature"


def test_cosignatures_of_unknown_keys_count_for_nothing() -> None:
    strangers = [SigningKey(f"stranger{i}", bytes([70 + i]) * 32) for i in range(5)]
    cp = checkpoint(TREE_A)
    note = format_note(
        add_signatures(
            sign_checkpoint(cp, PAK_KEY), [*(cosign(cp, s, T0) for s in strangers), cosign(cp, KSA_KEY, T0)]
        )
    )
    verdict = assess_quorum_certificate(
        resolution(note), halt_digest=FORK_DIGEST, halt_evidence=FORK, context=CONTEXT, held=holder()
    )
    assert verdict.decision.cosigners == () and "stake" in verdict.decision.missing
    assert reason_of(lambda: verify(resolution(note))) == "no-quorum"


def test_cosignatures_of_slashed_watchers_count_for_nothing() -> None:
    note = cosigned(checkpoint(TREE_A), [0, 1, 2])  # two slashed, one honest: 1000 of 3000
    verdict = assess_quorum_certificate(
        resolution(note), halt_digest=FORK_DIGEST, halt_evidence=FORK, context=CONTEXT, held=holder()
    )
    assert verdict.decision.cosigners == (WV[2].to_vkey(),)
    assert set(verdict.decision.missing) == {"stake", "watchers"}


def test_cosignatures_of_inactive_watchers_count_for_nothing() -> None:
    unbond = sign_request({"type": UNBOND_REQUEST, "watcher": WV[4].to_vkey(), "corridors": [C],
                           "timestamp": "2026-11-27T09:30:00Z"}, W[4])  # fmt: skip
    entries = [*BONDS, *SLASHES, entry(KSA, 2, "watcher.unbond", unbond, "2026-11-27T09:30:00Z")]
    verdict = assess_quorum_certificate(
        resolution(), halt_digest=FORK_DIGEST, halt_evidence=FORK, context=CONTEXT, held=holder(entries)
    )
    assert WV[4].to_vkey() not in verdict.decision.cosigners and verdict.decision.active_stake == 2000
    assert verdict.decision.missing == ("watchers",)  # two honest watchers left: fewer than min_watchers


def test_bonds_not_final_in_the_named_ledger_carry_no_weight() -> None:
    res = resolution(pak_ledger=(PREFIX, TREE_A.root(PREFIX), 4))  # only W0, W1 bonded by final receipts
    assert reason_of(lambda: verify(res)) == "no-quorum"


def test_below_the_threshold_is_refused() -> None:
    note = cosigned(checkpoint(TREE_A), [2, 3])  # 2000 of 3000 active is not more than 2/3
    verdict = assess_quorum_certificate(
        resolution(note), halt_digest=FORK_DIGEST, halt_evidence=FORK, context=CONTEXT, held=holder()
    )
    assert set(verdict.decision.missing) == {"stake", "watchers"}
    assert reason_of(lambda: verify(resolution(note))) == "no-quorum"


def test_without_the_counterparty_cosignature_it_is_refused() -> None:
    note = cosigned(checkpoint(TREE_A), range(5), party=False)
    assert reason_of(lambda: verify(resolution(note))) == "no-quorum"


def test_a_forked_prefix_beyond_the_fork_point_is_refused() -> None:
    res = resolution(pak_ledger=(FORK_SIZE, TREE_A.root(FORK_SIZE), FORK_SIZE), proof=[])
    assert reason_of(lambda: verify(res)) == "ledger-beyond-fork"


def test_a_branch_that_ends_before_the_fork_point_is_refused() -> None:
    short = Tree(LEAVES[: PREFIX + 1])  # size 9: common to both branches, names neither
    cp = Checkpoint(origin=PAK, size=PREFIX + 1, root=short.root(PREFIX + 1))
    res = resolution(cosigned(cp, range(5)), TREE_A, proof=short.proof(PREFIX, PREFIX + 1))
    res["branch"] = {"origin": PAK, "size": cp.size, "root": cp.root.hex()}
    assert reason_of(lambda: verify(res)) == "branch-before-fork"


def test_a_certificate_for_the_other_origin_is_refused() -> None:
    res = resolution()
    res["branch"]["origin"] = KSA
    assert reason_of(lambda: verify(res)) == "wrong-origin"


def test_a_certificate_of_another_halt_is_refused() -> None:
    assert reason_of(lambda: verify(resolution(), digest="ab" * 32)) == "wrong-fork"
    assert reason_of(lambda: verify(resolution(), digest=None)) == "not-halted"
    assert reason_of(lambda: verify(resolution(), evidence=None)) == "unknown-fork"


def test_a_ledger_root_this_node_does_not_hold_is_refused() -> None:
    res = resolution(ksa_ledger=(KSA_SIZE, b"\x01" * 32, 2))
    assert reason_of(lambda: verify(res)) == "ledger-mismatch"


def test_a_node_that_does_not_hold_a_named_prefix_cannot_judge() -> None:
    # PAK's prefix [0, 8) is common to both branches here: a node holding branch B judges alike.
    held_b = holder(trees={PAK: TREE_B, KSA: TREE_KSA})
    assert verify(resolution(), held=held_b).decision.final
    res = resolution(ksa_ledger=(KSA_SIZE + 5, TREE_KSA.root(KSA_SIZE), 2))
    assert reason_of(lambda: verify(res)) == "ledger-not-held"


def test_a_bad_prefix_proof_is_refused() -> None:
    assert reason_of(lambda: verify(resolution(proof=[b"\x00" * 32]))) == "bad-ledger-proof"
    # A prefix of the other branch does not prove against this one.
    other = Tree([*LEAVES[:5], *(b"\x77" * 32 for _ in range(5))])
    res = resolution(pak_ledger=(PREFIX, other.root(PREFIX), PREFIX), proof=other.proof(PREFIX, FORK_SIZE))
    assert (
        reason_of(lambda: verify(res, held=holder(trees={PAK: other, KSA: TREE_KSA}))) == "bad-ledger-proof"
    )


def test_a_ledger_whose_final_size_passes_its_prefix_is_refused() -> None:
    assert (
        reason_of(lambda: verify(resolution(ksa_ledger=(KSA_SIZE, TREE_KSA.root(KSA_SIZE), 7))))
        == "bad-ledger"
    )


def test_a_ledger_naming_another_log_is_refused() -> None:
    res = resolution()
    res["certificate"]["ledger"]["sez.example/corridor/PAK-KSA"] = res["certificate"]["ledger"].pop(KSA)
    assert reason_of(lambda: verify(res)) == "wrong-ledger-origins"


def test_a_certificate_off_its_schema_is_refused() -> None:
    res = resolution()
    res["certificate"]["extra"] = 1
    assert reason_of(lambda: verify(res)) == "schema-violation"
    del res["certificate"]
    assert reason_of(lambda: verify(res)) == "schema-violation"


# ------------------------------------------------------------------------------------ the lifecycle hook


def halted_state() -> CorridorState:
    return CorridorState(
        corridor_id=C, state=State.HALTED, definition_digest="00" * 32, halt_evidence=FORK_DIGEST
    )


PARTY_KEYS: dict[str, VerifierKey] = {"PAK": PAK_KEY.verifier(), "KSA": KSA_KEY.verifier()}


def hook(resolution: Mapping[str, Any], halt: str | None) -> None:
    verify_quorum_certificate(
        resolution, halt_digest=halt, halt_evidence=FORK, context=CONTEXT, held=holder()
    )


def payload(res: dict[str, Any]) -> dict[str, Any]:
    body = {"corridor_id": C, "from": "HALTED", "to": "ACTIVE", "reason": "quorum", "resolution": res}
    return sign(body, {"KSA": KSA_KEY})


def test_one_party_resolves_by_quorum_through_the_lifecycle_hook() -> None:
    after = apply(halted_state(), payload(resolution()), PARTY_KEYS, verify_quorum=hook)
    assert after.state == State.ACTIVE and FORK_DIGEST in after.settled_evidence


def test_the_lifecycle_refuses_a_branch_without_quorum_and_changes_nothing() -> None:
    state = halted_state()
    note = cosigned(checkpoint(TREE_A), [0, 1, 2])
    with pytest.raises(PeerProtocolError) as caught:
        apply(state, payload(resolution(note)), PARTY_KEYS, verify_quorum=hook)
    assert caught.value.reason == "no-quorum" and state.state == State.HALTED
