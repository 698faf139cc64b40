"""Fork resolution by quorum (design §8): the certificate of a ``quorum`` resolution and its verifier. Pure.

Theory of operation
-------------------
A fork is ``log-equivocation`` evidence about one of a corridor's two logs (the **forked** log); it
halts the corridor. Honest watchers never cosign two inconsistent trees, so if both branches gathered
cosignatures, the watchers on both equivocated: they are slashed (``watcher.slash`` receipts), the stake
is recomputed, and the branch whose cosigned checkpoint still holds a quorum is canonical. Timestamps
never decide. A corridor party then writes HALTED -> ACTIVE with ``resolution: {"method": "quorum",
"branch": {origin, size, root}, "certificate": {...}}`` and every node re-checks the certificate with
:func:`verify_quorum_certificate` when it folds the lifecycle.

**Which ledger judges.** The verdict must be the same on every node that folds the same two logs, now
or in a year, so the ledger cannot be "the node's ledger now" (it moves, and it depends on how far the
node has replicated). The certificate fixes it instead (``schemas/resolution.quorum-certificate.json``):

* ``ledger[origin] = {"size", "root", "final"}`` for both logs: the ``watcher.*`` receipts of the log's
  prefix ``[0, size)`` are folded (:func:`protocol.stake.fold`), bonds counting only below ``final``
  (``final <= size``), slashes (re-verified as always) anywhere in the prefix. ``root`` is the log's
  RFC 6962 root at ``size``: a node folds its own copy of the prefix only if it has that root there, so
  every node that judges folds the very same receipts; a node that holds another prefix (it is on the
  other branch) cannot judge (``ledger-mismatch``) until it recovers the canonical log.
* For the **forked** log, ``size`` is at most the **fork bound** (:func:`fork_bound`): the sequence of
  the two conflicting receipts, or one less than the size of the two conflicting checkpoints. Nothing
  either branch wrote at or after the fork point counts (design §8: it counts only once its branch is
  canonical, and the resolution is what makes it so). The prefix must also be a prefix of the branch:
  ``forked_proof`` is the RFC 6962 consistency proof from ``(size, root)`` to the branch's checkpoint
  (empty when the prefix is empty).
* For the **other** log (undisputed: one writer, no evidence against it) the prefix runs as far as the
  writer of the resolution has read it, normally to just before the resolution, so that the slashes of
  the equivocators, written after the halt, count.

``final`` is the writer's word that those prefixes were quorum-final (its signature on the resolution
vouches for it); an honest writer names its quorum-final sizes. This is the one thing the verifier
takes on trust from a corridor party, which the lifecycle already trusts to sign transitions; carrying
the quorum certificates of those prefixes would remove it and is left for later.

**The check** (:func:`verify_quorum_certificate`), cheap checks first: the certificate's schema; it
resolves the halt the corridor is in (its ``evidence`` digest); the branch is the forked log (a
certificate for the other origin is refused) and reaches past the fork point; the ledger names
exactly the corridor's two origins, ``final <= size``, the forked prefix within the fork bound and
the branch; the checkpoint note is the named branch (origin, size, root); the ledger roots equal the
node's copies; the forked prefix's consistency proof; the log's signature on the note; then the fold,
the cosignatures of the ledger's active watchers (a forged line of an active watcher is refused; lines
of unknown, slashed or inactive keys count for nothing) and of the other party, and
:func:`protocol.quorum.decide`. No bootstrap rule: a fork is resolved by ``min_watchers`` and strictly
more than the threshold of active stake, or by both parties (``two-party``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from . import schemas
from .checkpoints import Checkpoint, parse_checkpoint, verify_cosignatures, verify_log_signature
from .errors import LocalProtocolError, PeerProtocolError
from .evidence import evidence_digest
from .keys import ALG_COSIGNATURE_V1, VerifierKey
from .notes import SignedNote
from .proofs import verify_consistency
from .quorum import QuorumDecision, QuorumPolicy, decide
from .stake import DEFAULT_SLASH_POLICY, LedgerEntry, SlashPolicy, StakeLedger, fold

__all__ = [
    "CERTIFICATE_SCHEMA",
    "EMPTY_ROOT",
    "BranchVerdict",
    "ForkContext",
    "HeldLedger",
    "assess_quorum_certificate",
    "fork_bound",
    "judging_ledger",
    "make_certificate",
    "verify_quorum_certificate",
]

CERTIFICATE_SCHEMA: Final = "resolution.quorum-certificate"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the empty log (design §5)."""
_LEDGER_NOW: Final = "1970-01-01T00:00:00Z"
"""The fold's ``now`` (withdrawability only, which no quorum reads): fixed, so no clock enters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkContext:
    """What a corridor's configuration fixes for judging its forks (the same on both nodes).

    Attributes:
        corridor_id: the corridor.
        log_keys: origin -> registered log key (type 0x01) of the corridor's two logs.
        party_cosigners: origin -> the type-0x04 key of the *other* party, whose cosignature of that
            origin's checkpoint is the ``counterparty`` cosignature.
        policy: the corridor's quorum rule.
        stake_currency, unbonding_period, slash_policy: the corridor policy's stake settings.
    """

    corridor_id: str
    log_keys: Mapping[str, VerifierKey]
    party_cosigners: Mapping[str, VerifierKey]
    policy: QuorumPolicy
    stake_currency: str
    unbonding_period: timedelta = timedelta(days=7)
    slash_policy: SlashPolicy = DEFAULT_SLASH_POLICY


@dataclass(frozen=True, slots=True)
class HeldLedger:
    """The node's copy of the prefixes a certificate names.

    Attributes:
        roots: origin -> the root of the node's stored log at the named size, or None when the node
            does not hold that many receipts.
        entries: the ``watcher.*`` receipts of those prefixes (entries at or beyond a named size are
            ignored).
    """

    roots: Mapping[str, bytes | None]
    entries: Sequence[LedgerEntry]


@dataclass(frozen=True, slots=True)
class BranchVerdict:
    """A verified certificate: the branch, its quorum decision and the ledger that judged it."""

    branch: Checkpoint
    decision: QuorumDecision
    counterparty_cosigned: bool
    ledger: StakeLedger


def _fail(reason: str, message: str, **details: Any) -> PeerProtocolError:
    return PeerProtocolError(reason, message, **details)


def fork_bound(evidence: Mapping[str, Any]) -> tuple[str, int]:
    """The forked origin of ``log-equivocation`` evidence and the largest prefix of it that may judge.

    Receipt form: the sequence of the two receipts (receipts ``[0, sequence)`` precede the conflict).
    Checkpoint form: one less than the two checkpoints' size (they share at most that many leaves).

    Raises:
        PeerProtocolError(not-a-fork): not log-equivocation evidence of a recognisable shape.
    """
    if evidence.get("kind") != "log-equivocation" or not isinstance(evidence.get("origin"), str):
        raise _fail("not-a-fork", "the halt evidence is not log-equivocation")
    origin = evidence["origin"]
    if isinstance(evidence.get("receipts"), list) and evidence["receipts"]:
        sequence = evidence["receipts"][0].get("sequence")
        if isinstance(sequence, int) and sequence >= 0:
            return origin, sequence
    if isinstance(evidence.get("checkpoints"), list) and evidence["checkpoints"]:
        text = evidence["checkpoints"][0]
        if isinstance(text, str):
            cp, _ = parse_checkpoint(text.encode("utf-8"))
            return origin, max(0, cp.size - 1)
    raise _fail("not-a-fork", "log-equivocation evidence with neither receipts nor checkpoints")


def judging_ledger(
    entries: Iterable[LedgerEntry], ledger: Mapping[str, Mapping[str, Any]], context: ForkContext
) -> StakeLedger:
    """The stake ledger a certificate names: the fold of its prefixes, bonds final below ``final``."""
    sizes = {origin: int(item["size"]) for origin, item in ledger.items()}
    kept = [e for e in entries if e.origin in sizes and e.sequence < sizes[e.origin]]
    return fold(
        kept,
        corridor_id=context.corridor_id,
        final_sizes={origin: int(item["final"]) for origin, item in ledger.items()},
        now=_LEDGER_NOW,
        stake_currency=context.stake_currency,
        unbonding_period=context.unbonding_period,
        slash_policy=context.slash_policy,
        log_keys=context.log_keys,
    )


def make_certificate(
    *,
    evidence_digest_hex: str,
    note: bytes,
    ledger: Mapping[str, tuple[int, bytes, int]],
    forked_proof: Sequence[bytes],
) -> dict[str, Any]:
    """A certificate (the writer's side): ``ledger`` is origin -> (size, root, final)."""
    return {
        "evidence": evidence_digest_hex,
        "checkpoint": note.decode("utf-8"),
        "ledger": {
            origin: {"size": size, "root": root.hex(), "final": final}
            for origin, (size, root, final) in sorted(ledger.items())
        },
        "forked_proof": [h.hex() for h in forked_proof],
    }


def _check_ledger_shape(
    ledger: Mapping[str, Mapping[str, Any]], context: ForkContext, forked: str, bound: int, branch_size: int
) -> None:
    if set(ledger) != set(context.log_keys):
        raise _fail(
            "wrong-ledger-origins",
            f"the ledger must name the two logs of {context.corridor_id}",
            expected=sorted(context.log_keys),
            got=sorted(ledger),
        )
    for origin, item in ledger.items():
        if item["final"] > item["size"]:
            raise _fail(
                "bad-ledger", f"final size {item['final']} beyond the prefix {item['size']}", origin=origin
            )
    size = ledger[forked]["size"]
    if size > bound:
        raise _fail(
            "ledger-beyond-fork",
            f"the forked log's prefix {size} reaches past the fork point {bound}",
            size=size,
            bound=bound,
        )
    if size > branch_size:
        raise _fail(
            "ledger-beyond-fork", f"the forked log's prefix {size} is longer than the branch", size=size
        )


def _active_cosigners(note: SignedNote, cp: Checkpoint, ledger: StakeLedger) -> list[str]:
    counted = []
    for vkey in sorted(ledger.active_weights()):
        try:
            key = VerifierKey.from_vkey(vkey)
        except PeerProtocolError:
            continue  # never bonded: the receipt rules let no such key in
        if key.alg != ALG_COSIGNATURE_V1:
            continue
        try:
            if verify_cosignatures(note, cp, [key]):
                counted.append(vkey)
        except PeerProtocolError as exc:
            raise _fail(
                "bad-cosignature", f"an active watcher's line does not verify: {exc.message}", watcher=vkey
            ) from exc
    return counted


def assess_quorum_certificate(
    resolution: Mapping[str, Any],
    *,
    halt_digest: str | None,
    halt_evidence: Mapping[str, Any] | None,
    context: ForkContext,
    held: Callable[[Mapping[str, Mapping[str, Any]]], HeldLedger],
) -> BranchVerdict:
    """Check a ``quorum`` resolution's certificate (module docstring) and decide its branch's quorum.

    Every check but the quorum itself raises; the decision (final or not, with the cosigners, the
    stake and what is missing) is returned, so that a node can show why a branch does not win.

    Args:
        resolution: the payload's ``resolution`` (schema-valid as a lifecycle payload).
        halt_digest: hex digest of the evidence that halted the corridor (the state being resolved).
        halt_evidence: that evidence's body (from the HALTED receipt), or None if unknown.
        context: the corridor's keys and policies.
        held: given the certificate's ledger, the node's copy of those prefixes (roots and entries).

    Raises:
        PeerProtocolError: ``schema-violation``, ``not-halted``, ``wrong-fork`` (another halt's
            evidence), ``unknown-fork``, ``not-a-fork``, ``wrong-origin`` (the branch is not the forked
            log), ``branch-before-fork``, ``wrong-ledger-origins``, ``bad-ledger``,
            ``ledger-beyond-fork``, ``branch-mismatch`` (the note is not the named branch),
            ``ledger-not-held``, ``ledger-mismatch``, ``bad-ledger-proof``, ``wrong-origin`` /
            ``bad-log-signature`` / ``missing-log-signature``, ``bad-cosignature``.
    """
    certificate = resolution.get("certificate")
    if not isinstance(certificate, Mapping):
        raise _fail("schema-violation", "a quorum resolution carries a certificate", path="certificate")
    schemas.validate(CERTIFICATE_SCHEMA, certificate)
    branch = resolution["branch"]
    # 1. The halt it resolves.
    if halt_digest is None:
        raise _fail("not-halted", "no halt to resolve")
    if certificate["evidence"] != halt_digest:
        raise _fail(
            "wrong-fork",
            "the certificate resolves another halt",
            expected=halt_digest,
            got=certificate["evidence"],
        )
    if halt_evidence is None or evidence_digest(halt_evidence).hex() != halt_digest:
        raise _fail("unknown-fork", "the evidence of the halt is not held", digest=halt_digest)
    forked, bound = fork_bound(halt_evidence)
    # 2. The branch is a branch of the forked log.
    if branch["origin"] != forked or forked not in context.log_keys:
        raise _fail("wrong-origin", f"the fork is of {forked}, the branch names {branch['origin']}",
                    expected=forked, got=branch["origin"])  # fmt: skip
    if branch["size"] <= bound:
        # A tree that ends before the fork point is common to both branches: it names neither.
        raise _fail("branch-before-fork", f"a branch of size {branch['size']} ends before the fork point",
                    size=branch["size"], bound=bound)  # fmt: skip
    ledger = certificate["ledger"]
    _check_ledger_shape(ledger, context, forked, bound, branch["size"])
    # 3. The note is the named branch.
    cp, note = parse_checkpoint(certificate["checkpoint"].encode("utf-8"))
    if (cp.origin, cp.size, cp.root.hex()) != (branch["origin"], branch["size"], branch["root"]):
        got = {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}
        raise _fail("branch-mismatch", "the certificate's checkpoint is not the named branch",
                    expected=dict(branch), got=got)  # fmt: skip
    # 4. The node folds the very prefixes named.
    copy = held(ledger)
    for origin, item in sorted(ledger.items()):
        root = copy.roots.get(origin)
        if root is None:
            raise _fail(
                "ledger-not-held", f"this node does not hold {origin} up to {item['size']}", origin=origin
            )
        if root.hex() != item["root"]:
            raise _fail("ledger-mismatch", f"this node's {origin} has another root at {item['size']}",
                        origin=origin, expected=item["root"], got=root.hex())  # fmt: skip
    # 5. The forked prefix is a prefix of the branch.
    prefix = ledger[forked]
    proof = [bytes.fromhex(h) for h in certificate["forked_proof"]]
    if prefix["size"] == 0:
        if proof:
            raise _fail("bad-ledger-proof", "the empty prefix takes no consistency proof")
    else:
        try:
            verify_consistency(prefix["size"], cp.size, bytes.fromhex(prefix["root"]), cp.root, proof)
        except PeerProtocolError as exc:
            raise _fail(
                "bad-ledger-proof", f"the forked prefix is not a prefix of the branch: {exc.message}"
            ) from exc
    # 6. The log signed the branch.
    verify_log_signature(note, cp, context.log_keys[forked])
    # 7. Stake, cosignatures, decision.
    judged = judging_ledger(copy.entries, ledger, context)
    cosigners = _active_cosigners(note, cp, judged)
    other = context.party_cosigners.get(forked)
    if other is None:
        raise LocalProtocolError("bad-context", f"no counterparty cosigner for {forked}")
    try:
        party = bool(verify_cosignatures(note, cp, [other]))
    except PeerProtocolError:
        party = False
    decision = decide(cosigners, judged.active_weights(), counterparty_cosigned=party, policy=context.policy)
    return BranchVerdict(cp, decision, party, judged)


def verify_quorum_certificate(
    resolution: Mapping[str, Any],
    *,
    halt_digest: str | None,
    halt_evidence: Mapping[str, Any] | None,
    context: ForkContext,
    held: Callable[[Mapping[str, Mapping[str, Any]]], HeldLedger],
) -> BranchVerdict:
    """:func:`assess_quorum_certificate`, refusing a branch that holds no quorum (``no-quorum``)."""
    verdict = assess_quorum_certificate(
        resolution, halt_digest=halt_digest, halt_evidence=halt_evidence, context=context, held=held
    )
    decision, cp = verdict.decision, verdict.branch
    if not decision.final:
        raise _fail(
            "no-quorum",
            f"branch {cp.origin} size {cp.size} holds no quorum: missing {', '.join(decision.missing)}",
            missing=list(decision.missing),
            cosigning_stake=decision.cosigning_stake,
            active_stake=decision.active_stake,
        )
    return verdict
