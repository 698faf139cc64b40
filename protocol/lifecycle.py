"""The corridor lifecycle (design §9) as a table-driven state machine. Pure: no I/O, no clock.

Theory of operation
-------------------
A corridor is in one of six states::

    DRAFT -> PENDING -> ACTIVE <-> SUSPENDED
                        ACTIVE  -> HALTED -> ACTIVE
    ACTIVE | SUSPENDED | HALTED -> DEPRECATED (terminal)

Every transition is the payload of a ``lifecycle`` receipt: ``{"corridor_id", "from", "to", "reason",
"signatures", ...}`` plus the fields its row of :data:`TRANSITIONS` requires. Each party that signs
signs ``b"sez.lifecycle/v1\\n" + SHA-256(JCS(payload without "signatures"))`` (:func:`signing_digest`)
with its registered Ed25519 key; signatures are checked against the corridor's registered keys only.

=====================  =====================================  ==========================================
transition             signers                                other requirements
=====================  =====================================  ==========================================
DRAFT -> PENDING       both parties                           ``definition_digest`` (corridor definition)
PENDING -> ACTIVE      both parties (the agreement)           ``definition_digest`` equal to PENDING's
ACTIVE -> SUSPENDED    the ``authority`` party                ``authority``: the suspending party
SUSPENDED -> ACTIVE    the ``authority`` party                ``authority`` equal to the suspending party
ACTIVE -> HALTED       either party (it checked evidence)     ``evidence``, checked by ``verify_evidence``
HALTED -> ACTIVE       both (``two-party``) or either         ``resolution`` naming the branch; a
                       (``quorum``)                           ``quorum`` one is checked by ``verify_quorum``
* -> DEPRECATED        both parties                           from ACTIVE, SUSPENDED or HALTED
=====================  =====================================  ==========================================

A party other than the required ones may add its signature; every signature present must verify.
Fields a row does not name (``evidence`` on a suspension, ...) are refused, so a payload has one meaning.

Two layers, as for evidence (style rule 10):

* :func:`check_payload` is stateless and needs no keys: the payload schema, the row's fields, who must
  sign, duplicate or foreign parties. ``protocol.receipts`` can run it on every ``lifecycle`` receipt
  (register it in ``receipts._PAYLOAD_RULES``); without that hook the receipt layer still checks the
  payload schema, since ``schemas/payload.lifecycle.json`` makes ``lifecycle`` a known kind.
* :func:`apply` needs the state and the corridor's registered keys, which the receipt layer does not
  have, so **signatures are verified only here**. It checks, cheap checks first: schema, corridor,
  the (state, to) row, ``from``, :func:`check_payload`, the stateful fields, every signature, then the
  evidence or quorum hook. It returns a new :class:`CorridorState` and changes nothing on failure
  (states are frozen values).

Which receipt kinds a node accepts in each state is :func:`allowed_kinds`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

from . import schemas
from .errors import LocalProtocolError, PeerProtocolError
from .jcs import canonical
from .keys import SigningKey, VerifierKey, public_from_did_key

__all__ = [
    "ALLOWED_KINDS",
    "ISO3166",
    "SIGNATURE_DOMAIN",
    "TRANSITIONS",
    "CorridorState",
    "EvidenceVerifier",
    "Lifecycle",
    "MergedLifecycle",
    "QuorumVerifier",
    "Rejected",
    "Rule",
    "State",
    "Transition",
    "activation",
    "allowed_kinds",
    "apply",
    "check_definition",
    "check_payload",
    "definition_digest",
    "fold",
    "merge",
    "mermaid",
    "sign",
    "signing_digest",
]

SIGNATURE_DOMAIN: Final = b"sez.lifecycle/v1\n"
"""Domain separation: a lifecycle signature can never be mistaken for a receipt or note signature."""

_SCHEMA: Final = "payload.lifecycle"


class State(StrEnum):
    """A corridor's lifecycle state (design §9)."""

    DRAFT = "DRAFT"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    HALTED = "HALTED"
    DEPRECATED = "DEPRECATED"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One row of the transition table.

    Attributes:
        signers: ``"both"`` parties, the ``"authority"`` party, or ``"any"`` one party. For a
            HALTED -> ACTIVE resolution it is decided by the resolution's method instead.
        fields: the optional payload fields this transition requires; the others are refused.
    """

    signers: str
    fields: frozenset[str] = frozenset()


_OPTIONAL_FIELDS: Final = frozenset({"definition_digest", "authority", "evidence", "resolution"})

TRANSITIONS: Final[Mapping[tuple[State, State], Rule]] = {
    (State.DRAFT, State.PENDING): Rule(signers="both", fields=frozenset({"definition_digest"})),
    (State.PENDING, State.ACTIVE): Rule(signers="both", fields=frozenset({"definition_digest"})),
    (State.ACTIVE, State.SUSPENDED): Rule(signers="authority", fields=frozenset({"authority"})),
    (State.SUSPENDED, State.ACTIVE): Rule(signers="authority", fields=frozenset({"authority"})),
    (State.ACTIVE, State.HALTED): Rule(signers="any", fields=frozenset({"evidence"})),
    (State.HALTED, State.ACTIVE): Rule(signers="resolution", fields=frozenset({"resolution"})),
    (State.ACTIVE, State.DEPRECATED): Rule(signers="both"),
    (State.SUSPENDED, State.DEPRECATED): Rule(signers="both"),
    (State.HALTED, State.DEPRECATED): Rule(signers="both"),
}
"""(from, to) -> what the transition needs. Every pair not listed is an ``illegal-transition``."""

_LEDGER_KINDS: Final = frozenset({"watcher.bond", "watcher.unbond", "watcher.slash"})

ALLOWED_KINDS: Final[Mapping[State, frozenset[str]]] = {
    # Nothing but the lifecycle until both parties have signed the definition.
    State.DRAFT: frozenset({"lifecycle"}),
    # Preparing: watchers bond (and their bonds become final through acked checkpoints) so that
    # quorum exists on activation; licences may be attested. No value moves.
    State.PENDING: frozenset({"lifecycle", "ack", "attestation", "watcher.bond", "watcher.unbond"}),
    State.ACTIVE: frozenset({"lifecycle", "transfer", "settlement", "ack", "attestation"}) | _LEDGER_KINDS,
    # No new business (transfers, settlements); bookkeeping and the watcher set go on.
    State.SUSPENDED: frozenset({"lifecycle", "ack", "attestation"}) | _LEDGER_KINDS,
    # Receipt production and finality stop (design §8); only slashing the equivocators and the
    # resolution itself. Unbonding is refused so that stake cannot leave while a fork is judged.
    State.HALTED: frozenset({"lifecycle", "watcher.slash"}),
    # Terminal: close the books. Acks finalize the last checkpoints, watchers leave, misbehaviour
    # before the end stays slashable. ``lifecycle`` is accepted so that apply() reports illegal-transition.
    State.DEPRECATED: frozenset({"lifecycle", "ack", "watcher.unbond", "watcher.slash"}),
}
"""Receipt kinds a node accepts while the corridor is in each state (design §4, last rule)."""


EvidenceVerifier = Callable[[Mapping[str, Any]], bytes]
"""Verifies a payload's ``evidence`` object offline and returns its 32-byte digest; raises
:class:`PeerProtocolError` if the evidence does not verify. :func:`protocol.evidence.evidence_verifier`
makes the one for fork evidence (design §7/§8), from the corridor's log keys, clock and policy."""

