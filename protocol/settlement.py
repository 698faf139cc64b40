"""Settlement: netting a corridor's transfers over a window of both logs (design §12, issue 9).

Theory of operation
-------------------
A corridor ``A-B`` (``corridor_id``, e.g. ``PAK-KSA``: A = ``PAK``, B = ``KSA``) has two logs. For a
*window* per log, from the size of one quorum-final checkpoint (exclusive start, ``from_size``) to the
size of a later one (``to_size``), :func:`build_statement` nets the ``transfer`` receipts of **both**
logs per currency: gross total and count A→B, gross total and count B→A, and the net position
(payer, payee, amount, or none when the gross totals are equal). One side proposes and signs
(:func:`sign_statement`); the other recomputes from its own replica (:func:`countersign`) and signs
only if its statement is identical; :func:`verify_statement` checks a co-signed statement. The
co-signed statement is the payload of a ``settlement`` receipt (``schemas/payload.settlement.json``).

Choices
-------
* **Direction** is decided by the payload's sender/receiver ``jurisdiction``, not by which log holds
  the receipt. Payloads may carry the corridor code or the ISO 3166 alpha-3 code, so both are mapped
  to the corridor code first (:data:`JURISDICTION_ALIASES`: ``SAU``→``KSA``, ``ARE``→``UAE``; any
  other code stands for itself, e.g. ``PAK``, ``CHN``).
* A transfer in **neither direction** (both sides in one jurisdiction, or a third jurisdiction) is
  not netted and not refused: a log is append-only, so refusing would make the window unsettleable
  for ever. It is counted in ``excluded_count``, which both sides must agree on.
* Each ``transfer`` receipt counts once. Receipts of other kinds in the window are ignored, so the
  caller may pass all receipts of the window. The same receipt passed twice counts once; two
  different receipts at one position are refused (``duplicate-receipt``).
* Amounts are Python ints throughout and strings in JSON, so totals far beyond 2**53 are exact.
* Deterministic: windows are sorted by origin, positions by currency, signatures by origin; the
  statement depends on the receipts as a set, not on their order.
* ``statement_digest = SHA-256(JCS(statement without "statement_digest" and "signatures"))``; a
  signature is Ed25519 by the origin's log key over ``b"sez.settlement/v1\\n" + statement_digest``.

Window rules (checked by :func:`build_statement`, hence by :func:`countersign` too):

* ``window-not-final``: ``to_size`` is not the size of a quorum-final checkpoint of that log;
* ``window-root-mismatch``: ``to_root`` is not that checkpoint's root;
* ``window-already-settled``: the window starts before the end of the last settled window of that
  log (so the same window twice is refused);
* ``window-gap``: it starts after that end (or after 0 when nothing was settled), or its
  ``from_root`` is not the root the last settled window ended at (the empty-tree root at 0);
* ``empty-window``: neither log advances.

Errors: what our caller passes wrongly raises :class:`LocalProtocolError`; what a peer sent
(:func:`verify_statement`, :func:`countersign`) raises :class:`PeerProtocolError`. ``countersign``
converts the one into the other in one place.

The module runs to about 750 lines because the statement's values, the netting and the two-party
signing share one digest rule; split apart, the rule and its checks would live in different files.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Final

import fastjsonschema

from . import schemas
from .errors import LocalProtocolError, PeerProtocolError
from .jcs import canonical, loads_strict
from .keys import SigningKey, VerifierKey
from .mmr import EMPTY_ROOT
from .receipts import Receipt

__all__ = [
    "DIGEST_ALGORITHM",
    "JURISDICTION_ALIASES",
    "MAX_CURRENCIES",
    "MAX_STATEMENT_BYTES",
    "SIGNATURE_DOMAIN",
    "STATEMENT_TYPE",
    "CurrencyPosition",
    "Flow",
    "LogWindow",
    "NetPosition",
    "SettlementStatement",
    "StatementSignature",
    "build_statement",
    "corridor_code",
    "countersign",
    "sign_statement",
    "verify_statement",
]

STATEMENT_TYPE: Final = "sez.settlement/v1"
DIGEST_ALGORITHM: Final = "sha256"
SIGNATURE_DOMAIN: Final = b"sez.settlement/v1\n"
"""Domain separation: a statement signature can never be mistaken for a receipt or note signature."""

MAX_CURRENCIES: Final = 160
"""A position is at most about 350 bytes (three 64-digit amounts), so 160 of them keep a co-signed
statement inside a receipt's 64 KiB; ISO 4217 has about 180 codes, few of them in one corridor."""

