"""Operations endpoints: liveness, readiness, Prometheus metrics, process status, OpenAPI, request ids.

Each test runs against a real server (in this process, on a free port) on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import httpx
import trio
from trio_websocket import open_websocket_url

from roost.runtime.health import ActorState
from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server


def samples(metrics_text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in Prometheus text (labels as written, "" for none)."""
    found: dict[str, float] = {}
    for line in metrics_text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0), value
    return parsed


# -- liveness and readiness -----------------------------------------------------------------------


async def test_healthz_is_200_without_auth(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.get("/healthz")

    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_is_200_and_lists_every_actor_running(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.get("/readyz")

    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True
    assert {"http", "keepalive", "pruner"} <= set(body["actors"])
    assert set(body["actors"].values()) == {"running"}


async def test_readyz_is_503_while_an_actor_is_failed_and_healthz_stays_200(
    server: Running, client: httpx.AsyncClient
) -> None:
    health = server.services.health
    health.record_crash("pruner", RuntimeError("disk on fire"))
    health.set_state("pruner", ActorState.FAILED)
    try:
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
        status = await client.get("/api/admin/status")
    finally:
        health.set_state("pruner", ActorState.RUNNING)

    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert ready.json()["actors"]["pruner"] == "failed"
    assert alive.status_code == 200
    pruner = next(a for a in status.json()["actors"] if a["name"] == "pruner")
    assert status.json()["ready"] is False
    assert pruner["state"] == "failed"
    assert pruner["last_error"] == "RuntimeError: disk on fire"
    parse_time(pruner["last_error_at"])


# -- status ---------------------------------------------------------------------------------------


async def test_status_reports_actors_process_queues_and_connected_devices(
    client: httpx.AsyncClient, backend: str
) -> None:
    r = await client.get("/api/admin/status")

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True
    assert body["connected_devices"] == 0
    assert body["process"]["database"] == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    assert body["process"]["pid"] > 0 and body["process"]["id"] and body["process"]["version"]
    assert all(isinstance(depth, int) and depth >= 0 for depth in body["queues"].values())
    actors = {a["name"]: a for a in body["actors"]}
    assert {"http", "keepalive", "pruner"} <= set(actors)
    for actor in actors.values():
        assert set(actor) == {"name", "state", "restarts", "last_error", "last_error_at", "last_tick_at",
                              "started_at", "ticks", "late"}
        assert actor["late"] is False
        assert actor["state"] == "running"
        assert actor["restarts"] == 0
        assert actor["last_error"] is None
        parse_time(actor["started_at"])


async def test_status_shows_a_restart_and_metrics_count_it(server: Running, client: httpx.AsyncClient) -> None:
    server.services.health.record_crash("keepalive", ValueError("boom"))
    server.services.health.record_restart("keepalive")

    status = (await client.get("/api/admin/status")).json()
    metrics = (await client.get("/metrics")).text

    keepalive = next(a for a in status["actors"] if a["name"] == "keepalive")
    assert keepalive["restarts"] == 1
    assert keepalive["last_error"] == "ValueError: boom"
    assert samples(metrics, "roost_actor_restarts_total")['{actor="keepalive"}'] == 1


async def test_status_needs_the_service_token(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.get("/api/admin/status")

    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"


async def test_connected_device_is_counted_in_status_and_metrics(server: Running, client: httpx.AsyncClient) -> None:
    ids = await make_device(client)
    ws_url = server.url.replace("http://", "ws://") + "/ws/device"

    async with open_websocket_url(ws_url) as ws:
        await ws.send_message(json.dumps({"type": "device_hello", "token": ids["token"]}))
        await ws.send_message(json.dumps({"type": "register"}))
        with trio.fail_after(5):
            hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello_ok"

        status = (await client.get("/api/admin/status")).json()
        metrics = (await client.get("/metrics")).text

    assert status["connected_devices"] == 1
    assert samples(metrics, "roost_connected_sockets") == {"": 1.0}


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_is_prometheus_text_without_auth(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.get("/metrics")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    for family, kind in [
        ("roost_http_requests_total", "counter"),
        ("roost_http_request_duration_seconds", "histogram"),
        ("roost_actor_restarts_total", "counter"),
        ("roost_actor_up", "gauge"),
        ("roost_connected_sockets", "gauge"),
    ]:
        assert f"# TYPE {family} {kind}" in r.text, family
    assert samples(r.text, "roost_connected_sockets") == {"": 0.0}
    assert samples(r.text, "roost_actor_up")['{actor="http"}'] == 1.0


async def test_metrics_count_requests_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get("/healthz")
    await client.get("/api/admin/accounts/acc_one")
    await client.get("/api/admin/accounts/acc_two")
    await client.get("/no/such/route")

    text = (await client.get("/metrics")).text

    requests = samples(text, "roost_http_requests_total")
    assert requests['{method="GET",route="/healthz",status="200"}'] == 3
    # one series per route, not per id: the label set stays bounded
    assert requests['{method="GET",route="/api/admin/accounts/<account_id>",status="404"}'] == 2
    assert requests['{method="GET",route="unmatched",status="404"}'] == 1
    assert not any("acc_one" in labels or "/no/such" in labels for labels in requests)


async def test_metrics_record_request_latency(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")

    text = (await client.get("/metrics")).text

    counts = samples(text, "roost_http_request_duration_seconds_count")
    assert counts['{method="GET",route="/healthz"}'] == 1
    buckets = samples(text, "roost_http_request_duration_seconds_bucket")
    assert buckets['{le="+Inf",method="GET",route="/healthz"}'] == 1
    assert samples(text, "roost_http_request_duration_seconds_sum")['{method="GET",route="/healthz"}'] >= 0


# -- OpenAPI --------------------------------------------------------------------------------------


async def test_openapi_document_lists_the_tenancy_and_ops_paths(server: Running) -> None:
    async with admin_client(server.url, token=None) as anonymous:
        r = await anonymous.get("/openapi.json")

    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    expected = {
        "/api/admin/accounts": {"post"},
        "/api/admin/accounts/{account_id}": {"get"},
        "/api/admin/users": {"post", "get"},
        "/api/admin/users/{user_id}": {"get", "patch"},
        "/api/admin/devices": {"post", "get"},
        "/api/admin/devices/{device_id}": {"get", "delete"},
        "/api/admin/status": {"get"},
        "/api/device/me": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert "/metrics" not in paths
    create_user = paths["/api/admin/users"]["post"]
    assert {"201", "400", "401", "404", "409"} <= set(create_user["responses"])
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


# -- request ids ----------------------------------------------------------------------------------


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "trace-abc-123"})

    assert r.headers["x-request-id"] == "trace-abc-123"


async def test_request_id_is_echoed_on_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/admin/users/usr_missing", headers={"X-Request-Id": "r-404"})
    unrouted = await client.get("/nowhere", headers={"X-Request-Id": "r-unrouted"})
    invalid = await client.post("/api/admin/accounts", json={}, headers={"X-Request-Id": "r-400"})

    assert (missing.status_code, missing.headers["x-request-id"]) == (404, "r-404")
    assert (unrouted.status_code, unrouted.headers["x-request-id"]) == (404, "r-unrouted")
    assert (invalid.status_code, invalid.headers["x-request-id"]) == (400, "r-400")


async def test_request_id_is_made_up_when_absent_and_differs_per_request(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_overlong_request_id_is_cut_to_64_characters(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "x" * 300})

    assert r.headers["x-request-id"] == "x" * 64


# -- without a service token -----------------------------------------------------------------------


async def test_server_starts_without_a_service_token_and_says_how_to_set_one(database_url: str) -> None:
    async with running_server(database_url, service_token=None) as running:
        async with admin_client(running.url) as c:
            health = await c.get("/healthz")
            ready = await c.get("/readyz")
            metrics = await c.get("/metrics")
            status = await c.get("/api/admin/status")

    assert (health.status_code, ready.status_code, metrics.status_code) == (200, 200, 200)
    assert status.status_code == 503
    error = status.json()["error"]
    assert error["code"] == "not_configured"
    assert "ROOST_SERVICE_TOKEN" in error["message"]
