"""C2SP tlog-witness add-checkpoint: the status matrix, byte for byte."""

from __future__ import annotations

import base64

import pytest

from protocol.checkpoints import Checkpoint, parse_checkpoint, sign_checkpoint, verify_cosignatures
from protocol.keys import ALG_COSIGNATURE_V1, SigningKey
from protocol.notes import format_note, parse_signature_lines, with_signatures
from protocol.tlog_witness import handle_add_checkpoint, parse_add_checkpoint
from tests.reference_rfc6962 import ReferenceTree

ORIGIN = "sez.gov.sa/corridor/PAK-KSA"
LOG = SigningKey(ORIGIN, bytes(range(32)))
OTHER = SigningKey(ORIGIN, bytes(range(1, 33)))
WITNESS = SigningKey("watcher-1", bytes([7]) * 32)
LEAVES = [bytes([i]) * 32 for i in range(40)]
TREE = ReferenceTree(LEAVES)


def cp(size: int, tree: ReferenceTree = TREE) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=size, root=tree.root(size))


def note(size: int, key: SigningKey = LOG, tree: ReferenceTree = TREE) -> bytes:
    return format_note(sign_checkpoint(cp(size, tree), key))


ELSEWHERE = format_note(
    sign_checkpoint(
        Checkpoint(origin="elsewhere", size=1, root=b"\0" * 32), SigningKey("elsewhere", bytes(32))
    )
)


def body(old: int, new_note: bytes, proof: list[bytes] | None = None) -> bytes:
    lines = [f"old {old}".encode()] + [base64.b64encode(h) for h in (proof or [])]
    return b"\n".join(lines) + b"\n\n" + new_note


def handle(data: bytes, last: Checkpoint | None = None) -> object:
    return handle_add_checkpoint(
        data,
        log_keys={ORIGIN: LOG.verifier()},
        last_cosigned=lambda origin: last,
        witness_key=WITNESS,
        now=1700000000,
    )


def test_first_checkpoint_is_cosigned() -> None:
    response = handle(body(0, note(10)))
    assert response.status == 200
    assert response.new_state == cp(10)
    lines = parse_signature_lines(response.body)
    assert len(lines) == 1 and response.body.endswith(b"\n")
    cosigned = with_signatures(parse_checkpoint(note(10))[1], lines)
    witness = WITNESS.verifier(ALG_COSIGNATURE_V1)
    assert verify_cosignatures(cosigned, cp(10), [witness]) == {"watcher-1": 1700000000}


def test_consistent_extension_is_cosigned() -> None:
    response = handle(body(10, note(25), TREE.consistency(10, 25)), last=cp(10))
    assert response.status == 200 and response.new_state == cp(25)


def test_same_checkpoint_again_is_cosigned_without_a_new_state() -> None:
    response = handle(body(10, note(10)), last=cp(10))
    assert response.status == 200 and response.new_state is None


@pytest.mark.parametrize(
    ("data", "last", "status"),
    [
        (b"garbage", None, 400),
        (b"old 01\n\n" + note(10), None, 400),
        (b"old 1\nnot-base64!\n\n" + note(10), None, 400),
        (body(0, b"not a note"), None, 400),
        (body(20, note(10)), cp(20), 400),  # old larger than the checkpoint
        (body(0, ELSEWHERE), None, 404),
        (body(0, note(10, OTHER)), None, 403),  # signed by a key the witness does not trust
        (body(5, note(25), TREE.consistency(5, 25)), cp(10), 409),  # old is not what it last cosigned
        (body(0, note(25)), cp(10), 409),
        (body(10, note(25), TREE.consistency(10, 25)[:-1]), cp(10), 422),  # truncated proof
        (body(10, note(25), [b"\x01" * 32] * 5), cp(10), 422),  # wrong proof
        (body(0, note(10), [b"\x01" * 32]), None, 422),  # a proof for old size 0
    ],
)  # fmt: skip
def test_status_matrix(data: bytes, last: Checkpoint | None, status: int) -> None:
    response = handle(data, last)
    assert response.status == status, response.body
    assert response.new_state is None


def test_conflict_answers_the_cosigned_size_as_tlog_size() -> None:
    response = handle(body(5, note(25), TREE.consistency(5, 25)), last=cp(10))
    assert (response.status, response.content_type, response.body) == (409, "text/x.tlog.size", b"10\n")


def test_same_size_other_root_is_a_conflict_and_kept_as_evidence() -> None:
    forked = ReferenceTree([*LEAVES[:3], b"\xff" * 32, *LEAVES[4:]])
    other_note = note(10, tree=forked)
    response = handle(body(10, other_note), last=cp(10))
    assert response.status == 409 and response.body == b"10\n"
    assert response.evidence == other_note


def test_inconsistent_tree_is_refused_and_kept_as_evidence() -> None:
    forked = ReferenceTree([*LEAVES[:3], b"\xff" * 32, *LEAVES[4:]])
    forked_note = note(25, tree=forked)
    response = handle(body(10, forked_note, forked.consistency(10, 25)), last=cp(10))
    assert response.status == 422 and response.evidence == forked_note


def test_parse_limits() -> None:
    with pytest.raises(Exception, match="more than 63"):
        parse_add_checkpoint(body(1, note(10), [b"\x01" * 32] * 64))
