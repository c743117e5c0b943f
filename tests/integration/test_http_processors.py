"""Session processor, jobs and usage endpoints on a real server, SQLite and PostgreSQL; bad input included."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import trio

from roost.serve import Running
from tests.support.server import admin_client, running_server
from tests.support.transcripts import generate_session

START = dt.datetime(2025, 6, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def session_root(tmp_path: Path) -> Path:
    rng = random.Random(3)
    for user, start in (("ann", START), ("bob", START + dt.timedelta(days=2))):
        path = tmp_path / "sessions" / user / "s1.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(generate_session(rng, start=start, turns=4).text())
    return tmp_path / "sessions"


@pytest.fixture
async def server(database_url: str, session_root: Path) -> AsyncIterator[Running]:
    async with running_server(database_url, session_dir=str(session_root),
                              processor_intervals_s={"usage": 3600.0}) as running:
        yield running


@pytest.fixture
async def client(server: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(server.url) as c:
        with trio.fail_after(10):  # the scheduled first run, so the tests below start from a quiet processor
            while True:
                jobs = (await c.get("/api/admin/jobs")).json()["items"]
                if any(j["name"] == "session-processor:usage" and j["runs"] >= 1 for j in jobs):
                    break
                await trio.sleep(0.02)
        yield c


async def test_run_now_answers_counts_and_a_rerun_skips_everything(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/admin/run-session-processor", params={"processor": "usage"})

    assert r.status_code == 200, r.text
    assert r.json() == {"scanned": 2, "processed": 0, "skipped": 2, "failed": 0}


async def test_run_is_409_while_a_run_holds_the_lock_and_200_after(server: Running, client: httpx.AsyncClient) -> None:
    async with server.services.locks.hold("processor:usage"):
        r = await client.post("/api/admin/run-session-processor", params={"processor": "usage"})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "already_running"
    r = await client.post("/api/admin/run-session-processor", params={"processor": "usage"})
    assert r.status_code == 200


@pytest.mark.parametrize("params, status", [
    ({"processor": "nope"}, 404),
    ({}, 400),
    ({"processor": ""}, 400),
    ({"processor": "x" * 101}, 400),
    ({"processor": "us\x00age"}, 400),
])
async def test_run_refuses_unknown_and_malformed_names(client: httpx.AsyncClient, params: dict, status: int) -> None:
    r = await client.post("/api/admin/run-session-processor", params=params)
    assert r.status_code == status, r.text
    assert "error" in r.json()


async def test_admin_routes_need_the_service_token(server: Running) -> None:
    async with admin_client(server.url, token="wrong") as bad:
        for method, path in [("POST", "/api/admin/run-session-processor?processor=usage"),
                             ("GET", "/api/admin/session-processors"), ("GET", "/api/admin/jobs"),
                             ("GET", "/api/v1/usage")]:
            assert (await bad.request(method, path)).status_code == 401


async def test_jobs_and_processors_show_status_and_late(server: Running, client: httpx.AsyncClient) -> None:
    jobs = (await client.get("/api/admin/jobs")).json()["items"]
    job = next(j for j in jobs if j["name"] == "session-processor:usage")
    assert job["last_status"] == "ok" and job["interval_s"] == 3600 and job["late"] is False
    assert job["last_duration_s"] >= 0 and job["last_error"] is None

    procs = (await client.get("/api/admin/session-processors")).json()["items"]
    assert [p["name"] for p in procs] == ["tools", "usage"]
    assert procs[1]["files"] == 2 and procs[1]["items_extracted"] > 0
    assert procs[1]["last_result"]["processed"] == 2

    # Make the last success look old: late in /readyz, /api/admin/status and the processor list.
    from roost.runtime.jobs import job_board

    status = job_board(server.services).jobs["session-processor:usage"]
    status.last_success_at = server.services.clock.now() - dt.timedelta(hours=2)
    ready = (await client.get("/readyz")).json()
    assert ready["late"] == ["session:usage"]
    actors = {a["name"]: a for a in (await client.get("/api/admin/status")).json()["actors"]}
    assert actors["session:usage"]["late"] is True and actors["pruner"]["late"] is False
    assert (await client.get("/api/admin/session-processors")).json()["items"][1]["late"] is True


async def test_usage_lists_totals_filters_and_pages(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/api/v1/usage")).json()
    assert everything["next_cursor"] is None
    users = {row["user"] for row in everything["items"]}
    assert users == {"ann", "bob"}
    assert all(row["output_tokens"] > 0 for row in everything["items"])

    ann = (await client.get("/api/v1/usage", params={"user": "ann"})).json()["items"]
    assert ann and {r["user"] for r in ann} == {"ann"}
    late_days = (await client.get("/api/v1/usage", params={"from": "2025-06-03", "to": "2025-06-30"})).json()
    assert {r["user"] for r in late_days["items"]} == {"bob"}

    pages, cursor = [], None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/v1/usage", params=params)).json()
        pages.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == everything["items"]


@pytest.mark.parametrize("params", [
    {"from": "yesterday"}, {"to": "2025-13-01"}, {"from": "2025-06-02", "to": "2025-06-01"},
    {"limit": 0}, {"limit": 1001}, {"cursor": "not-a-cursor"}, {"cursor": "WzEsMiwzXQ"}, {"user": ""},
    {"user": "a\x00b"},
])
async def test_usage_refuses_bad_queries(client: httpx.AsyncClient, params: dict) -> None:
    r = await client.get("/api/v1/usage", params=params)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


async def test_a_processor_on_a_cron_expression_waits_for_its_time_and_shows_it(
    database_url: str, session_root: Path
) -> None:
    async with running_server(database_url, session_dir=str(session_root),
                              processor_crons={"usage": "0 3 * * *"}) as running, admin_client(running.url) as c:
        jobs = (await c.get("/api/admin/jobs")).json()["items"]
        job = next(j for j in jobs if j["name"] == "session-processor:usage")
        assert job["cron"] == "0 3 * * *" and job["interval_s"] is None
        assert job["runs"] == 0  # no run at start: the first is at the next 03:00 UTC
        next_run = dt.datetime.fromisoformat(job["next_run_at"])
        assert (next_run.hour, next_run.minute) == (3, 0) and next_run > running.services.clock.now()
        procs = (await c.get("/api/admin/session-processors")).json()["items"]
        usage = next(p for p in procs if p["name"] == "usage")
        assert usage["cron"] == "0 3 * * *" and usage["interval_s"] is None and usage["late"] is False
        ran = await c.post("/api/admin/run-session-processor", params={"processor": "usage"})
        assert ran.status_code == 200 and ran.json()["processed"] == 2  # a manual run needs no schedule
