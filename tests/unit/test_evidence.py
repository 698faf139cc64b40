"""Misbehaviour evidence (design §7, §8): builders, offline verification, negative vectors and properties.

Every refusal asserts its ``reason``. The near-miss table changes one thing per row, named for what it
changes (or the attack it is); the properties check that forged, self-consistent, stale or malformed
evidence never verifies, that real conflicts always do, and that digests survive re-serialisation.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import lifecycle
from protocol.checkpoints import Checkpoint, cosign, sign_checkpoint
from protocol.errors import PeerProtocolError
from protocol.evidence import (
    HALT_KINDS,
    KINDS,
    MAX_EVIDENCE_BYTES,
    SLASHABLE_KINDS,
    Divergence,
    VerifiedEvidence,
    check_slash_evidence,
    evidence_digest,
    evidence_verifier,
    log_equivocation_from_checkpoints,
    log_equivocation_from_receipts,
    verify_evidence,
    watcher_equivocation,
    watcher_rollback,
)
from protocol.jcs import canonical
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey, VerifierKey
from protocol.notes import NoteSignature, SignedNote, sign_note
from protocol.receipts import build_receipt, genesis_root
from tests.reference_rfc6962 import ReferenceTree

CORRIDOR = "PAK-KSA"
PAK = "sez.gov.pk/corridor/PAK-KSA"
KSA = "sez.gov.sa/corridor/PAK-KSA"
LOG = SigningKey(PAK, bytes([1]) * 32)
KSA_LOG = SigningKey(KSA, bytes([2]) * 32)
LOG_KEYS = {PAK: LOG.verifier(), KSA: KSA_LOG.verifier()}
W = SigningKey("watcher-1", bytes([11]) * 32)
W2 = SigningKey("watcher-2", bytes([12]) * 32)
WV = W.verifier(ALG_COSIGNATURE_V1)
W2V = W2.verifier(ALG_COSIGNATURE_V1)

NOW = int(datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC).timestamp())
WINDOW = 14 * 24 * 3600
SKEW = 300
T1 = NOW - 3600
T2 = NOW - 60
STAMP = "2026-11-27T11:00:00Z"


def verify(evidence: Any, **overrides: Any) -> VerifiedEvidence:
    args: dict[str, Any] = {"log_keys": LOG_KEYS, "now": NOW, "window": WINDOW, "max_skew": SKEW}
    args.update(overrides)
    return verify_evidence(evidence, **args)


def refused(evidence: Any, reason: str, **overrides: Any) -> PeerProtocolError:
    with pytest.raises(PeerProtocolError) as info:
        verify(evidence, **overrides)
    assert info.value.reason == reason, info.value
    return info.value


def root(tag: int) -> bytes:
    return bytes([tag]) * 32


def log_note(size: int, tree_root: bytes, key: SigningKey = LOG) -> SignedNote:
    return sign_checkpoint(Checkpoint(origin=key.name, size=size, root=tree_root), key)


def cosigned(size: int, tree_root: bytes, t: int, key: SigningKey = W, origin: str = PAK) -> SignedNote:
    """A checkpoint note as a node holds it: the log's line, another watcher's, and ``key``'s cosignature."""
    cp = Checkpoint(origin=origin, size=size, root=tree_root)
    log_key = LOG if origin == PAK else KSA_LOG
    lines = (sign_note(cp.body(), log_key), cosign(cp, W2 if key is W else W, t), cosign(cp, key, t))
    return SignedNote(text=cp.body(), signatures=lines)


def receipt(sequence: int, subject: str, timestamp: str = STAMP, key: SigningKey = LOG) -> bytes:
    payload = {"subject": subject, "attestation_type": "licence", "digest_sha256": "ab" * 32}
    return build_receipt(
        key=key,
        corridor_id=CORRIDOR,
        sequence=sequence,
        timestamp=timestamp,
        prev_root=genesis_root(CORRIDOR, key.name),
        kind="attestation",
        payload=payload,
    ).raw


