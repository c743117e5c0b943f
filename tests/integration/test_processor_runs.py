"""Session runners over real files, on SQLite and PostgreSQL: precheck, hash-once, append, rewrite, failures, usage."""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from roost.actors.processors import ProcessorRunner
from roost.domain.processors import job_name, run_now, run_processor
from roost.errors import AlreadyRunning
from roost.plugins.processors import Processor, iter_lines
from roost.plugins.processors.usage import UsageProcessor
from roost.runtime.actor import ActorContext
from roost.runtime.config import Settings
from roost.runtime.jobs import job_board
from roost.runtime.services import Services
from roost.storage import usage as usage_store
from roost.storage.database import Database
from tests.support.transcripts import COUNTERS, expected_totals, generate_session, resumed

START = dt.datetime(2025, 6, 1, 9, 0, tzinfo=dt.UTC)


class LineCounter(Processor):
    """Records every line it is handed, and fails on files whose lines say "boom"."""

    name = "lines"

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def extract(self, username: str, lines: bytes) -> list[Any]:
        found = list(iter_lines(lines))
        if any(b"boom" in line for line in found):
            raise ValueError("boom line")
        self.seen.extend(found)
        return found


def services_for(db: Database, root: Path) -> Services:
    return Services.build(Settings(session_dir=str(root)), db)


