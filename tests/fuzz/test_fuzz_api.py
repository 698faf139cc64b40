"""schemathesis against the node's HTTP API, in process: the real app around a real LMDB store.

schemathesis reads the OpenAPI document the app serves (``/openapi.json``, i.e. ``schemas/openapi.json``)
and, for every operation, sends requests generated from it (valid and invalid parameters and bodies,
with and without the bearer token). Its checks: no 5xx, status codes, content types, headers and
bodies as the document says, auth enforced where declared. Afterwards the server must still serve.
The same run against a real ``sez-node run`` process is in ``tests/integration/test_api_fuzz_process.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import given, settings

from tests.fuzz.mutations import FUZZ
from tests.fuzz.served_api import ServedApi, served_api, transfer

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with served_api(tmp_path_factory.mktemp("api") / "data") as served:
        yield served


DOCUMENT = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"
OPERATIONS = {
    result.ok().label: result.ok() for result in schemathesis.openapi.from_path(DOCUMENT).get_all_operations()
}
"""Collected from the file so each operation is its own test; the served copy must be the same document."""

API_FUZZ = settings(FUZZ, max_examples=25 if FUZZ.max_examples < 100 else 500)


def test_the_served_document_is_the_file(api: ServedApi) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        assert http.get("/openapi.json").json() == json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert len(OPERATIONS) >= 15


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_conforms_to_the_document(label: str, api: ServedApi) -> None:
    operation = OPERATIONS[label]

    @API_FUZZ
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"})

    run()


def test_the_server_still_serves_afterwards(api: ServedApi) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get(f"/v1/logs/{api.origin}/receipts/0").status_code == 200


# ------------------------------------------------------------------------------------------ the token

WRITE_ROUTES = sorted(
    (method.upper(), path)
    for path, item in json.loads(DOCUMENT.read_text(encoding="utf-8"))["paths"].items()
    for method, operation in item.items()
    if method in ("post", "put", "patch", "delete")
)
BAD_AUTH = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {'t' * 42}"},
    {"Authorization": f"Bearer {'t' * 44}"},
    {"Authorization": f"Basic {'t' * 43}"},
    {"Authorization": "t" * 43},
    {"Authorization": f"Bearer  {'t' * 43}"},
    {"Authorization": f"Bearer {'T' * 43}"},
]


def test_every_write_route_is_declared_as_needing_the_token() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert WRITE_ROUTES, "the document lists no write route"
    for method, path in WRITE_ROUTES:
        assert document["paths"][path][method.lower()].get("security") == [{"bearer": []}], (method, path)
        assert "401" in document["paths"][path][method.lower()]["responses"], (method, path)


@pytest.mark.parametrize("headers", BAD_AUTH, ids=lambda h: repr(h.get("Authorization", "<none>"))[:20])
@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES, ids=[f"{m} {p}" for m, p in WRITE_ROUTES])
def test_every_write_route_refuses_a_missing_or_wrong_token(
    api: ServedApi, method: str, path: str, headers: dict[str, str]
) -> None:
    body = {"kind": "transfer", "payload": transfer(99)}
    with httpx.Client(base_url=api.url, timeout=10) as http:
        before = http.get(f"/v1/logs/{api.origin}/checkpoint").content
        response = http.request(method, path.replace("{corridor}", "PAK-KSA"), json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["type"] == "urn:sez:problem:unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["connection"] == "close"  # the unread body: the next request needs a new one
        assert http.get(f"/v1/logs/{api.origin}/checkpoint").content == before  # nothing was written


@pytest.mark.parametrize("text", ["²", "١٢", "-1", "1.0", "0x10", " 1", "9223372036854775808", "1" * 20])
def test_size_parameters_that_are_not_plain_u63_are_a_400(api: ServedApi, text: str) -> None:
    """str.isdigit() holds for "²", which int() refuses: that used to be a 500."""
    with httpx.Client(base_url=api.url, timeout=10) as http:
        for path in ("checkpoint", "consistency", "proof/0"):
            params = {"old": text} if path == "consistency" else {"size": text}
            response = http.get(f"/v1/logs/{api.origin}/{path}", params=params)
            assert response.status_code == 400, (path, text, response.text)
            assert response.json()["type"] == "urn:sez:problem:bad-request"
