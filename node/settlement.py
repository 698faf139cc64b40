"""Bilateral settlement between the two nodes of a corridor (design §12, issue 9).

Theory of operation
-------------------
The netting, the statement, its signatures and the countersigning rule are pure
(:mod:`protocol.settlement`); this module feeds them from the node's store and carries the
proposal to the counterparty over libp2p.

* **Window.** For a corridor, each log's window runs from the end of the last settled window of
  that log (0 before the first settlement) to the log's **quorum-final size** as
  :class:`~node.quorum.QuorumCollector` keeps it (``witness_state("quorum/<origin>")``), capped at
  the receipts we hold. Any size up to the quorum-final size is final: the final checkpoint commits
  to every prefix of the log, and the root at that size is computed from our stored MMR.
* **Settled windows** come from the ``settlement`` receipts of *both* logs (ours and our replica of
  the counterparty's), each statement counted once (by digest). :class:`SettlementBook` scans each
  log once and then only the receipts appended since (incrementally, under a lock), and keeps only
  statements that verify under the corridor's two registered keys (one that does not is logged and
  ignored: it cannot settle anything).
* **Proposing** (:meth:`SettlementService.settle`): first, any co-signed statement the counterparty
  wrote into its log but we did not write into ours (we crashed or timed out after it answered) is
  written into our log; then we build the statement for the next window, sign it, send it as a
  :class:`~protocol.wire.SettleProposal` on a new ``/sez/settle/1`` stream, and wait for the answer
  (:data:`SETTLE_TIMEOUT` plus :data:`SETTLE_SECONDS_PER_RECEIPT` per receipt of the window, which
  the counterparty recomputes; a ``window-not-final`` refusal is retried briefly, see
  :data:`NOT_FINAL_RETRIES`). A :class:`~protocol.wire.SettleAccepted` must carry *our* statement with
  a valid countersignature; we then write it into our log as a ``settlement`` receipt. A
  :class:`~protocol.wire.SettleRefused` becomes :class:`SettlementRefused` with the counterparty's
  reason and differing figures.
* **Answering** (:meth:`SettlementService.answer`): :func:`protocol.settlement.countersign` from our
  own store: the proposer's signature, the window rules (``window-not-final`` when a window ends
  beyond our quorum-final size, ``window-already-settled`` for a window that starts before a
  settled end, so the same window twice, ``window-gap``), and the figures recomputed from our own
  receipts (``statement-mismatch`` with ``differences``). Only if everything is identical do we
  sign, **write the co-signed statement into our log first** (durable), and then answer accepted.
* **One exchange at a time per corridor.** A node holds its corridor's settlement lock from
  building its proposal until its own receipt is written, and while answering. A proposal that
  arrives while the lock is held is refused ``settlement-busy`` rather than queued, so two nodes
  proposing at the same moment never wait on each other (both are told to retry).

Transport: one request per stream, framed like ``/sez/sync/1`` (4-byte length, canonical wire
message; :func:`protocol.sync.frame`). Only the peers configured for the corridor may open the
stream (the host's allowlist drops everyone else before this code runs, and :func:`serve_settle_frames`
refuses a peer not configured for the proposal's corridor). Authority does not come from the peer
id, though: a proposal is acted on only if it carries a valid signature by the counterparty log's
registered key, and all it can make us do is countersign figures we computed ourselves.

Errors: a peer's bad bytes are :class:`PeerProtocolError` (the stream is reset by the host's guard);
refusals are answers, not faults. Storage failures propagate.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.jcs import canonical, loads_strict
from protocol.keys import SigningKey, VerifierKey
from protocol.mmr import EMPTY_ROOT
from protocol.receipts import Receipt
from protocol.settlement import (
    LogWindow,
    SettlementStatement,
    build_statement,
    countersign,
    sign_statement,
    verify_statement,
)
from protocol.sync import NEED_DATA, FrameDecoder, frame
from protocol.wire import (
    MAX_STATEMENT_BYTES,
    MAX_TEXT,
    Message,
    SettleAccepted,
    SettleProposal,
    SettleRefused,
)
from store import LogStore, StoreError

from .writer import LogWriter

if TYPE_CHECKING:
    from .corridor import CorridorService
    from .p2p import P2PHost

__all__ = [
    "MAX_SETTLE_FRAME",
    "SETTLE_PROTOCOL_ID",
    "SETTLE_SECONDS_PER_RECEIPT",
    "SETTLE_TIMEOUT",
    "SettlementBook",
    "SettlementRecord",
    "SettlementRefused",
    "SettlementService",
    "for_corridor",
    "http_status",
    "jsonable",
    "serve_settle_frames",
]

log = logging.getLogger(__name__)

SETTLE_PROTOCOL_ID: Final = "/sez/settle/1"
SETTLE_TIMEOUT: Final = 30.0
"""Seconds a proposer waits for the answer to a small window (and a server for the request): the
counterparty nets the window and writes one receipt durably before answering."""
SETTLE_SECONDS_PER_RECEIPT: Final = 200e-6
"""Added to :data:`SETTLE_TIMEOUT` per receipt of the window. Netting reads each receipt and re-checks
it with ``Receipt.from_bytes`` (the ingest rules: 90 % of the cost), measured at 30 µs per receipt alone
and about 90 µs on a busy shared 2-core machine (``python -m tests.bench settlement``); a window of a
million receipts therefore gets 230 s, over twice the busy figure."""
NOT_FINAL_RETRIES: Final = 10
NOT_FINAL_RETRY_DELAY: Final = 0.5
"""A proposal refused ``window-not-final`` is rebuilt and sent again up to 10 times, 0.5 s apart: the
counterparty learns that a checkpoint is final a gossip hop after we do (or before), so a refusal within
that delay is not a disagreement. A window still not final after 5 s is reported."""
MAX_SETTLE_FRAME: Final = 256 * 1024
"""A frame holds one statement (at most 64 KiB) or a refusal with its differences."""
_READ_SIZE: Final = 65536
_SETTLEMENT_MARK: Final = b'"kind":"settlement"'
"""In canonical receipt JSON this byte string appears only as the transition's kind (a string value
containing it would have its quotes escaped), so the scan parses only settlement receipts."""

_CONFLICTS: Final = frozenset(
    {
        "statement-mismatch", "window-not-final", "window-root-mismatch", "window-already-settled",
        "window-gap", "empty-window", "nothing-to-settle", "settlement-busy",
    }
)  # fmt: skip


def http_status(reason: str) -> int:
    """The HTTP status of a settlement failure: 409 for a refused or pointless window, 503 when the
    counterparty cannot be reached, 404 for an unknown corridor, 502 for a counterparty answering
    nonsense, 422 otherwise."""
    if reason in _CONFLICTS:
        return 409
    if reason in ("counterparty-unreachable", "shutting-down"):
        return 503
    if reason == "unknown-corridor":
        return 404
    if reason == "bad-counterparty-answer":
        return 502
    return 422


class SettlementRefused(SezError):
    """The counterparty refused to countersign; ``details`` hold ``refused_by`` and its figures
    (``differences``: ``[{"field", "proposed", "computed"}]`` for ``statement-mismatch``)."""


@dataclass(frozen=True, slots=True)
class SettlementRecord:
    """One ``settlement`` receipt: which log holds it, at which sequence, and its verified statement."""

    origin: str
    sequence: int
    statement: SettlementStatement
    digest: bytes
    """``statement.digest()``, computed once."""

    def to_json(self) -> dict[str, Any]:
        """``{"origin", "sequence", "statement_digest", "statement"}``."""
        return {
            "origin": self.origin,
            "sequence": self.sequence,
            "statement_digest": self.digest.hex(),
            "statement": self.statement.to_json(),
        }


class SettlementBook:
    """The settlement state of one corridor as the node's store holds it (synchronous, thread-safe).

    Args:
        store: the node's store (our log and the replica of the counterparty's).
        corridor_id: ``A-B``.
        key: our log's signing key (its name is our origin).
        counterparty_origin: the other log.
        counterparty_key: the other log's registered key.
        final_size: origin -> quorum-final size (``QuorumCollector.final_size``).
    """

    def __init__(
        self,
        store: LogStore,
        corridor_id: str,
        key: SigningKey,
        *,
        counterparty_origin: str,
        counterparty_key: VerifierKey,
        final_size: Callable[[str], int],
    ) -> None:
        self.store = store
        self.corridor_id = corridor_id
        self.key = key
        self.origin = key.name
        self.counterparty_origin = counterparty_origin
        self.registered_keys: dict[str, VerifierKey] = {
            self.origin: key.verifier(),
            counterparty_origin: counterparty_key,
        }
        self._final_size = final_size
        self._lock = threading.Lock()
        self._scanned = {self.origin: 0, counterparty_origin: 0}
        self._records: list[SettlementRecord] = []

    # ------------------------------------------------------------------ reading

    def _head(self, origin: str) -> int:
        try:
            return self.store.head(origin).size
        except StoreError as exc:
            if exc.reason == "unknown-origin":
                return 0  # nothing replicated yet
            raise

    def records(self) -> list[SettlementRecord]:
        """Every verified ``settlement`` receipt of both logs, by (origin, sequence)."""
        with self._lock:
            for origin in sorted(self._scanned):
                head = self._head(origin)
                start = self._scanned[origin]
                if head <= start:
                    continue
                for sequence, raw in self.store.iter_receipts(origin, start):
                    if sequence >= head:
                        break
                    if _SETTLEMENT_MARK in raw:
                        self._add(origin, sequence, raw)
                self._scanned[origin] = head
            return sorted(self._records, key=lambda r: (r.origin, r.sequence))

    def _add(self, origin: str, sequence: int, raw: bytes) -> None:
        body = json.loads(raw)
        if body["transition"]["kind"] != "settlement":
            return
        try:
            statement = verify_statement(body["transition"]["payload"], self.registered_keys)
            if statement.corridor_id != self.corridor_id:
                raise PeerProtocolError("wrong-corridor", f"statement for {statement.corridor_id}")
        except PeerProtocolError as exc:
            log.warning(
                "settlement receipt %s#%d does not verify, ignored: %s: %s", origin, sequence, exc.reason,
                exc.message, extra={"corridor": self.corridor_id, "origin": origin, "reason": exc.reason},
            )  # fmt: skip
            return
        self._records.append(SettlementRecord(origin, sequence, statement, statement.digest()))

    def settled_windows(self) -> list[LogWindow]:
        """The windows of every settled statement (each statement once)."""
        seen: dict[bytes, SettlementStatement] = {}
        for record in self.records():
            seen.setdefault(record.digest, record.statement)
        return [window for statement in seen.values() for window in statement.windows]

    def holds(self, origin: str, statement: SettlementStatement) -> bool:
        """True if log ``origin`` already holds a settlement receipt of ``statement``."""
        digest = statement.digest()
        return any(r.origin == origin and r.digest == digest for r in self.records())

    def unrecorded(self) -> list[SettlementStatement]:
        """Statements in the counterparty's log that our log does not hold yet (oldest first)."""
        records = self.records()
        ours = {r.digest for r in records if r.origin == self.origin}
        return [r.statement for r in records if r.origin == self.counterparty_origin and r.digest not in ours]

    def _final(self, sizes: Mapping[str, int]) -> dict[str, dict[int, bytes]]:
        """Per origin, ``{size: root}`` for the asked size if it is final here and its receipts held."""
        final: dict[str, dict[int, bytes]] = {}
        for origin, size in sizes.items():
            if origin in self._scanned and size <= min(self._final_size(origin), self._head(origin)):
                final[origin] = {size: self.store.root_at(origin, size) if size else EMPTY_ROOT}
        return final

    def _receipts(self, windows: Sequence[LogWindow]) -> Iterator[Receipt]:
        for window in windows:
            if window.origin not in self._scanned or window.to_size > self._head(window.origin):
                continue  # build_statement refuses the window (window-not-final) before reading these
            if window.from_size == window.to_size:
                continue
            for sequence, raw in self.store.iter_receipts(window.origin, window.from_size):
                if sequence >= window.to_size:
                    break
                yield Receipt.from_bytes(raw)

    # --------------------------------------------------------------- proposing

    def next_windows(self) -> list[LogWindow]:
        """Each log's next window: from its settled end to its quorum-final size (receipts held)."""
        ends: dict[str, tuple[int, bytes]] = {}
        for window in self.settled_windows():
            if window.to_size > ends.get(window.origin, (0, EMPTY_ROOT))[0]:
                ends[window.origin] = (window.to_size, window.to_root)
        windows = []
        for origin in sorted(self._scanned):
            start, start_root = ends.get(origin, (0, EMPTY_ROOT))
            end = max(start, min(self._final_size(origin), self._head(origin)))
            end_root = self.store.root_at(origin, end) if end else EMPTY_ROOT
            windows.append(
                LogWindow(origin=origin, from_size=start, from_root=start_root, to_size=end, to_root=end_root)
            )
        return windows

    def propose(self) -> SettlementStatement:
        """The next window's statement, signed by us.

        Raises:
            LocalProtocolError: ``nothing-to-settle`` (no transfer became final since the last
                settlement), or a window rule of ``build_statement`` (a bug or a racing settlement).
        """
        windows = self.next_windows()
        if all(w.from_size == w.to_size for w in windows):
            raise LocalProtocolError(
                "nothing-to-settle",
                "neither log has grown past its last settled window at a quorum-final size",
                windows=[w.to_json() for w in windows],
            )
        statement = build_statement(
            corridor_id=self.corridor_id,
            windows=windows,
            receipts=self._receipts(windows),
            final=self._final({w.origin: w.to_size for w in windows}),
            settled=self.settled_windows(),
        )
        if not statement.positions and statement.excluded_count == 0:
            raise LocalProtocolError(
                "nothing-to-settle",
                "no transfer in the window since the last settlement",
                windows=[w.to_json() for w in windows],
            )
        return statement.with_signature(sign_statement(statement, self.key))

    def check_answer(self, proposal: SettlementStatement, data: bytes) -> SettlementStatement:
        """The co-signed statement the counterparty answered with, checked against our proposal.

        Raises:
            PeerProtocolError(bad-counterparty-answer): a different statement, or one that does not
                verify (``details["cause"]`` is the reason of :func:`~protocol.settlement.verify_statement`).
        """
        try:
            statement = verify_statement(data, self.registered_keys)
        except PeerProtocolError as exc:
            raise PeerProtocolError(
                "bad-counterparty-answer",
                f"the countersigned statement does not verify: {exc.reason}: {exc.message}",
                cause=exc.reason,
            ) from exc
        if statement.body() != proposal.body():
            raise PeerProtocolError(
                "bad-counterparty-answer", "the counterparty countersigned another statement than ours"
            )
        return statement

    # --------------------------------------------------------------- answering

    def countersign(self, proposal: bytes) -> SettlementStatement:
        """Recompute ``proposal`` from our store and, only if identical, return it co-signed.

        Raises:
            PeerProtocolError: every refusal of :func:`protocol.settlement.countersign`
                (``statement-mismatch`` with ``differences``, ``window-not-final``,
                ``window-already-settled``, ``window-gap``, ``bad-signature``...).
        """
        parsed = SettlementStatement.from_json(proposal)
        if parsed.corridor_id != self.corridor_id:
            raise PeerProtocolError(
                "wrong-corridor", f"a statement of {parsed.corridor_id} on {self.corridor_id}"
            )
        if {w.origin for w in parsed.windows} != set(self._scanned):
            raise PeerProtocolError(
                "unknown-origin", "the statement's windows are not this corridor's two logs",
                got=[w.origin for w in parsed.windows],
            )  # fmt: skip
        return countersign(
            proposal,
            receipts=self._receipts(parsed.windows),
            final=self._final({w.origin: w.to_size for w in parsed.windows}),
            settled=self.settled_windows(),
            registered_keys=self.registered_keys,
            key=self.key,
        )