def fork_trees(size_a: int, size_b: int, index: int) -> tuple[ReferenceTree, ReferenceTree]:
    """Two logs that agree except at leaf ``index``."""
    leaves = [bytes([i + 1]) * 32 for i in range(max(size_a, size_b))]
    forked = list(leaves)
    forked[index] = b"\xee" * 32
    return ReferenceTree(leaves[:size_a]), ReferenceTree(forked[:size_b])


def divergent_equivocation(size_a: int = 5, size_b: int = 8, index: int = 2) -> dict[str, Any]:
    tree_a, tree_b = fork_trees(size_a, size_b, index)
    note_a = cosigned(size_a, tree_a.root(size_a), T1)
    note_b = cosigned(size_b, tree_b.root(size_b), T2)
    divergence = Divergence(  # in the order the notes are passed: b, then a
        index=index,
        leaves=(tree_b.leaves[index], tree_a.leaves[index]),
        proofs=(tree_b.path(index, 0, size_b), tree_a.path(index, 0, size_a)),
    )
    return watcher_equivocation(note_b, note_a, WV, divergence=divergence)  # any order in


def same_size_equivocation() -> dict[str, Any]:
    return watcher_equivocation(cosigned(7, root(1), T1), cosigned(7, root(2), T2), WV)


def rollback() -> dict[str, Any]:
    return watcher_rollback(cosigned(4, root(3), T2), cosigned(9, root(4), T1), WV)


def log_fork_receipts() -> dict[str, Any]:
    return log_equivocation_from_receipts(receipt(0, "one"), receipt(0, "two"))


def log_fork_checkpoints() -> dict[str, Any]:
    return log_equivocation_from_checkpoints(log_note(3, root(5)), log_note(3, root(6)), LOG.verifier())


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "log-equivocation/receipts": log_fork_receipts,
    "log-equivocation/checkpoints": log_fork_checkpoints,
    "watcher-equivocation/same-size": same_size_equivocation,
    "watcher-equivocation/divergence": divergent_equivocation,
    "watcher-rollback": rollback,
}


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_built_evidence_verifies_from_bytes_and_from_json(name: str) -> None:
    body = BUILDERS[name]()
    from_json = verify(body)
    from_bytes = verify(canonical(body))
    assert from_json == from_bytes
    assert from_bytes.raw == canonical(body)
    assert from_bytes.digest == evidence_digest(body)
    assert from_bytes.kind == body["kind"] == name.split("/", maxsplit=1)[0]
    assert from_bytes.corridor_id == CORRIDOR and from_bytes.origin == PAK


def test_offender_time_and_kind_of_each_evidence() -> None:
    assert verify(log_fork_receipts()).offender == PAK
    assert verify(log_fork_receipts()).time == NOW - 3600  # the receipts' signed timestamp
    assert verify(log_fork_checkpoints()).time is None  # a checkpoint carries no signed time
    assert verify(same_size_equivocation()).offender == WV.to_vkey()
    assert verify(same_size_equivocation()).time == T2  # the later statement completes the offence
    assert verify(rollback()).time == T2


def test_builders_keep_only_the_offenders_line_and_a_canonical_order() -> None:
    body = same_size_equivocation()
    for text in body["cosigned"]:
        note = SignedNote.from_bytes(text.encode())
        assert [sig.name for sig in note.signatures] == ["watcher-1"]
    swapped = watcher_equivocation(cosigned(7, root(2), T2), cosigned(7, root(1), T1), WV)
    assert canonical(swapped) == canonical(body)
    first = rollback()
    assert Checkpoint.from_body(first["cosigned"][0].split("\n\n")[0] + "\n").size == 9  # earlier first
    assert canonical(log_equivocation_from_receipts(receipt(0, "two"), receipt(0, "one"))) == canonical(
        log_fork_receipts()
    )


