"""Fuzzing the text formats: signed notes, checkpoints and cosignatures, tlog-proof and receipt bundles,
the light client's checkpoint follow, and the witness add-checkpoint body."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.checkpoints import open_checkpoint, parse_checkpoint, verify_cosignatures
from protocol.errors import PeerProtocolError
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.light import BundleReport, verify_bundle, verify_receipt_bundle
from protocol.light_follow import open_followed_checkpoint
from protocol.notes import format_note, open_note, parse_note
from protocol.tlog_proof import TlogProof, parse_tlog_proof, verify_tlog_proof
from protocol.tlog_witness import handle_add_checkpoint, parse_add_checkpoint
from tests.fuzz.mutations import FUZZ, mutated, rejects_cleanly
from tests.light_fixture import PAK_ORIGIN, Corridor

pytestmark = pytest.mark.timeout(300)

CORRIDOR = Corridor(n=7, watchers=3)
POLICY = CORRIDOR.policy()
LOG_KEY = CORRIDOR.pak.verifier()
COSIGNERS = [CORRIDOR.ksa.verifier(ALG_COSIGNATURE_V1)] + [
    key.verifier(ALG_COSIGNATURE_V1) for key in CORRIDOR.watcher_keys
]
CHECKPOINTS = [CORRIDOR.checkpoint(size) for size in (1, 4, 7)]
BUNDLES = [CORRIDOR.bundle(index, size) for index, size in ((0, 1), (2, 4), (6, 7), (3, 7))]
WITNESS = SigningKey("witness.example", b"w".ljust(32, b"."))


def test_the_seeds_are_valid() -> None:
    """Mutations only explore the deep checks if the seeds pass every check."""
    for data in CHECKPOINTS:
        cp, note = open_checkpoint(data, LOG_KEY)
        assert len(verify_cosignatures(note, cp, COSIGNERS)) == 4
    for data in BUNDLES:
        assert verify_bundle(data, POLICY).verified
        verify_receipt_bundle(data, LOG_KEY, COSIGNERS)


@FUZZ
@given(st.sampled_from(CHECKPOINTS).flatmap(mutated))
def test_notes_parse_or_are_refused(data: bytes) -> None:
    note = rejects_cleanly(lambda: parse_note(data), PeerProtocolError)
    if note is not None:
        assert format_note(note) == data  # only the canonical encoding parses
    rejects_cleanly(lambda: open_note(data, [LOG_KEY, CORRIDOR.ksa.verifier()]), PeerProtocolError)


@FUZZ
@given(st.sampled_from(CHECKPOINTS).flatmap(mutated))
def test_checkpoints_and_cosignatures_verify_or_are_refused(data: bytes) -> None:
    rejects_cleanly(lambda: parse_checkpoint(data), PeerProtocolError)
    opened = rejects_cleanly(lambda: open_checkpoint(data, LOG_KEY), PeerProtocolError)
    if opened is not None:
        cp, note = opened
        rejects_cleanly(lambda: verify_cosignatures(note, cp, COSIGNERS), PeerProtocolError)
    followed = rejects_cleanly(lambda: open_followed_checkpoint(data, POLICY, PAK_ORIGIN), PeerProtocolError)
    if followed is not None:
        assert followed.checkpoint.origin == PAK_ORIGIN


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_not_notes(data: bytes) -> None:
    rejects_cleanly(lambda: parse_note(data), PeerProtocolError)
    rejects_cleanly(lambda: parse_tlog_proof(data), PeerProtocolError)
    rejects_cleanly(lambda: parse_add_checkpoint(data), PeerProtocolError)


@FUZZ
@given(st.sampled_from(BUNDLES).flatmap(mutated))
def test_tlog_proof_bundles_verify_or_are_refused(data: bytes) -> None:
    rejects_cleanly(lambda: parse_tlog_proof(data), PeerProtocolError)
    bundle = rejects_cleanly(lambda: TlogProof.decode(data), PeerProtocolError)
    if bundle is not None:
        assert bundle.encode() == data
        leaf = CORRIDOR.tree.leaf_hash(bundle.index) if bundle.index < CORRIDOR.n else bytes(32)
        rejects_cleanly(lambda: verify_tlog_proof(bundle, leaf, LOG_KEY, COSIGNERS), PeerProtocolError)


@FUZZ
@given(st.sampled_from(BUNDLES).flatmap(mutated))
def test_receipt_bundles_give_a_report_and_never_raise(data: bytes) -> None:
    report = verify_bundle(data, POLICY)
    assert isinstance(report, BundleReport)
    verdict = rejects_cleanly(lambda: verify_receipt_bundle(data, LOG_KEY, COSIGNERS), PeerProtocolError)
    # The policy verifier checks all that the key-only one does, and the quorum on top: whatever it
    # accepts, the key-only one accepts (not the reverse: dropping a cosignature can lose the quorum).
    if report.verified:
        assert verdict is not None
    if not report.verified:
        assert report.reason and report.message


def _add_checkpoint_body(old: int, proof: list[bytes], checkpoint: bytes) -> bytes:
    lines = [f"old {old}".encode()] + [base64.b64encode(h) for h in proof]
    return b"\n".join(lines) + b"\n\n" + checkpoint


ADD_CHECKPOINT = [
    _add_checkpoint_body(4, CORRIDOR.tree.consistency(4, 7), CHECKPOINTS[2]),
    _add_checkpoint_body(0, [], CHECKPOINTS[0]),
]


@FUZZ
@given(st.sampled_from(ADD_CHECKPOINT).flatmap(mutated), st.sampled_from([None, 1, 4]))
def test_add_checkpoint_bodies_get_an_http_answer(body: bytes, last_size: int | None) -> None:
    rejects_cleanly(lambda: parse_add_checkpoint(body), PeerProtocolError)
    last = None if last_size is None else parse_checkpoint(CORRIDOR.checkpoint(last_size))[0]
    response = handle_add_checkpoint(
        body, log_keys={PAK_ORIGIN: LOG_KEY}, last_cosigned=lambda _origin: last, witness_key=WITNESS,
        now=1_795_000_000,
    )  # fmt: skip
    assert response.status in (200, 400, 403, 404, 409, 422), response
    assert response.body.endswith(b"\n")