QuorumVerifier = Callable[[Mapping[str, Any], str | None], None]
"""Checks a ``quorum`` resolution (its branch and certificate) of the halt whose evidence digest (hex)
is the second argument; raises :class:`PeerProtocolError` if the named branch did not reach quorum.
:mod:`protocol.fork` has the certificate and its verifier."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CorridorState:
    """Where one corridor's lifecycle stands. Frozen: :func:`apply` returns a new one.

    Attributes:
        corridor_id: ``AAA-BBB``; its two parties are ``AAA`` and ``BBB``.
        state: the current state.
        definition_digest: hex digest of the corridor definition bound at DRAFT -> PENDING.
        suspended_by: the party whose authority suspended the corridor (while SUSPENDED).
        halt_evidence: hex digest of the evidence that halted it (while HALTED).
        also_halted: digests of the evidence of further ACTIVE -> HALTED records met while HALTED
            (the other party's record of the fork, perhaps another spelling of it: see :func:`merge`);
            a ``quorum`` resolution may resolve the halt by naming any of them or ``halt_evidence``.
        settled_evidence: digests of evidence whose halt a resolution ended: the same fork, once
            resolved, cannot halt the corridor again (a log checkpoint carries no signed time, so
            its evidence never ages out).
    """

    corridor_id: str
    state: State = State.DRAFT
    definition_digest: str | None = None
    suspended_by: str | None = None
    halt_evidence: str | None = None
    also_halted: frozenset[str] = frozenset()
    settled_evidence: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        parties = self.corridor_id.split("-")
        if len(parties) != 2 or parties[0] == parties[1] or not all(_is_code(p) for p in parties):
            raise LocalProtocolError("bad-corridor", f"corridor id {self.corridor_id!r} is not AAA-BBB")

    @property
    def parties(self) -> tuple[str, str]:
        """The corridor's two jurisdiction codes."""
        first, second = self.corridor_id.split("-")
        return first, second


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One applied lifecycle transition, as :func:`fold` records it.

    Attributes:
        index: position of the payload in the folded sequence.
        from_state, to_state: the transition.
        reason: the payload's ``reason``.
        digest: hex :func:`signing_digest` of the payload (what the parties signed).
        signers: the parties whose signatures verified, sorted.
    """

    index: int
    from_state: State
    to_state: State
    reason: str
    digest: str
    signers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The result of :func:`fold`: the final state and every transition that led there."""

    state: CorridorState
    history: tuple[Transition, ...]


def _is_code(text: str) -> bool:
    return len(text) == 3 and text.isascii() and text.isupper() and text.isalpha()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def definition_digest(definition: Mapping[str, Any]) -> bytes:
    """SHA-256(JCS(corridor definition)): what DRAFT -> PENDING binds into the log (design §4)."""
    return hashlib.sha256(canonical(dict(definition))).digest()


ISO3166: Final[Mapping[str, str]] = {"PAK": "PAK", "KSA": "SAU", "UAE": "ARE", "CHN": "CHN"}
"""sez jurisdiction code -> ISO 3166-1 alpha-3 code (design §3)."""


def check_definition(definition: Mapping[str, Any]) -> None:
    """Check a corridor definition (``configs/corridors/<id>.json``): schema ``corridor``, then consistency.

    Consistency: the id is ``<first party>-<second party>``; the parties differ; each party's ISO 3166
    code is its jurisdiction's; each origin is ``<host>/corridor/<id>`` and the two origins differ.

    Raises:
        PeerProtocolError: ``schema-violation`` (with the failing ``path``) or ``inconsistent-definition``
            (with the ``path`` of the offending value).
    """
    schemas.validate("corridor", definition)
    corridor_id = definition["id"]
    parties = definition["parties"]
    codes = [party["jurisdiction"] for party in parties]

    def fail(path: str, message: str) -> PeerProtocolError:
        return PeerProtocolError("inconsistent-definition", f"corridor {corridor_id}: {message}", path=path)

    if corridor_id != "-".join(codes) or codes[0] == codes[1]:
        raise fail("data.id", f"id must be the two distinct parties' codes joined by '-', not {corridor_id}")
    for index, party in enumerate(parties):
        if party["iso3166"] != ISO3166[party["jurisdiction"]]:
            raise fail(f"data.parties[{index}].iso3166", f"{party['jurisdiction']} is not {party['iso3166']}")
        host, sep, rest = party["origin"].partition("/corridor/")
        if not sep or not host or rest != corridor_id:
            raise fail(f"data.parties[{index}].origin", f"origin must be <host>/corridor/{corridor_id}")
    if parties[0]["origin"] == parties[1]["origin"]:
        raise fail("data.parties[1].origin", "the two parties share one origin")


def signing_digest(payload: Mapping[str, Any]) -> bytes:
    """SHA-256(JCS(payload without ``signatures``)); parties sign ``SIGNATURE_DOMAIN + digest``."""
    unsigned = {key: value for key, value in payload.items() if key != "signatures"}
    return hashlib.sha256(canonical(unsigned)).digest()


def sign(payload: Mapping[str, Any], signers: Mapping[str, SigningKey]) -> dict[str, Any]:
    """``payload`` with ``signatures`` by each (party -> key) of ``signers`` appended, sorted by party.

    Signatures already present are kept (a party replacing its own is refused as a duplicate later).
    """
    message = SIGNATURE_DOMAIN + signing_digest(payload)
    entries = list(payload.get("signatures", []))
    for party, key in signers.items():
        entries.append(
            {
                "party": party,
                "verificationMethod": key.verifier().verification_method,
                "signature": _b64url(key.sign(message)),
            }
        )
    return {**payload, "signatures": sorted(entries, key=lambda entry: str(entry["party"]))}


def allowed_kinds(state: State) -> frozenset[str]:
    """The receipt kinds a node accepts while the corridor is in ``state`` (see :data:`ALLOWED_KINDS`).

    Kinds not yet defined (``settlement``, ``watcher.slash``) are listed by name already.
    """
    return ALLOWED_KINDS[state]


def mermaid() -> str:
    """The transition table as a Mermaid ``stateDiagram-v2`` (for the docs; generated, never drawn)."""
    lines = ["stateDiagram-v2", "    [*] --> DRAFT"]
    for (source, target), rule in TRANSITIONS.items():
        lines.append(f"    {source} --> {target}: {rule.signers}")
    lines.append("    DEPRECATED --> [*]")
    return "\n".join(lines) + "\n"


def _required_signers(rule: Rule, payload: Mapping[str, Any], parties: tuple[str, str]) -> set[str] | None:
    """The parties that must sign, or None when any one party suffices."""
    signers = rule.signers
    if signers == "resolution":
        signers = "both" if payload["resolution"]["method"] == "two-party" else "any"
    if signers == "both":
        return set(parties)
    if signers == "authority":
        return {payload["authority"]}
    return None


def check_payload(kind: str, payload: Mapping[str, Any]) -> None:
    """Stateless checks of a schema-valid ``lifecycle`` payload (the receipt-layer rule; no keys needed).

    Checks, in order: the corridor id names two distinct parties; (from, to) is a row of
    :data:`TRANSITIONS`; the row's fields are present and no other optional field is; the
    ``authority`` is a corridor party; signing parties are corridor parties, each at most once,
    with a well-formed did:key; the parties the row requires have signed. Signatures themselves are
    verified by :func:`apply`, which knows the registered keys.

    Raises:
        PeerProtocolError: ``bad-corridor``, ``illegal-transition``, ``missing-field``,
            ``unexpected-field``, ``bad-authority``, ``unknown-signer``, ``duplicate-signer``,
            ``bad-did``, ``missing-signature``.
    """
    corridor_id = payload["corridor_id"]
    first, _, second = corridor_id.partition("-")
    if first == second:
        raise PeerProtocolError("bad-corridor", f"corridor {corridor_id} names the same party twice")
    parties = (first, second)
    source, target = State(payload["from"]), State(payload["to"])
    rule = TRANSITIONS.get((source, target))
    if rule is None:
        raise PeerProtocolError(
            "illegal-transition",
            f"no transition from {source} to {target}",
            state=str(source),
            to=str(target),
        )
    present = _OPTIONAL_FIELDS & payload.keys()
    if missing := rule.fields - present:
        raise PeerProtocolError(
            "missing-field", f"{source} -> {target} needs {sorted(missing)}", fields=sorted(missing)
        )
    if extra := present - rule.fields:
        raise PeerProtocolError(
            "unexpected-field", f"{source} -> {target} does not take {sorted(extra)}", fields=sorted(extra)
        )
    if "authority" in payload and payload["authority"] not in parties:
        raise PeerProtocolError(
            "bad-authority", f"authority {payload['authority']} is not a party of {corridor_id}"
        )
    seen: set[str] = set()
    for entry in payload["signatures"]:
        party = entry["party"]
        if party not in parties:
            raise PeerProtocolError("unknown-signer", f"{party} is not a party of {corridor_id}", party=party)
        if party in seen:
            raise PeerProtocolError("duplicate-signer", f"{party} signed twice", party=party)
        seen.add(party)
        public_from_did_key(entry["verificationMethod"])
    required = _required_signers(rule, payload, parties)
    if required is None:
        required_missing = [] if seen else list(parties)
        wanted = "either party"
    else:
        required_missing = sorted(required - seen)
        wanted = " and ".join(sorted(required))
    if required_missing:
        raise PeerProtocolError(
            "missing-signature",
            f"{source} -> {target} must be signed by {wanted}",
            missing=required_missing,
        )


def _verify_signatures(
    payload: Mapping[str, Any], parties: tuple[str, str], registered_keys: Mapping[str, VerifierKey]
) -> tuple[str, ...]:
    message = SIGNATURE_DOMAIN + signing_digest(payload)
    signers = []
    for entry in payload["signatures"]:
        party = entry["party"]
        key = registered_keys.get(party) if party in parties else None
        if key is None or entry["verificationMethod"] != key.verification_method:
            raise PeerProtocolError(
                "unknown-signer",
                f"{entry['verificationMethod']} is not the registered key of {party}",
                party=party,
                got=entry["verificationMethod"],
            )
        if not key.verify(message, _unb64url(entry["signature"])):
            raise PeerProtocolError(
                "bad-signature", f"{party}'s lifecycle signature does not verify", party=party
            )
        signers.append(party)
    return tuple(sorted(signers))


def _apply(
    current: CorridorState,
    payload: Mapping[str, Any],
    registered_keys: Mapping[str, VerifierKey],
    verify_evidence: EvidenceVerifier | None,
    verify_quorum: QuorumVerifier | None,
) -> tuple[CorridorState, tuple[str, ...]]:
    # 1. Shape.
    schemas.validate(_SCHEMA, payload)
    # 2. This corridor.
    if payload["corridor_id"] != current.corridor_id:
        raise PeerProtocolError(
            "wrong-corridor",
            f"lifecycle payload is for {payload['corridor_id']}, not {current.corridor_id}",
            expected=current.corridor_id,
            got=payload["corridor_id"],
        )
    # 3. A row of the table from the current state.
    target = State(payload["to"])
    if (current.state, target) not in TRANSITIONS:
        raise PeerProtocolError(
            "illegal-transition",
            f"corridor {current.corridor_id} is {current.state}: no transition to {target}",
            state=str(current.state),
            to=str(target),
        )
    # 4. The payload describes the transition out of the current state (not a replay of an older one).
    if payload["from"] != current.state:
        raise PeerProtocolError(
            "wrong-from-state",
            f"payload moves from {payload['from']}, corridor {current.corridor_id} is {current.state}",
            state=str(current.state),
            got=payload["from"],
        )
    # 5. Stateless rules: fields and who must sign.
    check_payload("lifecycle", payload)
    # 6. Stateful fields.
    source = current.state
    if (source, target) == (State.PENDING, State.ACTIVE) and (
        payload["definition_digest"] != current.definition_digest
    ):
        raise PeerProtocolError(
            "definition-mismatch",
            "the agreement names another corridor definition than the one PENDING bound",
            expected=current.definition_digest,
            got=payload["definition_digest"],
        )
    if (source, target) == (State.SUSPENDED, State.ACTIVE) and payload["authority"] != current.suspended_by:
        raise PeerProtocolError(
            "wrong-authority",
            f"only {current.suspended_by}, who suspended the corridor, can resume it",
            expected=current.suspended_by,
            got=payload["authority"],
        )
    # 7. Signatures, against the registered keys only.
    signers = _verify_signatures(payload, current.parties, registered_keys)
    # 8. Evidence and quorum hooks (the expensive, external checks) last.
    if target == State.HALTED:
        if verify_evidence is None:
            raise LocalProtocolError("no-evidence-verifier", "a halt needs an evidence verifier")
        evidence = payload["evidence"]
        if evidence["digest_sha256"] in current.settled_evidence:
            raise PeerProtocolError(
                "evidence-settled",
                "this fork evidence already halted the corridor and a resolution settled it",
                digest=evidence["digest_sha256"],
            )
        digest = verify_evidence(evidence)
        if digest.hex() != evidence["digest_sha256"]:
            raise PeerProtocolError(
                "evidence-digest-mismatch",
                "evidence digest_sha256 is not the verified evidence's digest",
                expected=digest.hex(),
                got=evidence["digest_sha256"],
            )
        return replace(
            current, state=target, halt_evidence=evidence["digest_sha256"], also_halted=frozenset()
        ), signers
    if source == State.HALTED and target == State.ACTIVE:
        if payload["resolution"]["method"] == "quorum":
            if verify_quorum is None:
                raise LocalProtocolError("no-quorum-verifier", "a quorum resolution needs a quorum verifier")
            certificate = payload["resolution"].get("certificate")
            named = certificate.get("evidence") if isinstance(certificate, Mapping) else None
            halt = named if named in current.also_halted else current.halt_evidence
            verify_quorum(payload["resolution"], halt)
        settled = current.settled_evidence | current.also_halted
        if current.halt_evidence:
            settled |= {current.halt_evidence}
        return replace(
            current, state=target, halt_evidence=None, also_halted=frozenset(), settled_evidence=settled
        ), signers
    if target == State.SUSPENDED:
        return replace(current, state=target, suspended_by=payload["authority"]), signers
    if source == State.SUSPENDED and target == State.ACTIVE:
        return replace(current, state=target, suspended_by=None), signers
    if target == State.PENDING:
        return replace(current, state=target, definition_digest=payload["definition_digest"]), signers
    return replace(current, state=target), signers


def apply(
    current: CorridorState,
    payload: Mapping[str, Any],
    registered_keys: Mapping[str, VerifierKey],
    *,
    verify_evidence: EvidenceVerifier | None = None,
    verify_quorum: QuorumVerifier | None = None,
) -> CorridorState:
    """The corridor's state after the ``lifecycle`` transition ``payload`` (design §9).

    Args:
        current: the state before (not modified: it is frozen).
        payload: the ``lifecycle`` receipt payload.
        registered_keys: party code -> its registered Ed25519 key for this corridor. Only the two
            parties' keys are consulted; no other key is accepted.
        verify_evidence: checks the fork evidence of ACTIVE -> HALTED, returning its digest.
        verify_quorum: checks a ``quorum`` resolution of HALTED -> ACTIVE.

    Returns:
        The new state. On any error nothing changes: the caller keeps ``current``.

    Raises:
        PeerProtocolError: ``schema-violation``, ``wrong-corridor``, ``illegal-transition`` (details
            name the current ``state``), ``wrong-from-state``, the :func:`check_payload` reasons,
            ``definition-mismatch``, ``wrong-authority``, ``unknown-signer`` (a key that is not the
            party's registered key), ``bad-signature``, ``evidence-settled``, ``evidence-digest-mismatch``,
            or whatever the evidence/quorum verifier raises.
        LocalProtocolError: ``no-evidence-verifier`` / ``no-quorum-verifier``: the transition
            needs a hook the caller did not pass.
    """
    return _apply(current, payload, registered_keys, verify_evidence, verify_quorum)[0]


def fold(
    corridor_id: str,
    payloads: Iterable[Mapping[str, Any]],
    registered_keys: Mapping[str, VerifierKey],
    *,
    verify_evidence: EvidenceVerifier | None = None,
    verify_quorum: QuorumVerifier | None = None,
) -> Lifecycle:
    """The lifecycle of ``corridor_id`` from its log's ``lifecycle`` payloads, in log order.

    Starts from DRAFT and applies each payload with :func:`apply`; every node holding the same log
    derives the same state and history.

    Raises:
        PeerProtocolError: as :func:`apply`, for the first payload that does not apply; its index is
            in ``details["index"]``.
    """
    current = CorridorState(corridor_id=corridor_id)
    history: list[Transition] = []
    for index, payload in enumerate(payloads):
        try:
            after, signers = _apply(current, payload, registered_keys, verify_evidence, verify_quorum)
        except PeerProtocolError as exc:
            raise PeerProtocolError(exc.reason, f"lifecycle payload {index}: {exc.message}",
                                    index=index, **exc.details) from exc  # fmt: skip
        history.append(
            Transition(
                index=index,
                from_state=current.state,
                to_state=after.state,
                reason=payload["reason"],
                digest=signing_digest(payload).hex(),
                signers=signers,
            )
        )
        current = after
    return Lifecycle(current, tuple(history))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A ``lifecycle`` payload of a log that can never apply (bad signature, wrong corridor, ...)."""

    log: int
    position: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class MergedLifecycle:
    """The result of :func:`merge`: the corridor's lifecycle read from both of its logs.

    Attributes:
        lifecycle: the state and the history of applied transitions (each transition once).
        rejected: payloads that failed for a reason other than the state (kept for the API).
        waiting: per log, payloads not applied yet because they start from a state the corridor
            has not reached (they apply once the other log's transitions are read).
    """

    lifecycle: Lifecycle
    rejected: tuple[Rejected, ...]
    waiting: tuple[int, ...]


_WAITING_REASONS: Final = frozenset({"illegal-transition", "wrong-from-state"})


def _halt_already(current: CorridorState, payload: Any) -> bool:
    """True for an ACTIVE -> HALTED payload while HALTED: a second record of a halt (see :func:`merge`)."""
    return (
        current.state == State.HALTED
        and isinstance(payload, Mapping)
        and payload.get("from") == str(State.ACTIVE)
        and payload.get("to") == str(State.HALTED)
    )


def _also_halted(
    current: CorridorState,
    payload: Mapping[str, Any],
    registered_keys: Mapping[str, VerifierKey],
    verify_evidence: EvidenceVerifier | None,
    *,
    rejected: list[Rejected],
    at: tuple[int, int],
) -> CorridorState:
    """``current`` with a second record of a halt counted (see :func:`merge`), if it verifies as one.

    It is checked as the ACTIVE -> HALTED transition it is (schema, signatures, evidence); one that
    does not verify is reported in ``rejected``, and one whose evidence a resolution settled already
    is a quiet no-op.
    """
    try:
        _apply(replace(current, state=State.ACTIVE, halt_evidence=None), payload, registered_keys,
               verify_evidence, None)  # fmt: skip
    except PeerProtocolError as exc:
        if exc.reason != "evidence-settled":
            rejected.append(Rejected(at[0], at[1], exc.reason, exc.message))
        return current
    except LocalProtocolError:
        return current  # no evidence verifier: the caller did not ask for halts to be judged
    digest = payload["evidence"]["digest_sha256"]
    if digest == current.halt_evidence:
        return current
    return replace(current, also_halted=current.also_halted | {digest})


def merge(
    corridor_id: str,
    logs: Iterable[Iterable[Mapping[str, Any]]],
    registered_keys: Mapping[str, VerifierKey],
    *,
    verify_evidence: EvidenceVerifier | None = None,
    verify_quorum: QuorumVerifier | None = None,
) -> MergedLifecycle:
    """The lifecycle of ``corridor_id`` from the ``lifecycle`` payloads of its two logs.

    Each party records transitions in its own log, so the same transition (the same signed payload)
    may be in both logs, and the logs interleave in no global order. The merge is deterministic and
    needs no clock: pass the logs in a fixed order (the node sorts them by origin). Repeatedly, the
    first log whose next payload applies to the current state applies it; a payload whose
    :func:`signing_digest` was already applied is skipped (the other party recorded it too); one that
    fails for a reason other than the state (a bad signature, another corridor, a forged evidence)
    is rejected and skipped; one that starts from a state not reached yet waits. An ACTIVE -> HALTED
    payload met while the corridor is HALTED is the other party's record of a halt (each party halts
    on the fork evidence it holds, maybe another spelling of the same fork): it does not move the
    state again (it would wait forever in front of the resolution its log records next), but once it
    verifies, its evidence is one of the halts a resolution may name (``also_halted``: each party's
    quorum certificate names the evidence *it* halted on, and the logs interleave in origin order,
    not in time) and the resolution settles it too. Every node
    holding the same two logs derives the same state.
    """
    queues = [list(log) for log in logs]
    heads = [0] * len(queues)
    current = CorridorState(corridor_id=corridor_id)
    applied: set[bytes] = set()
    history: list[Transition] = []
    rejected: list[Rejected] = []
    progress = True
    while progress:
        progress = False
        for log, queue in enumerate(queues):
            while heads[log] < len(queue):
                payload = queue[heads[log]]
                digest = signing_digest(payload) if isinstance(payload, Mapping) else b""
                if digest in applied:
                    heads[log] += 1
                    continue
                if _halt_already(current, payload):
                    current = _also_halted(current, payload, registered_keys, verify_evidence,
                                           rejected=rejected, at=(log, heads[log]))  # fmt: skip
                    heads[log] += 1
                    continue
                try:
                    after, signers = _apply(current, payload, registered_keys, verify_evidence, verify_quorum)
                except PeerProtocolError as exc:
                    if exc.reason in _WAITING_REASONS:
                        break
                    rejected.append(Rejected(log, heads[log], exc.reason, exc.message))
                    heads[log] += 1
                    continue
                history.append(
                    Transition(
                        index=len(history), from_state=current.state, to_state=after.state,
                        reason=payload["reason"], digest=digest.hex(), signers=signers,
                    )
                )  # fmt: skip
                applied.add(digest)
                current = after
                heads[log] += 1
                progress = True
    waiting = tuple(len(queue) - head for queue, head in zip(queues, heads, strict=True))
    return MergedLifecycle(Lifecycle(current, tuple(history)), tuple(rejected), waiting)


def activation(
    corridor_id: str, signers: Mapping[str, SigningKey], definition_hex: str, *, reason: str = "activation"
) -> list[dict[str, Any]]:
    """DRAFT -> PENDING -> ACTIVE for ``corridor_id``, each payload signed by every key of ``signers``.

    For the devnet and tests, where one program holds both parties' keys; two real jurisdictions
    exchange the payloads instead (``sez-node lifecycle sign``).
    """
    steps = [(State.DRAFT, State.PENDING), (State.PENDING, State.ACTIVE)]
    payloads = []
    for source, target in steps:
        payload = {
            "corridor_id": corridor_id,
            "from": str(source),
            "to": str(target),
            "reason": f"{reason}: {target}",
            "definition_digest": definition_hex,
        }
        payloads.append(sign(payload, signers))
    return payloads