def test_the_divergence_is_not_part_of_the_digest() -> None:
    """Another index or proof for the same two cosigned statements is the same misbehaviour."""
    leaves = [bytes([i + 1]) * 32 for i in range(8)]
    forked = [b"\xee" * 32 if i in (1, 3) else leaf for i, leaf in enumerate(leaves)]
    tree_a, tree_b = ReferenceTree(leaves[:5]), ReferenceTree(forked)
    note_a, note_b = cosigned(5, tree_a.root(5), T1), cosigned(8, tree_b.root(8), T2)

    def at(index: int) -> dict[str, Any]:
        divergence = Divergence(
            index=index,
            leaves=(leaves[index], forked[index]),
            proofs=(tree_a.path(index, 0, 5), tree_b.path(index, 0, 8)),
        )
        return watcher_equivocation(note_a, note_b, WV, divergence=divergence)

    one, other = at(1), at(3)
    assert canonical(one) != canonical(other)
    assert verify(one).digest == verify(other).digest == evidence_digest(one)
    assert evidence_digest(one) != evidence_digest({**one, "cosigned": one["cosigned"][::-1]})


def test_the_slash_receipt_rule_needs_no_context() -> None:
    offender, digest = check_slash_evidence(same_size_equivocation())
    assert offender == WV.to_vkey() and digest == evidence_digest(same_size_equivocation())
    with pytest.raises(PeerProtocolError) as info:
        check_slash_evidence(log_fork_receipts())
    assert info.value.reason == "kind-not-accepted"


# --------------------------------------------------------------------------- negative vectors


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _flip_signature(index: int, field: str = "cosigned") -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        note = SignedNote.from_bytes(body[field][index].encode())
        sig = note.signatures[0]
        flipped = bytearray(sig.signature)
        flipped[-1] ^= 0x01
        line = NoteSignature(name=sig.name, key_id=sig.key_id, signature=bytes(flipped))
        body[field][index] = SignedNote(text=note.text, signatures=(line,)).to_bytes().decode()

    return mutate


def _replace_note(index: int, note: SignedNote, field: str = "cosigned") -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body[field][index] = note.to_bytes().decode()

    return mutate


def _impersonate(body: dict[str, Any]) -> None:
    """Key swap: W2 signs, but labels its line with W's name and key ID (blaming W)."""
    cp = Checkpoint(origin=PAK, size=7, root=root(2))
    forged = cosign(cp, W2, T2)
    line = NoteSignature(name=W.name, key_id=WV.key_id, signature=forged.signature)
    body["cosigned"][1] = SignedNote(text=cp.body(), signatures=(line,)).to_bytes().decode()


def _two_lines(body: dict[str, Any]) -> None:
    note = SignedNote.from_bytes(body["cosigned"][0].encode())
    cp = Checkpoint.from_body(note.text)
    extra = cosign(cp, W2, T1)
    body["cosigned"][0] = SignedNote(text=note.text, signatures=(*note.signatures, extra)).to_bytes().decode()


def _same_statement_twice(body: dict[str, Any]) -> None:
    body["cosigned"][1] = body["cosigned"][0]


def _stranger_receipt(body: dict[str, Any]) -> None:
    """A receipt in the log's name, signed by another key (its verificationMethod names that key)."""
    forged = json.loads(receipt(0, "three", key=SigningKey(PAK, bytes([99]) * 32)))
    body["receipts"] = sorted([body["receipts"][0], forged], key=lambda r: r["next_root"])


