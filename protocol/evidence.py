"""Misbehaviour evidence (design §7, §8): build it from two conflicting signed statements, verify it offline.

Theory of operation
-------------------
A piece of evidence is one canonical JSON object (RFC 8785), ``{"type": "sez.evidence/v1", "kind", ...}``,
with a JSON Schema per kind in ``schemas/evidence.<kind>.json``. It carries the two signed statements
themselves, so anyone holding the signers' keys can verify it from its own bytes, without a store:

=========================  =====================================================================
kind                       what it proves
=========================  =====================================================================
``log-equivocation``       a log signed two receipts with one sequence and different ``next_root``,
                           or two checkpoints with one size and different roots (a fork: the halt
                           credential of design §8). The offender is the log's origin.
``watcher-equivocation``   one watcher cosigned two checkpoints of one origin that cannot both be
                           true: one size and different roots, or different sizes plus a
                           *divergence* (inclusion proofs of two different leaves at one index, one
                           in each tree), so that neither tree can extend the other.
``watcher-rollback``       one watcher cosigned size m at time t2 after size n > m at time t1 < t2.
=========================  =====================================================================

Signed statements travel as they were signed: receipts as their JSON objects (whose JCS bytes are
what the log signed), checkpoints as C2SP signed notes cut down to the **one** signature line that
matters (the log's for a log checkpoint, the watcher's tlog-cosignature/v1 for a cosigned one). The
two statements are in a fixed order (receipts by ``next_root``, checkpoints by (size, root), a
rollback's earlier statement first), so one misbehaviour has one spelling.

**Digest.** ``SHA-256(JCS(evidence without "divergence"))``: what idempotence is keyed on (a
``watcher.slash`` applies once per (watcher, digest); a store keeps one copy per digest). The
divergence is left out because it only *argues* the conflict: another index or another proof for
the same two cosigned statements is the same misbehaviour and must not be slashed twice.

**Time and age.** The time of a statement is what its signer signed: a receipt's ``timestamp``, a
cosignature's ``time`` line. The evidence's time is the latest of its two statements (the moment the
misbehaviour was complete). :func:`verify_evidence` refuses evidence older than the corridor's
evidence window or dated further in the future than the maximum clock skew. A log checkpoint
carries no signed time (C2SP checkpoints have none and sez-node writes no extension), so a
checkpoint-form ``log-equivocation`` has no age: a fork is a fork whatever its age, it takes no
stake, and the lifecycle decides what a halt already resolved means.

**Verification order** (style rule 10, cometbft ``evidence/verify.go``), cheap checks first:

1. size limit, strict canonical JSON (:func:`protocol.jcs.parse_canonical`);
2. known ``kind``, then the kind's schema;
3. the origin is one of the corridor's logs (``log_keys``); a watcher key is a 0x04 key (and one
   of ``watcher_keys`` when given);
4. each statement parses (note shape, one signature line of the expected key, receipt rules);
5. the conflict itself, and the canonical order;
6. the age window;
7. signatures last (and the divergence's inclusion proofs).

Every failure is a :class:`PeerProtocolError` with a specific reason. Pure: no I/O, no clock
(``now`` is an argument).

The module is a little over 700 lines on purpose: the format, its verifier and its builders stay
together so that every builder runs the very checks (the private ``_check_*`` helpers) the verifier
runs, and a detector cannot build evidence the network would refuse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from . import receipts, schemas

# receipts -> stake -> evidence -> receipts is an import cycle: ``receipts`` is imported as a module and its
# attributes are read only at call time, never while this module loads, so any import order works.
from .checkpoints import Checkpoint, Cosignature, cosignature_message
from .errors import LocalProtocolError, PeerProtocolError
from .jcs import canonical, parse_canonical
from .keys import ALG_COSIGNATURE_V1, ALG_ED25519, VerifierKey
from .mmr import hash_leaf
from .notes import NoteSignature, SignedNote, parse_note
from .proofs import verify_inclusion

__all__ = [
    "EVIDENCE_TYPE",
    "HALT_KINDS",
    "KINDS",
    "MAX_EVIDENCE_BYTES",
    "SLASHABLE_KINDS",
    "Divergence",
    "VerifiedEvidence",
    "check_slash_evidence",
    "evidence_digest",
    "evidence_verifier",
    "log_equivocation_from_checkpoints",
    "log_equivocation_from_receipts",
    "validate_basic",
    "verify_evidence",
    "watcher_equivocation",
    "watcher_rollback",
]

EVIDENCE_TYPE: Final = "sez.evidence/v1"
KINDS: Final = ("log-equivocation", "watcher-equivocation", "watcher-rollback")
SLASHABLE_KINDS: Final = frozenset({"watcher-equivocation", "watcher-rollback"})
"""Kinds a ``watcher.slash`` may carry: the offender is a bonded watcher. A log is not staked."""
HALT_KINDS: Final = frozenset({"log-equivocation"})
"""Kinds that prove a fork, and so may halt a corridor (design §8)."""

MAX_EVIDENCE_BYTES: Final = 192 * 1024
"""Two receipts of at most 64 KiB each (``receipts.MAX_RECEIPT_BYTES``) and their envelope; a
watcher's evidence is under 10 KiB (two short notes, two proofs of at most 64 hashes)."""

