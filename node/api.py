"""The node's HTTP API (design §15): JSON over HTTP, RFC 7807 errors, bearer token for writes.

Routes (OpenAPI document: ``schemas/openapi.json``, served at ``/openapi.json``):

=======  ==============================================  ===============================================
method   path                                            answer
=======  ==============================================  ===============================================
POST     /v1/corridors/{corridor}/transitions            201 + receipt (or {"receipts": [...]} for a
                                                         {"transitions": [...]} batch) once durable
GET      /v1/corridors/{corridor}/status                 both logs' heads, replica lag, peers, finality
GET      /v1/corridors/{corridor}/lifecycle              lifecycle state, allowed kinds, history
POST     /v1/corridors/{corridor}/settlements            201 + co-signed statement (bearer token), or the
                                                         counterparty's refusal with its figures (409)
GET      /v1/corridors/{corridor}/settlements            the settlement receipts of both logs
GET      /v1/corridors/{corridor}/watchers               the stake ledger: watchers, bonded, active, slashed
GET      /v1/corridors/{corridor}/evidence               verified misbehaviour evidence, oldest first
GET      /v1/corridors/{corridor}/policy                 the trust policy (schemas/policy.json)
GET      /v1/corridors/{corridor}/anchors                L1 anchor records and anchoring status
GET      /v1/corridors/{corridor}/orphans                our log's receipts set aside by recoveries
GET      /v1/logs/{origin}/receipts/{sequence}           the receipt (canonical JSON)
GET      /v1/logs/{origin}/receipts/{sequence}/finality  {"receipt_signed", "counterparty_cosigned",
                                                         "quorum_final", "quorum_final_size",
                                                         "anchored", "anchored_size"}
GET      /v1/logs/{origin}/checkpoint[?size=N]           the signed (cosigned) checkpoint note
GET      /v1/logs/{origin}/proof/{sequence}[?size=N]     c2sp.org/tlog-proof@v1 bundle with the receipt
         [?anchor=1]                                     (against the anchored checkpoint, with the
                                                         anchor record in ``extra``)
GET      /v1/logs/{origin}/consistency?old=M[&new=N]     {"old", "new", "hashes": [base64…]}
GET      /healthz                                        {"status": "ok"}
GET      /metrics                                        Prometheus text format
=======  ==============================================  ===============================================

Origins contain slashes (``sez.gov.pk/corridor/PAK-KSA``); they appear in paths as they are.
Every error is a problem document ``{"type": "urn:sez:problem:<reason>", "title", "status", "detail"}``
with the reason codes of :mod:`protocol.errors`.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.anchor import AnchorRecord, join_bundle_extra
from protocol.checkpoints import parse_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError, SezError
from protocol.jcs import loads_strict
from protocol.receipts import KNOWN_KINDS
from protocol.tlog_proof import TlogProof
from store import LogStore, StoreError

from .settlement import http_status as settlement_status
from .settlement import jsonable
from .writer import LogWriter

__all__ = ["MAX_BODY_BYTES", "ApiContext", "build_app", "problem"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""A request body (one transition, or a batch of them) is refused over 1 MiB, before parsing."""
MAX_TRANSITIONS = 512
"""Transitions in one batch request: one writer batch, one gossip message."""

_STATUS = {
    "unauthorized": 401,
    "unknown-corridor": 404,
    "unknown-origin": 404,
    "corridor-state": 409,
    "already-recorded": 409,
    "not-found": 404,
    "bad-index": 404,
    "too-large": 413,
    "unsupported-media-type": 415,
    "shutting-down": 503,
    "recovering": 503,  # our log is being checked or recovered (node.recovery): retry shortly
    "io": 503,  # the store failed (e.g. a full disk): the server's fault, retry later; never a 4xx
}