def _swap(field: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body[field].reverse()

    return mutate


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        del body[field]

    return mutate


# (id, builder, mutation, verify overrides, want reason)
NEAR_MISSES: list[tuple[str, str, Callable[[dict[str, Any]], None], dict[str, Any], str]] = [
    ("unknown kind", "watcher-rollback", _set(("kind",), "watcher-laziness"), {}, "unknown-evidence-kind"),
    ("wrong type tag", "watcher-rollback", _set(("type",), "sez.evidence/v2"), {}, "unknown-evidence-kind"),
    ("extra field", "watcher-rollback", _set(("note",), "x"), {}, "schema-violation"),
    ("missing field", "watcher-rollback", _drop("watcher"), {}, "schema-violation"),
    ("one statement", "watcher-rollback", _set(("cosigned",), ["x"]), {}, "schema-violation"),
    (
        "both receipts and checkpoints",
        "log-equivocation/receipts",
        _set(("checkpoints",), ["a", "b"]),
        {},
        "schema-violation",
    ),
    (
        "kind not accepted for a slash",
        "log-equivocation/receipts",
        lambda b: None,
        {"kinds": SLASHABLE_KINDS},
        "kind-not-accepted",
    ),
    (
        "kind not accepted for a halt",
        "watcher-rollback",
        lambda b: None,
        {"kinds": HALT_KINDS},
        "kind-not-accepted",
    ),
    (
        "another corridor asked",
        "watcher-rollback",
        lambda b: None,
        {"corridor_id": "PAK-UAE"},
        "wrong-corridor",
    ),
    (
        "corridor id not the origin's",
        "watcher-rollback",
        _set(("corridor_id",), "PAK-UAE"),
        {},
        "origin-mismatch",
    ),
    (
        "origin of no corridor log",
        "watcher-rollback",
        _set(("origin",), "sez.gov.ae/corridor/PAK-KSA"),
        {},
        "unknown-origin",
    ),
    ("statements about another origin", "watcher-rollback", _set(("origin",), KSA), {}, "origin-mismatch"),
    (
        "watcher key of type 0x01",
        "watcher-rollback",
        _set(("watcher",), W.verifier().to_vkey()),
        {},
        "bad-vkey",
    ),
    ("garbage watcher key", "watcher-rollback", _set(("watcher",), "watcher-1+00+AA=="), {}, "bad-vkey"),
    ("another watcher named", "same-size", _set(("watcher",), W2V.to_vkey()), {}, "wrong-signer"),
    (
        "watcher not in the set",
        "same-size",
        lambda b: None,
        {"watcher_keys": {W2V.to_vkey()}},
        "unknown-watcher",
    ),
    (
        "statement by another watcher",
        "same-size",
        _replace_note(
            1,
            SignedNote(
                text=Checkpoint(origin=PAK, size=7, root=root(2)).body(),
                signatures=(cosign(Checkpoint(origin=PAK, size=7, root=root(2)), W2, T2),),
            ),
        ),
        {},
        "wrong-signer",
    ),
    ("key swap: a line labelled as the watcher's", "same-size", _impersonate, {}, "bad-signature"),
    ("flipped cosignature bit (first)", "same-size", _flip_signature(0), {}, "bad-signature"),
    ("flipped cosignature bit (second)", "watcher-rollback", _flip_signature(1), {}, "bad-signature"),
    ("two signature lines in a statement", "same-size", _two_lines, {}, "bad-statement"),
    ("statement not a note", "same-size", _set(("cosigned", 0), "hello\n"), {}, "bad-statement"),
    ("same statement twice", "same-size", _same_statement_twice, {}, "no-conflict"),
    ("swapped statements", "same-size", _swap("cosigned"), {}, "non-canonical-order"),
    (
        "divergence on same sizes",
        "same-size",
        _set(("divergence",), {"index": 0, "leaves": ["00" * 32] * 2, "proofs": [[], []]}),
        {},
        "unexpected-divergence",
    ),
    ("different sizes without divergence", "divergence", _drop("divergence"), {}, "missing-divergence"),
    (
        "divergence index past the smaller tree",
        "divergence",
        _set(("divergence", "index"), 5),
        {},
        "bad-index",
    ),
    (
        "divergence with one leaf twice",
        "divergence",
        _set(("divergence", "leaves", 1), bytes([3] * 32).hex()),
        {},
        "no-conflict",
    ),
    ("divergence index +1", "divergence", _set(("divergence", "index"), 3), {}, "divergence-not-proven"),
    (
        "divergence wrong leaf",
        "divergence",
        _set(("divergence", "leaves", 0), "77" * 32),
        {},
        "divergence-not-proven",
    ),
    (
        "divergence proof missing a hash",
        "divergence",
        lambda b: b["divergence"]["proofs"][1].pop(),
        {},
        "divergence-not-proven",
    ),
    (
        "divergence proof with an extra hash",
        "divergence",
        lambda b: b["divergence"]["proofs"][0].append("00" * 32),
        {},
        "divergence-not-proven",
    ),
    ("rollback the other way round", "watcher-rollback", _swap("cosigned"), {}, "no-rollback"),
    (
        "rollback to the same size",
        "watcher-rollback",
        _replace_note(
            1,
            SignedNote(
                text=Checkpoint(origin=PAK, size=9, root=root(4)).body(),
                signatures=(cosign(Checkpoint(origin=PAK, size=9, root=root(4)), W, T2),),
            ),
        ),
        {},
        "no-rollback",
    ),
    ("too old", "watcher-rollback", lambda b: None, {"now": T2 + WINDOW + 1}, "evidence-expired"),
    ("from the future", "watcher-rollback", lambda b: None, {"now": T2 - SKEW - 1}, "evidence-from-future"),
    (
        "receipts of two sequences",
        "log-equivocation/receipts",
        _set(("receipts", 1), json.loads(receipt(1, "two"))),
        {},
        "no-conflict",
    ),
    (
        "the same receipt twice",
        "log-equivocation/receipts",
        lambda b: b["receipts"].__setitem__(1, b["receipts"][0]),
        {},
        "no-conflict",
    ),
    ("swapped receipts", "log-equivocation/receipts", _swap("receipts"), {}, "non-canonical-order"),
    (
        "tampered receipt",
        "log-equivocation/receipts",
        _set(("receipts", 0, "timestamp"), "2026-11-27T11:00:01Z"),
        {},
        "bad-statement",
    ),
    (
        "receipt of the other log",
        "log-equivocation/receipts",
        _set(("receipts", 1), json.loads(receipt(0, "two", key=KSA_LOG))),
        {},
        "origin-mismatch",
    ),
    ("receipt by a stranger key", "log-equivocation/receipts", _stranger_receipt, {}, "bad-signature"),
    ("old receipts", "log-equivocation/receipts", lambda b: None, {"now": NOW + WINDOW}, "evidence-expired"),
    (
        "no log key to verify a log",
        "log-equivocation/receipts",
        lambda b: None,
        {"log_keys": None},
        "no-log-key",
    ),
    (
        "checkpoints of two sizes",
        "log-equivocation/checkpoints",
        _replace_note(1, log_note(4, root(6)), "checkpoints"),
        {},
        "no-conflict",
    ),
    (
        "checkpoint same twice",
        "log-equivocation/checkpoints",
        lambda b: b["checkpoints"].__setitem__(1, b["checkpoints"][0]),
        {},
        "no-conflict",
    ),
    ("swapped checkpoints", "log-equivocation/checkpoints", _swap("checkpoints"), {}, "non-canonical-order"),
    (
        "flipped log signature",
        "log-equivocation/checkpoints",
        _flip_signature(1, "checkpoints"),
        {},
        "bad-signature",
    ),
    (
        "checkpoint signed by a stranger",
        "log-equivocation/checkpoints",
        _replace_note(1, log_note(3, root(6), SigningKey(PAK, bytes([99]) * 32)), "checkpoints"),
        {},
        "wrong-signer",
    ),
]
_BUILDER_OF = {
    "same-size": "watcher-equivocation/same-size",
    "divergence": "watcher-equivocation/divergence",
}


@pytest.mark.parametrize(
    ("mutation", "overrides", "reason", "name"),
    [(m, o, r, _BUILDER_OF.get(b, b)) for _, b, m, o, r in NEAR_MISSES],
    ids=[case[0] for case in NEAR_MISSES],
)
def test_near_misses_are_refused_with_their_reason(
    mutation: Callable[[dict[str, Any]], None], overrides: dict[str, Any], reason: str, name: str
) -> None:
    body = BUILDERS[name]()
    verify(body)  # the unmutated evidence verifies: each row changes one thing
    mutation(body)
    refused(body, reason, **overrides)


def test_non_canonical_or_oversized_bytes_are_refused() -> None:
    body = same_size_equivocation()
    refused(json.dumps(body, indent=1).encode(), "non-canonical-json")
    refused(canonical(body) + b" ", "non-canonical-json")
    refused(b"[]", "schema-violation")
    refused(b'{"kind": 1.5}', "float-refused")
    refused(b"x" * (MAX_EVIDENCE_BYTES + 1), "too-large")
    refused({**body, "pad": "x" * MAX_EVIDENCE_BYTES}, "too-large")


def test_json_values_that_have_no_utf8_are_peer_faults() -> None:
    """A parsed object may hold a lone surrogate (JSON allows the escape): a peer fault, not a crash."""
    body = same_size_equivocation()
    refused({**body, "watcher": "w\ud800+12345678+AA=="}, "non-canonical-json")
    refused({**body, "cosigned": ["\ud800", body["cosigned"][1]]}, "non-canonical-json")
    refused({**body, "cosigned": [b"bytes", body["cosigned"][1]]}, "non-canonical-json")


def test_builders_refuse_statements_that_do_not_conflict() -> None:
    with pytest.raises(PeerProtocolError) as info:
        watcher_equivocation(cosigned(7, root(1), T1), cosigned(7, root(1), T2), WV)
    assert info.value.reason == "no-conflict"
    with pytest.raises(PeerProtocolError) as info:
        watcher_equivocation(cosigned(7, root(1), T1), cosigned(8, root(2), T2), WV)
    assert info.value.reason == "missing-divergence"
    with pytest.raises(PeerProtocolError) as info:
        watcher_rollback(cosigned(4, root(1), T1), cosigned(9, root(2), T2), WV)
    assert info.value.reason == "no-rollback"
    with pytest.raises(PeerProtocolError) as info:
        log_equivocation_from_receipts(receipt(0, "one"), receipt(0, "one"))
    assert info.value.reason == "no-conflict"


# --------------------------------------------------------------------------- the lifecycle hook


def test_the_lifecycle_halts_on_verified_log_equivocation() -> None:
    keys = {"PAK": LOG, "KSA": KSA_LOG}
    registered = {party: key.verifier() for party, key in keys.items()}
    body = log_fork_receipts()
    payload = {
        "corridor_id": CORRIDOR,
        "from": "ACTIVE",
        "to": "HALTED",
        "reason": "fork",
        "evidence": {"type": "log-equivocation", "digest_sha256": evidence_digest(body).hex(), "body": body},
    }
    hook = evidence_verifier(log_keys=LOG_KEYS, now=NOW, window=WINDOW, max_skew=SKEW)
    state = lifecycle.CorridorState(corridor_id=CORRIDOR, state=lifecycle.State.ACTIVE)
    after = lifecycle.apply(
        state, lifecycle.sign(payload, {"KSA": keys["KSA"]}), registered, verify_evidence=hook
    )
    assert after.state == lifecycle.State.HALTED and after.halt_evidence == evidence_digest(body).hex()

    mislabelled = copy.deepcopy(payload)
    mislabelled["evidence"]["type"] = "watcher-rollback"
    with pytest.raises(PeerProtocolError) as info:
        lifecycle.apply(
            state, lifecycle.sign(mislabelled, {"KSA": keys["KSA"]}), registered, verify_evidence=hook
        )
    assert info.value.reason == "evidence-type-mismatch"

    watcher_body = same_size_equivocation()
    not_a_fork = {
        **payload,
        "evidence": {
            "type": "watcher-equivocation",
            "digest_sha256": evidence_digest(watcher_body).hex(),
            "body": watcher_body,
        },
    }
    with pytest.raises(PeerProtocolError) as info:
        lifecycle.apply(
            state, lifecycle.sign(not_a_fork, {"KSA": keys["KSA"]}), registered, verify_evidence=hook
        )
    assert info.value.reason == "kind-not-accepted"
    assert state.state == lifecycle.State.ACTIVE  # frozen: nothing changed


# --------------------------------------------------------------------------- properties

SIZES = st.integers(min_value=1, max_value=2**40)
ROOTS = st.binary(min_size=32, max_size=32)
AGES = st.integers(min_value=-SKEW, max_value=WINDOW)


@settings(max_examples=40, deadline=None)
@given(size=SIZES, roots=st.lists(ROOTS, min_size=2, max_size=2, unique=True), ages=st.tuples(AGES, AGES))
def test_any_same_size_conflict_verifies_with_a_stable_digest(
    size: int, roots: list[bytes], ages: tuple[int, int]
) -> None:
    body = watcher_equivocation(
        cosigned(size, roots[0], NOW - ages[0]), cosigned(size, roots[1], NOW - ages[1]), WV
    )
    verified = verify(body)
    assert verified.offender == WV.to_vkey()
    # Re-serialised any way, the digest and the canonical bytes are the same.
    reparsed = json.loads(json.dumps(body, indent=2, sort_keys=False))
    assert verify(reparsed).digest == verified.digest == evidence_digest(reparsed)
    assert verify(reparsed).raw == verified.raw


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(SIZES, min_size=2, max_size=2, unique=True),
    roots=st.tuples(ROOTS, ROOTS),
    times=st.lists(
        st.integers(min_value=NOW - WINDOW, max_value=NOW + SKEW), min_size=2, max_size=2, unique=True
    ),
)
def test_any_rollback_verifies_and_its_reverse_never_does(
    sizes: list[int], roots: tuple[bytes, bytes], times: list[int]
) -> None:
    big, small = max(sizes), min(sizes)
    early, late = min(times), max(times)
    body = watcher_rollback(cosigned(small, roots[1], late), cosigned(big, roots[0], early), WV)
    assert verify(body).time == late
    assert verify(json.loads(json.dumps(body))).digest == evidence_digest(body)
    with pytest.raises(PeerProtocolError) as info:  # growing over time is what an honest watcher does
        watcher_rollback(cosigned(big, roots[0], late), cosigned(small, roots[1], early), WV)
    assert info.value.reason == "no-rollback"