def write(path: Path, text: str, mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


async def usage_totals(db: Database, user: str | None = None) -> dict[tuple[str, str], dict[str, int]]:
    page = await usage_store.totals(db, user=user, limit=1000)
    return {(r["day"], r["model"]): {c: r[c] for c in COUNTERS} for r in page["items"]}


async def test_unchanged_files_are_skipped_by_stat_alone(db: Database, tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path / "ann" / f"s{i}.jsonl", '{"a": 1}\n{"b": 2}\n')
    s, proc = services_for(db, tmp_path), LineCounter()

    first = await run_processor(s, proc)
    second = await run_processor(s, proc)

    assert (first.scanned, first.processed, first.skipped, first.failed) == (5, 5, 0, 0)
    assert (second.scanned, second.processed, second.skipped, second.failed) == (5, 0, 5, 0)
    assert second.bytes_read == 0
    assert len(proc.seen) == 10


async def test_states_of_more_files_than_one_statement_holds_are_all_stored(db: Database, tmp_path: Path) -> None:
    # 1,234 files: two read batches (1,000 + 234), the first stored as two 500-row statements, the
    # second as one shorter statement; a later change at each boundary is stored over the old row.
    names = [f"s{i:04d}.jsonl" for i in range(1234)]
    for name in names:
        write(tmp_path / "ann" / name, f'{{"n": "{name}"}}\n')
    s, proc = services_for(db, tmp_path), LineCounter()

    first = await run_processor(s, proc)
    for name in (names[0], names[499], names[500], names[999], names[1000], names[-1]):
        write(tmp_path / "ann" / name, '{"more": 1}\n', mode="a")
    grown = await run_processor(s, proc)
    last = await run_processor(s, proc)

    assert (first.processed, first.failed) == (1234, 0)
    assert (grown.processed, grown.skipped, grown.failed) == (6, 1228, 0)
    assert (last.processed, last.skipped, last.bytes_read) == (0, 1234, 0)
    assert len(proc.seen) == 1234 + 6
    row = await db.fetchrow("SELECT COUNT(*) AS n, SUM(items_extracted) AS items FROM session_processor_state "
                            "WHERE processor_name = $1", proc.name)
    assert row is not None and (int(row["n"]), int(row["items"])) == (1234, 1240)


async def test_touched_identical_file_is_hashed_once_then_not_again(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "ann" / "s.jsonl"
    write(path, '{"a": 1}\n' * 100)
    s, proc = services_for(db, tmp_path), LineCounter()
    await run_processor(s, proc)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    touched = await run_processor(s, proc)
    after = await run_processor(s, proc)

    assert (touched.processed, touched.skipped) == (0, 1)
    assert touched.bytes_read == st.st_size  # hashed once
    assert after.bytes_read == 0  # and recorded: not hashed again
    assert len(proc.seen) == 100


async def test_appended_lines_alone_are_processed(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "ann" / "s.jsonl"
    write(path, "".join(f'{{"n": {i}, "pad": "{"x" * 500}"}}\n' for i in range(1000)))
    s, proc = services_for(db, tmp_path), LineCounter()
    await run_processor(s, proc)
    write(path, '{"n": "new"}\n', "a")

    grown = await run_processor(s, proc)

    assert (grown.processed, grown.failed) == (1, 0)
    assert proc.seen[-1] == b'{"n": "new"}' and len(proc.seen) == 1001
    assert grown.bytes_read < 300 * 1024  # bounded probe + the new bytes, not the 500 KB file


async def test_trailing_partial_line_waits_for_its_end(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "ann" / "s.jsonl"
    write(path, '{"a": 1}\n{"b": ')
    s, proc = services_for(db, tmp_path), LineCounter()

    first = await run_processor(s, proc)
    write(path, '2}\n', "a")
    second = await run_processor(s, proc)

    assert first.failed == 0 and proc.seen[0] == b'{"a": 1}'
    assert second.failed == 0 and proc.seen[1:] == [b'{"b": 2}']


async def test_rewritten_and_truncated_files_are_processed_from_the_start(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "ann" / "s.jsonl"
    write(path, '{"v": 1}\n{"v": 2}\n')
    s, proc = services_for(db, tmp_path), LineCounter()
    await run_processor(s, proc)

    write(path, '{"w": 1}\n{"w": 2}\n{"w": 3}\n')  # rewritten and grown: the probe catches it
    rewritten = await run_processor(s, proc)
    write(path, '{"t": 1}\n')  # truncated
    truncated = await run_processor(s, proc)
    write(path, '{"u": 1}\n')  # same size, new content
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))
    same_size = await run_processor(s, proc)

    assert rewritten.processed == truncated.processed == same_size.processed == 1
    assert proc.seen[2:] == [b'{"w": 1}', b'{"w": 2}', b'{"w": 3}', b'{"t": 1}', b'{"u": 1}']


async def test_one_failing_file_is_counted_and_retried_while_others_go_on(db: Database, tmp_path: Path) -> None:
    write(tmp_path / "ann" / "good.jsonl", '{"ok": 1}\n')
    write(tmp_path / "bob" / "bad.jsonl", '{"boom": 1}\n')
    write(tmp_path / "bob" / "good.jsonl", '{"ok": 2}\n')
    s, proc = services_for(db, tmp_path), LineCounter()

    first = await run_processor(s, proc)
    again = await run_processor(s, proc)
    write(tmp_path / "bob" / "bad.jsonl", '{"fixed": 1}\n')
    fixed = await run_processor(s, proc)

    assert (first.processed, first.failed) == (2, 1)
    assert (again.processed, again.skipped, again.failed) == (0, 2, 1)  # retried, not recorded as done
    assert (fixed.processed, fixed.failed) == (1, 0)


async def test_lock_gives_409_while_held_and_is_released_after_an_exception(db: Database, tmp_path: Path) -> None:
    write(tmp_path / "ann" / "s.jsonl", '{"a": 1}\n')
    s, proc = services_for(db, tmp_path), LineCounter()

    async with s.locks.hold("processor:lines"):
        with pytest.raises(AlreadyRunning):
            await run_now(s, proc, actor="cli")

    class Exploding(LineCounter):
        async def store(self, conn: Any, username: str, items: list[Any]) -> None:
            raise RuntimeError("database went away")

    broken = Exploding()
    result = await run_processor(s, broken)  # store failure: the file fails, the run ends normally
    assert result.failed == 1

    async def crash(*args: Any) -> None:
        raise RuntimeError("scan crashed")

    import roost.domain.processors as runner_module

    original = runner_module.state_store.fingerprints
    runner_module.state_store.fingerprints = crash  # type: ignore[assignment]
    try:
        with pytest.raises(RuntimeError):
            await run_now(s, proc, actor="cli")
    finally:
        runner_module.state_store.fingerprints = original  # type: ignore[assignment]
    ok = await run_now(s, proc, actor="cli")  # the lock was released by the crash
    assert ok.processed == 1


async def test_usage_counts_each_message_once_with_the_largest_counters(db: Database, tmp_path: Path) -> None:
    rng = random.Random(7)
    a = generate_session(rng, start=START, turns=8)
    b = resumed(rng, a, start=START + dt.timedelta(hours=20), turns=4)  # copies a's messages, same ids
    c = generate_session(rng, start=START + dt.timedelta(days=1, hours=23), turns=5)  # crosses midnight
    write(tmp_path / "ann" / "a.jsonl", a.text())
    write(tmp_path / "ann" / "b.jsonl", b.text())
    # Split c mid-message: the first run sees only part of a message's lines (and half a line).
    text = c.text()
    cut = text.index('"output_tokens"', len(text) // 2)
    write(tmp_path / "ann" / "c.jsonl", text[:cut])
    write(tmp_path / "bob" / "a.jsonl", a.text())  # another user: counted for bob separately
    s = services_for(db, tmp_path)

    first = await run_processor(s, UsageProcessor())
    write(tmp_path / "ann" / "c.jsonl", text[cut:], "a")
    second = await run_processor(s, UsageProcessor())
    third = await run_processor(s, UsageProcessor())

    assert first.failed == second.failed == 0
    assert (third.processed, third.skipped) == (0, 4)
    assert await usage_totals(db, "ann") == expected_totals([a, b, c])
    assert await usage_totals(db, "bob") == expected_totals([a])


async def test_usage_ignores_synthetic_and_usage_less_lines_and_keeps_maxima_in_any_order(
    db: Database, tmp_path: Path
) -> None:
    def line(out: int, model: str = "claude-sonnet-4", usage: bool = True, ts: str = "2025-06-01T10:00:00Z") -> str:
        message: dict[str, Any] = {"id": "msg_1", "model": model, "role": "assistant"}
        if usage:
            message["usage"] = {"input_tokens": 3, "output_tokens": out, "cache_creation_input_tokens": 10,
                                "cache_read_input_tokens": 7}
        import json

        return json.dumps({"type": "assistant", "requestId": "req_1", "timestamp": ts, "message": message}) + "\n"

    # Later snapshot first, earlier one in another file, in a later run.
    write(tmp_path / "ann" / "x.jsonl", line(50) + line(9, model="<synthetic>") + line(0, usage=False))
    s = services_for(db, tmp_path)
    await run_processor(s, UsageProcessor())
    write(tmp_path / "ann" / "y.jsonl", line(12, ts="2025-06-01T09:59:59Z") + "not json at all\n")
    await run_processor(s, UsageProcessor())

    assert await usage_totals(db) == {("2025-06-01", "claude-sonnet-4"): {
        "input_tokens": 3, "output_tokens": 50, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 7}}


async def test_run_for_one_user_touches_only_that_users_files(db: Database, tmp_path: Path) -> None:
    write(tmp_path / "ann" / "s.jsonl", '{"a": 1}\n')
    write(tmp_path / "bob" / "s.jsonl", '{"b": 1}\n')
    s, proc = services_for(db, tmp_path), LineCounter()

    only_ann = await run_processor(s, proc, user="ann")
    everyone = await run_processor(s, proc)

    assert (only_ann.scanned, only_ann.processed) == (1, 1)
    assert (everyone.scanned, everyone.processed, everyone.skipped) == (2, 1, 1)


async def test_a_manual_run_racing_a_scheduled_run_gets_409_and_runs_once_it_ends(db: Database, tmp_path: Path) -> None:
    write(tmp_path / "ann" / "s.jsonl", '{"a": 1}\n')
    s = Services.build(Settings(session_dir=str(tmp_path), processor_intervals_s={"lines": 3600.0}), db)
    storing, release = trio.Event(), trio.Event()

    class Held(LineCounter):
        async def store(self, conn: Any, username: str, items: list[Any]) -> None:
            storing.set()
            await release.wait()

    proc = Held()
    runner = ProcessorRunner(s, proc)
    s.health.add(runner.name)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run, ActorContext(runner.name, s))
        with trio.fail_after(10):
            await storing.wait()  # the scheduled run (due at start) is inside its transaction
        with pytest.raises(AlreadyRunning):
            await run_now(s, proc, actor="cli")
        release.set()
        status = job_board(s).jobs[job_name("lines")]
        with trio.fail_after(10):  # the scheduled run's end is recorded on the board
            while True:
                if not status.running and status.runs >= 1:
                    break
                await trio.sleep(0.01)
        assert status.last_status == "ok" and status.runs == 1 and status.last_result["processed"] == 1
        again = await run_now(s, proc, actor="cli")  # the lock is free again: the manual run runs, finds nothing new
        assert (again.processed, again.skipped) == (0, 1) and status.runs == 2
        s.stopping.set()
