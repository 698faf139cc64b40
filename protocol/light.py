"""Light-client verification of a receipt bundle (design §11), pure and offline.

A sez receipt bundle is a ``c2sp.org/tlog-proof@v1`` bundle whose ``extra``
field holds the receipt's canonical JSON. :func:`verify_receipt_bundle` checks,
in order (cheap checks first, signatures last):

1. the bundle decodes and carries a receipt in ``extra``;
2. the receipt is well formed and its ``next_root`` recomputes from its content;
3. the receipt's origin is the log key's name and its sequence is the bundle's index;
4. the inclusion path leads from ``SHA-256(0x00 || next_root)`` to the checkpoint's root;
5. the log's signature on the checkpoint, then the receipt's own signature.

:func:`verify_bundle` is the light client's whole decision (design §11, ``sez-light verify``): the
same checks under a corridor :class:`~protocol.policy.TrustPolicy`, then every cosignature of a
policy key and the quorum rule, returning a :class:`BundleReport` that names each check and, on
failure, the specific reason. :func:`verify_receipt_bundle` (log key only, no quorum) stays for the
node's own pre-checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from . import mmr
from .anchor import AnchorRecord, checkpoint_digest, split_bundle_extra
from .checkpoints import Checkpoint, verify_cosignatures, verify_log_signature
from .errors import PeerProtocolError, SezError
from .keys import VerifierKey
from .notes import SignedNote
from .policy import TrustPolicy
from .proofs import root_from_inclusion, verify_inclusion
from .quorum import QuorumDecision
from .receipts import Receipt, VerifiedReceipt, verify_receipt
from .tlog_proof import ParsedTlogProof, TlogProof, parse_tlog_proof, verify_tlog_proof

_T = TypeVar("_T")

__all__ = ["BundleReport", "BundleVerdict", "Check", "verify_bundle", "verify_receipt_bundle"]


@dataclass(frozen=True, slots=True)
class BundleVerdict:
    """What a successful verification established."""

    receipt: VerifiedReceipt
    checkpoint: Checkpoint
    checks: tuple[str, ...]


def verify_receipt_bundle(
    data: bytes, log_key: VerifierKey, cosigners: Iterable[VerifierKey] = ()
) -> BundleVerdict:
    """Verify a receipt bundle against the log's verifier key.

    Raises:
        PeerProtocolError: the first failed check, with its reason (``bad-proof-bundle``,
            ``missing-receipt``, receipt reasons such as ``next-root-mismatch``,
            ``wrong-origin``, ``index-mismatch``, ``root-mismatch``, ``bad-log-signature``,
            ``bad-signature``, ...).
    """
    bundle = TlogProof.decode(data)
    if bundle.extra is None:
        raise PeerProtocolError("missing-receipt", "bundle carries no receipt in its extra line")
    receipt_bytes, anchor = split_bundle_extra(bundle.extra)
    receipt = Receipt.from_bytes(receipt_bytes)
    checks = ["bundle format", "receipt schema and canonical form", "receipt next_root recomputed"]
    if receipt.origin != log_key.name:
        raise PeerProtocolError(
            "wrong-origin", f"receipt origin {receipt.origin!r} is not the log key's {log_key.name!r}"
        )
    if receipt.sequence != bundle.index:
        raise PeerProtocolError(
            "index-mismatch", f"receipt sequence {receipt.sequence} is not the bundle index {bundle.index}"
        )
    checks.append("receipt origin and index")
    checkpoint = verify_tlog_proof(bundle, mmr.hash_leaf(receipt.next_root), log_key, cosigners)
    checks += [f"inclusion path to checkpoint root (size {checkpoint.size})", "log signature on checkpoint"]
    verified = verify_receipt(receipt, log_key)
    checks.append("receipt signature")
    if anchor is not None:
        checks.append(_anchor_binding(anchor, bundle.checkpoint, checkpoint))
    return BundleVerdict(verified, checkpoint, tuple(checks))


def _anchor_binding(anchor: AnchorRecord, checkpoint_note: bytes, checkpoint: Checkpoint) -> str:
    """Offline, an anchor record binds to the bundle only by digest (the chain check needs an RPC node)."""
    if anchor.digest != checkpoint_digest(checkpoint_note) or anchor.origin != checkpoint.origin:
        raise PeerProtocolError(
            "anchor-digest-mismatch", "the bundle's anchor record anchors another checkpoint"
        )
    return f"anchor record names this checkpoint (chain {anchor.chain_id}, tx {anchor.tx_hash})"


# --------------------------------------------------------------------------- under a trust policy

CHECK_NAMES: Final = (
    "bundle",
    "receipt",
    "origin",
    "index",
    "log signature",
    "inclusion",
    "receipt signature",
    "cosignatures",
    "quorum",
)
"""The checks of :func:`verify_bundle`, in the order they run (``receipt file`` follows ``receipt``
when a separate receipt is given)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One named check: passed (``ok``), failed (``reason`` set) or not reached (``ok`` False, no reason)."""

    name: str
    ok: bool
    detail: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What :func:`verify_bundle` checked and its verdict.

    Attributes:
        checks: every check in order; those after a failure are listed as not checked.
        reason: None when the bundle verified; else the failed check's reason code.
        message: the verdict in one sentence.
        receipt: the receipt (once parsed), checkpoint (once parsed) and quorum decision (once made).
    """

    checks: tuple[Check, ...]
    reason: str | None
    message: str
    receipt: Receipt | None = None
    checkpoint: Checkpoint | None = None
    decision: QuorumDecision | None = None

    @property
    def verified(self) -> bool:
        """True iff every check passed."""
        return self.reason is None