@settings(max_examples=25, deadline=None)
@given(
    sequence=st.integers(min_value=0, max_value=2**40),
    subjects=st.lists(st.text(min_size=1, max_size=30), min_size=2, max_size=2, unique=True),
)
def test_any_two_receipts_for_one_sequence_verify_as_a_fork(sequence: int, subjects: list[str]) -> None:
    body = log_equivocation_from_receipts(receipt(sequence, subjects[0]), receipt(sequence, subjects[1]))
    verified = verify(body, kinds=HALT_KINDS)
    assert verified.offender == PAK and verified.digest == evidence_digest(json.loads(json.dumps(body)))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_proven_divergence_verifies_and_consistent_trees_never_do(data: st.DataObject) -> None:
    size_a = data.draw(st.integers(min_value=1, max_value=40))
    size_b = data.draw(st.integers(min_value=size_a + 1, max_value=48))
    index = data.draw(st.integers(min_value=0, max_value=size_a - 1))
    verify(divergent_equivocation(size_a, size_b, index))
    # Tree b extends tree a: every leaf below size_a agrees, so no index proves a divergence.
    tree = ReferenceTree([bytes([i + 1]) * 32 for i in range(size_b)])
    note_a, note_b = cosigned(size_a, tree.root(size_a), T1), cosigned(size_b, tree.root(size_b), T2)
    honest = Divergence(
        index=index,
        leaves=(tree.leaves[index], tree.leaves[index]),
        proofs=(tree.path(index, 0, size_a), tree.path(index, 0, size_b)),
    )
    with pytest.raises(PeerProtocolError) as info:
        watcher_equivocation(note_a, note_b, WV, divergence=honest)
    assert info.value.reason == "no-conflict"
    lying = Divergence(index=index, leaves=(tree.leaves[index], b"\xee" * 32), proofs=honest.proofs)
    body = watcher_equivocation(note_a, note_b, WV, divergence=lying)
    refused(body, "divergence-not-proven")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(BUILDERS)), data=st.data())
