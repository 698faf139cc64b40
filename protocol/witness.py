"""The witness rule (design §6): when a checkpoint may be cosigned. Pure; the caller persists state.

A witness (a watcher, or a corridor node cosigning its counterparty) cosigns
checkpoint N of an origin only if:

1. N carries a valid log signature (checked by the caller with
   ``open_checkpoint`` before this function is reached);
2. it is the first checkpoint it cosigns for that origin, or it holds a valid
   RFC 6962 consistency proof from the last checkpoint it cosigned to N;
3. N is not smaller than the last cosigned tree, and at the same size it has
   the same root (a different root at the same size is equivocation: refused,
   and the two signed checkpoints are evidence).

The caller must persist the new state (atomically) before the cosignature
leaves the process: :func:`check_witness_rule` only decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .checkpoints import Checkpoint
from .errors import PeerProtocolError
from .proofs import verify_consistency

__all__ = ["WitnessDecision", "check_witness_rule"]


@dataclass(frozen=True, slots=True)
class WitnessDecision:
    """The rule's answer: cosign, or (for an identical checkpoint) nothing new to cosign."""

    cosign: bool
    reason: str


def check_witness_rule(last: Checkpoint | None, new: Checkpoint, proof: Sequence[bytes]) -> WitnessDecision:
    """Decide whether ``new`` may be cosigned after ``last``.

    Args:
        last: the last checkpoint cosigned for ``new.origin`` (None: never).
        new: the candidate, whose log signature the caller has verified.
        proof: consistency proof from ``last.size`` to ``new.size`` (ignored if ``last`` is None
            or the sizes are equal).

    Returns:
        ``WitnessDecision(True, "first")`` / ``(True, "consistent")``, or
        ``(False, "same")`` when ``new`` is the checkpoint already cosigned.

    Raises:
        PeerProtocolError: ``wrong-origin``, ``rollback`` (smaller tree),
            ``equivocation`` (same size, other root), ``inconsistent`` (the proof
            does not connect the two roots; the original error is chained).
    """
    if last is None:
        return WitnessDecision(True, "first")
    if last.origin != new.origin:
        raise PeerProtocolError(
            "wrong-origin", f"checkpoint of {new.origin!r} checked against {last.origin!r}"
        )
    if new.size < last.size:
        raise PeerProtocolError(
            "rollback", f"checkpoint size {new.size} is smaller than the cosigned {last.size}",
            cosigned=last.size, offered=new.size,
        )  # fmt: skip
    if new.size == last.size:
        if new.root != last.root:
            raise PeerProtocolError(
                "equivocation", f"a different root at the cosigned size {new.size}",
                cosigned_root=last.root.hex(), offered_root=new.root.hex(),
            )  # fmt: skip
        return WitnessDecision(False, "same")
    try:
        verify_consistency(last.size, new.size, last.root, new.root, list(proof))
    except PeerProtocolError as exc:
        raise PeerProtocolError(
            "inconsistent",
            f"no valid consistency proof from {last.size} to {new.size}: {exc.reason}",
            cosigned=last.size, offered=new.size,
        ) from exc  # fmt: skip
    return WitnessDecision(True, "consistent")
