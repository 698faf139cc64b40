"""Wire messages: msgpack maps ``{"t": kind, "v": 1, ...}`` for gossip and ``/sez/sync/1`` (design §3, §13).

Theory of operation
-------------------
Every message is a frozen dataclass whose fields are its map keys. The class
lists its fields with their types; :func:`decode` is the single decoder and
:func:`encode` the single encoder, and both go through the same field table:

* ``decode`` refuses, with a :class:`~protocol.errors.PeerProtocolError`:
  input over the size limit (``too-large``), anything that is not a msgpack
  map (``bad-message``), an unknown ``t`` (``unknown-kind``), a ``v`` other
  than 1 (``bad-version``), missing or extra keys (``bad-message``), a field of
  the wrong type or out of its bounds (``bad-field``), and bytes that are not
  the canonical encoding of the value they decode to (``non-canonical``): keys
  in sorted order, shortest integer forms, ``bin`` for bytes and ``str`` for text.
* ``encode`` produces exactly those canonical bytes, so ``decode(encode(m)) == m``
  and ``encode(decode(b)) == b`` for every accepted ``b``.

Signed objects travel as their canonical bytes inside ``bin`` fields
(receipts as RFC 8785 JSON, checkpoints as signed notes), so a receiver hashes
exactly what was signed; this module checks their size only, and the caller
checks their meaning (``Receipt.from_bytes``, ``open_checkpoint``).

Limits and why:

* :data:`MAX_GOSSIP_BYTES` (900 KiB): py-libp2p's gossipsub splits or drops RPCs
  over 1 MiB; a message must fit in one RPC with its envelope.
* :data:`MAX_BATCH_RECEIPTS` (512): a store batch is gossiped in pieces of at most
  this many receipts (about 460 KiB of transfer receipts).
* :data:`MAX_SYNC_FRAME` (4 MiB): one sync response, e.g. a receipt range.
* :data:`MAX_RANGE_RECEIPTS` (2,048): receipts in one range response; a follower
  asks again for the rest.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgpack

from .anchor import MAX_ANCHOR_BYTES
from .errors import LocalProtocolError, PeerProtocolError
from .receipts import MAX_RECEIPT_BYTES

__all__ = [
    "MAX_BATCH_RECEIPTS",
    "MAX_GOSSIP_BYTES",
    "MAX_RANGE_RECEIPTS",
    "MAX_SYNC_FRAME",
    "WIRE_VERSION",
    "AnchorAnnouncement",
    "CheckpointAnnouncement",
    "CosignatureAnnouncement",
    "ErrorResponse",
    "GetCheckpoint",
    "GetConsistency",
    "GetInclusion",
    "GetReceipts",
    "Message",
    "NoteResponse",
    "ProofResponse",
    "ReceiptBatch",
    "ReceiptsResponse",
    "SettleAccepted",
    "SettleProposal",
    "SettleRefused",
    "decode",
    "encode",
]

WIRE_VERSION: Final = 1
MAX_GOSSIP_BYTES: Final = 900 * 1024
MAX_BATCH_RECEIPTS: Final = 512
MAX_SYNC_FRAME: Final = 4 * 1024 * 1024
MAX_RANGE_RECEIPTS: Final = 2048
MAX_NOTE_BYTES: Final = 128 * 1024
"""Same bound as ``protocol.notes.MAX_NOTE_BYTES``: a checkpoint with up to 100 signatures."""
MAX_TEXT: Final = 1024
"""Origins, corridor ids, reasons, messages: short text."""
MAX_PROOF_HASHES: Final = 128
"""An RFC 6962 proof over 2**64 leaves has at most 2 * 64 hashes."""
MAX_U63: Final = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Base of every wire message. ``KIND`` is the ``t`` value; fields are the map's other keys."""

    KIND: ClassVar[str] = ""
    LIMITS: ClassVar[dict[str, int]] = {}
    """Per-field maximum: bytes length, list length, or integer value (default :data:`MAX_U63`)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            try:
                _check_field(
                    type(self), field.name, _FIELD_TYPES[type(self)][field.name], getattr(self, field.name)
                )
            except PeerProtocolError as exc:
                raise LocalProtocolError(exc.reason, exc.message) from exc


# ------------------------------------------------------------------ gossip


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptBatch(Message):
    """Receipts ``start``.. of ``origin``'s log, with the writer's checkpoint that covers them.

    Attributes:
        corridor: corridor id (``PAK-KSA``).
        origin: the writing log.
        start: sequence of the first receipt.
        receipts: canonical receipt bytes, consecutive sequences.
        checkpoint: the writer's signed checkpoint note at size ``start + len(receipts)`` or later.
    """

    KIND: ClassVar[str] = "receipts"
    LIMITS: ClassVar[dict[str, int]] = {"receipts": MAX_BATCH_RECEIPTS, "checkpoint": MAX_NOTE_BYTES}
    corridor: str
    origin: str
    start: int
    receipts: tuple[bytes, ...]
    checkpoint: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointAnnouncement(Message):
    """A log's new signed checkpoint (possibly already carrying cosignatures)."""

    KIND: ClassVar[str] = "checkpoint"
    LIMITS: ClassVar[dict[str, int]] = {"note": MAX_NOTE_BYTES}
    corridor: str
    origin: str
    note: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CosignatureAnnouncement(Message):
    """``cosigner``'s cosignature/v1 on ``origin``'s checkpoint: the checkpoint note with its line added."""

    KIND: ClassVar[str] = "cosignature"
    LIMITS: ClassVar[dict[str, int]] = {"note": MAX_NOTE_BYTES}
    corridor: str
    origin: str
    cosigner: str
    note: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorAnnouncement(Message):
    """An L1 anchor record's new state (design §10): ``record`` is its canonical JSON
    (:class:`protocol.anchor.AnchorRecord`, which the receiver decodes and checks)."""

    KIND: ClassVar[str] = "anchor"
    LIMITS: ClassVar[dict[str, int]] = {"record": MAX_ANCHOR_BYTES}
    corridor: str
    record: bytes