def test_no_single_flipped_byte_verifies(name: str, data: st.DataObject) -> None:
    raw = bytearray(canonical(BUILDERS[name]()))
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(PeerProtocolError):
        verify(bytes(raw))


@settings(max_examples=40, deadline=None)
@given(
    age=st.integers(min_value=WINDOW + 1, max_value=10 * WINDOW),
    name=st.sampled_from(["watcher-equivocation/same-size", "watcher-rollback", "log-equivocation/receipts"]),
)
def test_stale_evidence_never_verifies(age: int, name: str) -> None:
    verified = verify(BUILDERS[name]())
    assert verified.time is not None
    refused(BUILDERS[name](), "evidence-expired", now=verified.time + age)


@settings(max_examples=30, deadline=None)
@given(ahead=st.integers(min_value=SKEW + 1, max_value=10**6))
def test_evidence_from_the_future_never_verifies(ahead: int) -> None:
    refused(rollback(), "evidence-from-future", now=T2 - ahead)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_peer_errors(data: bytes) -> None:
    with pytest.raises(PeerProtocolError):
        verify(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(BUILDERS)), value=JSON, data=st.data())
def test_any_field_replaced_by_junk_is_refused_as_a_peer_fault(
    name: str, value: Any, data: st.DataObject
) -> None:
    body = BUILDERS[name]()
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if path:
            paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, (*path, index))

    walk(body, ())
    path = data.draw(st.sampled_from(paths))
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    if target[path[-1]] == value:
        return
    target[path[-1]] = value
    with pytest.raises(PeerProtocolError):
        verify(body)


