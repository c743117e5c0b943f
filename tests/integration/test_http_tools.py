"""``GET /api/v1/tools`` and audited manual runs on a real server, SQLite and PostgreSQL; bad input included."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import trio

from roost.serve import Running
from roost.storage import audit
from tests.support.server import admin_client, running_server
from tests.support.tool_transcripts import Truth, generate_tree


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Truth]:
    root = tmp_path / "sessions"
    return root, generate_tree(root, random.Random(11), users=2, sessions=3, turns=4)


@pytest.fixture
async def server(database_url: str, tree: tuple[Path, Truth]) -> AsyncIterator[Running]:
    async with running_server(database_url, session_dir=str(tree[0]),
                              processor_intervals_s={"usage": 3600.0, "tools": 3600.0}) as running:
        yield running


@pytest.fixture
async def client(server: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(server.url) as c:
        with trio.fail_after(10):  # the scheduled first run
            while True:
                jobs = (await c.get("/api/admin/jobs")).json()["items"]
                if any(j["name"] == "session-processor:tools" and j["runs"] >= 1 for j in jobs):
                    break
                await trio.sleep(0.02)
        yield c


async def all_rows(client: httpx.AsyncClient, **params: Any) -> dict[tuple[str, str, str], tuple[int, int]]:
    rows: dict[tuple[str, str, str], tuple[int, int]] = {}
    cursor = None
    while True:
        r = await client.get("/api/v1/tools", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        for item in body["items"]:
            assert set(item) == {"user", "day", "tool", "calls", "failed"}
            rows[(item["day"], item["user"], item["tool"])] = (item["calls"], item["failed"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


async def test_tools_lists_the_trees_counts_in_pages_and_filters_them(
    client: httpx.AsyncClient, tree: tuple[Path, Truth]
) -> None:
    expected = tree[1].totals()
    assert await all_rows(client, limit=1000) == expected
    assert await all_rows(client, limit=1) == expected  # cursors carrying long tool names
    assert await all_rows(client, user="user1") == {k: v for k, v in expected.items() if k[1] == "user1"}
    days = sorted({k[0] for k in expected})
    first, last = days[1], days[-2]
    assert await all_rows(client, **{"from": first, "to": last}) == {
        k: v for k, v in expected.items() if first <= k[0] <= last}
    assert await all_rows(client, **{"from": days[-1], "to": days[-1]}) == {
        k: v for k, v in expected.items() if k[0] == days[-1]}


async def test_an_unknown_user_or_an_empty_range_is_an_empty_list(client: httpx.AsyncClient) -> None:
    for params in ({"user": "nobody"}, {"from": "1999-01-01", "to": "1999-12-31"}, {"user": "ü'; DROP TABLE x"}):
        r = await client.get("/api/v1/tools", params=params)
        assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}, r.text


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("params", [
    {"from": "yesterday"}, {"from": "0"}, {"to": "2025-13-01"}, {"to": "2025-02-30"}, {"from": "20250601"},
    {"from": "2025-06-01T00:00:00"}, {"from": "2025-6-1"}, {"from": "2025-06-02", "to": "2025-06-01"},
    {"from": "2025-06-01\x00"}, {"from": "９９９９-01-01"},
    {"limit": 0}, {"limit": -1}, {"limit": 1001}, {"limit": "ten"}, {"limit": "1e3"}, {"limit": "9" * 400},
    {"cursor": "not-a-cursor"}, {"cursor": b64(b"[1,2,3]")}, {"cursor": b64(b'["a","b"]')}, {"cursor": b64(b"{}")},
    {"cursor": b64(b"\xff\xfe")}, {"cursor": "x" * 5000}, {"cursor": "%%%"}, {"cursor": "a\x00b"},
    {"cursor": b64(b'["2025-06-01","a","b\\u0000"]')},
    {"user": ""}, {"user": "a\x00b"}, {"user": "u" * 201},
])
async def test_tools_refuses_bad_queries_with_a_clear_400(client: httpx.AsyncClient, params: dict) -> None:
    r = await client.get("/api/v1/tools", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] in ("validation_failed", "bad_cursor") and error["message"]
    assert "sqlite" not in r.text.lower() and "asyncpg" not in r.text.lower()


async def test_a_huge_query_is_refused_not_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/tools", params={"user": "u" * 60_000, "cursor": "c" * 4_000})
    assert r.status_code in (400, 414, 431), r.text


async def test_tools_needs_the_service_token(server: Running) -> None:
    async with admin_client(server.url, token="wrong") as bad:
        assert (await bad.get("/api/v1/tools")).status_code == 401


async def test_the_openapi_document_says_from_and_to_are_dates(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/tools"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    for name in ("from", "to"):
        schema = params[name]["schema"]
        assert any(s.get("format") == "date" for s in [schema, *schema.get("anyOf", [])]), schema
    assert operation.get("summary") or operation.get("description")


async def test_a_manual_run_is_in_the_audit_log_under_the_tokens_name(server: Running,
                                                                       client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/run-session-processor", params={"processor": "tools"})
    assert r.status_code == 200, r.text
    async with server.services.locks.hold("processor:tools"):
        assert (await client.post("/api/admin/run-session-processor", params={"processor": "tools"})).status_code == 409
    rows = [r for r in await audit.list_entries(server.services.db) if r["action"] == "processor.run"]
    assert len(rows) == 1  # the refused run is not a run
    row = rows[0]
    assert (row["actor"], row["target_type"], row["target_id"]) == ("service:default", "processor", "tools")
    details = row["details"]
    assert details["outcome"] == "ok" and details["skipped"] == 6 and details["user"] is None