# ------------------------------------------------------------ sync requests


@dataclass(frozen=True, slots=True, kw_only=True)
class GetCheckpoint(Message):
    """Ask for the latest signed checkpoint of ``origin`` (``size`` 0 = latest) or the one at ``size``."""

    KIND: ClassVar[str] = "get-checkpoint"
    id: int
    origin: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReceipts(Message):
    """Ask for at most ``count`` receipts of ``origin`` from sequence ``start``."""

    KIND: ClassVar[str] = "get-receipts"
    LIMITS: ClassVar[dict[str, int]] = {"count": MAX_RANGE_RECEIPTS}
    id: int
    origin: str
    start: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GetConsistency(Message):
    """Ask for the RFC 6962 consistency proof of ``origin`` from ``old`` to ``new``."""

    KIND: ClassVar[str] = "get-consistency"
    id: int
    origin: str
    old: int
    new: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GetInclusion(Message):
    """Ask for the RFC 6962 inclusion proof of receipt ``index`` in ``origin``'s tree of ``size``."""

    KIND: ClassVar[str] = "get-inclusion"
    id: int
    origin: str
    index: int
    size: int


# ----------------------------------------------------------- sync responses


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteResponse(Message):
    """A signed checkpoint note, answering :class:`GetCheckpoint`."""

    KIND: ClassVar[str] = "note"
    LIMITS: ClassVar[dict[str, int]] = {"note": MAX_NOTE_BYTES}
    id: int
    note: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsResponse(Message):
    """Receipts ``start``.. (possibly fewer than asked: the end of the log or a size bound)."""

    KIND: ClassVar[str] = "receipts-range"
    LIMITS: ClassVar[dict[str, int]] = {"receipts": MAX_RANGE_RECEIPTS}
    id: int
    origin: str
    start: int
    receipts: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofResponse(Message):
    """Proof hashes (32 bytes each), answering :class:`GetConsistency` or :class:`GetInclusion`."""

    KIND: ClassVar[str] = "proof"
    LIMITS: ClassVar[dict[str, int]] = {"hashes": MAX_PROOF_HASHES}
    id: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorResponse(Message):
    """The request ``id`` failed: ``reason`` is a stable code (``unknown-origin``, ``bad-index``...)."""

    KIND: ClassVar[str] = "error"
    id: int
    reason: str
    message: str


# ------------------------------------------------------- /sez/settle/1 (design §12)