class _Failed(Exception):
    def __init__(self, error: PeerProtocolError) -> None:
        super().__init__(error.message)
        self.error = error


def _diagnose_log_signature(
    note: SignedNote, cp: Checkpoint, key: VerifierKey, bundle: ParsedTlogProof, leaf: bytes
) -> PeerProtocolError | None:
    """After a failed log signature: if the log signed the root the inclusion path leads to, the
    checkpoint's root line was altered (a one-verify diagnosis, on the failure path only)."""
    try:
        computed = root_from_inclusion(bundle.index, cp.size, leaf, bundle.proof)
        if computed == cp.root:
            return None
        alt = Checkpoint(origin=cp.origin, size=cp.size, root=computed, extensions=cp.extensions)
        verify_log_signature(SignedNote(text=alt.body(), signatures=note.signatures), alt, key)
    except SezError:
        return None
    return PeerProtocolError(
        "checkpoint-root-altered",
        f"the checkpoint's root line was changed: the log signed root {computed.hex()} at size {cp.size} "
        f"(where the inclusion path leads), the bundle says {cp.root.hex()}",
        signed=computed.hex(),
        stated=cp.root.hex(),
    )


def verify_bundle(data: bytes, policy: TrustPolicy, *, receipt: bytes | None = None) -> BundleReport:
    """Verify a receipt bundle under a corridor's trust policy (design §11); never raises on bad input.

    Checks, in order (each named in the report; the first failure ends the run):

    1. ``bundle``: the ``c2sp.org/tlog-proof@v1`` encoding (``truncated-bundle`` for a file cut short:
       empty, not ending in a newline, or ending before its checkpoint; ``bad-proof-bundle``,
       ``proof-bundle-too-large``, note reasons for a malformed checkpoint);
    2. ``receipt``: the receipt in ``extra`` (or the separate ``receipt``) is well formed and its
       ``next_root`` recomputes (receipt reasons: ``next-root-mismatch``, ``payload-digest-mismatch``...;
       ``missing-receipt``); with both, ``receipt file`` requires they are the same receipt
       (``receipt-mismatch``);
    3. ``origin``: the checkpoint's log is in the policy (``unknown-origin``), the receipt is of that
       log (``wrong-origin``) and of the policy's corridor (``wrong-corridor``);
    4. ``index``: the bundle index is the receipt's sequence (``index-mismatch``) and inside the tree;
    5. ``log signature``: a valid line of the policy's log key (``unknown-log-key`` when the origin's
       line is by another key, ``missing-log-signature``, ``bad-log-signature``, or
       ``checkpoint-root-altered`` when the log did sign the root the path leads to);
    6. ``inclusion``: the path leads from ``SHA-256(0x00 || next_root)`` to the root (``root-mismatch``,
       ``bad-proof-length``);
    7. ``receipt signature``: the log key signed the receipt (``bad-signature``, ``wrong-key``);
    8. ``cosignatures``: every line of a policy cosigner verifies (``bad-cosignature``); lines of
       other keys are ignored (signed-note), and counted in the detail;
    9. ``quorum``: :meth:`TrustPolicy.decide` (``insufficient-stake``, ``too-few-watchers``,
       ``missing-counterparty-cosignature``).

    Each signature is verified exactly once on the success path (receipt, log, one per cosignature).

    Args:
        data: the bundle file's bytes.
        policy: the corridor's trust policy.
        receipt: optional receipt bytes given separately (a trailing newline is allowed).
    """
    checks: list[Check] = []
    state: dict[str, Any] = {}
    current = "bundle"

    def passed(name: str, detail: str) -> None:
        checks.append(Check(name, True, detail))

    try:
        if not data.endswith(b"\n"):
            raise _Failed(_truncated(data))
        try:
            bundle = parse_tlog_proof(data)
        except PeerProtocolError as exc:
            if exc.message.startswith("bundle ends inside a line"):
                raise _Failed(_truncated(data)) from exc
            raise _Failed(exc) from exc
        passed("bundle", f"c2sp.org/tlog-proof@v1, index {bundle.index}, {len(bundle.proof)} path hashes")
        cp, note = bundle.checkpoint, bundle.note
        state["checkpoint"] = cp

        current = "receipt"
        given = receipt.rstrip(b"\n") if receipt is not None else None
        anchor: AnchorRecord | None = None
        raw = given
        if bundle.extra is not None:
            raw, anchor = _step(lambda: split_bundle_extra(bundle.extra or b""))
        if raw is None:
            raise _Failed(
                PeerProtocolError("missing-receipt", "the bundle carries no receipt and none was given")
            )
        rec = _step(lambda: Receipt.from_bytes(raw))
        state["receipt"] = rec
        passed(
            current,
            f"{rec.kind} #{rec.sequence}: canonical, schema-valid, "
            f"next_root {rec.next_root.hex()} recomputed",
        )
        if given is not None and bundle.extra is not None:
            current = "receipt file"
            other = _step(lambda: Receipt.from_bytes(given))
            if other.raw != rec.raw:
                raise _Failed(
                    PeerProtocolError(
                        "receipt-mismatch",
                        f"the receipt given ({other.origin}#{other.sequence}, "
                        f"next_root {other.next_root.hex()}) "
                        f"is not the one in the bundle ({rec.origin}#{rec.sequence}, {rec.next_root.hex()})",
                    )
                )
            passed(current, "the receipt given is byte for byte the bundle's")

        current = "origin"
        entry = policy.log(cp.origin)
        if entry is None:
            known = ", ".join(e.origin for e in policy.logs)
            raise _Failed(
                PeerProtocolError(
                    "unknown-origin", f"the checkpoint is of {cp.origin!r}; the policy trusts {known}"
                )
            )
        if rec.origin != cp.origin:
            raise _Failed(
                PeerProtocolError(
                    "wrong-origin", f"receipt of {rec.origin!r} with a checkpoint of {cp.origin!r}"
                )
            )
        if rec.corridor_id != policy.corridor_id:
            raise _Failed(
                PeerProtocolError(
                    "wrong-corridor", f"receipt of corridor {rec.corridor_id}, policy of {policy.corridor_id}"
                )
            )
        passed(current, f"{cp.origin} is a log of corridor {policy.corridor_id}")

        current = "index"
        if rec.sequence != bundle.index:
            raise _Failed(
                PeerProtocolError(
                    "index-mismatch",
                    f"receipt sequence {rec.sequence} is not the bundle index {bundle.index}",
                )
            )
        if bundle.index >= cp.size:
            raise _Failed(
                PeerProtocolError("bad-index", f"index {bundle.index} is outside a tree of size {cp.size}")
            )
        passed(current, f"sequence {rec.sequence} < tree size {cp.size}")

        current = "log signature"
        leaf = mmr.hash_leaf(rec.next_root)
        key = entry.key
        if not note.signatures_for(key.name, key.key_id):
            others = [s.key_id.hex() for s in note.signatures if s.name == cp.origin]
            if others:
                raise _Failed(
                    PeerProtocolError(
                        "unknown-log-key",
                        f"the checkpoint of {cp.origin} is signed by key ID {', '.join(others)}, "
                        f"not the policy's {key.key_id.hex()}",
                    )
                )
            raise _Failed(PeerProtocolError("missing-log-signature", f"no signature line of {key.name}"))
        try:
            verify_log_signature(note, cp, key)
        except PeerProtocolError as exc:
            raise _Failed(_diagnose_log_signature(note, cp, key, bundle, leaf) or exc) from exc
        passed(current, f"{key.name}+{key.key_id.hex()} signed size {cp.size}, root {cp.root.hex()}")

        current = "inclusion"
        _step(lambda: verify_inclusion(bundle.index, cp.size, leaf, list(bundle.proof), cp.root))
        passed(current, f"leaf {bundle.index} is in the tree of size {cp.size}")

        current = "receipt signature"
        _step(lambda: verify_receipt(rec, key))
        passed(current, f"signed by {rec.verification_method}")

        current = "cosignatures"
        cosigners = policy.cosigner_keys(cp.origin)
        cosigned = _step(lambda: verify_cosignatures(note, cp, cosigners))
        ignored = sum(1 for s in note.signatures if s.name not in cosigned and s.name != cp.origin)
        passed(
            current,
            f"{len(cosigned)} valid of policy keys"
            + (f"; {ignored} lines of other keys ignored" if ignored else ""),
        )

        current = "quorum"
        decision = policy.decide(cp.origin, cosigned)
        state["decision"] = decision
        if not decision.final:
            raise _Failed(_quorum_failure(policy, cp.origin, decision))
        passed(current, _quorum_detail(policy, decision))
        if anchor is not None:
            current = "anchor"
            passed(current, _step(lambda: _anchor_binding(anchor, bundle.checkpoint_bytes, cp)))
    except _Failed as failed:
        error = failed.error
        checks.append(Check(current, False, error.message, error.reason))
        if current == "anchor":
            pass
        elif current != "receipt file":
            after = CHECK_NAMES[CHECK_NAMES.index(current) + 1 :]
            checks += [Check(n, False, "not checked") for n in after]
        else:
            checks += [Check(n, False, "not checked") for n in CHECK_NAMES[2:]]
        return BundleReport(
            tuple(checks), error.reason, f"REJECTED: {error.reason}: {error.message}",
            state.get("receipt"), state.get("checkpoint"), state.get("decision"),
        )  # fmt: skip
    message = (
        f"VERIFIED: receipt {rec.origin}#{rec.sequence} ({rec.kind}) is in the log at tree size {cp.size}, "
        f"root {cp.root.hex()}, final under the {policy.corridor_id} policy"
    )
    return BundleReport(tuple(checks), None, message, rec, cp, decision)