_HASH_HEX: Final = 64


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedEvidence:
    """Evidence that passed :func:`verify_evidence`. Made only there.

    Attributes:
        kind: one of :data:`KINDS`.
        corridor_id: the corridor the evidence names.
        origin: the log the statements are about.
        offender: who misbehaved: the log's origin, or the watcher's verifier key (``name+id+key``).
        digest: 32-byte :func:`evidence_digest`, the idempotence key.
        time: unix seconds of the later statement, or None (checkpoint-form log equivocation).
        raw: the evidence's canonical bytes.
        body: the parsed evidence.
    """

    kind: str
    corridor_id: str
    origin: str
    offender: str
    digest: bytes
    time: int | None
    raw: bytes
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Divergence:
    """Two trees disagree at ``index``: leaf data ``leaves[k]`` is at ``index`` in tree ``k``.

    For a builder, tree ``k`` is the ``k``-th note passed to :func:`watcher_equivocation`.

    Attributes:
        index: the leaf index, below both tree sizes.
        leaves: the two leaves' data (32 bytes each: a receipt's ``next_root``).
        proofs: RFC 6962 inclusion proofs of each leaf in its tree.
    """

    index: int
    leaves: tuple[bytes, bytes]
    proofs: tuple[Sequence[bytes], Sequence[bytes]]


@dataclass(frozen=True, slots=True)
class _Statement:
    """One parsed signed statement about a checkpoint: the body and its single signature line."""

    checkpoint: Checkpoint
    line: NoteSignature
    text: str


# --------------------------------------------------------------------------- helpers


def _fail(reason: str, message: str, **details: Any) -> PeerProtocolError:
    return PeerProtocolError(reason, f"evidence: {message}", **details)


def _unix(timestamp: str) -> int:
    """Unix seconds of a schema-valid ``YYYY-MM-DDTHH:MM:SSZ``."""
    return int(datetime.fromisoformat(timestamp.removesuffix("Z")).replace(tzinfo=UTC).timestamp())


def evidence_digest(body: Mapping[str, Any]) -> bytes:
    """``SHA-256(JCS(body without "divergence"))``: the idempotence key of one misbehaviour."""
    core = {key: value for key, value in body.items() if key != "divergence"}
    return hashlib.sha256(canonical(core)).digest()


def _note_text(note: SignedNote | bytes | str) -> SignedNote:
    if isinstance(note, SignedNote):
        return note
    return parse_note(note.encode() if isinstance(note, str) else note)


def _statement(text: str, index: int) -> _Statement:
    """Parse one statement note: a checkpoint body and exactly one signature line."""
    try:
        note = parse_note(text.encode("utf-8"))
        checkpoint = Checkpoint.from_body(note.text)
    except PeerProtocolError as exc:
        raise _fail(
            "bad-statement", f"statement {index}: {exc.message}", index=index, cause=exc.reason
        ) from exc
    if len(note.signatures) != 1:
        raise _fail(
            "bad-statement",
            f"statement {index} must carry exactly one signature line, not {len(note.signatures)}",
            index=index,
        )
    return _Statement(checkpoint, note.signatures[0], text)


