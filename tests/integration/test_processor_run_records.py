"""Every processor run is kept with its counts (the console's recent runs), and token usage read back
for the console (sums and a per-day series), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import trio

from roost.domain import processors as domain
from roost.domain import usage
from roost.errors import InvalidInput
from roost.plugins.processors import Processor, iter_lines
from roost.runtime import topics
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import processor_runs
from roost.storage import usage as usage_store
from roost.storage.database import Database


class Lines(Processor):
    """One item per line; a file with "boom" in it fails."""

    name = "lines"

    def extract(self, username: str, lines: bytes) -> list[Any]:
        found = list(iter_lines(lines))
        if any(b"boom" in line for line in found):
            raise ValueError("boom line")
        return found


def services_for(db: Database, root: Path, *procs: Processor) -> Services:
    s = Services.build(Settings(session_dir=str(root)), db)
    s._processors = {p.name: p for p in procs}  # type: ignore[attr-defined]
    return s


async def test_scheduled_and_manual_runs_are_kept_with_their_counts_newest_first(db: Database,
                                                                                  tmp_path: Path) -> None:
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    (tmp_path / "ann" / "b.jsonl").write_text('{"boom": 1}\n')
    proc = Lines()
    s = services_for(db, tmp_path, proc)

    with s.bus.subscribe(topics.PROCESSOR_RAN) as ran:
        await domain.run_processor(s, proc)
        await domain.run_now(s, proc, actor="console:ops")
        assert [m.ids for m in ran.take()[0]] == [("lines",), ("lines",)]  # open consoles refresh

    runs = (await domain.recent_runs(s))["lines"]
    assert [r["kind"] for r in runs] == ["manual", "schedule"]
    manual, scheduled = runs
    assert (scheduled["outcome"], scheduled["scanned"], scheduled["processed"], scheduled["failed"],
            scheduled["items"]) == ("ok", 2, 1, 1, 2)
    assert scheduled["bytes_read"] == len('{"a": 1}\n{"b": 2}\n') + len('{"boom": 1}\n')
    assert scheduled["actor"] is None and manual["actor"] == "console:ops"
    assert (manual["processed"], manual["skipped"], manual["failed"]) == (0, 1, 1)  # the failed file is retried
    assert manual["duration_s"] >= 0 and manual["finished_at"] >= manual["started_at"]


async def test_a_run_that_fails_is_kept_with_its_error(db: Database, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "sessions"
    not_a_folder.write_text("a file where the transcript folder should be")
    proc = Lines()
    s = services_for(db, not_a_folder, proc)

    with pytest.raises(Exception) as raised:
        await domain.run_processor(s, proc)

    [run] = (await domain.recent_runs(s))["lines"]
    assert run["outcome"] == "failed" and type(raised.value).__name__ in run["error"]


async def test_each_processor_keeps_only_its_newest_runs(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_runs, "KEEP", 5)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    for i in range(8):
        await trio.sleep(0.002)  # ids are time-ordered by the millisecond; runs are never closer than that
        await processor_runs.record(db, processor="p", kind="schedule", actor=None, started_at=now,
                                    finished_at=now, duration_s=0.1, outcome="ok", counts={"items": i})
    await processor_runs.record(db, processor="other", kind="schedule", actor=None, started_at=now,
                                finished_at=now, duration_s=0.1, outcome="ok", counts={})
    kept = await processor_runs.recent(db, "p", limit=100)
    assert [r["items"] for r in kept] == [7, 6, 5, 4, 3]
    assert len(await processor_runs.recent(db, "other")) == 1


async def test_usage_summary_fills_every_day_and_sums_by_model(db: Database) -> None:
    seen = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    async with db.transaction() as tx:
        await usage_store.record(tx, "ann", [
            usage_store.MessageUsage("m1", "r1", "2026-11-02", "opus", seen, (10, 20, 0, 5)),
            usage_store.MessageUsage("m2", "r2", "2026-11-04", "haiku", seen, (1, 2, 3, 4))])
        await usage_store.record(tx, "bob", [
            usage_store.MessageUsage("m3", "r3", "2026-11-02", "opus", seen, (100, 0, 0, 0))])
    s = Services.build(Settings(), db)

    out = await usage.summary(s, day_from=dt.date(2026, 11, 1), day_to=dt.date(2026, 11, 4))
    ann = await usage.summary(s, day_from=dt.date(2026, 11, 1), day_to=dt.date(2026, 11, 4), user="ann")

    assert [d["day"] for d in out["days"]] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert out["days"][1]["models"]["opus"]["input_tokens"] == 110 and out["days"][0]["models"] == {}
    assert out["totals"] == {"input_tokens": 111, "output_tokens": 22, "cache_creation_input_tokens": 3,
                             "cache_read_input_tokens": 9}
    assert list(out["by_model"]) == ["haiku", "opus"]
    assert ann["totals"]["input_tokens"] == 11
    with pytest.raises(InvalidInput):
        await usage.summary(s, day_from=dt.date(2026, 1, 1), day_to=dt.date(2026, 12, 31))
    with pytest.raises(InvalidInput):
        await usage.summary(s, day_from=dt.date(2026, 11, 5), day_to=dt.date(2026, 11, 4))
    with pytest.raises(InvalidInput):
        await usage.totals(s, cursor="!!not-a-cursor")


async def test_the_usage_view_is_reused_until_a_processor_run_ends(db: Database) -> None:
    seen = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    s = Services.build(Settings(), db)
    days = {"day_from": dt.date(2026, 11, 1), "day_to": dt.date(2026, 11, 3)}

    async def add(message_id: str) -> None:
        async with db.transaction() as tx:
            await usage_store.record(tx, "ann", [
                usage_store.MessageUsage(message_id, "r", "2026-11-02", "opus", seen, (10, 0, 0, 0))])

    await add("m1")
    first = await usage.view(s, **days)
    await add("m2")  # written outside a run: the view does not know yet
    assert (await usage.view(s, **days))["summary"]["totals"]["input_tokens"] == 10
    await processor_runs.record(db, processor="usage", kind="schedule", actor=None, started_at=seen,
                                finished_at=seen, duration_s=0.1, outcome="ok", counts={})
    after = await usage.view(s, **days)
    assert first["summary"]["totals"]["input_tokens"] == 10 and after["summary"]["totals"]["input_tokens"] == 20
    assert [r["input_tokens"] for r in after["page"]["items"]] == [20]