def problem(reason: str, detail: str, status: int | None = None, **extra: Any) -> JSONResponse:
    """An RFC 7807 problem document for ``reason``."""
    code = status or _STATUS.get(reason, 422 if reason != "bad-request" else 400)
    body = {
        "type": f"urn:sez:problem:{reason}",
        "title": reason.replace("-", " "),
        "status": code,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=code, media_type="application/problem+json")


class StatusSource(Protocol):
    """What the API asks the daemon for corridor status (peers, replica state)."""

    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        """JSON-ready status of one corridor."""

    def corridor_lifecycle(self, corridor_id: str) -> dict[str, Any]:
        """JSON-ready lifecycle state and history of one corridor (design §9)."""


class FinalitySource(Protocol):
    """What the API asks the daemon about quorum finality and stake (design §7)."""

    def receipt_finality(self, origin: str, sequence: int) -> dict[str, Any]:
        """``{"receipt_signed", "counterparty_cosigned", "quorum_final", "quorum_final_size"}``."""

    def corridor_watchers(self, corridor_id: str) -> dict[str, Any]:
        """The corridor's stake ledger, JSON-ready."""


class SettlementDesk(Protocol):
    """What the API asks a corridor's settlement service (``node.settlement.SettlementService``)."""

    async def settle(self) -> dict[str, Any]:
        """Propose the next window; the co-signed statement and our receipt."""

    async def settlements(self) -> dict[str, Any]:
        """The settlement receipts of both logs."""


class EvidenceSource(Protocol):
    """What the API asks the daemon's evidence pool (design §7; ``node.evidence_pool``)."""

    def verify_slash(self, corridor_id: str, payload: Mapping[str, Any]) -> object:
        """Verify a ``watcher.slash`` payload's evidence with the corridor's context; raise if it fails."""

    def list_evidence(self, corridor_id: str) -> dict[str, Any]:
        """The corridor's stored evidence, JSON-ready."""


class PolicySource(Protocol):
    """What the API asks the daemon for a corridor's trust policy (design §7, §11)."""

    def corridor_policy(self, corridor_id: str) -> dict[str, Any]:
        """The corridor's trust policy, JSON-ready (``schemas/policy.json``)."""


class AnchorSource(Protocol):
    """What the API asks the daemon about L1 anchors (design §10)."""

    def corridor_anchors(self, corridor_id: str) -> dict[str, Any]:
        """``{"corridor", "anchoring", "anchors": [records]}``."""

    def covering_anchor(self, origin: str, sequence: int) -> AnchorRecord | None:
        """The smallest confirmed anchor of ``origin`` covering receipt ``sequence``, or None."""


@dataclass
class ApiContext:
    """Everything the API reads or writes."""

    store: LogStore
    writers: Mapping[str, LogWriter]
    """Our log writer per corridor id."""
    token: str
    status: StatusSource
    finality: FinalitySource | None = None
    """Quorum finality and stake (the daemon); without it those routes answer 404."""
    anchors: AnchorSource | None = None
    """L1 anchors (the daemon); without it ``/anchors`` answers 404 and ``?anchor=1`` proofs are refused."""
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    policy: PolicySource | None = None
    """The corridors' trust policies (the daemon); without it that route answers 404."""
    on_request: Callable[[str, int], None] | None = None
    settlements: Mapping[str, SettlementDesk] | None = None
    """Settlement per corridor id (the daemon); without it the settlement routes answer 404."""
    evidence: EvidenceSource | None = None
    """The evidence pool; without it ``watcher.slash`` is refused and the evidence route answers 404."""


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    """Turn our errors into problem documents; anything else is a bug: log it and answer 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except StoreError as exc:
            return problem(exc.reason, exc.message)
        except (PeerProtocolError, LocalProtocolError) as exc:
            return problem(exc.reason, exc.message)
        except SezError as exc:
            return problem(exc.reason, exc.message)

    return guarded


API_KINDS: frozenset[str] = frozenset(
    {"transfer", "attestation", "lifecycle", "watcher.bond", "watcher.unbond", "watcher.slash"}
)
"""Kinds a client may submit. ``ack`` receipts are written only by the node's witness, after it has
cosigned the counterparty's checkpoint: a client must not be able to make the log claim an ack.
``watcher.*`` requests carry the watcher's own signature, which the receipt rules verify; a
``watcher.slash`` is written only after the node verified its evidence (:func:`_check_slash`);
``lifecycle`` transitions carry the parties' signatures, which the lifecycle gate verifies against
the corridor's registered keys (``node.lifecycle``)."""


