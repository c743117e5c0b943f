"""Scout runs on both backends with a scripted connector and a clock the test moves.

(Real clock for the database, as STACK-NOTES advises; time is injected through ``Services.clock``.)
"""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any

import pytest

from roost.domain.scouting import expire_proposals, run_scout
from roost.errors import TriageUnavailable
from roost.plugins.classifiers import Classifier, Verdict, classifiers
from roost.plugins.connectors import Connector, Content, Metadata, Ref, SourceConnection, connectors
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import proposals, tenancy
from roost.storage import scouts as repo
from roost.storage.database import open_database
from roost.storage.scouts import NewItem
from tests.support.fixed_clock import FixedClock

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Script:
    """What the scripted source holds: ref -> (sender, subject, body); refs that fail to fetch."""

    def __init__(self) -> None:
        self.mail: dict[str, tuple[str, str, str]] = {}
        self.failing: set[str] = set()
        self.archived: list[str] = []
        self.archive_fails = 0  # so many archive calls raise first
        self.explode: set[str] = set()  # refs whose fetch raises something no plugin declares (a plugin bug)
        self.page = 3


SCRIPT = Script()


class _Connection(SourceConnection):
    async def list_new(self, cursor: str | None) -> tuple[list[NewItem], str | None]:
        after = int(cursor or 0)
        refs = sorted(int(r) for r in SCRIPT.mail if int(r) > after)[: SCRIPT.page]
        return [NewItem(str(r)) for r in refs], str(refs[-1]) if refs else cursor

    async def fetch_content(self, ref: Ref) -> Content:
        if ref.source_msg_ref in SCRIPT.failing:
            raise OSError("connection reset")
        if ref.source_msg_ref in SCRIPT.explode:
            raise ZeroDivisionError("plugin bug")
        sender, subject, body = SCRIPT.mail[ref.source_msg_ref]
        return Content(ref.source_msg_ref, sender, subject, body, body[:20])

    async def fetch_metadata(self, ref: Ref) -> Metadata:
        return Metadata(SCRIPT.mail[ref.source_msg_ref][1], "")

    async def archive(self, ref: Ref) -> None:
        if SCRIPT.archive_fails:
            SCRIPT.archive_fails -= 1
            raise OSError("archive folder busy")
        SCRIPT.archived.append(ref.source_msg_ref)


class ScriptedConnector(Connector):
    name = "scripted"

    @asynccontextmanager
    async def open(self, config: dict[str, Any]):
        yield _Connection()


if "scripted" not in connectors.names():
    connectors.register("scripted", ScriptedConnector)


@pytest.fixture
def script() -> Script:
    SCRIPT.__init__()
    return SCRIPT


