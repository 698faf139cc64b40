"""The HTTP API, in process over ASGI: tokens, problem documents, reads that match the store."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import trio

from node.api import MAX_BODY_BYTES, ApiContext, build_app
from node.writer import LogWriter
from protocol import mmr
from protocol.checkpoints import open_checkpoint
from protocol.keys import SigningKey
from protocol.light import verify_receipt_bundle
from protocol.proofs import verify_consistency
from protocol.receipts import Receipt
from store import LogStore

ORIGIN = "sez.gov.pk/corridor/PAK-KSA"
KEY = SigningKey(ORIGIN, bytes(range(32)))
TOKEN = "t" * 43


def transfer(i: int) -> dict[str, Any]:
    return {
        "transfer_id": f"t-{i}",
        "sender": {"entity_id": "a", "jurisdiction": "PAK"},
        "receiver": {"entity_id": "b", "jurisdiction": "SAU"},
        "currency": "PKR",
        "amount": str(10**30 + i),
    }


class FakeStatus:
    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        return {"corridor": corridor_id}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    with LogStore(tmp_path / "data") as store:
        writer = LogWriter(store, "PAK-KSA", KEY)
        app = build_app(
            ApiContext(store=store, writers={"PAK-KSA": writer}, token=TOKEN, status=FakeStatus())
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
                yield http
            nursery.cancel_scope.cancel()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def submit(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/corridors/PAK-KSA/transitions", json=body, headers=AUTH if headers is None else headers
    )


def assert_problem(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:sez:problem:{reason}", body
    assert body["status"] == status
    assert body["detail"]


async def test_submit_then_read_back(client: httpx.AsyncClient) -> None:
    for i in range(5):
        response = await submit(client, {"kind": "transfer", "payload": transfer(i)})
        assert response.status_code == 201, response.text
        receipt = Receipt.from_bytes(response.content)
        assert receipt.sequence == i
    read = await client.get(f"/v1/logs/{ORIGIN}/receipts/3")
    assert read.status_code == 200
    assert Receipt.from_bytes(read.content).sequence == 3

    note = (await client.get(f"/v1/logs/{ORIGIN}/checkpoint")).content
    cp, _ = open_checkpoint(note, KEY.verifier())
    assert cp.size == 5

    bundle = await client.get(f"/v1/logs/{ORIGIN}/proof/2")
    verdict = verify_receipt_bundle(bundle.content, KEY.verifier())
    assert verdict.receipt.receipt.sequence == 2
    # Without an anchor source (anchoring is issue 7's daemon part), anchored proofs and anchors are 404.
    assert (await client.get(f"/v1/logs/{ORIGIN}/proof/2", params={"anchor": "1"})).status_code == 404
    assert (await client.get("/v1/corridors/PAK-KSA/anchors")).status_code == 404

    first = (await client.get(f"/v1/logs/{ORIGIN}/checkpoint", params={"size": 1})).content
    old_cp, _ = open_checkpoint(first, KEY.verifier())
    proof = (await client.get(f"/v1/logs/{ORIGIN}/consistency", params={"old": 1})).json()
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    verify_consistency(1, 5, old_cp.root, cp.root, hashes)
    assert cp.root != mmr.EMPTY_ROOT


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
)
async def test_submit_requires_the_token(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await submit(client, {"kind": "transfer", "payload": transfer(0)}, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert "Bearer" in response.headers["www-authenticate"]
    assert (await client.get(f"/v1/logs/{ORIGIN}/checkpoint")).status_code == 404  # nothing was written


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 422, "bad-json"),
        (b"[]", 400, "bad-request"),
        (b'{"kind":"transfer"}', 400, "bad-request"),
        (b'{"kind":"teleport","payload":{}}', 422, "unknown-kind"),
        (
            json.dumps({"kind": "transfer", "payload": {**transfer(0), "amount": 1.5}}).encode(),
            422,
            "float-refused",
        ),
        (
            json.dumps({"kind": "transfer", "payload": {**transfer(0), "amount": "-1"}}).encode(),
            422,
            "schema-violation",
        ),
        (b'{"kind":"transfer","kind":"ack","payload":{}}', 422, "bad-json"),
        (b"x" * (MAX_BODY_BYTES + 1), 413, "too-large"),
    ],
)
async def test_malformed_bodies_get_problem_documents(
    client: httpx.AsyncClient, body: bytes, status: int, reason: str
) -> None:
    response = await client.post(
        "/v1/corridors/PAK-KSA/transitions",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert_problem(response, status, reason)


async def test_wrong_media_type_and_unknown_corridor(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/corridors/PAK-KSA/transitions", content=b"kind=transfer", headers=AUTH)
    assert_problem(response, 415, "unsupported-media-type")
    response = await client.post(
        "/v1/corridors/PAK-UAE/transitions", json={"kind": "transfer", "payload": {}}, headers=AUTH
    )
    assert_problem(response, 404, "unknown-corridor")


async def test_reads_of_missing_things(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/logs/nowhere/receipts/0"), 404, "unknown-origin")
    await submit(client, {"kind": "transfer", "payload": transfer(0)})
    assert_problem(await client.get(f"/v1/logs/{ORIGIN}/receipts/5"), 404, "bad-index")
    assert_problem(await client.get(f"/v1/logs/{ORIGIN}/checkpoint", params={"size": 7}), 404, "not-found")
    assert_problem(
        await client.get(f"/v1/logs/{ORIGIN}/checkpoint", params={"size": "-1"}), 400, "bad-request"
    )
    assert_problem(await client.get(f"/v1/logs/{ORIGIN}/consistency"), 400, "bad-request")
    assert_problem(await client.get(f"/v1/logs/{ORIGIN}/consistency", params={"old": 5}), 404, "bad-index")
    assert_problem(await client.get("/v1/nothing"), 404, "not-found")
    assert_problem(await client.delete("/healthz"), 405, "method-not-allowed")


async def test_health_metrics_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/corridors/{corridor}/transitions" in spec["paths"]
    problem_schema = spec["components"]["schemas"]["Problem"]
    bad = await client.get("/v1/logs/nowhere/receipts/0")
    jsonschema.validate(bad.json(), problem_schema)


async def test_batch_submit_returns_every_receipt_in_order(client: httpx.AsyncClient) -> None:
    batch = {"transitions": [{"kind": "transfer", "payload": transfer(i)} for i in range(300)]}
    response = await submit(client, batch)
    assert response.status_code == 201, response.text
    receipts = [Receipt.from_bytes(json.dumps(r, separators=(",", ":"), sort_keys=True).encode())
                for r in response.json()["receipts"]]  # fmt: skip
    assert [r.sequence for r in receipts] == list(range(300))
    assert [r.payload["transfer_id"] for r in receipts] == [f"t-{i}" for i in range(300)]
    note = (await client.get(f"/v1/logs/{ORIGIN}/checkpoint")).content
    assert open_checkpoint(note, KEY.verifier())[0].size == 300


BAD_AMOUNT = {**transfer(1), "amount": "x"}


@pytest.mark.parametrize(
    ("transitions", "reason"),
    [
        ([{"kind": "transfer", "payload": transfer(0)}, {"kind": "transfer", "payload": BAD_AMOUNT}],
         "schema-violation"),
        ([{"kind": "transfer", "payload": transfer(0)}, {"kind": "transfer"}], "bad-request"),
        ([], "bad-request"),
        ([{"kind": "transfer", "payload": transfer(i)} for i in range(513)], "bad-request"),
    ],
)  # fmt: skip
async def test_bad_batches_are_refused_whole(
    client: httpx.AsyncClient, transitions: Any, reason: str
) -> None:
    response = await submit(client, {"transitions": transitions})
    assert_problem(response, 422 if reason == "schema-violation" else 400, reason)
    assert_problem(await client.get(f"/v1/logs/{ORIGIN}/checkpoint"), 404, "not-found")  # nothing written
