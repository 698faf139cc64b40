"""The witness rule: first, consistent, same, and every way a checkpoint must be refused."""

from __future__ import annotations

import pytest

from protocol.checkpoints import Checkpoint
from protocol.errors import PeerProtocolError
from protocol.witness import check_witness_rule
from tests.reference_rfc6962 import ReferenceTree

ORIGIN = "sez.gov.sa/corridor/PAK-KSA"
LEAVES = [bytes([i]) * 32 for i in range(20)]


def cp(size: int, leaves: list[bytes] = LEAVES, origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(origin=origin, size=size, root=ReferenceTree(leaves).root(size))


def consistency(old: int, leaves: list[bytes]) -> list[bytes]:
    return ReferenceTree(leaves).consistency(old, len(leaves))


def test_first_consistent_and_same() -> None:
    assert check_witness_rule(None, cp(5), []).reason == "first"
    decision = check_witness_rule(cp(5), cp(12), consistency(5, LEAVES[:12]))
    assert decision.cosign and decision.reason == "consistent"
    same = check_witness_rule(cp(12), cp(12), [])
    assert not same.cosign and same.reason == "same"


def test_refusals() -> None:
    forked = [*LEAVES[:2], b"\xff" * 32, *LEAVES[3:]]  # differs below the cosigned size 5
    cases = [
        (cp(12), cp(5), [], "rollback"),
        (cp(12), cp(12, forked), [], "equivocation"),
        (cp(5), cp(12, forked), consistency(5, forked[:12]), "equivocation-free-but-inconsistent"),
        (cp(5), cp(12), [], "inconsistent"),
        (cp(5), cp(12), consistency(5, LEAVES[:12])[:-1], "inconsistent"),
        (cp(5, origin="x"), cp(12), consistency(5, LEAVES[:12]), "wrong-origin"),
    ]
    for last, new, proof, reason in cases:
        expected = "inconsistent" if reason.startswith("equivocation-free") else reason
        with pytest.raises(PeerProtocolError) as info:
            check_witness_rule(last, new, proof)
        assert info.value.reason == expected, (last.size, new.size, reason)