MAX_STATEMENT_BYTES: Final = 64 * 1024
"""A settlement statement rides in a receipt (``protocol.settlement.MAX_STATEMENT_BYTES``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleProposal(Message):
    """A settlement statement signed by the proposing party, for the other party to countersign.

    Attributes:
        id: request number (one request per stream; echoed in the answer).
        corridor: corridor id.
        statement: canonical JSON bytes of the statement (``SettlementStatement.to_bytes``).
    """

    KIND: ClassVar[str] = "settle-proposal"
    LIMITS: ClassVar[dict[str, int]] = {"statement": MAX_STATEMENT_BYTES}
    id: int
    corridor: str
    statement: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleAccepted(Message):
    """The statement signed by both parties; the answering party has written it into its log."""

    KIND: ClassVar[str] = "settle-accepted"
    LIMITS: ClassVar[dict[str, int]] = {"statement": MAX_STATEMENT_BYTES}
    id: int
    statement: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleRefused(Message):
    """The answering party refuses to countersign.

    Attributes:
        reason: stable code (``statement-mismatch``, ``window-not-final``, ``window-already-settled``...).
        message: human-readable explanation.
        details: canonical JSON object bytes of the refusal's details, e.g. ``{"differences": [...]}``.
    """

    KIND: ClassVar[str] = "settle-refused"
    LIMITS: ClassVar[dict[str, int]] = {"details": MAX_STATEMENT_BYTES}
    id: int
    reason: str
    message: str
    details: bytes


_KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        ReceiptBatch, CheckpointAnnouncement, CosignatureAnnouncement, AnchorAnnouncement,
        GetCheckpoint, GetReceipts, GetConsistency, GetInclusion,
        NoteResponse, ReceiptsResponse, ProofResponse, ErrorResponse,
        SettleProposal, SettleAccepted, SettleRefused,
    )
}  # fmt: skip

_FIELD_TYPES: dict[type[Message], dict[str, Any]] = {
    cls: typing.get_type_hints(cls) for cls in _KINDS.values()
}
for _hints in _FIELD_TYPES.values():
    for _name in ("KIND", "LIMITS"):
        _hints.pop(_name, None)

_BYTES_ITEM_LIMIT: dict[str, int] = {"receipts": MAX_RECEIPT_BYTES, "hashes": 32}


def _bad(name: str, message: str, **details: Any) -> PeerProtocolError:
    return PeerProtocolError("bad-field", f"{name}: {message}", field=name, **details)


def _check_field(cls: type[Message], name: str, kind: Any, value: Any) -> None:
    limit = cls.LIMITS.get(name)
    if kind is str:
        if type(value) is not str or len(value) > (limit or MAX_TEXT):
            raise _bad(name, f"must be text of at most {limit or MAX_TEXT} characters")
    elif kind is int:
        if type(value) is not int or not 0 <= value <= (limit or MAX_U63):
            raise _bad(name, f"must be an integer in 0..{limit or MAX_U63}")
    elif kind is bytes:
        if type(value) is not bytes or len(value) > (limit or MAX_NOTE_BYTES):
            raise _bad(name, f"must be bytes of at most {limit or MAX_NOTE_BYTES}")
    elif typing.get_origin(kind) is tuple:
        item_limit = _BYTES_ITEM_LIMIT.get(name, MAX_NOTE_BYTES)
        if type(value) is not tuple or len(value) > (limit or MAX_BATCH_RECEIPTS):
            raise _bad(name, f"must be a list of at most {limit or MAX_BATCH_RECEIPTS} items")
        for item in value:
            if type(item) is not bytes or len(item) > item_limit:
                raise _bad(name, f"items must be bytes of at most {item_limit}")
        if name == "hashes" and any(len(item) != 32 for item in value):
            raise _bad(name, "proof hashes must be 32 bytes each")
    else:  # pragma: no cover - a new field type without a rule is a programming error
        raise TypeError(f"no wire rule for {cls.__name__}.{name}: {kind!r}")


def encode(message: Message) -> bytes:
    """The canonical msgpack bytes of ``message`` (keys sorted, ``bin`` for bytes)."""
    body: dict[str, Any] = {"t": message.KIND, "v": WIRE_VERSION}
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        body[field.name] = list(value) if isinstance(value, tuple) else value
    return msgpack.packb(dict(sorted(body.items())), use_bin_type=True)  # type: ignore[no-any-return]


def decode(data: bytes, *, max_bytes: int) -> Message:
    """Decode one message, refusing anything but its canonical encoding (see module docstring).

    Raises:
        PeerProtocolError: ``too-large``, ``bad-message``, ``unknown-kind``,
            ``bad-version``, ``bad-field``, ``non-canonical``.
    """
    if len(data) > max_bytes:
        raise PeerProtocolError("too-large", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        body = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_str_len=max_bytes, max_bin_len=max_bytes, max_array_len=MAX_RANGE_RECEIPTS,
            max_map_len=32, max_ext_len=0,
        )  # fmt: skip
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ValueError covers ExtraData, FormatError, StackError, OutOfData and bad UTF-8.
        raise PeerProtocolError("bad-message", f"not one msgpack value: {type(exc).__name__}: {exc}") from exc
    if type(body) is not dict:
        raise PeerProtocolError("bad-message", "a wire message must be a msgpack map")
    kind = body.get("t")
    cls = _KINDS.get(kind) if type(kind) is str else None
    if cls is None:
        raise PeerProtocolError("unknown-kind", f"unknown message kind {kind!r}", kind=repr(kind)[:64])
    if body.get("v") != WIRE_VERSION or type(body.get("v")) is not int:
        raise PeerProtocolError("bad-version", f"{kind}: version {body.get('v')!r} is not {WIRE_VERSION}")
    hints = _FIELD_TYPES[cls]
    if body.keys() != hints.keys() | {"t", "v"}:
        extra = sorted(body.keys() - hints.keys() - {"t", "v"})
        missing = sorted(hints.keys() - body.keys())
        raise PeerProtocolError("bad-message", f"{kind}: extra keys {extra}, missing keys {missing}")
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        value = body[name]
        if typing.get_origin(hint) is tuple:
            if type(value) is not list:
                raise _bad(name, "must be a list")
            value = tuple(value)
        _check_field(cls, name, hint, value)
        values[name] = value
    message = cls(**values)
    if encode(message) != data:
        raise PeerProtocolError("non-canonical", f"{kind}: bytes are not the canonical encoding")
    return message