def _check_api_kind(kind: object) -> None:
    if isinstance(kind, str) and kind not in API_KINDS and kind in KNOWN_KINDS:
        raise PeerProtocolError("kind-not-allowed", f"{kind!r} receipts are written by the node itself")


def _check_slash(ctx: ApiContext, corridor_id: str, kind: object, payload: object) -> None:
    """The node verifies a slash's evidence with the corridor's keys and policy before writing it."""
    if kind != "watcher.slash":
        return
    if ctx.evidence is None:
        raise PeerProtocolError("kind-not-allowed", "this node verifies no evidence: it writes no slash")
    if not isinstance(payload, dict):
        raise PeerProtocolError("schema-violation", "a watcher.slash payload must be an object")
    ctx.evidence.verify_slash(corridor_id, payload)


_MAX_QUERY_INT = 2**63 - 1
"""Sizes in query parameters are at most 2**63 - 1 (``maximum`` in schemas/openapi.json); larger is a 400."""


def _int_param(request: Request, name: str, default: int | None = None) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    # isascii: str.isdigit() also holds for "²" (int() refuses it) and "١٢" (int() reads 12).
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > _MAX_QUERY_INT:
        raise PeerProtocolError(
            "bad-request", f"query parameter {name}={text!r} is not a non-negative integer"
        )
    return int(text)