@settings(max_examples=30, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_statements_by_any_other_key_never_verify_as_the_watchers(seed: bytes) -> None:
    forger = SigningKey(W.name, seed)  # same name, another key: the key ID differs
    if forger.public == W.public:
        return
    body = watcher_equivocation(
        cosigned(7, root(1), T1, key=forger),
        cosigned(7, root(2), T2, key=forger),
        VerifierKey(name=W.name, public=forger.public, alg=ALG_COSIGNATURE_V1),
    )
    body["watcher"] = WV.to_vkey()
    refused(body, "wrong-signer")


# --------------------------------------------------------------------------- committed vectors

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "evidence"


def _run_vector(document: dict[str, Any]) -> str | None:
    context = document["context"]
    log_keys = context["log_keys"]
    try:
        verify_evidence(
            document["evidence"],
            log_keys=None if log_keys is None else {o: VerifierKey.from_vkey(v) for o, v in log_keys.items()},
            now=context["now"],
            window=context["window"],
            max_skew=context["max_skew"],
            corridor_id=context.get("corridor_id"),
            watcher_keys=context.get("watcher_keys"),
            kinds=context.get("kinds", KINDS),
        )
    except PeerProtocolError as exc:
        return exc.reason
    return None


def test_committed_vectors_verify_as_they_say() -> None:
    """Every vector file, from its own bytes; all failures are reported at once, each with its desc."""
    paths = sorted(VECTORS.rglob("*.json"))
    assert len(paths) == len(BUILDERS) + len(NEAR_MISSES)
    failures = []
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        got = _run_vector(document)
        if got != document["want_err"]:
            failures.append(
                f"{path.relative_to(VECTORS)}: {document['desc']}: want {document['want_err']}, got {got}"
            )
    assert not failures, f"{len(failures)} out of {len(paths)} failures:\n" + "\n".join(failures)


def test_committed_vectors_match_the_generator() -> None:
    from tests.vectors.generate_evidence import render, vectors  # noqa: PLC0415 (imports this module)

    expected = {relative: render(document) for relative, document in vectors().items()}
    committed = {
        str(path.relative_to(VECTORS)): path.read_text(encoding="utf-8")
        for path in sorted(VECTORS.rglob("*.json"))
    }
    assert committed == expected, "run: python -m tests.vectors.generate_evidence"