def _truncated(data: bytes) -> PeerProtocolError:
    return PeerProtocolError(
        "truncated-bundle",
        f"the bundle ends after {len(data)} bytes, inside a line or before its checkpoint: "
        "the file is cut short",
        size=len(data),
    )


def _step(action: Callable[[], _T]) -> _T:
    try:
        return action()
    except PeerProtocolError as exc:
        raise _Failed(exc) from exc


_QUORUM_REASONS: Final = {
    "stake": "insufficient-stake",
    "watchers": "too-few-watchers",
    "counterparty": "missing-counterparty-cosignature",
}


def _quorum_failure(policy: TrustPolicy, origin: str, decision: QuorumDecision) -> PeerProtocolError:
    first = decision.missing[0]
    if policy.bootstrap:
        text = "bootstrap (fewer than min_watchers active): the counterparty's cosignature is missing"
    elif first == "stake":
        text = (
            f"cosigning stake {decision.cosigning_stake} of active {decision.active_stake} "
            "is not strictly above "
            f"{policy.quorum.threshold}"
        )
    elif first == "watchers":
        text = f"{len(decision.cosigners)} watchers cosigned, the policy needs {policy.quorum.min_watchers}"
    else:
        text = f"the counterparty ({policy.counterparty_cosigner(origin).name}) did not cosign"
    return PeerProtocolError(_QUORUM_REASONS[first], text, missing=list(decision.missing))


def _quorum_detail(policy: TrustPolicy, decision: QuorumDecision) -> str:
    if policy.bootstrap:
        return "bilateral (bootstrap: fewer than min_watchers active watchers): log and counterparty signed"
    return (
        f"{len(decision.cosigners)} watchers hold {decision.cosigning_stake} of {decision.active_stake} "
        f"active stake (> {policy.quorum.threshold})"
        + (", counterparty cosigned" if policy.quorum.require_counterparty else "")
    )