def _only_line(note: SignedNote, name: str, kid: bytes, what: str) -> str:
    """``note`` cut down to its latest line of key (``name``, ``kid``), as note text."""
    lines = [sig for sig in note.signatures if sig.key == (name, kid)]
    if not lines:
        raise LocalProtocolError("missing-signature", f"the note carries no line of {what} {name}")
    # Several lines of one key: keep the latest statement (a cosignature's u64 time leads its bytes).
    lines.sort(key=lambda sig: sig.signature[:8])
    return SignedNote(text=note.text, signatures=(lines[-1],)).to_bytes().decode("utf-8")


def _watcher_key(vkey: str, watcher_keys: Collection[str] | None) -> VerifierKey:
    try:
        key = VerifierKey.from_vkey(vkey)
    except PeerProtocolError as exc:
        raise _fail("bad-vkey", f"watcher key {vkey[:80]!r}: {exc.message}") from exc
    if key.alg != ALG_COSIGNATURE_V1:
        raise _fail("bad-vkey", "a watcher key must be a cosignature/v1 (0x04) verifier key")
    if watcher_keys is not None and vkey not in watcher_keys:
        raise _fail("unknown-watcher", f"{key.name} is not a watcher of this corridor", watcher=vkey)
    return key


def _check_window(time: int, *, now: int, window: int, max_skew: int) -> None:
    if time > now + max_skew:
        raise _fail(
            "evidence-from-future",
            f"evidence dated {time} is ahead of now {now} by more than {max_skew} s",
            time=time,
            now=now,
        )
    if now - time > window:
        raise _fail(
            "evidence-expired",
            f"evidence dated {time} is older than the evidence window of {window} s",
            time=time,
            now=now,
        )


# --------------------------------------------------------------------------- per kind


def _cosigned_pair(body: Mapping[str, Any], key: VerifierKey) -> tuple[_Statement, _Statement, int, int]:
    """The two cosigned statements of a watcher evidence, their key checked, and their times."""
    first, second = (_statement(text, index) for index, text in enumerate(body["cosigned"]))
    times = []
    for index, statement in enumerate((first, second)):
        if statement.line.key != (key.name, key.key_id):
            raise _fail(
                "wrong-signer",
                f"statement {index} is signed by {statement.line.name}+{statement.line.key_id.hex()}, "
                "not by the watcher",
                index=index,
            )
        if statement.checkpoint.origin != body["origin"]:
            raise _fail("origin-mismatch", f"statement {index} is about another origin", index=index)
        times.append(Cosignature.from_note_signature(statement.line).timestamp)
    return first, second, times[0], times[1]


def _verify_cosignature(statement: _Statement, key: VerifierKey, index: int) -> None:
    cosig = Cosignature.from_note_signature(statement.line)
    if not key.verify(cosignature_message(statement.checkpoint, cosig.timestamp), cosig.signature):
        raise _fail(
            "bad-signature", f"the watcher's cosignature of statement {index} does not verify", index=index
        )


def _check_watcher_equivocation(body: Mapping[str, Any], key: VerifierKey) -> tuple[list[_Statement], int]:
    first, second, t1, t2 = _cosigned_pair(body, key)
    a, b = first.checkpoint, second.checkpoint
    if (a.size, a.root) == (b.size, b.root):
        raise _fail("no-conflict", "both statements cosign the same tree")
    if (a.size, a.root) > (b.size, b.root):
        raise _fail("non-canonical-order", "cosigned statements must be sorted by (size, root)")
    divergence = body.get("divergence")
    if a.size == b.size:
        if divergence is not None:
            raise _fail("unexpected-divergence", "same-size statements conflict by themselves")
    elif divergence is None:
        raise _fail("missing-divergence", "statements of different sizes need a divergence to conflict")
    else:
        index = divergence["index"]
        leaves = [bytes.fromhex(text) for text in divergence["leaves"]]
        if index >= a.size:
            raise _fail("bad-index", f"divergence index {index} is not below both sizes", index=index)
        if leaves[0] == leaves[1]:
            raise _fail("no-conflict", "the divergence shows the same leaf in both trees", index=index)
    return [first, second], max(t1, t2)