MAX_STATEMENT_BYTES: Final = 64 * 1024
"""The statement rides in a receipt, which is bounded by ``receipts.MAX_RECEIPT_BYTES``."""

JURISDICTION_ALIASES: Final[Mapping[str, str]] = {"SAU": "KSA", "ARE": "UAE"}
"""ISO 3166 alpha-3 code -> corridor code, where they differ."""


def corridor_code(jurisdiction: str) -> str:
    """The corridor code a payload's jurisdiction stands for (``SAU`` -> ``KSA``; ``PAK`` -> ``PAK``)."""
    return JURISDICTION_ALIASES.get(jurisdiction, jurisdiction)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    """Decode unpadded base64url, refusing the non-canonical spellings (unused low bits set) by which
    one signature could be written several ways."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(data) != text:
        raise PeerProtocolError("bad-signature-encoding", "signature is not canonical base64url", got=text)
    return data


def _parties(corridor_id: str) -> tuple[str, str]:
    a, sep, b = corridor_id.partition("-")
    if not sep or len(a) != 3 or len(b) != 3 or a == b:
        raise LocalProtocolError("bad-corridor", f"corridor id {corridor_id!r} is not A-B", got=corridor_id)
    return a, b


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True, kw_only=True)
class LogWindow:
    """The part of one log a statement covers: sequences ``from_size`` .. ``to_size - 1``.

    Attributes:
        origin: the log's origin (its key name).
        from_size: size of the checkpoint the window starts after (0, or the last settled end).
        from_root: that checkpoint's root (``mmr.EMPTY_ROOT`` at 0).
        to_size: size of the quorum-final checkpoint the window ends at.
        to_root: that checkpoint's root.
    """

    origin: str
    from_size: int
    from_root: bytes
    to_size: int
    to_root: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.from_size <= self.to_size:
            raise LocalProtocolError(
                "bad-window",
                f"window of {self.origin} must have 0 <= from_size <= to_size",
                from_size=self.from_size,
                to_size=self.to_size,
            )
        if len(self.from_root) != 32 or len(self.to_root) != 32:
            raise LocalProtocolError("bad-window", f"window of {self.origin}: roots must be 32 bytes")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this window."""
        return {
            "origin": self.origin,
            "from_size": self.from_size,
            "from_root": self.from_root.hex(),
            "to_size": self.to_size,
            "to_root": self.to_root.hex(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """Transfers in one direction: ``gross`` total (minor units) over ``count`` transfers."""

    gross: int = 0
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        """``{"gross": "<int>", "count": n}``."""
        return {"gross": str(self.gross), "count": self.count}


@dataclass(frozen=True, slots=True, kw_only=True)
class NetPosition:
    """``payer`` owes ``payee`` ``amount`` (> 0) minor units after netting."""

    payer: str
    payee: str
    amount: int

    def to_json(self) -> dict[str, Any]:
        """``{"payer", "payee", "amount": "<int>"}``."""
        return {"payer": self.payer, "payee": self.payee, "amount": str(self.amount)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyPosition:
    """The netting of one currency.

    Attributes:
        currency: ISO 4217 code.
        a_to_b: transfers from party A (first code of the corridor id) to party B.
        b_to_a: transfers from B to A.
    """

    currency: str
    a_to_b: Flow
    b_to_a: Flow

    def net(self, parties: tuple[str, str]) -> NetPosition | None:
        """Who owes whom: the party that sent more pays the difference; None when equal."""
        a, b = parties
        diff = self.a_to_b.gross - self.b_to_a.gross
        if diff > 0:
            return NetPosition(payer=a, payee=b, amount=diff)
        if diff < 0:
            return NetPosition(payer=b, payee=a, amount=-diff)
        return None

    def to_json(self, parties: tuple[str, str]) -> dict[str, Any]:
        """The JSON object of this position, net included."""
        net = self.net(parties)
        return {
            "currency": self.currency,
            "a_to_b": self.a_to_b.to_json(),
            "b_to_a": self.b_to_a.to_json(),
            "net": None if net is None else net.to_json(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementSignature:
    """One party's signature: Ed25519 by ``origin``'s log key over ``SIGNATURE_DOMAIN + digest``."""

    origin: str
    verification_method: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        """``{"origin", "verificationMethod", "signature": base64url}``."""
        return {
            "origin": self.origin,
            "verificationMethod": self.verification_method,
            "signature": _b64url(self.signature),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementStatement:
    """A settlement statement (``sez.settlement/v1``), signed by zero, one or both parties.

    Build with :func:`build_statement` or parse with :meth:`from_json`; ``to_json`` /
    ``to_bytes`` are the only encoders.

    Attributes:
        corridor_id: ``A-B``.
        windows: one per log, sorted by origin.
        positions: one per currency seen, sorted by currency.
        excluded_count: transfers in neither direction (not netted).
        signatures: sorted by origin, at most one per window origin.
    """

    corridor_id: str
    windows: tuple[LogWindow, ...]
    positions: tuple[CurrencyPosition, ...]
    excluded_count: int
    signatures: tuple[StatementSignature, ...] = ()

    @property
    def parties(self) -> tuple[str, str]:
        """(A, B) from the corridor id."""
        return _parties(self.corridor_id)

    def body(self) -> dict[str, Any]:
        """The statement without ``statement_digest`` and ``signatures``: what the digest covers."""
        parties = self.parties
        return {
            "type": STATEMENT_TYPE,
            "corridor_id": self.corridor_id,
            "parties": list(parties),
            "digest_algorithm": DIGEST_ALGORITHM,
            "windows": [window.to_json() for window in self.windows],
            "positions": [position.to_json(parties) for position in self.positions],
            "excluded_count": self.excluded_count,
        }

    def digest(self) -> bytes:
        """``SHA-256(JCS(body()))``."""
        return hashlib.sha256(canonical(self.body())).digest()

    def to_json(self) -> dict[str, Any]:
        """The full statement: body, ``statement_digest`` (hex) and ``signatures``."""
        value = self.body()
        value["statement_digest"] = self.digest().hex()
        value["signatures"] = [signature.to_json() for signature in self.signatures]
        return value

    def to_bytes(self) -> bytes:
        """RFC 8785 canonical bytes of :meth:`to_json`."""
        return canonical(self.to_json())

    def with_signature(self, signature: StatementSignature) -> SettlementStatement:
        """This statement with ``signature`` added (replacing one by the same origin)."""
        if signature.origin not in {window.origin for window in self.windows}:
            raise LocalProtocolError(
                "unexpected-signer", f"{signature.origin} has no window in this statement"
            )
        others = [s for s in self.signatures if s.origin != signature.origin]
        return replace(self, signatures=tuple(sorted([*others, signature], key=lambda s: s.origin)))

    @classmethod
    def from_json(cls, value: bytes | str | Mapping[str, Any]) -> SettlementStatement:
        """Parse a statement received from a peer; signatures are parsed, not verified.

        Checks, cheap first: strict JSON (bytes or text), the schema (with at least one signature,
        so proposals parse too), parties match the corridor id, windows sorted by distinct origin
        with ``from_size <= to_size``, positions sorted by unique currency and not empty, each
        ``net`` equals the gross difference, ``statement_digest``, signatures sorted by distinct
        window origins.

        Raises:
            PeerProtocolError: ``bad-json``/``float-refused``/``too-large``, ``schema-violation``,
                ``wrong-parties``, ``bad-window``, ``unsorted-windows``, ``unsorted-positions``,
                ``empty-position``, ``net-mismatch``, ``bad-signature-encoding``,
                ``statement-digest-mismatch``, ``unexpected-signer``, ``unsorted-signatures``.
        """
        data = loads_strict(value, max_bytes=MAX_STATEMENT_BYTES) if isinstance(value, bytes | str) else value
        try:
            _proposal_validator()(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise PeerProtocolError(
                "schema-violation", f"settlement: {exc.message}", schema="payload.settlement", path=exc.name
            ) from exc
        corridor_id = data["corridor_id"]
        try:
            parties = _parties(corridor_id)
        except LocalProtocolError as exc:
            raise PeerProtocolError(exc.reason, exc.message, **exc.details) from exc
        if list(parties) != data["parties"]:
            raise PeerProtocolError(
                "wrong-parties",
                f"parties {data['parties']} are not those of {corridor_id}",
                got=data["parties"],
            )
        windows = tuple(_window_from_json(w) for w in data["windows"])
        origins = [w.origin for w in windows]
        if origins != sorted(set(origins)) or len(origins) != 2:
            raise PeerProtocolError(
                "unsorted-windows", "windows must be two, sorted by distinct origin", got=origins
            )
        positions = tuple(_position_from_json(p, parties) for p in data["positions"])
        currencies = [p.currency for p in positions]
        if currencies != sorted(set(currencies)):
            raise PeerProtocolError(
                "unsorted-positions", "positions must be sorted by unique currency", got=currencies
            )
        signatures = tuple(
            StatementSignature(
                origin=s["origin"],
                verification_method=s["verificationMethod"],
                signature=_unb64url(s["signature"]),
            )
            for s in data["signatures"]
        )
        statement = cls(
            corridor_id=corridor_id,
            windows=windows,
            positions=positions,
            excluded_count=data["excluded_count"],
            signatures=signatures,
        )
        calculated = statement.digest().hex()
        if calculated != data["statement_digest"]:
            raise PeerProtocolError(
                "statement-digest-mismatch",
                "statement_digest is not SHA-256(JCS(statement without digest and signatures))",
                expected=data["statement_digest"],
                calculated=calculated,
            )
        signers = [s.origin for s in signatures]
        if not set(signers) <= set(origins):
            raise PeerProtocolError("unexpected-signer", "a signature is by no window's origin", got=signers)
        if signers != sorted(set(signers)):
            raise PeerProtocolError(
                "unsorted-signatures", "signatures must be sorted by distinct origin", got=signers
            )
        return statement


@cache
def _proposal_validator() -> Callable[[Any], Any]:
    """``payload.settlement`` with one signature allowed: a proposal is signed by the proposer only."""
    schema = schemas.load_schema("payload.settlement")
    signatures = {**schema["properties"]["signatures"], "minItems": 1}
    relaxed = {**schema, "properties": {**schema["properties"], "signatures": signatures}}
    validator: Callable[[Any], Any] = fastjsonschema.compile(relaxed)
    return validator


def _window_from_json(value: Mapping[str, Any]) -> LogWindow:
    try:
        return LogWindow(
            origin=value["origin"],
            from_size=value["from_size"],
            from_root=bytes.fromhex(value["from_root"]),
            to_size=value["to_size"],
            to_root=bytes.fromhex(value["to_root"]),
        )
    except LocalProtocolError as exc:
        raise PeerProtocolError(exc.reason, exc.message, **exc.details) from exc


def _position_from_json(value: Mapping[str, Any], parties: tuple[str, str]) -> CurrencyPosition:
    a_to_b, b_to_a = value["a_to_b"], value["b_to_a"]
    position = CurrencyPosition(
        currency=value["currency"],
        a_to_b=Flow(gross=int(a_to_b["gross"]), count=a_to_b["count"]),
        b_to_a=Flow(gross=int(b_to_a["gross"]), count=b_to_a["count"]),
    )
    for flow in (position.a_to_b, position.b_to_a):
        if flow.count == 0 and flow.gross != 0:
            raise PeerProtocolError(
                "empty-position",
                f"{position.currency}: a gross total over no transfers",
                currency=position.currency,
            )
    if position.a_to_b.count == 0 and position.b_to_a.count == 0:
        raise PeerProtocolError(
            "empty-position", f"{position.currency}: a position without transfers", currency=position.currency
        )
    net = position.net(parties)
    expected = None if net is None else net.to_json()
    if value["net"] != expected:
        raise PeerProtocolError(
            "net-mismatch",
            f"{position.currency}: net position is not the difference of the gross totals",
            currency=position.currency,
            expected=expected,
            got=value["net"],
        )
    return position


# ------------------------------------------------------------------------------------------ netting


def _check_windows(
    windows: Sequence[LogWindow],
    *,
    final: Mapping[str, Mapping[int, bytes]],
    settled: Iterable[LogWindow],
) -> tuple[LogWindow, ...]:
    """The window rules of the module docstring; returns the windows sorted by origin."""
    ordered = tuple(sorted(windows, key=lambda w: w.origin))
    if len(ordered) != 2 or ordered[0].origin == ordered[1].origin:
        raise LocalProtocolError(
            "bad-windows",
            "a statement covers exactly one window of each of two logs",
            got=[w.origin for w in ordered],
        )
    ends: dict[str, LogWindow] = {}
    for previous in settled:
        if previous.origin not in ends or previous.to_size > ends[previous.origin].to_size:
            ends[previous.origin] = previous
    for window in ordered:
        roots = final.get(window.origin, {})
        if window.to_size not in roots:
            raise LocalProtocolError(
                "window-not-final",
                f"window of {window.origin} ends at size {window.to_size}, not a quorum-final checkpoint",
                origin=window.origin,
                to_size=window.to_size,
            )
        if roots[window.to_size] != window.to_root:
            raise LocalProtocolError(
                "window-root-mismatch",
                f"window of {window.origin}: to_root is not the final checkpoint's root at {window.to_size}",
                origin=window.origin,
                expected=roots[window.to_size].hex(),
                got=window.to_root.hex(),
            )
        last = ends.get(window.origin)
        end, end_root = (last.to_size, last.to_root) if last is not None else (0, EMPTY_ROOT)
        if window.from_size < end:
            raise LocalProtocolError(
                "window-already-settled",
                f"window of {window.origin} starts at {window.from_size}, before the settled end {end}",
                origin=window.origin,
                from_size=window.from_size,
                settled_to=end,
            )
        if window.from_size > end or window.from_root != end_root:
            raise LocalProtocolError(
                "window-gap",
                f"window of {window.origin} must start at the settled end {end} and its root",
                origin=window.origin,
                from_size=window.from_size,
                settled_to=end,
                from_root=window.from_root.hex(),
                settled_root=end_root.hex(),
            )
    if all(w.from_size == w.to_size for w in ordered):
        raise LocalProtocolError("empty-window", "neither log advances in this window")
    return ordered


def build_statement(
    *,
    corridor_id: str,
    windows: Sequence[LogWindow],
    receipts: Iterable[Receipt],
    final: Mapping[str, Mapping[int, bytes]],
    settled: Iterable[LogWindow] = (),
) -> SettlementStatement:
    """Net the ``transfer`` receipts of both logs of ``corridor_id`` within ``windows`` (unsigned).

    Args:
        corridor_id: ``A-B``.
        windows: one :class:`LogWindow` per log of the corridor (any order).
        receipts: the receipts of both windows (any order; other kinds are skipped). Their
            signatures and chaining are the caller's business (they come from its replica).
        final: per origin, the quorum-final checkpoints as ``size -> root``.
        settled: the windows of every earlier settlement of the corridor (both logs).

    Returns:
        The statement; the same inputs in any order give byte-identical ``to_bytes()``.

    Raises:
        LocalProtocolError: ``bad-corridor``, ``bad-windows``, the window rules of the module
            docstring, ``wrong-corridor``, ``receipt-outside-window``, ``duplicate-receipt``,
            ``bad-amount``, ``too-many-currencies``.
    """
    parties = _parties(corridor_id)
    ordered = _check_windows(windows, final=final, settled=settled)
    by_origin = {w.origin: w for w in ordered}
    seen: dict[tuple[str, int], bytes] = {}
    a_to_b: dict[str, list[int]] = {}
    b_to_a: dict[str, list[int]] = {}
    excluded = 0
    for receipt in receipts:
        if receipt.corridor_id != corridor_id:
            raise LocalProtocolError(
                "wrong-corridor", f"receipt is for corridor {receipt.corridor_id}, not {corridor_id}"
            )
        window = by_origin.get(receipt.origin)
        if window is None or not window.from_size <= receipt.sequence < window.to_size:
            raise LocalProtocolError(
                "receipt-outside-window",
                f"receipt {receipt.origin}#{receipt.sequence} is outside the window",
                origin=receipt.origin,
                sequence=receipt.sequence,
            )
        position = (receipt.origin, receipt.sequence)
        if position in seen:
            if seen[position] != receipt.next_root:
                raise LocalProtocolError(
                    "duplicate-receipt", f"two different receipts at {receipt.origin}#{receipt.sequence}"
                )
            continue  # the same receipt twice counts once
        seen[position] = receipt.next_root
        if receipt.kind != "transfer":
            continue
        payload = receipt.body["transition"]["payload"]
        sender = corridor_code(payload["sender"]["jurisdiction"])
        receiver = corridor_code(payload["receiver"]["jurisdiction"])
        amount = payload["amount"]
        if type(amount) is not str or not amount.isascii() or not amount.isdigit():
            raise LocalProtocolError("bad-amount", f"amount {amount!r} is not a string of digits")
        if (sender, receiver) == parties:
            sums = a_to_b
        elif (receiver, sender) == parties:
            sums = b_to_a
        else:
            excluded += 1
            continue
        total = sums.setdefault(payload["currency"], [0, 0])
        total[0] += int(amount)
        total[1] += 1
    currencies = sorted(a_to_b.keys() | b_to_a.keys())
    if len(currencies) > MAX_CURRENCIES:
        raise LocalProtocolError(
            "too-many-currencies", f"{len(currencies)} currencies exceed the limit of {MAX_CURRENCIES}"
        )
    positions = tuple(
        CurrencyPosition(
            currency=currency,
            a_to_b=Flow(gross=a_to_b.get(currency, [0, 0])[0], count=a_to_b.get(currency, [0, 0])[1]),
            b_to_a=Flow(gross=b_to_a.get(currency, [0, 0])[0], count=b_to_a.get(currency, [0, 0])[1]),
        )
        for currency in currencies
    )
    return SettlementStatement(
        corridor_id=corridor_id, windows=ordered, positions=positions, excluded_count=excluded
    )


# ------------------------------------------------------------------------------------------ signing


def sign_statement(statement: SettlementStatement, key: SigningKey) -> StatementSignature:
    """``key``'s signature entry for ``statement`` (``key.name`` must be one window's origin).

    Raises:
        LocalProtocolError(unexpected-signer): ``key`` is not the key of either log.
    """
    if key.name not in {window.origin for window in statement.windows}:
        raise LocalProtocolError("unexpected-signer", f"{key.name} has no window in this statement")
    return StatementSignature(
        origin=key.name,
        verification_method=key.verifier().verification_method,
        signature=key.sign(SIGNATURE_DOMAIN + statement.digest()),
    )


def _verify_signatures(
    statement: SettlementStatement, registered_keys: Mapping[str, VerifierKey], required: Collection[str]
) -> None:
    digest = statement.digest()
    by_origin = {s.origin: s for s in statement.signatures}
    for origin in sorted(required):
        signature = by_origin.get(origin)
        if signature is None:
            raise PeerProtocolError(
                "missing-signature", f"the statement is not signed by {origin}", origin=origin
            )
    for signature in statement.signatures:
        key = registered_keys.get(signature.origin)
        if key is None:
            raise PeerProtocolError(
                "unknown-signer", f"{signature.origin} has no registered key", origin=signature.origin
            )
        if signature.verification_method != key.verification_method:
            raise PeerProtocolError(
                "wrong-key",
                f"{signature.origin} signed with {signature.verification_method}, not its key",
                origin=signature.origin,
                got=signature.verification_method,
            )
        if not key.verify(SIGNATURE_DOMAIN + digest, signature.signature):
            raise PeerProtocolError(
                "bad-signature", f"signature of {signature.origin} does not verify", origin=signature.origin
            )


def verify_statement(
    statement_json: bytes | str | Mapping[str, Any], registered_keys: Mapping[str, VerifierKey]
) -> SettlementStatement:
    """Check a co-signed statement: well-formed (:meth:`SettlementStatement.from_json`), then signed
    by both window origins under their registered keys.

    Args:
        statement_json: the statement (e.g. a ``settlement`` receipt's payload).
        registered_keys: origin -> the corridor's registered log key.

    Raises:
        PeerProtocolError: as ``from_json``; ``missing-signature``, ``unknown-signer``,
            ``wrong-key``, ``bad-signature``.
    """
    statement = SettlementStatement.from_json(statement_json)
    _verify_signatures(statement, registered_keys, [w.origin for w in statement.windows])
    return statement


def _differences(proposed: Any, computed: Any, path: str) -> list[dict[str, Any]]:
    """Leaf by leaf, where two JSON values differ (positions matched by currency)."""
    if isinstance(proposed, dict) and isinstance(computed, dict):
        found: list[dict[str, Any]] = []
        for name in sorted(proposed.keys() | computed.keys()):
            found += _differences(proposed.get(name), computed.get(name), f"{path}.{name}".lstrip("."))
        return found
    if isinstance(proposed, list) and isinstance(computed, list):
        if path == "positions":
            mine = {p["currency"]: p for p in computed}
            theirs = {p["currency"]: p for p in proposed}
            found = []
            for currency in sorted(mine.keys() | theirs.keys()):
                found += _differences(theirs.get(currency), mine.get(currency), f"positions[{currency}]")
            return found
        if len(proposed) == len(computed):
            found = []
            for index, (left, right) in enumerate(zip(proposed, computed, strict=True)):
                found += _differences(left, right, f"{path}[{index}]")
            return found
    if proposed == computed:
        return []
    return [{"field": path, "proposed": proposed, "computed": computed}]


def countersign(
    proposal: bytes | str | Mapping[str, Any],
    *,
    receipts: Iterable[Receipt],
    final: Mapping[str, Mapping[int, bytes]],
    settled: Iterable[LogWindow],
    registered_keys: Mapping[str, VerifierKey],
    key: SigningKey,
) -> SettlementStatement:
    """Recompute a peer's proposal from our own replica and, only if identical, sign it.

    Steps: parse the proposal; check it carries a valid signature by the other origin (and none
    by us); rebuild the statement for the proposal's window sizes from our ``receipts``, our
    ``final`` checkpoints (which give the roots) and our ``settled`` windows; compare; sign.

    Returns:
        The statement signed by both parties (its ``to_json()`` is the ``settlement`` payload).

    Raises:
        PeerProtocolError: as :meth:`SettlementStatement.from_json`; ``missing-signature``,
            ``unknown-signer``, ``wrong-key``, ``bad-signature`` (the proposer's signature);
            ``unexpected-signer`` (already signed in our name); the window rules and
            ``receipt-outside-window`` etc. as ``build_statement`` raises them for the proposal's
            windows; ``statement-mismatch`` with ``details["differences"]``, a list of
            ``{"field", "proposed", "computed"}``.
        LocalProtocolError(unexpected-signer): ``key`` is not one of the two window origins.
    """
    statement = SettlementStatement.from_json(proposal)
    origins = [w.origin for w in statement.windows]
    if key.name not in origins:
        raise LocalProtocolError("unexpected-signer", f"{key.name} has no window in this proposal")
    if any(s.origin == key.name for s in statement.signatures):
        raise PeerProtocolError(
            "unexpected-signer", f"the proposal already carries a signature by {key.name}"
        )
    proposer = [origin for origin in origins if origin != key.name]
    _verify_signatures(statement, registered_keys, proposer)
    windows = []
    for window in statement.windows:
        root = final.get(window.origin, {}).get(window.to_size, window.to_root)
        windows.append(replace(window, to_root=root))
    try:
        mine = build_statement(
            corridor_id=statement.corridor_id,
            windows=windows,
            receipts=receipts,
            final=final,
            settled=settled,
        )
    except LocalProtocolError as exc:
        raise PeerProtocolError(exc.reason, f"proposal: {exc.message}", **exc.details) from exc
    mine_json, theirs_json = mine.body(), statement.body()
    if mine_json != theirs_json:
        # Windows' to_root came from our checkpoints; from_root is compared here too.
        differences = _differences(theirs_json, mine_json, "")
        raise PeerProtocolError(
            "statement-mismatch",
            "our replica nets to a different statement: " + ", ".join(d["field"] for d in differences),
            differences=differences,
            fields=[d["field"] for d in differences],
        )
    return statement.with_signature(sign_statement(statement, key))