async def _setup(db, **scout_fields: Any) -> tuple[Services, dict]:
    clock = FixedClock(T0)
    services = Services.build(Settings(), db, clock)  # type: ignore[arg-type]
    acc = await tenancy.create_account(db, name="A", timezone="UTC", now=T0, actor="t")
    user = await tenancy.create_user(db, account_id=acc["id"], fields={
        "email": "a@example.com", "display_name": "A", "timezone": "UTC", "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None},
        now=T0, actor="t")
    await tenancy.create_device(db, user_id=user["id"], name="phone", now=T0, actor="t")
    fields = {"provider": "scripted", "config": {}, "classifier": "rules",
              "classifier_config": {"spam_patterns": ["(?i)lottery"]}, "poll_interval_s": 60.0, "enabled": True,
              "auto_trash_spam": True, "device_inactivity_pause_days": 7, "ttl_days": 30, "max_failures": 3,
              **scout_fields}
    scout = await repo.create_scout(db, user_id=user["id"], fields=fields, now=T0, actor="t")
    return services, scout


async def _items(db, scout_id: str) -> dict[str, dict]:
    page = await repo.list_items(db, scout_id, status=None, limit=1000, cursor=None)
    return {i["source_msg_ref"]: i for i in page["items"]}


async def test_a_failing_item_is_retried_with_backoff_then_failed_and_never_dropped(db, script):
    services, scout = await _setup(db)
    for i in range(1, 8):
        script.mail[str(i)] = ("x@example.com", f"s{i}", "you won the lottery" if i == 5 else f"hello {i}")
    script.failing = {"2"}
    report = await run_scout(services, scout["id"])
    assert report.listed == 7 and report.queued == 5 and report.discarded == 1 and report.retried == 1
    items = await _items(db, scout["id"])
    # by kind, not with the error's text (which may be the remote side's words)
    assert items["2"]["status"] == "pending" and items["2"]["last_error"].startswith("unreachable:")
    assert items["5"]["status"] == "discarded" and "lottery" in items["5"]["reason"]
    assert items["5"]["archived_at"] is not None and script.archived == ["5"]
    assert (await repo.get_scout(db, scout["id"]))["cursor"] == "7"  # every ref has a row: safe to move on

    # not due yet: nothing retried; after the backoff it is, and at max_failures it is recorded failed
    assert (await run_scout(services, scout["id"])).retried == 0
    services.clock.at += dt.timedelta(seconds=31)
    assert (await run_scout(services, scout["id"])).retried == 1
    services.clock.at += dt.timedelta(seconds=61)
    assert (await run_scout(services, scout["id"])).failed == 1
    item = (await _items(db, scout["id"]))["2"]
    assert item["status"] == "failed" and item["attempts"] == 3 and item["reason"].startswith("unreachable:")


async def test_cursor_never_passes_a_ref_without_a_row_and_refs_are_handled_once(db, script):
    services, scout = await _setup(db)
    for i in range(1, 4):
        script.mail[str(i)] = ("x@example.com", f"s{i}", "hi")
    await run_scout(services, scout["id"])
    # the source lists an old ref again (a cursor reset): the unique constraint ignores it
    await repo.record_refs(db, scout, [NewItem("1"), NewItem("4")], cursor="4", now=T0)
    script.mail["4"] = ("x@example.com", "s4", "hi")
    report = await run_scout(services, scout["id"])
    assert report.queued == 1
    assert sorted(await _items(db, scout["id"])) == ["1", "2", "3", "4"]


async def test_pushed_body_is_erased_in_the_verdict_transaction(db, script):
    services, scout = await _setup(db, provider="push")
    await repo.push_items(db, scout, [NewItem("p1", "Subj", None, "a@b.c", "secret body text")], now=T0)
    assert await db.fetchval("SELECT body FROM scout_items WHERE source_msg_ref = 'p1'") == "secret body text"
    await run_scout(services, scout["id"])
    row = await db.fetchrow("SELECT body, status, raw_snippet FROM scout_items WHERE source_msg_ref = 'p1'")
    assert row == {"body": None, "status": "queued", "raw_snippet": "secret body text"}


async def test_scout_pauses_without_a_recent_device_and_resumes_when_one_is_seen(db, script):
    services, scout = await _setup(db)
    script.mail["1"] = ("x@example.com", "s", "hi")
    services.clock.at += dt.timedelta(days=8)
    report = await run_scout(services, scout["id"])
    assert report.paused and report.listed == 0
    assert (await repo.get_scout(db, scout["id"]))["paused"]
    device = await db.fetchval("SELECT id FROM devices WHERE user_id = $1", scout["user_id"])
    await tenancy.touch_device(db, device, services.clock.now())
    report = await run_scout(services, scout["id"])
    assert not report.paused and report.queued == 1
    assert not (await repo.get_scout(db, scout["id"]))["paused"]


async def test_ttl_expiry_marks_proposals_expired_and_they_are_not_delivered(db, script):
    services, scout = await _setup(db, ttl_days=1)
    script.mail["1"] = ("x@example.com", "s", "hi")
    await run_scout(services, scout["id"])
    later = T0 + dt.timedelta(days=2)
    assert await proposals.backlog_page(db, scout["user_id"], now=later, after="", limit=10) == []
    assert await expire_proposals(services, later) == 1
    assert (await _items(db, scout["id"]))["1"]["status"] == "expired"


async def test_acks_are_per_user_and_idempotent(db, script):
    services, scout = await _setup(db)
    script.mail["1"] = ("x@example.com", "s", "hi")
    await run_scout(services, scout["id"])
    pid = (await _items(db, scout["id"]))["1"]["id"]
    assert await proposals.ack(db, [("usr_other", pid)], now=T0) == {("usr_other", pid)}
    assert (await _items(db, scout["id"]))["1"]["status"] == "queued"
    assert await proposals.ack(db, [(scout["user_id"], pid), (scout["user_id"], pid)], now=T0) == set()
    assert await proposals.ack(db, [(scout["user_id"], pid)], now=T0) == set()
    assert (await _items(db, scout["id"]))["1"]["status"] == "acked"


async def test_one_ack_batch_of_several_users_changes_only_each_users_own_unacked_proposals(db, script):
    services, scout = await _setup(db)
    for i in range(1, 5):
        script.mail[str(i)] = ("x@example.com", f"s{i}", "hi")
    await run_scout(services, scout["id"])
    items = await _items(db, scout["id"])
    p1, p2, p3, p4 = (items[r]["id"] for r in "1234")
    await proposals.mark_delivered(db, [p2, p3], now=T0)
    await proposals.ack(db, [(scout["user_id"], p3)], now=T0)
    me = scout["user_id"]
    batch = [(me, p1), ("usr_other", p4), (me, p2), (me, p3), (me, "prp_missing"), (me, p1), ("usr_other", p1)]
    assert await proposals.ack(db, batch, now=T0) == {("usr_other", p4), (me, "prp_missing"), ("usr_other", p1)}
    items = await _items(db, scout["id"])
    assert [items[r]["status"] for r in "1234"] == ["acked", "acked", "acked", "queued"]
    assert items["2"]["delivered_at"] == T0 and items["1"]["delivered_at"] is None


async def test_delivery_and_ack_writes_find_their_rows_by_primary_key_on_sqlite(sqlite_url):
    """Without ANALYZE, SQLite may plan ``id IN (list) AND status = 'queued'`` on the
    ``(status, expires_at)`` index: a scan of the whole queued backlog for every page delivered."""
    async with open_database(sqlite_url) as db:
        seen: list[str] = []
        db._writer._conn.set_trace_callback(seen.append)
        await proposals.mark_delivered(db, ["prp_a", "prp_b"], now=T0)
        await proposals.ack(db, [("usr_a", "prp_a"), ("usr_b", "prp_b")], now=T0)
        db._writer._conn.set_trace_callback(None)
        updates = [sql for sql in seen if sql.startswith("UPDATE scout_items")]
        assert len(updates) == 3  # one for the page delivered, one per user of the ack batch
        for sql in updates:
            plan = " ".join(row["detail"] for row in db._writer._conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "sqlite_autoindex_scout_items_1 (id=?)" in plan and "scout_items_expiry" not in plan, plan


async def test_a_failed_spam_archive_is_retried_with_the_triage_backoff_then_recorded_failed(db, script):
    services, scout = await _setup(db, max_failures=3)
    script.mail["1"] = ("x@example.com", "s", "you won the lottery")
    script.archive_fails = 99
    report = await run_scout(services, scout["id"])
    assert report.discarded == 1 and report.archived == 0
    item = (await _items(db, scout["id"]))["1"]
    assert item["archive_attempts"] == 1 and item["last_error"].startswith("archive failed: unreachable")
    # the retry is what the scout's next run is due for (30 s), not its poll interval
    assert (await repo.get_scout(db, scout["id"]))["next_run_at"] == T0 + dt.timedelta(seconds=30)

    assert (await run_scout(services, scout["id"])).archived == 0  # not due yet: not tried
    assert (await _items(db, scout["id"]))["1"]["archive_attempts"] == 1
    services.clock.at += dt.timedelta(seconds=30)
    await run_scout(services, scout["id"])
    assert (await _items(db, scout["id"]))["1"]["archive_attempts"] == 2
    services.clock.at += dt.timedelta(seconds=60)
    report = await run_scout(services, scout["id"])
    item = (await _items(db, scout["id"]))["1"]
    assert report.archive_failed == 1 and item["archive_attempts"] == 3
    assert item["archive_failed_at"] == services.clock.at and item["archived_at"] is None
    assert item["last_error"].startswith("archive failed after 3 attempts: unreachable")
    assert "archive folder busy" not in item["last_error"]  # the source's own words stay in the log
    services.clock.at += dt.timedelta(days=1)
    script.archive_fails = 0
    assert (await run_scout(services, scout["id"])).archived == 0  # given up: never tried again
    assert script.archived == []


async def test_an_archive_that_succeeds_on_a_retry_is_archived(db, script):
    services, scout = await _setup(db)
    script.mail["1"] = ("x@example.com", "s", "you won the lottery")
    script.archive_fails = 1
    await run_scout(services, scout["id"])
    services.clock.at += dt.timedelta(seconds=30)
    assert (await run_scout(services, scout["id"])).archived == 1
    item = (await _items(db, scout["id"]))["1"]
    assert item["archived_at"] == services.clock.at and item["archive_failed_at"] is None
    assert script.archived == ["1"]


async def test_a_plugin_bug_fails_the_item_with_its_reason_not_the_run(db, script):
    services, scout = await _setup(db, max_failures=1)
    for i in range(1, 4):
        script.mail[str(i)] = ("x@example.com", f"s{i}", f"hello {i}")
    script.explode = {"2"}
    report = await run_scout(services, scout["id"])
    assert report.error is None and report.queued == 2 and report.failed == 1
    item = (await _items(db, scout["id"]))["2"]
    assert item["status"] == "failed" and item["reason"] == "ZeroDivisionError (details in the log)"


class _Moody(Classifier):
    """Classifies one item at a time (the default batch): a bug on "bug", unavailable on "later"."""

    async def classify(self, config, content):
        if content.subject == "bug":
            raise ZeroDivisionError("classifier bug")
        if content.subject == "later":
            raise TriageUnavailable("model busy")
        return Verdict("relevant", "fine")


if "moody" not in classifiers.names():
    classifiers.register("moody", _Moody)


async def test_classifier_errors_in_a_batch_fail_or_retry_only_their_own_item(db, script):
    services, scout = await _setup(db, classifier="moody", classifier_config={}, max_failures=2)
    for i, subject in enumerate(["ok", "bug", "later", "ok"], start=1):
        script.mail[str(i)] = ("x@example.com", subject, "body")
    report = await run_scout(services, scout["id"])
    assert report.error is None and report.queued == 2 and report.retried == 2
    items = await _items(db, scout["id"])
    assert [items[r]["status"] for r in "1234"] == ["queued", "pending", "pending", "queued"]
    assert items["2"]["last_error"] == "ZeroDivisionError (details in the log)"
    assert items["3"]["last_error"] == "TriageUnavailable: model busy"
    services.clock.at += dt.timedelta(seconds=31)
    report = await run_scout(services, scout["id"])
    assert report.failed == 2
    assert (await _items(db, scout["id"]))["2"]["reason"] == "ZeroDivisionError (details in the log)"


async def test_a_bug_in_roost_during_a_run_is_raised_not_recorded_as_the_scouts_error(db, script, monkeypatch):
    services, scout = await _setup(db)
    script.mail["1"] = ("x@example.com", "s", "hi")

    async def broken(*args, **kwargs):
        raise KeyError("roost bug")

    monkeypatch.setattr(repo, "record_outcomes", broken)
    with pytest.raises(KeyError):
        await run_scout(services, scout["id"])
