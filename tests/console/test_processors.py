"""The session processors page: schedules, recent runs, run now (a 409 as a message), token usage with
totals and an SVG chart; the read role may look but not run; bad filters are a 400, never a 500."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from roost.storage import audit
from roost.storage import usage as usage_store

pytestmark = pytest.mark.timeout(30)
NEVER = "0 0 1 1 *"  # once a year: no scheduled run starts during a test


@pytest.fixture
def console_overrides(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "s.jsonl").write_text(
        '{"type": "assistant", "timestamp": "2026-12-01T10:00:00Z", "requestId": "r1", "message": {"id": "m1",'
        ' "model": "claude-opus", "usage": {"input_tokens": 7, "output_tokens": 3}}}\n')
    return {"session_dir": str(tmp_path), "processor_crons": {"usage": NEVER, "tools": NEVER}}


async def seed_usage(db, days: int = 3) -> None:
    today = dt.datetime.now(dt.UTC)
    async with db.transaction() as tx:
        for i in range(days):
            day = (today - dt.timedelta(days=i)).date().isoformat()
            await usage_store.record(tx, "bob", [
                usage_store.MessageUsage(f"m{i}", "r", day, "opus", today, (100 * (i + 1), 10, 0, 0)),
                usage_store.MessageUsage(f"h{i}", "r", day, "<b>haiku</b>", today, (5, 5, 0, 0))])


def flash_of(response) -> str:
    """The message a console action flashed (its signed cookie's payload)."""
    cookie = unquote(response.headers.get("set-cookie", ""))
    body = cookie.split("roost_console_flash=", 1)[1].split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["m"]


async def test_the_page_shows_each_processor_its_schedule_and_usage_with_a_chart(console, console_server):
    await seed_usage(console_server.services.db)
    client = await console("read")

    r = await client.get("/console/processors")

    assert r.status_code == 200
    for text in ("usage", "tools", "cron <code>0 0 1 1 *</code>", "No run recorded yet", "<svg", 'role="img"',
                 "All models", "bob", "&lt;b&gt;haiku&lt;/b&gt;", "Tokens per day"):
        assert text in r.text, text
    assert "<b>haiku</b>" not in r.text  # a model name is text, never markup
    assert "<strong>615</strong>" in r.text  # input: opus 100 + 200 + 300, haiku 3 x 5
    fragment = await client.get("/console/processors", params={"fragment": "procs"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "Schedules and recent runs" in fragment.text


async def test_run_now_runs_the_processor_records_the_run_and_audits_it(console, console_server):
    client = await console()

    r = await client.act("/console/processors/usage/run", back="/console/processors")

    assert r.status_code == 303 and r.headers["location"] == "/console/processors"
    assert "usage ran: 1 files scanned, 1 processed" in flash_of(r)
    page = await client.get("/console/processors")
    assert "console:ops" in page.text and "usage ran" in page.text  # the run's row, and the flash shown once
    db = console_server.services.db
    [run] = await db.fetch("SELECT * FROM processor_runs WHERE processor = 'usage'")
    assert (run["kind"], run["actor"], run["outcome"], run["processed"]) == ("manual", "console:ops", "ok", 1)
    actions = {(e["action"], e["actor"]) for e in await audit.list_entries(db, target_id="usage")}
    assert ("console.processor_run", "console:ops") in actions and ("processor.run", "console:ops") in actions


async def test_run_now_while_a_run_holds_the_lock_is_a_message_not_an_error_page(console, console_server):
    client = await console()
    async with console_server.services.locks.hold("processor:usage"):
        r = await client.act("/console/processors/usage/run", back="/console/processors")
    assert r.status_code == 303 and "already running" in flash_of(r)
    page = await client.get("/console/processors")
    assert page.status_code == 200 and "already running" in page.text and 'role="alert"' in page.text


async def test_the_read_role_and_a_missing_csrf_may_not_run_a_processor(console, console_server):
    reader = await console("read")
    assert (await reader.act("/console/processors/usage/run")).status_code == 403
    operator = await console()
    assert (await operator.post("/console/processors/usage/run", data={})).status_code == 403
    assert (await operator.post("/console/processors/usage/run", data={"csrf": "x" * 10_000})).status_code == 403
    assert await console_server.services.db.fetchval("SELECT COUNT(*) FROM processor_runs") == 0


async def test_an_unknown_or_hostile_processor_name_is_a_404(console):
    client = await console()
    for name in ("nope", "a" * 5000, "usage%00", "..%2F..%2Fetc", "%3Cscript%3E", "use%20age"):
        r = await client.act(f"/console/processors/{name}/run")
        assert r.status_code == 404, (name, r.text)
        assert "Traceback" not in r.text


async def test_a_bad_usage_filter_is_a_400_page(console):
    client = await console("read")
    for params in ({"from": "2026-13-01"}, {"to": "yesterday"}, {"from": "2026-12-05", "to": "2026-12-01"},
                   {"from": "2020-01-01", "to": "2026-01-01"}, {"user": "u" * 201}, {"user": "a\x00b"},
                   {"cursor": "!!"}, {"cursor": "A" * 5000}, {"from": "٢٠٢٦-١٢-٠١"}, {"from": "0000-01-01"}):
        r = await client.get("/console/processors", params=params)
        assert r.status_code == 400, (params, r.status_code, r.text[:300])
        assert "<html" in r.text and "Traceback" not in r.text


async def test_usage_rows_page_on_with_a_cursor(console, console_server):
    await seed_usage(console_server.services.db, days=30)
    client = await console("read")
    today = dt.datetime.now(dt.UTC).date()
    params = {"from": (today - dt.timedelta(days=29)).isoformat(), "to": today.isoformat()}
    first = await client.get("/console/processors", params=params)
    assert first.status_code == 200 and 'rel="next"' in first.text
    link = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = await client.get(link)
    assert second.status_code == 200 and "First page" in second.text
