"""L1 anchors of quorum-final checkpoints (design §10), pure and sans-I/O.

Theory of operation
-------------------
An anchor puts ``SHA-256(checkpoint body)`` of a quorum-final checkpoint into the calldata of an
EVM transaction: ``ANCHOR_TAG`` (4 bytes) then the 32-byte digest, nothing else. Once that
transaction is buried under ``k`` blocks, anyone holding the checkpoint can show, from the chain
alone, that the log had signed that tree no later than the block's time.

This module holds everything about anchors that must be the same for the node that submits them,
the node that receives them by gossip and a light client that checks one:

* :func:`anchor_calldata` / :func:`parse_calldata`: the calldata encoding;
* :class:`AnchorRecord`: the anchor record, a frozen value whose canonical JSON (RFC 8785) is what
  is stored, gossiped, served by the API and put in proof bundles (schema ``schemas/anchor.json``);
* the state machine ``submitted → included(block) → confirmed(k)``, ``included → reorged →
  resubmitted → included …``, ``submitted/resubmitted → submitted`` (a fee bump replaces a stuck
  transaction) and ``→ abandoned``, as a table (:data:`TRANSITIONS`); :func:`advance` applies one
  event and raises ``illegal-anchor-transition`` on anything the table does not allow, changing
  nothing;
* :func:`verify_anchor`: verification of a record against the chain's answers, given as data (the
  JSON-RPC results of ``eth_getTransactionByHash``, ``eth_getTransactionReceipt``,
  ``eth_getBlockByNumber`` and the head block number). It computes, then compares, cheap checks
  first: record ↔ checkpoint digest, transaction ↔ record, calldata ↔ digest, receipt status, block
  ↔ receipt, confirmations.

The table as a diagram (Mermaid; :func:`state_diagram` generates it, and a test keeps this copy equal)::

stateDiagram-v2
    [*] --> submitted
    submitted --> included: included
    submitted --> submitted: bumped
    submitted --> abandoned: abandoned
    resubmitted --> included: included
    resubmitted --> resubmitted: bumped
    resubmitted --> abandoned: abandoned
    included --> included: deepened
    included --> confirmed: confirmed
    included --> reorged: reorged
    confirmed --> reorged: reorged
    reorged --> included: included
    reorged --> resubmitted: resubmitted
    reorged --> abandoned: abandoned

Nothing here does I/O or reads a clock: times arrive as arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .checkpoints import Checkpoint, open_checkpoint, parse_checkpoint
from .errors import LocalProtocolError, PeerProtocolError
from .jcs import canonical, loads_strict
from .keys import VerifierKey

__all__ = [
    "ANCHOR_TAG",
    "ANCHOR_TYPE",
    "CALLDATA_LENGTH",
    "MAX_ANCHOR_BYTES",
    "TRANSITIONS",
    "AnchorEvent",
    "AnchorRecord",
    "AnchorState",
    "AnchorVerdict",
    "advance",
    "anchor_calldata",
    "checkpoint_digest",
    "join_bundle_extra",
    "parse_calldata",
    "split_bundle_extra",
    "state_diagram",
    "verify_anchor",
]

ANCHOR_TAG: Final = b"SEZ\x01"
"""The fixed 4-byte calldata tag: ``SEZ`` then the anchor format version 1."""
CALLDATA_LENGTH: Final = len(ANCHOR_TAG) + 32
ANCHOR_TYPE: Final = "sez.anchor/v1"
MAX_ANCHOR_BYTES: Final = 16 * 1024
"""An anchor record is a few hundred bytes plus one checkpoint note (a few kB with cosignatures)."""
MAX_ATTEMPTS: Final = 32
"""Transactions one anchor may send (fee bumps and resubmissions) before it must be abandoned."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TX_HASH = re.compile(r"^0x[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")


class AnchorState(StrEnum):
    """Where an anchor stands (design §10)."""

    SUBMITTED = "submitted"
    INCLUDED = "included"
    CONFIRMED = "confirmed"
    REORGED = "reorged"
    RESUBMITTED = "resubmitted"
    ABANDONED = "abandoned"


class AnchorEvent(StrEnum):
    """What the anchoring task observed or did."""

    BUMPED = "bumped"
    """A stuck transaction was replaced by one with the same nonce and higher fees."""
    INCLUDED = "included"
    """The current transaction is in a block of the canonical chain."""
    DEEPENED = "deepened"
    """More blocks were built on it, but fewer than the confirmations required."""
    CONFIRMED = "confirmed"
    """At least the required confirmations, and the anchor verified from the chain."""
    REORGED = "reorged"
    """The block that held the transaction is no longer canonical (or the transaction is gone)."""
    RESUBMITTED = "resubmitted"
    """A new transaction was sent after a reorg."""
    ABANDONED = "abandoned"
    """The anchoring task gave up (too many attempts, or a newer anchor superseded this one)."""


S, E = AnchorState, AnchorEvent
TRANSITIONS: Final[Mapping[tuple[AnchorState, AnchorEvent], AnchorState]] = {
    (S.SUBMITTED, E.INCLUDED): S.INCLUDED,
    (S.SUBMITTED, E.BUMPED): S.SUBMITTED,
    (S.SUBMITTED, E.ABANDONED): S.ABANDONED,
    (S.RESUBMITTED, E.INCLUDED): S.INCLUDED,
    (S.RESUBMITTED, E.BUMPED): S.RESUBMITTED,
    (S.RESUBMITTED, E.ABANDONED): S.ABANDONED,
    (S.INCLUDED, E.DEEPENED): S.INCLUDED,
    (S.INCLUDED, E.CONFIRMED): S.CONFIRMED,
    (S.INCLUDED, E.REORGED): S.REORGED,
    (S.CONFIRMED, E.REORGED): S.REORGED,
    (S.REORGED, E.INCLUDED): S.INCLUDED,
    (S.REORGED, E.RESUBMITTED): S.RESUBMITTED,
    (S.REORGED, E.ABANDONED): S.ABANDONED,
}
"""(state, event) -> next state. Anything else is illegal. ``confirmed`` is final unless a reorg deeper
than the confirmations undoes it; ``abandoned`` is terminal."""
del S, E

PENDING_STATES: Final = frozenset({AnchorState.SUBMITTED, AnchorState.RESUBMITTED})
"""States whose current transaction is waiting for a block."""


def state_diagram() -> str:
    """The state machine as a Mermaid ``stateDiagram-v2``, generated from :data:`TRANSITIONS` (docs)."""
    lines = ["stateDiagram-v2", "    [*] --> submitted"]
    lines += [f"    {state} --> {target}: {event}" for (state, event), target in TRANSITIONS.items()]
    return "\n".join(lines) + "\n"


def checkpoint_digest(note: bytes) -> bytes:
    """SHA-256 of the checkpoint's body (the note text, signatures excluded): what is anchored."""
    _, parsed = parse_checkpoint(note)
    return hashlib.sha256(parsed.text.encode("utf-8")).digest()


def anchor_calldata(digest: bytes) -> bytes:
    """``ANCHOR_TAG || digest``: the calldata of an anchoring transaction."""
    if len(digest) != 32:
        raise LocalProtocolError("bad-digest", f"an anchored digest is 32 bytes, not {len(digest)}")
    return ANCHOR_TAG + digest


def parse_calldata(data: bytes) -> bytes:
    """The digest in anchoring calldata.

    Raises:
        PeerProtocolError(anchor-bad-calldata): wrong length or tag.
    """
    if len(data) != CALLDATA_LENGTH:
        raise PeerProtocolError(
            "anchor-bad-calldata", f"calldata is {len(data)} bytes, not {CALLDATA_LENGTH}", got=len(data)
        )
    if data[:4] != ANCHOR_TAG:
        raise PeerProtocolError(
            "anchor-bad-calldata", f"calldata tag {data[:4].hex()} is not {ANCHOR_TAG.hex()}"
        )
    return data[4:]


# ------------------------------------------------------------------------------------------ record


def _bad(message: str, **details: Any) -> PeerProtocolError:
    return PeerProtocolError("bad-anchor", message, **details)


def _check_int(name: str, value: object, *, minimum: int = 0) -> None:
    if type(value) is not int or value < minimum:
        raise _bad(f"{name} must be an integer >= {minimum}, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorRecord:
    """One anchor of one checkpoint, with its chain state. Frozen; build changes with :func:`advance`.

    Fields:
        corridor_id: the corridor whose log is anchored.
        origin, size: the anchored checkpoint's log and tree size.
        checkpoint_sha256: hex SHA-256 of the checkpoint body (what the calldata carries).
        checkpoint: the signed checkpoint note (UTF-8 text), so the record verifies on its own.
        chain_id: the EVM chain id the transaction is signed for.
        sender: the sending address (lowercase ``0x`` hex); the transaction is sent to itself.
        tx_hash: the current transaction (``0x`` hex): the last one sent, or the one that was mined.
        nonce: the current transaction's nonce.
        max_fee_per_gas, max_priority_fee_per_gas: its EIP-1559 fees (wei).
        attempts: every transaction hash sent for this anchor, oldest first (ends with ``tx_hash``).
        state: the state machine's state.
        block_number, block_hash: the including block, once included (None otherwise).
        confirmations: blocks from the including block to the head, inclusive (0 until included).
        updated: when the state last changed (``YYYY-MM-DDTHH:MM:SSZ``).
    """

    corridor_id: str
    origin: str
    size: int
    checkpoint_sha256: str
    checkpoint: str
    chain_id: int
    sender: str
    tx_hash: str
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    attempts: tuple[str, ...]
    state: AnchorState
    block_number: int | None = None
    block_hash: str | None = None
    confirmations: int = 0
    updated: str

    def __post_init__(self) -> None:
        if not isinstance(self.corridor_id, str) or not re.fullmatch(r"[A-Z]{3}-[A-Z]{3}", self.corridor_id):
            raise _bad(f"corridor_id {self.corridor_id!r} is not a corridor id")
        _check_int("size", self.size, minimum=1)
        _check_int("chain_id", self.chain_id, minimum=1)
        _check_int("nonce", self.nonce)
        _check_int("max_fee_per_gas", self.max_fee_per_gas)
        _check_int("max_priority_fee_per_gas", self.max_priority_fee_per_gas)
        _check_int("confirmations", self.confirmations)
        if not isinstance(self.checkpoint_sha256, str) or not _HEX64.match(self.checkpoint_sha256):
            raise _bad("checkpoint_sha256 must be 64 lowercase hex characters")
        if not isinstance(self.sender, str) or not _ADDRESS.match(self.sender):
            raise _bad(f"sender {self.sender!r} is not a lowercase 0x address")
        if not isinstance(self.tx_hash, str) or not _TX_HASH.match(self.tx_hash):
            raise _bad(f"tx_hash {self.tx_hash!r} is not a lowercase 0x hash")
        if not isinstance(self.attempts, tuple) or not 1 <= len(self.attempts) <= MAX_ATTEMPTS:
            raise _bad(f"attempts must list 1..{MAX_ATTEMPTS} transaction hashes")
        if any(not isinstance(h, str) or not _TX_HASH.match(h) for h in self.attempts):
            raise _bad("attempts must be lowercase 0x transaction hashes")
        if self.tx_hash not in self.attempts:
            raise _bad("the current tx_hash must be one of the attempts")
        if not isinstance(self.state, AnchorState):
            raise _bad(f"unknown anchor state {self.state!r}")
        included = self.state in (AnchorState.INCLUDED, AnchorState.CONFIRMED)
        if included != (self.block_number is not None) or included != (self.block_hash is not None):
            raise _bad(f"block_number and block_hash are set exactly when included (state {self.state})")
        if self.block_number is not None:
            _check_int("block_number", self.block_number)
        if self.block_hash is not None and (
            not isinstance(self.block_hash, str) or not _TX_HASH.match(self.block_hash)
        ):
            raise _bad("block_hash must be a lowercase 0x hash")
        if not isinstance(self.updated, str) or not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", self.updated
        ):
            raise _bad("updated must be YYYY-MM-DDTHH:MM:SSZ")
        if not isinstance(self.checkpoint, str):
            raise _bad("checkpoint must be the note text")
        cp, _ = parse_checkpoint(self.checkpoint.encode())
        if cp.origin != self.origin or cp.size != self.size:
            raise _bad(f"record names {self.origin} at {self.size}, its checkpoint {cp.origin} at {cp.size}")
        digest = checkpoint_digest(self.checkpoint.encode()).hex()
        if digest != self.checkpoint_sha256:
            raise PeerProtocolError(
                "anchor-digest-mismatch",
                f"checkpoint_sha256 {self.checkpoint_sha256} is not the checkpoint body's digest {digest}",
                expected=digest, got=self.checkpoint_sha256,
            )  # fmt: skip

    @property
    def digest(self) -> bytes:
        """The anchored 32 bytes."""
        return bytes.fromhex(self.checkpoint_sha256)

    def key(self) -> tuple[str, int]:
        """(origin, size): one anchor per checkpoint."""
        return self.origin, self.size

    def to_json(self) -> dict[str, Any]:
        """The JSON object (``schemas/anchor.json``)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        body["attempts"] = list(self.attempts)
        body["state"] = str(self.state)
        return {"type": ANCHOR_TYPE, "digest_algorithm": "sha256", **body}

    def to_bytes(self) -> bytes:
        """Canonical JSON (RFC 8785): the only encoding."""
        return canonical(self.to_json())

    @classmethod
    def from_json(cls, obj: object) -> AnchorRecord:
        """Build from a parsed JSON object.

        Raises:
            PeerProtocolError(bad-anchor | anchor-digest-mismatch): wrong shape or inconsistent record.
        """
        if not isinstance(obj, dict):
            raise _bad("an anchor record is a JSON object")
        if obj.get("type") != ANCHOR_TYPE or obj.get("digest_algorithm") != "sha256":
            raise _bad(f"type must be {ANCHOR_TYPE} with digest_algorithm sha256")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in obj.items() if k not in ("type", "digest_algorithm")}
        if set(fields) != names:
            missing, extra = sorted(names - set(fields)), sorted(set(fields) - names)
            raise _bad(f"anchor record fields: missing {missing}, unexpected {extra}")
        if not isinstance(fields["attempts"], list):
            raise _bad("attempts must be a list")
        try:
            fields["state"] = AnchorState(fields["state"])
        except ValueError as exc:
            raise _bad(f"unknown anchor state {fields['state']!r}") from exc
        fields["attempts"] = tuple(fields["attempts"])
        return cls(**fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnchorRecord:
        """Decode canonical JSON; refuses anything over ``MAX_ANCHOR_BYTES`` or not canonical."""
        if len(data) > MAX_ANCHOR_BYTES:
            raise _bad(f"anchor record over {MAX_ANCHOR_BYTES} bytes", size=len(data))
        record = cls.from_json(loads_strict(data, max_bytes=MAX_ANCHOR_BYTES))
        if record.to_bytes() != data:
            raise _bad("anchor record is not in canonical JSON")
        return record

    def open(self, log_key: VerifierKey) -> Checkpoint:
        """The anchored checkpoint, with the log's signature checked under ``log_key``."""
        cp, _ = open_checkpoint(self.checkpoint.encode(), log_key)
        return cp


def advance(record: AnchorRecord, event: AnchorEvent, *, now: str, **changes: Any) -> AnchorRecord:
    """Apply ``event`` to ``record`` under :data:`TRANSITIONS`; return the new record.

    ``changes`` sets the fields the event brings (``tx_hash`` and fees for ``bumped``/``resubmitted``,
    which also appends to ``attempts``; ``block_number``/``block_hash``/``confirmations`` for
    ``included``/``deepened``/``confirmed``). A ``reorged`` event clears the block fields.

    Raises:
        LocalProtocolError(illegal-anchor-transition): the table has no such transition; nothing changes.
    """
    target = TRANSITIONS.get((record.state, event))
    if target is None:
        raise LocalProtocolError(
            "illegal-anchor-transition",
            f"anchor of {record.origin} at {record.size}: no transition from {record.state} on {event}",
            state=str(record.state), event=str(event),
        )  # fmt: skip
    fields: dict[str, Any] = {"state": target, "updated": now, **changes}
    if event in (AnchorEvent.BUMPED, AnchorEvent.RESUBMITTED):
        if "tx_hash" not in changes:
            raise LocalProtocolError("bad-anchor-event", f"{event} needs the new tx_hash")
        fields["attempts"] = (*record.attempts, changes["tx_hash"])
    if event in (AnchorEvent.REORGED, AnchorEvent.RESUBMITTED, AnchorEvent.BUMPED, AnchorEvent.ABANDONED):
        fields.update(block_number=None, block_hash=None, confirmations=0)
    return dataclasses.replace(record, **fields)


# ------------------------------------------------------------------------------------ verification


@dataclass(frozen=True, slots=True)
class AnchorVerdict:
    """What verifying an anchor against the chain established."""

    checkpoint: Checkpoint
    block_number: int
    block_hash: str
    block_timestamp: int
    confirmations: int
    checks: tuple[str, ...]


def _qty(obj: Mapping[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,64}", value):
        raise PeerProtocolError("anchor-bad-rpc-data", f"{what}.{name} is not a hex quantity: {value!r}")
    return int(value, 16)


def _hex(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not re.fullmatch(r"0x([0-9a-fA-F]{2})*", value):
        raise PeerProtocolError("anchor-bad-rpc-data", f"{what}.{name} is not hex data: {value!r}")
    return value.lower()


def verify_anchor(
    record: AnchorRecord,
    *,
    tx: Mapping[str, Any] | None,
    receipt: Mapping[str, Any] | None,
    block: Mapping[str, Any] | None,
    head: int,
    confirmations: int,
    log_key: VerifierKey | None = None,
) -> AnchorVerdict:
    """Verify ``record`` from the chain's own answers, given as data.

    Args:
        record: the anchor record (its constructor has checked that ``checkpoint_sha256`` is the digest
            of its checkpoint body).
        tx, receipt, block: the JSON-RPC results of ``eth_getTransactionByHash(record.tx_hash)``,
            ``eth_getTransactionReceipt(record.tx_hash)`` and ``eth_getBlockByNumber(receipt.blockNumber,
            false)`` (None where the node answered null).
        head: the chain's current block number.
        confirmations: how many confirmations count as final (>= 1).
        log_key: when given, the log's signature on the anchored checkpoint is checked too.

    Checks, in order (cheap first; each failure names its reason):

    1. the log's signature on the checkpoint (``missing-log-signature``, ``bad-log-signature``; with
       ``log_key``);
    2. the transaction exists (``anchor-tx-missing``), is the record's (``anchor-tx-mismatch``), on the
       record's chain (``anchor-wrong-chain``), from the record's sender (``anchor-wrong-sender``);
    3. its calldata is ``ANCHOR_TAG || checkpoint digest`` (``anchor-bad-calldata``,
       ``anchor-calldata-mismatch``);
    4. it was mined and succeeded (``anchor-not-included``, ``anchor-tx-failed``);
    5. the block is the receipt's block and lists the transaction (``anchor-block-mismatch``);
    6. at least ``confirmations`` blocks from that block to ``head`` (``anchor-unconfirmed``).

    Raises:
        PeerProtocolError: the first failed check.
    """
    checks: list[str] = ["record digest is the checkpoint body's SHA-256"]
    if log_key is not None:
        cp = record.open(log_key)
        checks.append("log signature on the checkpoint")
    else:
        cp, _ = parse_checkpoint(record.checkpoint.encode())
    if tx is None:
        raise PeerProtocolError("anchor-tx-missing", f"the chain has no transaction {record.tx_hash}")
    if _hex(tx, "hash", "transaction") != record.tx_hash:
        raise PeerProtocolError(
            "anchor-tx-mismatch", f"the chain answered another transaction for {record.tx_hash}"
        )
    chain_id = _qty(tx, "chainId", "transaction")
    if chain_id != record.chain_id:
        raise PeerProtocolError(
            "anchor-wrong-chain", f"transaction is for chain {chain_id}, the record says {record.chain_id}",
            expected=record.chain_id, got=chain_id,
        )  # fmt: skip
    sender = _hex(tx, "from", "transaction")
    if sender != record.sender:
        raise PeerProtocolError(
            "anchor-wrong-sender", f"transaction is from {sender}, the record says {record.sender}"
        )
    checks.append("transaction, chain and sender")
    data = bytes.fromhex(_hex(tx, "input", "transaction")[2:])
    digest = parse_calldata(data)
    if digest != record.digest:
        raise PeerProtocolError(
            "anchor-calldata-mismatch",
            f"calldata anchors {digest.hex()}, not the checkpoint digest {record.checkpoint_sha256}",
            expected=record.checkpoint_sha256, got=digest.hex(),
        )  # fmt: skip
    checks.append("calldata is the tag and the checkpoint digest")
    if receipt is None or receipt.get("blockNumber") is None:
        raise PeerProtocolError("anchor-not-included", f"transaction {record.tx_hash} is not in a block")
    if _qty(receipt, "status", "receipt") != 1:
        raise PeerProtocolError("anchor-tx-failed", f"transaction {record.tx_hash} reverted")
    number = _qty(receipt, "blockNumber", "receipt")
    block_hash = _hex(receipt, "blockHash", "receipt")
    if block is None:
        raise PeerProtocolError("anchor-block-mismatch", f"the chain has no block {number}")
    if _qty(block, "number", "block") != number or _hex(block, "hash", "block") != block_hash:
        raise PeerProtocolError(
            "anchor-block-mismatch",
            f"block {number} of the chain is not the block {block_hash} the receipt names",
        )
    listed = block.get("transactions")
    if not isinstance(listed, list) or record.tx_hash not in [
        (t if isinstance(t, str) else str(t.get("hash", ""))).lower() for t in listed
    ]:
        raise PeerProtocolError("anchor-block-mismatch", f"block {number} does not list {record.tx_hash}")
    checks.append(f"included in block {number}")
    depth = head - number + 1
    if depth < confirmations:
        raise PeerProtocolError(
            "anchor-unconfirmed", f"{depth} confirmations of {confirmations} required",
            got=depth, expected=confirmations,
        )  # fmt: skip
    checks.append(f"{depth} confirmations (>= {confirmations})")
    return AnchorVerdict(
        checkpoint=cp, block_number=number, block_hash=block_hash,
        block_timestamp=_qty(block, "timestamp", "block"), confirmations=depth, checks=tuple(checks),
    )  # fmt: skip


# ------------------------------------------------------------------------------------ proof bundles


def join_bundle_extra(receipt: bytes, anchor: AnchorRecord) -> bytes:
    """A proof bundle's ``extra`` carrying the receipt and the anchor covering it.

    ``{"receipt": <receipt>, "anchor": <record>}`` in canonical JSON; the receipt's own canonical
    bytes are recovered by canonicalizing its object again (:func:`split_bundle_extra`).
    """
    return canonical({"receipt": json.loads(receipt), "anchor": anchor.to_json()})


def split_bundle_extra(extra: bytes) -> tuple[bytes, AnchorRecord | None]:
    """The receipt bytes and the anchor record (or None) in a proof bundle's ``extra``.

    A plain receipt (the object has ``"type": "sez.receipt/v1"``) is returned as it is.

    Raises:
        PeerProtocolError(bad-proof-bundle | bad-anchor): neither form.
    """
    if not extra.startswith(b'{"anchor":'):
        # The canonical form of {"receipt", "anchor"} starts with its first key, "anchor"; anything else
        # is a plain receipt, checked by the receipt parser (no second JSON parse on the hot path).
        return extra, None
    obj = loads_strict(extra, max_bytes=len(extra))
    if isinstance(obj, dict) and set(obj) == {"receipt", "anchor"}:
        if canonical(obj) != extra:
            raise PeerProtocolError("bad-proof-bundle", "anchored bundle extra is not canonical JSON")
        return canonical(obj["receipt"]), AnchorRecord.from_json(obj["anchor"])
    return extra, None
