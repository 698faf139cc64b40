"""``protocol.light.verify_bundle``: valid bundles verify; each tampered field fails with its own reason.

Near-miss table (style §19): every row changes one thing of a valid bundle (or of the policy it is
checked under) and names the reason and the check that must report it.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from fractions import Fraction

import pytest

from protocol.checkpoints import Checkpoint, add_signatures, cosign, sign_checkpoint
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.light import CHECK_NAMES, verify_bundle
from protocol.notes import NoteSignature, format_note, parse_note
from protocol.policy import LogEntry, TrustPolicy
from protocol.receipts import build_receipt, genesis_root
from protocol.tlog_proof import TlogProof
from tests.light_fixture import CORRIDOR, KSA_ORIGIN, PAK_ORIGIN, TIME, Corridor, transfer

C = Corridor(n=7, watchers=4)
POLICY = C.policy()
BUNDLE = C.bundle(index=2)


def _decoded(data: bytes = BUNDLE) -> TlogProof:
    return TlogProof.decode(data)


def _with(data: bytes = BUNDLE, **changes: object) -> bytes:
    return dataclasses.replace(_decoded(data), **changes).encode()  # type: ignore[arg-type]


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


def _note_with_line(data: bytes, name: str, change: Callable[[bytes], bytes]) -> bytes:
    """The bundle with the signature bytes of the line by ``name`` changed."""
    note = parse_note(_decoded(data).checkpoint)
    lines = tuple(
        NoteSignature(name=s.name, key_id=s.key_id, signature=change(s.signature)) if s.name == name else s
        for s in note.signatures
    )
    return _with(data, checkpoint=format_note(dataclasses.replace(note, signatures=lines)))


def _receipt_byte() -> bytes:
    raw = _decoded().extra
    assert raw is not None
    at = raw.index(b"2026-11-27T10:00:02Z") + 18  # a digit of the timestamp's seconds: still valid JSON
    return _with(extra=raw[:at] + b"9" + raw[at + 1 :])


def _receipt_signature() -> bytes:
    raw = _decoded().extra
    assert raw is not None
    at = raw.index(b'"signature":"') + len(b'"signature":"') + 5
    swapped = b"A" if raw[at : at + 1] != b"A" else b"B"
    return _with(extra=raw[:at] + swapped + raw[at + 1 :])


def _path_hash() -> bytes:
    proof = _decoded().proof
    return _with(proof=(_flip(proof[0], 0), *proof[1:]))


def _root() -> bytes:
    note = parse_note(_decoded().checkpoint)
    cp = Checkpoint.from_body(note.text)
    altered = dataclasses.replace(cp, root=_flip(cp.root, 31))
    return _with(checkpoint=format_note(dataclasses.replace(note, text=altered.body())))


def _unknown_log_key() -> bytes:
    impostor = SigningKey(PAK_ORIGIN, b"\x42" * 32)
    cp = Checkpoint(origin=PAK_ORIGIN, size=C.n, root=C.tree.root(C.n))
    note = add_signatures(sign_checkpoint(cp, impostor), [cosign(cp, C.ksa, TIME)])
    return _with(checkpoint=format_note(note))


def _receipt_of_other_log() -> bytes:
    ksa = build_receipt(
        key=C.ksa, corridor_id=CORRIDOR, sequence=2, timestamp="2026-11-27T10:00:02Z",
        prev_root=genesis_root(CORRIDOR, KSA_ORIGIN), kind="transfer", payload=transfer(2),
    )  # fmt: skip
    return _with(extra=ksa.raw)


def _same() -> bytes:
    return BUNDLE


def _policy() -> TrustPolicy:
    return POLICY


def _short_path() -> bytes:
    return _with(proof=_decoded().proof[:-1])


def _cut_before_checkpoint() -> bytes:
    return BUNDLE[: BUNDLE.index(b"\n\n") + 1]  # after the last path line, before the blank line


def _cut_in_checkpoint_text() -> bytes:
    start = BUNDLE.index(b"\n\n") + 2
    return BUNDLE[: BUNDLE.index(b"\n", start) + 1]  # the origin line only


def _other_corridor_policy() -> TrustPolicy:
    uae = SigningKey("sez.gov.ae/corridor/PAK-UAE", b"\x07" * 32)
    pak = SigningKey("sez.gov.pk/corridor/PAK-UAE", b"\x08" * 32)
    return dataclasses.replace(
        POLICY,
        corridor_id="PAK-UAE",
        logs=(
            LogEntry(key=pak.verifier(), cosigner=pak.verifier(ALG_COSIGNATURE_V1)),
            LogEntry(key=uae.verifier(), cosigner=uae.verifier(ALG_COSIGNATURE_V1)),
        ),
    )


# (description, bundle, policy, failing check, reason)
NEAR_MISSES: list[tuple[str, Callable[[], bytes], Callable[[], TrustPolicy], str, str]] = [
    ("a receipt byte", _receipt_byte, lambda: POLICY, "receipt", "next-root-mismatch"),
    ("the receipt signature", _receipt_signature, lambda: POLICY, "receipt signature", "bad-signature"),
    ("the index", lambda: _with(index=3), lambda: POLICY, "index", "index-mismatch"),
    ("a path hash", _path_hash, lambda: POLICY, "inclusion", "root-mismatch"),
    ("a missing path hash", _short_path, lambda: POLICY, "inclusion", "bad-proof-length"),
    ("the checkpoint root", _root, lambda: POLICY, "log signature", "checkpoint-root-altered"),
    (
        "the log signature",
        lambda: _note_with_line(BUNDLE, PAK_ORIGIN, lambda s: _flip(s, 10)),
        lambda: POLICY, "log signature", "bad-log-signature",
    ),
    (
        "a watcher cosignature",
        lambda: _note_with_line(BUNDLE, "w2.example", lambda s: _flip(s, 20)),
        lambda: POLICY, "cosignatures", "bad-cosignature",
    ),
    (
        "the counterparty cosignature",
        lambda: _note_with_line(BUNDLE, KSA_ORIGIN, lambda s: _flip(s, 20)),
        lambda: POLICY, "cosignatures", "bad-cosignature",
    ),
    (
        "a cosignature timestamp",
        lambda: _note_with_line(BUNDLE, "w1.example", lambda s: _flip(s, 7)),
        lambda: POLICY, "cosignatures", "bad-cosignature",
    ),
    ("an unknown log key", _unknown_log_key, lambda: POLICY, "log signature", "unknown-log-key"),
    ("a wrong origin: another corridor's policy", _same, _other_corridor_policy, "origin", "unknown-origin"),
    ("a wrong origin: the other log's receipt", _receipt_of_other_log, _policy, "origin", "wrong-origin"),
    (
        "stake below the threshold",
        lambda: C.bundle(index=2, cosigners=[0, 1]),
        lambda: POLICY, "quorum", "insufficient-stake",
    ),
    (
        "no counterparty cosignature",
        lambda: C.bundle(index=2, counterparty=False),
        lambda: POLICY, "quorum", "missing-counterparty-cosignature",
    ),
    ("truncated in a signature", lambda: BUNDLE[:-30], lambda: POLICY, "bundle", "truncated-bundle"),
    ("truncated in the path", lambda: BUNDLE[:200], lambda: POLICY, "bundle", "truncated-bundle"),
    ("truncated before the checkpoint", _cut_before_checkpoint, _policy, "bundle", "truncated-bundle"),
    ("truncated in the checkpoint text", _cut_in_checkpoint_text, lambda: POLICY, "bundle", "bad-note"),
    ("an empty file", lambda: b"", lambda: POLICY, "bundle", "truncated-bundle"),
]  # fmt: skip


def test_a_valid_bundle_verifies_and_names_every_check() -> None:
    report = verify_bundle(BUNDLE, POLICY)
    assert report.verified, report.message
    assert report.reason is None
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.ok and c.reason is None for c in report.checks)
    assert report.receipt is not None and report.receipt.sequence == 2
    assert report.checkpoint is not None and report.checkpoint.size == C.n
    assert report.decision is not None and report.decision.final
    assert report.decision.cosigning_stake == report.decision.active_stake == 4_000_000
    assert report.message.startswith("VERIFIED: receipt sez.gov.pk/corridor/PAK-KSA#2 (transfer)")


@pytest.mark.parametrize("index", range(7))
def test_every_receipt_of_the_tree_verifies(index: int) -> None:
    assert verify_bundle(C.bundle(index=index), POLICY).verified


@pytest.mark.parametrize(
    ("bundle", "policy", "check", "reason"),
    [row[1:] for row in NEAR_MISSES],
    ids=[row[0] for row in NEAR_MISSES],
)
def test_each_tampered_field_fails_with_its_own_reason(
    bundle: Callable[[], bytes], policy: Callable[[], TrustPolicy], check: str, reason: str
) -> None:
    data = bundle()
    assert data != BUNDLE or policy() is not POLICY
    report = verify_bundle(data, policy())
    assert not report.verified
    assert report.reason == reason, report.message
    failed = [c for c in report.checks if c.reason is not None]
    assert [(c.name, c.reason) for c in failed] == [(check, reason)]
    assert report.message.startswith(f"REJECTED: {reason}: ")
    names = [c.name for c in report.checks]
    after = names[names.index(check) + 1 :]
    assert all(not c.ok and c.detail == "not checked" for c in report.checks if c.name in after)
    assert all(c.ok for c in report.checks[: names.index(check)])


def test_reasons_of_the_issue_list_are_all_distinct() -> None:
    wanted = [
        "a receipt byte", "the index", "a path hash", "the checkpoint root", "the log signature",
        "a watcher cosignature", "stake below the threshold", "an unknown log key",
        "a wrong origin: another corridor's policy", "truncated in a signature",
    ]  # fmt: skip
    reasons = {row[0]: row[4] for row in NEAR_MISSES}
    assert len({reasons[name] for name in wanted}) == len(wanted)


def test_too_few_watchers_even_with_enough_stake() -> None:
    corridor = Corridor(n=3, watchers=4, stakes=[10, 1, 1, 1])
    report = verify_bundle(corridor.bundle(index=0, cosigners=[0, 1]), corridor.policy())
    assert report.reason == "too-few-watchers", report.message
    assert verify_bundle(corridor.bundle(index=0, cosigners=[0, 1, 2]), corridor.policy()).verified


def test_stake_weighs_not_heads() -> None:
    corridor = Corridor(n=3, watchers=4, stakes=[10, 1, 1, 1])
    policy = corridor.policy()
    assert verify_bundle(corridor.bundle(index=0, cosigners=[1, 2, 3]), policy).reason == "insufficient-stake"
    # exactly 2/3 is not a quorum: strictly more is needed
    even = Corridor(n=3, watchers=3, stakes=[2, 2, 2])
    assert verify_bundle(even.bundle(index=0, cosigners=[0, 1]), even.policy()).reason == "insufficient-stake"
    half = even.policy(threshold=Fraction(1, 2))
    assert verify_bundle(even.bundle(index=0, cosigners=[0, 1, 2]), half).verified


def test_unknown_cosigners_are_ignored_and_do_not_count() -> None:
    strangers = [SigningKey(f"w{i + 1}.example", bytes([0x60 + i]) * 32) for i in range(4)]
    cp = Checkpoint(origin=PAK_ORIGIN, size=C.n, root=C.tree.root(C.n))
    lines = [cosign(cp, C.ksa, TIME), *(cosign(cp, key, TIME) for key in strangers)]
    note = add_signatures(sign_checkpoint(cp, C.pak), lines)
    report = verify_bundle(_with(checkpoint=format_note(note)), POLICY)
    assert report.reason == "insufficient-stake"
    cosignatures = next(c for c in report.checks if c.name == "cosignatures")
    assert cosignatures.ok and "4 lines of other keys ignored" in cosignatures.detail


def test_counterparty_optional_when_the_policy_says_so() -> None:
    policy = C.policy(require_counterparty=False)
    assert verify_bundle(C.bundle(index=2, counterparty=False), policy).verified


def test_bootstrap_policy_is_bilateral() -> None:
    corridor = Corridor(n=3, watchers=2)  # fewer than min_watchers = 3
    policy = corridor.policy()
    assert policy.bootstrap
    report = verify_bundle(corridor.bundle(index=1, cosigners=[]), policy)
    assert report.verified, report.message
    assert "bilateral" in report.checks[-1].detail
    no_party = verify_bundle(corridor.bundle(index=1, counterparty=False), policy)
    assert no_party.reason == "missing-counterparty-cosignature"


def test_the_receipt_given_separately() -> None:
    raw = C.receipts[2].raw
    assert verify_bundle(BUNDLE, POLICY, receipt=raw + b"\n").verified
    other = verify_bundle(BUNDLE, POLICY, receipt=C.receipts[3].raw)
    assert other.reason == "receipt-mismatch"
    assert [c.name for c in other.checks if c.reason] == ["receipt file"]
    bare = _with(extra=None)
    assert verify_bundle(bare, POLICY, receipt=raw).verified
    assert verify_bundle(bare, POLICY).reason == "missing-receipt"
    assert verify_bundle(bare, POLICY, receipt=C.receipts[3].raw).reason == "index-mismatch"
    broken = verify_bundle(BUNDLE, POLICY, receipt=b"{}")
    assert broken.reason == "schema-violation"


def test_the_extra_line_is_base64_of_the_receipt() -> None:
    line = BUNDLE.split(b"\n")[1]
    assert line.startswith(b"extra ")
    assert base64.b64decode(line[6:]) == C.receipts[2].raw