def _check_watcher_rollback(body: Mapping[str, Any], key: VerifierKey) -> tuple[list[_Statement], int]:
    first, second, t1, t2 = _cosigned_pair(body, key)
    if not t1 < t2:
        raise _fail("no-rollback", f"the earlier statement (time {t1}) must come first, before {t2}")
    if not first.checkpoint.size > second.checkpoint.size:
        raise _fail(
            "no-rollback",
            f"size {second.checkpoint.size} at {t2} does not roll back size {first.checkpoint.size} at {t1}",
        )
    return [first, second], t2


def _verify_divergence(body: Mapping[str, Any], statements: Sequence[_Statement]) -> None:
    divergence = body.get("divergence")
    if divergence is None:
        return
    index = divergence["index"]
    for k, statement in enumerate(statements):
        leaf = bytes.fromhex(divergence["leaves"][k])
        proof = [bytes.fromhex(text) for text in divergence["proofs"][k]]
        cp = statement.checkpoint
        try:
            verify_inclusion(index, cp.size, hash_leaf(leaf), proof, cp.root)
        except PeerProtocolError as exc:
            raise _fail(
                "divergence-not-proven",
                f"leaf {k} is not proven at index {index} of the tree of size {cp.size}: {exc.message}",
                index=index,
                cause=exc.reason,
            ) from exc


def _log_receipts(body: Mapping[str, Any]) -> tuple[list[Any], int]:
    parsed = []
    for index, obj in enumerate(body["receipts"]):
        try:
            receipt = receipts.Receipt.from_bytes(canonical(obj))
        except (PeerProtocolError, LocalProtocolError) as exc:
            raise _fail(
                "bad-statement", f"receipt {index}: {exc.message}", index=index, cause=exc.reason
            ) from exc
        if receipt.origin != body["origin"] or receipt.corridor_id != body["corridor_id"]:
            raise _fail("origin-mismatch", f"receipt {index} is of another log or corridor", index=index)
        parsed.append(receipt)
    a, b = parsed
    if a.sequence != b.sequence:
        raise _fail("no-conflict", f"receipts {a.sequence} and {b.sequence} have different sequences")
    if a.next_root == b.next_root:
        raise _fail("no-conflict", "both receipts are the same statement")
    if a.next_root > b.next_root:
        raise _fail("non-canonical-order", "receipts must be sorted by next_root")
    time = max(_unix(a.timestamp), _unix(b.timestamp))
    return parsed, time


def _log_checkpoints(body: Mapping[str, Any], log_key: VerifierKey) -> list[_Statement]:
    first, second = (_statement(text, index) for index, text in enumerate(body["checkpoints"]))
    for index, statement in enumerate((first, second)):
        if statement.line.key != (log_key.name, log_key.key_id):
            raise _fail("wrong-signer", f"checkpoint {index} is not signed by the log key", index=index)
        if statement.checkpoint.origin != body["origin"]:
            raise _fail("origin-mismatch", f"checkpoint {index} is about another origin", index=index)
    a, b = first.checkpoint, second.checkpoint
    if a.size != b.size:
        raise _fail(
            "no-conflict", f"checkpoints of sizes {a.size} and {b.size} do not conflict by themselves"
        )
    if a.root == b.root:
        raise _fail("no-conflict", "both checkpoints have the same root")
    if a.root > b.root:
        raise _fail("non-canonical-order", "checkpoints must be sorted by root")
    return [first, second]


# --------------------------------------------------------------------------- verification


