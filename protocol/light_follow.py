"""The rules of ``sez-light follow`` (design §6, §11): a newer checkpoint needs a consistency proof.

A follower keeps, per origin, the last checkpoint it verified. For every checkpoint a node shows it
later, :func:`open_followed_checkpoint` checks it under the trust policy (the log's signature by the
policy's key, every cosignature of a policy key, and the quorum decision, which is reported but not
required), then :func:`check_extends` decides, from the two signed checkpoints and the consistency
proof the node gave, one of:

* ``same``: the same tree (same size and root); the newer note may carry more cosignatures;
* ``extends``: a larger tree, and the RFC 6962 consistency proof from the old one verifies;
* ``behind``: a smaller tree (e.g. a replica that lags); nothing is proven either way, nothing changes;
* an :class:`Inconsistency`: the same size with another root (``checkpoint-fork``: the two signed notes
  alone prove the log equivocated), or a larger tree whose consistency proof does not verify from the
  old root (``inconsistent-checkpoints``).

:func:`inconsistency_evidence` packs an inconsistency with both signed checkpoints, verbatim, and the
proof that failed, so that anyone holding the policy can check it offline.

Pure: the caller fetches, stores and alarms (``light/follow.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .checkpoints import Checkpoint, parse_checkpoint, verify_cosignatures, verify_log_signature
from .errors import PeerProtocolError
from .evidence import log_equivocation_from_checkpoints
from .keys import VerifierKey
from .policy import TrustPolicy
from .proofs import verify_consistency
from .quorum import QuorumDecision

__all__ = [
    "EVIDENCE_TYPE",
    "FollowedCheckpoint",
    "Inconsistency",
    "check_extends",
    "inconsistency_evidence",
    "open_followed_checkpoint",
]

EVIDENCE_TYPE: Final = "sez.light.inconsistency/v1"


@dataclass(frozen=True, slots=True)
class FollowedCheckpoint:
    """A checkpoint whose log signature verified under the policy, with its quorum decision."""

    checkpoint: Checkpoint
    note: bytes
    decision: QuorumDecision
    cosigned: int
    """How many policy keys' cosignatures verified on it."""


class Inconsistency(PeerProtocolError):
    """Two checkpoints signed by one log that cannot both be true (an alarm, not a bad answer)."""

    def __init__(self, reason: str, message: str, old: FollowedCheckpoint, new: FollowedCheckpoint) -> None:
        super().__init__(reason, message, origin=old.checkpoint.origin)
        self.old = old
        self.new = new


def open_followed_checkpoint(data: bytes, policy: TrustPolicy, origin: str) -> FollowedCheckpoint:
    """Parse a signed checkpoint of ``origin`` and verify it under ``policy`` (quorum reported, not required).

    Raises:
        PeerProtocolError: checkpoint and note reasons; ``unknown-origin`` (not a log of the policy);
            ``wrong-origin`` (a checkpoint of another log); ``missing-log-signature``,
            ``bad-log-signature``; ``bad-cosignature`` (a line of a policy key that does not verify).
    """
    entry = policy.log(origin)
    if entry is None:
        raise PeerProtocolError("unknown-origin", f"the policy has no log {origin!r}")
    cp, note = parse_checkpoint(data)
    if cp.origin != origin:
        raise PeerProtocolError(
            "wrong-origin", f"asked for a checkpoint of {origin}, got one of {cp.origin!r}"
        )
    verify_log_signature(note, cp, entry.key)
    cosigned = verify_cosignatures(note, cp, policy.cosigner_keys(origin))
    return FollowedCheckpoint(cp, bytes(data), policy.decide(origin, cosigned), len(cosigned))


def check_extends(
    old: FollowedCheckpoint, new: FollowedCheckpoint, proof: Sequence[bytes] | None
) -> Literal["same", "extends", "behind"]:
    """Decide how ``new`` relates to ``old`` (see the module docstring).

    Args:
        old: the last checkpoint the follower accepted.
        new: a checkpoint of the same origin, verified by :func:`open_followed_checkpoint`.
        proof: the consistency proof from ``old.size`` to ``new.size``; needed only when ``new`` is
            larger (None otherwise).

    Raises:
        Inconsistency: ``checkpoint-fork`` or ``inconsistent-checkpoints``.
        PeerProtocolError(missing-consistency-proof): ``new`` is larger and no proof was given.
        LocalProtocolError(wrong-origin): the two are of different logs (a caller bug).
    """
    a, b = old.checkpoint, new.checkpoint
    if a.origin != b.origin:
        raise PeerProtocolError("wrong-origin", f"cannot compare checkpoints of {a.origin} and {b.origin}")
    if b.size == a.size:
        if b.root == a.root:
            return "same"
        raise Inconsistency(
            "checkpoint-fork",
            f"{a.origin} signed two different roots at size {a.size}: {a.root.hex()} and {b.root.hex()}",
            old,
            new,
        )
    if b.size < a.size:
        return "behind"
    if proof is None:
        raise PeerProtocolError(
            "missing-consistency-proof", f"no consistency proof from size {a.size} to {b.size} of {a.origin}"
        )
    try:
        verify_consistency(a.size, b.size, a.root, b.root, list(proof))
    except PeerProtocolError as exc:
        raise Inconsistency(
            "inconsistent-checkpoints",
            f"{a.origin}: the checkpoint at size {b.size} (root {b.root.hex()}) does not extend the one at "
            f"size {a.size} (root {a.root.hex()}) that the log signed before: {exc.reason}: {exc.message}",
            old,
            new,
        ) from exc
    return "extends"


def inconsistency_evidence(
    error: Inconsistency, proof: Sequence[bytes] | None, log_key: VerifierKey | None = None
) -> dict[str, Any]:
    """The evidence file's JSON object: both signed checkpoints verbatim, the sizes, roots and the proof.

    For a ``checkpoint-fork`` (two roots at one size) and the log's key, it also carries the
    network's own ``log-equivocation`` evidence (``protocol.evidence``) under ``log_equivocation``:
    what any node verifies from its own bytes and halts the corridor on.
    """

    def side(followed: FollowedCheckpoint) -> dict[str, Any]:
        cp = followed.checkpoint
        return {"size": cp.size, "root": cp.root.hex(), "checkpoint": followed.note.decode("utf-8")}

    document: dict[str, Any] = {
        "type": EVIDENCE_TYPE,
        "origin": error.old.checkpoint.origin,
        "reason": error.reason,
        "message": error.message,
        "old": side(error.old),
        "new": side(error.new),
        "consistency_proof": None if proof is None else [base64.b64encode(h).decode() for h in proof],
    }
    if error.reason == "checkpoint-fork" and log_key is not None:
        document["log_equivocation"] = log_equivocation_from_checkpoints(
            error.old.note, error.new.note, log_key
        )
    return document
