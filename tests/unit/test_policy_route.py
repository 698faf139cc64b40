"""``GET /v1/corridors/{corridor}/policy``: served from the daemon's policy source, 404 without one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.api import ApiContext, build_app
from protocol.errors import LocalProtocolError
from protocol.policy import TrustPolicy
from store import LogStore
from tests.light_fixture import Corridor

POLICY = Corridor(n=1, watchers=3).policy()


class Status:
    def corridor_status(self, corridor_id: str) -> dict[str, Any]:
        return {}


class Policies:
    def corridor_policy(self, corridor_id: str) -> dict[str, Any]:
        if corridor_id != "PAK-KSA":
            raise LocalProtocolError("unknown-corridor", f"not a party to corridor {corridor_id!r}")
        return POLICY.to_json_value()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with LogStore(tmp_path / "data") as opened:
        yield opened


def _client(store: LogStore, policy: Policies | None) -> httpx.AsyncClient:
    app = build_app(ApiContext(store=store, writers={}, token="t", status=Status(), policy=policy))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")


async def test_policy_route_serves_the_policy(store: LogStore) -> None:
    async with _client(store, Policies()) as client:
        answer = await client.get("/v1/corridors/PAK-KSA/policy")
        assert answer.status_code == 200
        assert TrustPolicy.from_json(answer.content).to_json() == POLICY.to_json()
        missing = await client.get("/v1/corridors/PAK-UAE/policy")
        assert missing.status_code == 404
        assert missing.json()["type"] == "urn:sez:problem:unknown-corridor"
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/corridors/{corridor}/policy" in spec["paths"]


async def test_policy_route_without_a_source_is_404(store: LogStore) -> None:
    async with _client(store, None) as client:
        answer = await client.get("/v1/corridors/PAK-KSA/policy")
        assert answer.status_code == 404
        assert answer.json()["type"] == "urn:sez:problem:not-found"