class SettlementService:
    """Settlement of one corridor: proposes to the counterparty and answers its proposals.

    Args:
        book: the corridor's :class:`SettlementBook`.
        writer: our log's writer (``settlement`` receipts go through it like every receipt).
        host: the started p2p host.
        peer_ids: the corridor's configured peers (the counterparty first).
    """

    def __init__(
        self, book: SettlementBook, writer: LogWriter, host: P2PHost, peer_ids: Sequence[str]
    ) -> None:
        self.book = book
        self.corridor_id = book.corridor_id
        self.writer = writer
        self.host = host
        self.peer_ids = tuple(peer_ids)
        self._lock = trio.Lock()

    async def _record(self, statement: SettlementStatement) -> Receipt | None:
        """Write ``statement`` into our log unless it is there already; its receipt, or None."""
        if await trio.to_thread.run_sync(self.book.holds, self.book.origin, statement):
            return None
        receipt = await self.writer.submit("settlement", statement.to_json())
        log.info(
            "settlement %s written at %s#%d", statement.digest().hex(), receipt.origin, receipt.sequence,
            extra={"corridor": self.corridor_id},
        )  # fmt: skip
        return receipt

    async def settle(self) -> dict[str, Any]:
        """Propose the next window to the counterparty; on acceptance, write it into our log.

        Returns:
            ``{"statement": co-signed statement, "receipt": our settlement receipt,
            "recovered": [{"statement", "receipt"} of each co-signed statement found only in the
            counterparty's log and written into ours first]}``. When nothing new is final but a
            statement was recovered, the last recovered one is the ``statement``.

        Raises:
            LocalProtocolError: ``settlement-busy``, ``nothing-to-settle``,
                ``counterparty-unreachable``.
            SettlementRefused: the counterparty's refusal (its reason, ``refused_by``, its figures).
            PeerProtocolError: the counterparty answered nonsense.
        """
        if self._lock.locked():
            raise LocalProtocolError("settlement-busy", f"a settlement of {self.corridor_id} is in progress")
        async with self._lock:
            recovered: list[tuple[SettlementStatement, Receipt]] = []
            for statement in await trio.to_thread.run_sync(self.book.unrecorded):
                written = await self._record(statement)
                if written is not None:
                    recovered.append((statement, written))
            try:
                proposal = await trio.to_thread.run_sync(self.book.propose)
            except LocalProtocolError as exc:
                if exc.reason != "nothing-to-settle" or not recovered:
                    raise
                # The counterparty had settled the last window with us; we have now recorded it too.
                statement, receipt = recovered[-1]
                return _result(statement, receipt, recovered)
            answer = await self._exchange(proposal)
            for _ in range(NOT_FINAL_RETRIES):
                if not (isinstance(answer, SettleRefused) and answer.reason == "window-not-final"):
                    break
                # Finality reaches the two nodes a gossip hop apart (our cosignature of their log, a
                # watcher's cosignature): give the counterparty a moment to see what we see, then retry.
                await trio.sleep(NOT_FINAL_RETRY_DELAY)
                proposal = await trio.to_thread.run_sync(self.book.propose)
                answer = await self._exchange(proposal)
            if isinstance(answer, SettleRefused):
                details = _details(answer.details)
                refused_by = self.book.counterparty_origin
                log.warning(
                    "settlement proposal refused by %s: %s: %s", refused_by, answer.reason, answer.message,
                    extra={"corridor": self.corridor_id, "reason": answer.reason},
                )  # fmt: skip
                raise SettlementRefused(
                    answer.reason, f"{refused_by} refused: {answer.message}", refused_by=refused_by, **details
                )
            cosigned = await trio.to_thread.run_sync(self.book.check_answer, proposal, answer.statement)
            written = await self._record(cosigned)
            if written is None:
                # Already in our log. Under our lock only a bug gets here (the window would have been
                # settled, so not proposed); answer with the stored receipt rather than write it twice.
                record = next(
                    r for r in await trio.to_thread.run_sync(self.book.records)
                    if r.origin == self.book.origin and r.digest == cosigned.digest()
                )  # fmt: skip
                written = Receipt.from_bytes(self.writer.store.receipt(record.origin, record.sequence))
            return _result(cosigned, written, recovered)

    async def _exchange(self, proposal: SettlementStatement) -> SettleAccepted | SettleRefused:
        """Send ``proposal`` to the first connected corridor peer that speaks ``/sez/settle/1``."""
        request = SettleProposal(id=1, corridor=self.corridor_id, statement=proposal.to_bytes())
        failures: list[str] = []
        for peer in self.peer_ids:
            if not self.host.is_connected(peer):
                failures.append(f"{peer}: not connected")
                continue
            try:
                stream = await self.host.open_stream(peer, SETTLE_PROTOCOL_ID)
            except OSError as exc:
                failures.append(f"{peer}: {exc}")
                continue  # a watcher among the corridor's peers does not speak settlement
            async with stream:
                try:
                    with trio.fail_after(_timeout(proposal)):
                        await stream.send_all(frame(request))
                        answer = await _read_message(stream, FrameDecoder(MAX_SETTLE_FRAME))
                except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
                    raise LocalProtocolError(
                        "counterparty-unreachable",
                        f"{peer} did not answer the settlement proposal: {type(exc).__name__}: {exc}",
                    ) from exc
            if not isinstance(answer, SettleAccepted | SettleRefused) or answer.id != request.id:
                raise PeerProtocolError("bad-counterparty-answer", f"{answer.KIND} answers no proposal")
            return answer
        raise LocalProtocolError(
            "counterparty-unreachable", "no corridor peer took the proposal: " + "; ".join(failures)
        )

    async def answer(self, request: SettleProposal) -> SettleAccepted | SettleRefused:
        """Countersign ``request`` if our store nets it identically, write it, and answer; else refuse."""
        if self._lock.locked():
            return _refusal(
                request, LocalProtocolError("settlement-busy", "a settlement is in progress here")
            )
        async with self._lock:
            try:
                cosigned = await trio.to_thread.run_sync(self.book.countersign, request.statement)
            except PeerProtocolError as exc:
                log.info(
                    "settlement proposal refused: %s: %s", exc.reason, exc.message,
                    extra={"corridor": self.corridor_id, "reason": exc.reason},
                )  # fmt: skip
                return _refusal(request, exc)
            await self._record(cosigned)  # durable before we say yes
            return SettleAccepted(id=request.id, statement=cosigned.to_bytes())

    async def settlements(self) -> dict[str, Any]:
        """``{"corridor", "settlements": [...]}``: the settlement receipts of both logs."""
        records = await trio.to_thread.run_sync(self.book.records)
        return {"corridor": self.corridor_id, "settlements": [r.to_json() for r in records]}