def build_app(ctx: ApiContext) -> Starlette:
    """The Starlette application serving ``ctx``."""

    def authorize(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), ctx.token.encode()):
            raise LocalProtocolError("unauthorized", "a valid bearer token is required")

    def unauthorized(request: Request) -> Response | None:
        """The 401 problem (with ``WWW-Authenticate``) for a request without the bearer token, else None."""
        try:
            authorize(request)
        except LocalProtocolError as exc:
            response = problem(exc.reason, exc.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="sez-node"'
            # The body was not read: the connection cannot carry another request, so say it closes
            # (a keep-alive client would otherwise send its next request into a closing socket).
            response.headers["Connection"] = "close"
            return response
        return None

    async def submit(request: Request) -> Response:
        if (refusal := unauthorized(request)) is not None:
            return refusal
        corridor_id = request.path_params["corridor"]
        writer = ctx.writers.get(corridor_id)
        if writer is None:
            raise LocalProtocolError(
                "unknown-corridor", f"this node writes no log in corridor {corridor_id!r}"
            )
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise PeerProtocolError("unsupported-media-type", "send the transition as application/json")
        body = await _read_body(request)
        item = loads_strict(body, max_bytes=MAX_BODY_BYTES)
        if isinstance(item, dict) and set(item) == {"kind", "payload"}:
            _check_api_kind(item["kind"])
            _check_slash(ctx, corridor_id, item["kind"], item["payload"])
            receipt = await writer.submit(item["kind"], item["payload"])
            return Response(receipt.raw, status_code=201, media_type="application/json")
        if isinstance(item, dict) and set(item) == {"transitions"} and isinstance(item["transitions"], list):
            batch = item["transitions"]
            if not 1 <= len(batch) <= MAX_TRANSITIONS:
                raise PeerProtocolError("bad-request", f"send 1 to {MAX_TRANSITIONS} transitions at once")
            pairs = []
            for index, entry in enumerate(batch):
                if not isinstance(entry, dict) or set(entry) != {"kind", "payload"}:
                    raise PeerProtocolError(
                        "bad-request", f'transition {index} must be {{"kind": …, "payload": {{…}}}}'
                    )
                _check_api_kind(entry["kind"])
                _check_slash(ctx, corridor_id, entry["kind"], entry["payload"])
                pairs.append((entry["kind"], entry["payload"]))
            receipts = await writer.submit_many(pairs)
            payload = b'{"receipts":[' + b",".join(r.raw for r in receipts) + b"]}"
            return Response(payload, status_code=201, media_type="application/json")
        raise PeerProtocolError(
            "bad-request",
            'the body must be {"kind": …, "payload": {…}} or {"transitions": [up to 512 of them]}',
        )

    async def receipt(request: Request) -> Response:
        raw = ctx.store.receipt(request.path_params["origin"], int(request.path_params["sequence"]))
        return Response(raw, media_type="application/json")

    def finality_source() -> FinalitySource:
        if ctx.finality is None:
            raise StoreError("not-found", "this node does not serve quorum finality")
        return ctx.finality

    async def finality(request: Request) -> Response:
        origin = request.path_params["origin"]
        sequence = int(request.path_params["sequence"])
        return JSONResponse(finality_source().receipt_finality(origin, sequence))

    async def watchers(request: Request) -> Response:
        return JSONResponse(finality_source().corridor_watchers(request.path_params["corridor"]))

    def settlement_desk(request: Request) -> SettlementDesk:
        corridor_id = request.path_params["corridor"]
        desk = (ctx.settlements or {}).get(corridor_id)
        if desk is None:
            raise LocalProtocolError("unknown-corridor", f"this node settles no corridor {corridor_id!r}")
        return desk

    async def settle(request: Request) -> Response:
        if (refusal := unauthorized(request)) is not None:
            return refusal
        desk = settlement_desk(request)
        try:
            result = await desk.settle()
        except SezError as exc:  # a refusal keeps its figures: refused_by, differences, windows
            extra = {k: v for k, v in exc.details.items() if k not in ("type", "title", "status", "detail")}
            return problem(exc.reason, exc.message, status=settlement_status(exc.reason), **jsonable(extra))
        return JSONResponse(result, status_code=201)

    async def settlements(request: Request) -> Response:
        return JSONResponse(await settlement_desk(request).settlements())

    async def evidence(request: Request) -> Response:
        if ctx.evidence is None:
            raise StoreError("not-found", "this node keeps no evidence")
        return JSONResponse(ctx.evidence.list_evidence(request.path_params["corridor"]))

    async def trust_policy(request: Request) -> Response:
        if ctx.policy is None:
            raise StoreError("not-found", "this node does not serve trust policies")
        return JSONResponse(ctx.policy.corridor_policy(request.path_params["corridor"]))

    def anchor_source() -> AnchorSource:
        if ctx.anchors is None:
            raise StoreError("not-found", "this node does not serve anchors")
        return ctx.anchors

    async def anchors(request: Request) -> Response:
        return JSONResponse(anchor_source().corridor_anchors(request.path_params["corridor"]))

    async def checkpoint(request: Request) -> Response:
        note = ctx.store.checkpoint(request.path_params["origin"], _int_param(request, "size"))
        return Response(note, media_type="text/plain; charset=utf-8")

    async def proof(request: Request) -> Response:
        origin = request.path_params["origin"]
        index = int(request.path_params["sequence"])
        size = _int_param(request, "size")
        anchored = None
        if request.query_params.get("anchor") in ("1", "true"):
            # Prove against the anchored checkpoint; the anchor record rides in ``extra`` (design §11).
            anchored = anchor_source().covering_anchor(origin, index)
            if anchored is None:
                raise StoreError("not-found", f"no confirmed anchor covers receipt {index} of {origin}")
        note = ctx.store.checkpoint(origin, size) if anchored is None else anchored.checkpoint.encode()
        cp, _ = parse_checkpoint(note)
        if index >= cp.size:
            raise StoreError(
                "bad-index", f"receipt {index} is not covered by the checkpoint at size {cp.size}"
            )
        bundle = TlogProof(
            index=index,
            proof=tuple(ctx.store.inclusion_proof(origin, index, cp.size)),
            checkpoint=note,
            extra=ctx.store.receipt(origin, index)
            if anchored is None
            else join_bundle_extra(ctx.store.receipt(origin, index), anchored),
        )
        return Response(bundle.encode(), media_type="text/plain; charset=utf-8")

    async def consistency(request: Request) -> Response:
        origin = request.path_params["origin"]
        old = _int_param(request, "old")
        if old is None:
            raise PeerProtocolError("bad-request", "query parameter old is required")
        new = _int_param(request, "new", ctx.store.head(origin).size)
        assert new is not None
        hashes = ctx.store.consistency_proof(origin, old, new)
        return JSONResponse(
            {"old": old, "new": new, "hashes": [base64.b64encode(h).decode() for h in hashes]}
        )

    async def status(request: Request) -> Response:
        corridor_id = request.path_params["corridor"]
        return JSONResponse(ctx.status.corridor_status(corridor_id))

    async def lifecycle(request: Request) -> Response:
        return JSONResponse(ctx.status.corridor_lifecycle(request.path_params["corridor"]))

    async def orphans(request: Request) -> Response:
        listing: Callable[[str], dict[str, Any]] | None = getattr(ctx.status, "corridor_orphans", None)
        if listing is None:
            raise StoreError("not-found", "this node keeps no orphaned receipts")
        return JSONResponse(listing(request.path_params["corridor"]))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        text = resources.files("schemas").joinpath("openapi.json").read_text(encoding="utf-8")
        return Response(text, media_type="application/json")

    routes = [
        Route("/v1/corridors/{corridor}/transitions", _guard(submit), methods=["POST"]),
        Route("/v1/corridors/{corridor}/status", _guard(status), methods=["GET"]),
        Route("/v1/corridors/{corridor}/watchers", _guard(watchers), methods=["GET"]),
        Route("/v1/corridors/{corridor}/lifecycle", _guard(lifecycle), methods=["GET"]),
        Route("/v1/corridors/{corridor}/settlements", _guard(settle), methods=["POST"]),
        Route("/v1/corridors/{corridor}/settlements", _guard(settlements), methods=["GET"]),
        Route("/v1/corridors/{corridor}/evidence", _guard(evidence), methods=["GET"]),
        Route("/v1/corridors/{corridor}/policy", _guard(trust_policy), methods=["GET"]),
        Route("/v1/corridors/{corridor}/anchors", _guard(anchors), methods=["GET"]),
        Route("/v1/corridors/{corridor}/orphans", _guard(orphans), methods=["GET"]),
        Route("/v1/logs/{origin:path}/receipts/{sequence:int}/finality", _guard(finality), methods=["GET"]),
        Route("/v1/logs/{origin:path}/receipts/{sequence:int}", _guard(receipt), methods=["GET"]),
        Route("/v1/logs/{origin:path}/checkpoint", _guard(checkpoint), methods=["GET"]),
        Route("/v1/logs/{origin:path}/proof/{sequence:int}", _guard(proof), methods=["GET"]),
        Route("/v1/logs/{origin:path}/consistency", _guard(consistency), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return problem("not-found", f"no route {request.method} {request.url.path}", status=404)

    async def bad_method(request: Request, exc: Exception) -> Response:
        return problem(
            "method-not-allowed", f"{request.method} is not allowed on {request.url.path}", status=405
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error serving %s %s", request.method, request.url.path, exc_info=exc)
        return problem("internal-error", "the node failed to serve this request; see its log", status=500)

    return Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: bad_method, 500: server_error, Exception: server_error},
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise PeerProtocolError("too-large", f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PeerProtocolError("too-large", f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