def _parse(raw_or_json: bytes | Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    if isinstance(raw_or_json, bytes | bytearray):
        raw = bytes(raw_or_json)
        body = parse_canonical(raw, max_bytes=MAX_EVIDENCE_BYTES)
    else:
        try:
            raw = canonical(dict(raw_or_json))
        except LocalProtocolError as exc:
            raise _fail(exc.reason, exc.message) from exc
        except (UnicodeError, ValueError, TypeError) as exc:  # lone surrogates, non-JSON values
            raise _fail("bad-json", f"evidence is not encodable as JSON: {exc}") from exc
        if len(raw) > MAX_EVIDENCE_BYTES:
            raise _fail("too-large", f"evidence of {len(raw)} bytes exceeds {MAX_EVIDENCE_BYTES}")
        body = parse_canonical(raw, max_bytes=MAX_EVIDENCE_BYTES)
    if type(body) is not dict:
        raise _fail("schema-violation", "evidence must be a JSON object")
    return raw, body


def validate_basic(raw_or_json: bytes | Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Stateless shape checks: size, canonical JSON, known kind, the kind's schema.

    Returns:
        (canonical bytes, parsed body).

    Raises:
        PeerProtocolError: ``too-large``, ``bad-json``, ``float-refused``, ``non-canonical-json``,
            ``unknown-evidence-kind``, ``schema-violation``.
    """
    raw, body = _parse(raw_or_json)
    kind = body.get("kind")
    if body.get("type") != EVIDENCE_TYPE or kind not in KINDS:
        raise _fail(
            "unknown-evidence-kind",
            f"not a {EVIDENCE_TYPE} evidence of a known kind: {str(kind)[:64]!r}",
            kind=str(kind)[:64],
        )
    schemas.validate(f"evidence.{kind}", body)
    return raw, body


def _check_watcher(body: Mapping[str, Any], watcher: VerifierKey) -> tuple[list[_Statement], int]:
    """Steps 4-5 of a watcher evidence: statements, signer, origin, conflict, order; returns its time."""
    if body["kind"] == "watcher-equivocation":
        return _check_watcher_equivocation(body, watcher)
    return _check_watcher_rollback(body, watcher)


def _verify_watcher_signatures(
    body: Mapping[str, Any], watcher: VerifierKey, statements: Sequence[_Statement]
) -> None:
    """Step 7 of a watcher evidence: both cosignatures, then the divergence's inclusion proofs."""
    for index, statement in enumerate(statements):
        _verify_cosignature(statement, watcher, index)
    _verify_divergence(body, statements)


def check_slash_evidence(raw_or_json: bytes | Mapping[str, Any]) -> tuple[str, bytes]:
    """What a ``watcher.slash`` receipt's evidence must satisfy with no corridor context (receipt rule).

    Everything :func:`verify_evidence` checks that needs neither the corridor's log keys nor a clock:
    shape, a slashable kind, the watcher key, both statements, the conflict, the watcher's
    cosignatures and the divergence. The stake fold re-verifies fully, with the corridor policy.

    Returns:
        (offender vkey, digest).

    Raises:
        PeerProtocolError: as :func:`verify_evidence`, but never ``unknown-origin`` or an age reason.
    """
    _, body = validate_basic(raw_or_json)
    if body["kind"] not in SLASHABLE_KINDS:
        raise _fail("kind-not-accepted", f"{body['kind']} evidence slashes no watcher", kind=body["kind"])
    _check_origin_name(body)
    watcher = _watcher_key(body["watcher"], None)
    statements, _ = _check_watcher(body, watcher)
    _verify_watcher_signatures(body, watcher, statements)
    return body["watcher"], evidence_digest(body)


def _check_origin_name(body: Mapping[str, Any]) -> None:
    # Origins are <host>/corridor/<id> (protocol.lifecycle.check_definition).
    if not body["origin"].endswith("/corridor/" + body["corridor_id"]):
        raise _fail("origin-mismatch", f"origin {body['origin']!r} is not a log of {body['corridor_id']}")


def verify_evidence(
    raw_or_json: bytes | Mapping[str, Any],
    *,
    log_keys: Mapping[str, VerifierKey] | None,
    now: int,
    window: int,
    max_skew: int,
    corridor_id: str | None = None,
    watcher_keys: Collection[str] | None = None,
    kinds: Collection[str] = KINDS,
) -> VerifiedEvidence:
    """Verify a piece of evidence from its own bytes (design §7), in the order of the module docstring.

    Args:
        raw_or_json: the evidence's canonical bytes, or its parsed JSON object.
        log_keys: origin -> the log's registered Ed25519 (0x01) key, for the corridor's logs. The
            evidence's origin must be one of them, even for watcher evidence (a watcher is judged
            in the corridor whose log it cosigned). None only where the keys are not at hand (a
            stake fold over receipts alone): then the origin need only be named for the corridor,
            and ``log-equivocation`` is refused (``no-log-key``), its signatures being the log's.
        now: unix seconds, the verifier's time (in a ledger fold: the slash receipt's time, so
            that every node decides alike whenever it folds).
        window: the corridor's evidence window, in seconds.
        max_skew: the corridor's maximum clock skew, in seconds.
        corridor_id: when given, the corridor the evidence must name.
        watcher_keys: when given, the vkeys a watcher evidence's offender must be among.
        kinds: the kinds the caller accepts (:data:`SLASHABLE_KINDS` for a slash, :data:`HALT_KINDS`
            for a halt).

    Returns:
        The :class:`VerifiedEvidence`.

    Raises:
        PeerProtocolError: the :func:`validate_basic` reasons; ``kind-not-accepted``,
            ``wrong-corridor``, ``origin-mismatch``, ``unknown-origin``, ``no-log-key``, ``bad-vkey``,
            ``unknown-watcher``, ``bad-statement``, ``wrong-signer``, ``no-conflict``,
            ``no-rollback``, ``non-canonical-order``, ``missing-divergence``,
            ``unexpected-divergence``, ``bad-index``, ``evidence-from-future``, ``evidence-expired``,
            ``bad-signature``, ``divergence-not-proven``.
        LocalProtocolError(bad-log-key): ``log_keys`` maps an origin to a key not its own.
    """
    # 1-2. Size, canonical JSON, known kind, schema.
    raw, body = validate_basic(raw_or_json)
    kind: str = body["kind"]
    if kind not in kinds:
        raise _fail("kind-not-accepted", f"{kind} evidence is not accepted here", kind=kind)
    # 3. This corridor, one of its logs.
    if corridor_id is not None and body["corridor_id"] != corridor_id:
        raise _fail(
            "wrong-corridor",
            f"evidence is about {body['corridor_id']}, not {corridor_id}",
            expected=corridor_id,
            got=body["corridor_id"],
        )
    _check_origin_name(body)
    origin: str = body["origin"]
    log_key = None
    if log_keys is not None:
        log_key = log_keys.get(origin)
        if log_key is None:
            raise _fail("unknown-origin", f"{origin!r} is not a log of this corridor", origin=origin)
        if log_key.alg != ALG_ED25519 or log_key.name != origin:
            raise LocalProtocolError("bad-log-key", f"log key for {origin!r} is not its Ed25519 note key")
    if kind != "log-equivocation":
        # 3-5. Watcher key, statements, signer, conflict, order.
        watcher = _watcher_key(body["watcher"], watcher_keys)
        statements, time = _check_watcher(body, watcher)
        # 6. Age.
        _check_window(time, now=now, window=window, max_skew=max_skew)
        # 7. Signatures.
        _verify_watcher_signatures(body, watcher, statements)
        return _verified(body, raw, offender=body["watcher"], time=time)
    if log_key is None:
        raise _fail("no-log-key", "log equivocation needs the log's registered key to verify")
    if "receipts" in body:
        # 4-5. Receipt rules, same sequence, different next_root, order. 6. Age.
        parsed, time = _log_receipts(body)
        _check_window(time, now=now, window=window, max_skew=max_skew)
        # 7. The log's signatures.
        for index, receipt in enumerate(parsed):
            try:
                receipts.verify_receipt(receipt, log_key)
            except PeerProtocolError as exc:
                raise _fail("bad-signature", f"receipt {index}: {exc.message}", index=index) from exc
        return _verified(body, raw, offender=origin, time=time)
    # 4-5. Note shape, the log's line, same size, different root, order. (No signed time: no age.)
    statements = _log_checkpoints(body, log_key)
    # 7. The log's signatures.
    for index, statement in enumerate(statements):
        if not log_key.verify(statement.checkpoint.body().encode(), statement.line.signature):
            raise _fail("bad-signature", f"the log's signature on checkpoint {index} does not verify")
    return _verified(body, raw, offender=origin, time=None)


def _verified(body: dict[str, Any], raw: bytes, *, offender: str, time: int | None) -> VerifiedEvidence:
    return VerifiedEvidence(
        kind=body["kind"],
        corridor_id=body["corridor_id"],
        origin=body["origin"],
        offender=offender,
        digest=evidence_digest(body),
        time=time,
        raw=raw,
        body=body,
    )


def evidence_verifier(
    *,
    log_keys: Mapping[str, VerifierKey],
    now: int,
    window: int,
    max_skew: int,
    kinds: Collection[str] = HALT_KINDS,
) -> Callable[[Mapping[str, Any]], bytes]:
    """The ``verify_evidence`` hook of :func:`protocol.lifecycle.apply` (ACTIVE -> HALTED).

    The hook receives the lifecycle payload's ``evidence`` object ``{"type", "digest_sha256",
    "body"}``; it verifies ``body`` with :func:`verify_evidence`, requires ``type`` to be its kind,
    and returns its digest (which ``lifecycle`` compares with ``digest_sha256``).

    Raises (from the hook):
        PeerProtocolError: ``evidence-type-mismatch`` or any :func:`verify_evidence` reason
            (``kind-not-accepted`` for evidence that proves no fork).
    """

    def verify(evidence: Mapping[str, Any]) -> bytes:
        verified = verify_evidence(
            evidence["body"], log_keys=log_keys, now=now, window=window, max_skew=max_skew, kinds=kinds
        )
        if evidence["type"] != verified.kind:
            raise _fail(
                "evidence-type-mismatch",
                f"evidence is labelled {evidence['type']!r} but is {verified.kind}",
                expected=verified.kind,
                got=evidence["type"],
            )
        return verified.digest

    return verify


# --------------------------------------------------------------------------- builders


def _corridor_of(origin: str) -> str:
    corridor = origin.rpartition("/corridor/")[2]
    if len(corridor) != 7 or corridor[3] != "-":
        raise LocalProtocolError("bad-origin", f"origin {origin!r} does not end in /corridor/<id>")
    return corridor


def log_equivocation_from_receipts(
    a: bytes | Mapping[str, Any], b: bytes | Mapping[str, Any]
) -> dict[str, Any]:
    """``log-equivocation`` evidence from two receipts the log signed for one sequence.

    The detector's call when it holds two validly signed receipts (its own store's and a peer's, say)
    with the same origin and sequence and different ``next_root``. Signatures are not checked here:
    :func:`verify_evidence` does, as every receiver will.

    Raises:
        PeerProtocolError: a receipt is malformed, or the two do not conflict (``no-conflict``,
            ``origin-mismatch``).
    """
    parsed = [receipts.Receipt.from_bytes(r if isinstance(r, bytes) else canonical(dict(r))) for r in (a, b)]
    parsed.sort(key=lambda receipt: receipt.next_root)
    first = parsed[0]
    body = {
        "type": EVIDENCE_TYPE,
        "kind": "log-equivocation",
        "corridor_id": first.corridor_id,
        "origin": first.origin,
        "receipts": [dict(receipt.body) for receipt in parsed],
    }
    _log_receipts(body)  # the conflict, without signatures
    return body


def log_equivocation_from_checkpoints(
    a: SignedNote | bytes | str, b: SignedNote | bytes | str, log_key: VerifierKey
) -> dict[str, Any]:
    """``log-equivocation`` evidence from two checkpoints the log signed at one size with two roots.

    Each note may carry any lines (cosignatures, ...); only the log key's line is kept.

    Raises:
        LocalProtocolError(missing-signature): a note has no line of ``log_key``.
        PeerProtocolError: a note is malformed, or the two do not conflict.
    """
    texts = [_only_line(_note_text(note), log_key.name, log_key.key_id, "log key") for note in (a, b)]
    statements = sorted(
        (_statement(text, index) for index, text in enumerate(texts)), key=lambda s: s.checkpoint.root
    )
    texts = [statement.text for statement in statements]
    origin = statements[0].checkpoint.origin
    body = {
        "type": EVIDENCE_TYPE,
        "kind": "log-equivocation",
        "corridor_id": _corridor_of(origin),
        "origin": origin,
        "checkpoints": texts,
    }
    _log_checkpoints(body, log_key)
    return body


def _watcher_statements(
    notes: Sequence[SignedNote | bytes | str], watcher: VerifierKey
) -> list[tuple[_Statement, int]]:
    if watcher.alg != ALG_COSIGNATURE_V1:
        raise LocalProtocolError("bad-vkey", "a watcher key must be a cosignature/v1 (0x04) key")
    result = []
    for index, note in enumerate(notes):
        text = _only_line(_note_text(note), watcher.name, watcher.key_id, "watcher")
        statement = _statement(text, index)
        result.append((statement, Cosignature.from_note_signature(statement.line).timestamp))
    return result


def watcher_equivocation(
    a: SignedNote | bytes | str,
    b: SignedNote | bytes | str,
    watcher: VerifierKey,
    *,
    divergence: Divergence | None = None,
) -> dict[str, Any]:
    """``watcher-equivocation`` evidence from two checkpoints ``watcher`` cosigned that cannot both be true.

    Same size and different roots conflict by themselves. For different sizes pass ``divergence``:
    a leaf index below both sizes and, for the tree of ``a`` and then of ``b``, the leaf there and its
    inclusion proof (a detector holding both trees' receipts, or two logs' worth of proofs, has them).

    Raises:
        LocalProtocolError: ``missing-signature`` (a note has no line of ``watcher``), ``bad-vkey``.
        PeerProtocolError: the notes are malformed or do not conflict (``no-conflict``,
            ``missing-divergence``, ``bad-index``, ``origin-mismatch``).
    """
    pairs = _watcher_statements((a, b), watcher)
    order = sorted(range(2), key=lambda k: (pairs[k][0].checkpoint.size, pairs[k][0].checkpoint.root))
    origin = pairs[0][0].checkpoint.origin
    body: dict[str, Any] = {
        "type": EVIDENCE_TYPE,
        "kind": "watcher-equivocation",
        "corridor_id": _corridor_of(origin),
        "origin": origin,
        "watcher": watcher.to_vkey(),
        "cosigned": [pairs[k][0].text for k in order],
    }
    if divergence is not None and pairs[0][0].checkpoint.size != pairs[1][0].checkpoint.size:
        body["divergence"] = {
            "index": divergence.index,
            "leaves": [divergence.leaves[k].hex() for k in order],
            "proofs": [[h.hex() for h in divergence.proofs[k]] for k in order],
        }
    _check_watcher_equivocation(body, watcher)
    schemas.validate("evidence.watcher-equivocation", body)
    return body


def watcher_rollback(
    a: SignedNote | bytes | str, b: SignedNote | bytes | str, watcher: VerifierKey
) -> dict[str, Any]:
    """``watcher-rollback`` evidence: ``watcher`` cosigned a smaller tree after a larger one.

    The notes may come in any order; the earlier cosignature (by its signed time) goes first.

    Raises:
        LocalProtocolError: ``missing-signature``, ``bad-vkey``.
        PeerProtocolError: malformed notes, or no rollback (``no-rollback``, ``origin-mismatch``).
    """
    pairs = sorted(_watcher_statements((a, b), watcher), key=lambda pair: pair[1])
    origin = pairs[0][0].checkpoint.origin
    body = {
        "type": EVIDENCE_TYPE,
        "kind": "watcher-rollback",
        "corridor_id": _corridor_of(origin),
        "origin": origin,
        "watcher": watcher.to_vkey(),
        "cosigned": [statement.text for statement, _ in pairs],
    }
    _check_watcher_rollback(body, watcher)
    return body