def for_corridor(service: CorridorService) -> SettlementService:
    """The settlement service of a running corridor: its store, key, writer, quorum and peers."""
    book = SettlementBook(
        service.store,
        service.id,
        service.key,
        counterparty_origin=service.counterparty_origin,
        counterparty_key=service.counterparty_key,
        final_size=service.quorum.final_size,
    )
    return SettlementService(book, service.writer, service.host, service.config.peer_ids)


def _timeout(statement: SettlementStatement) -> float:
    """How long the counterparty may take to answer ``statement`` (it recomputes the whole window)."""
    receipts = sum(w.to_size - w.from_size for w in statement.windows)
    return SETTLE_TIMEOUT + receipts * SETTLE_SECONDS_PER_RECEIPT


def _result(
    statement: SettlementStatement, receipt: Receipt, recovered: Sequence[tuple[SettlementStatement, Receipt]]
) -> dict[str, Any]:
    return {
        "statement": statement.to_json(),
        "receipt": json.loads(receipt.raw),
        "recovered": [{"statement": s.to_json(), "receipt": json.loads(r.raw)} for s, r in recovered],
    }


def _refusal(request: SettleProposal, exc: SezError) -> SettleRefused:
    """The refusal answering ``request``; its details are cut to fit the wire limit (the differences
    list is halved until it fits, and ``"truncated": true`` says so)."""
    value = jsonable(exc.details)
    details = canonical(value)
    while len(details) > MAX_STATEMENT_BYTES:
        differences = value.get("differences")
        if not isinstance(differences, list) or len(differences) <= 1:
            value = {"truncated": True}
        else:
            value = {**value, "differences": differences[: len(differences) // 2], "truncated": True}
        value.pop("fields", None)
        details = canonical(value)
    return SettleRefused(
        id=request.id, reason=exc.reason[:64], message=exc.message[:MAX_TEXT], details=details
    )


def jsonable(value: Any) -> Any:
    """``value`` with bytes as hex and tuples as lists, so that canonical JSON takes it."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _details(data: bytes) -> dict[str, Any]:
    """The counterparty's refusal details (a JSON object), or ``{}`` if they are not one."""
    try:
        value = loads_strict(data, max_bytes=len(data))
    except PeerProtocolError:  # malformed, too deep, floats: details are a courtesy, not a contract
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k not in ("refused_by", "type", "title", "status", "detail")}


async def _read_message(stream: Any, decoder: FrameDecoder) -> Message:
    while True:
        message = decoder.next_message()
        if message is not NEED_DATA:
            assert isinstance(message, Message)
            return message
        data = await stream.receive_some(_READ_SIZE)
        if not data:
            raise trio.BrokenResourceError("peer closed the settlement stream")
        decoder.receive_data(bytes(data))


def serve_settle_frames(
    services: Callable[[], Mapping[str, SettlementService]],
) -> Callable[[Any], Any]:
    """The ``/sez/settle/1`` stream handler: one proposal in, one answer out.

    A peer not configured for the proposal's corridor, or a proposal for a corridor we are not
    in, is refused (an answer, not a fault). Bad frames are peer faults (the host's guard resets
    the stream and counts it against the peer). The request must arrive within
    :data:`SETTLE_TIMEOUT`.
    """

    async def handler(stream: Any) -> None:
        with trio.fail_after(SETTLE_TIMEOUT):
            request = await _read_message(stream, FrameDecoder(MAX_SETTLE_FRAME))
        if not isinstance(request, SettleProposal):
            raise PeerProtocolError("unexpected-message", f"{request.KIND} on {SETTLE_PROTOCOL_ID}")
        service = services().get(request.corridor)
        if service is None:
            answer: Message = _refusal(
                request, LocalProtocolError("unknown-corridor", f"this node is not in {request.corridor}")
            )
        elif stream.peer_id not in service.peer_ids:
            answer = _refusal(
                request, LocalProtocolError("not-a-party", f"peer is not configured for {request.corridor}")
            )
        else:
            answer = await service.answer(request)
        await stream.send_all(frame(answer))

    return handler
