"""The ``tools`` processor over a generated transcript tree, on SQLite and PostgreSQL: its counts equal the
tree's own truth, a rescan changes nothing, appended lines count once, and its state is its own."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from roost.domain.processors import run_now, run_processor
from roost.plugins.processors import Processor
from roost.plugins.processors.tools import ToolsProcessor, candidate_lines
from roost.plugins.processors.usage import UsageProcessor
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import audit
from roost.storage import tools as tools_store
from roost.storage.database import Database
from tests.support.tool_transcripts import Truth, append_turn, generate_tree

END = dt.datetime(2025, 7, 1, 23, 50, tzinfo=dt.UTC)


async def counted(db: Database, user: str | None = None) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(day, user, tool) -> (calls, failed), through the paged totals (limit 7: several pages)."""
    found: dict[tuple[str, str, str], tuple[int, int]] = {}
    cursor = None
    while True:
        page = await tools_store.totals(db, user=user, limit=7, cursor=cursor)
        for r in page["items"]:
            key = (r["day"], r["user"], r["tool"])
            assert key not in found  # no row on two pages
            found[key] = (r["calls"], r["failed"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def states(db: Database, processor: str) -> list[dict[str, Any]]:
    return await db.fetch("SELECT * FROM session_processor_state WHERE processor_name = $1 ORDER BY session_file",
                          processor)


def transcripts_in(root: Path, pattern: str = "*/*.jsonl") -> list[Path]:
    return sorted(root.glob(pattern))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def cut(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def services_for(db: Database, root: Path) -> Services:
    return Services.build(Settings(session_dir=str(root)), db)


async def test_tool_counts_equal_the_generated_trees_truth_and_a_rescan_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    truth = generate_tree(tmp_path, random.Random(19), users=3, sessions=5, turns=6)
    expected = truth.totals()
    files = len(transcripts_in(tmp_path))
    s = services_for(db, tmp_path)
    # The tree has what the counts must get right: failures, several days, copied calls, split lines.
    assert sum(f for _, f in expected.values()) > 10 and len({k[0] for k in expected}) > 3
    assert truth.across_midnight > 0

    first = await run_processor(s, ToolsProcessor())
    assert (first.processed, first.failed) == (files, 0)
    assert await counted(db) == expected

    again = await run_processor(s, ToolsProcessor())  # nothing changed: skipped by stat alone
    assert (again.processed, again.skipped, again.bytes_read) == (0, files, 0)
    await db.execute("DELETE FROM session_processor_state WHERE processor_name = 'tools'")
    rescan = await run_processor(s, ToolsProcessor())  # everything read again from the start
    assert (rescan.processed, rescan.failed) == (files, 0)
    assert await counted(db) == expected
    assert await counted(db, "user1") == {k: v for k, v in expected.items() if k[1] == "user1"}


async def test_an_appended_turn_counts_once_and_a_partial_line_waits_for_its_end(
    db: Database, tmp_path: Path
) -> None:
    rng = random.Random(7)
    truth = generate_tree(tmp_path, rng, users=2, sessions=3, turns=3)
    s = services_for(db, tmp_path)
    await run_processor(s, ToolsProcessor())
    path = tmp_path / "user0" / "s01.jsonl"

    append_turn(path, rng, "user0", truth, END)  # new calls, all failed, and one line written twice
    grown = await run_processor(s, ToolsProcessor())
    assert (grown.processed, grown.failed) == (1, 0)
    assert await counted(db) == truth.totals()

    late = Truth()
    late.calls, late.failed = dict(truth.calls), set(truth.failed)
    marker = len(path.read_bytes())
    append_turn(path, rng, "user0", late, END + dt.timedelta(days=1))
    tail = path.read_bytes()[marker:]
    cut(path, marker + len(tail) // 2)  # only half of the new lines are there yet
    await run_processor(s, ToolsProcessor())
    append(path, tail[len(tail) // 2:])
    await run_processor(s, ToolsProcessor())
    await run_processor(s, ToolsProcessor())
    assert await counted(db) == late.totals() != truth.totals()


class Failing(Processor):
    """A stand-in for ``name`` that fails every file of ``user1``."""

    def __init__(self, real: Processor) -> None:
        self.real = real
        self.name = real.name

    def extract(self, username: str, lines: bytes) -> list[Any]:
        if username == "user1":
            raise ValueError("broken plugin")
        return self.real.extract(username, lines)

    async def store(self, conn: Any, username: str, items: list[Any]) -> None:
        await self.real.store(conn, username, items)


async def test_running_or_failing_one_processor_leaves_the_others_state_alone(db: Database, tmp_path: Path) -> None:
    truth = generate_tree(tmp_path, random.Random(3), users=2, sessions=2, turns=3)
    s = services_for(db, tmp_path)

    await run_processor(s, UsageProcessor())
    usage_state = await states(db, "usage")
    assert usage_state and await states(db, "tools") == []  # a usage run reads nothing for tools
    assert await counted(db) == {}

    failed = await run_processor(s, Failing(ToolsProcessor()))
    assert failed.failed == 2 and failed.processed == 2
    assert await states(db, "usage") == usage_state
    assert {r["username"] for r in await states(db, "tools")} == {"user0"}

    await run_processor(s, ToolsProcessor())  # the failed files are retried; usage's rows still untouched
    assert await counted(db) == truth.totals()
    assert await states(db, "usage") == usage_state

    tools_state = await states(db, "tools")
    for path in transcripts_in(tmp_path, "user1/*.jsonl"):
        append(path, b'{"type": "user"}\n')
    assert (await run_processor(s, Failing(UsageProcessor()))).failed == 2
    assert await states(db, "tools") == tools_state


def test_candidate_lines_are_each_line_holding_a_mark_once() -> None:
    block = (b'{"a": 1}\n{"type": "tool_use", "x": {"is_error":true}}\n{"b": 2}\n{"is_error": true}\n'
             b'{"c": "tool_use_id", "is_error": false}\n{"is_error":true}\n{"type": "tool_use"}')
    assert list(candidate_lines(block)) == [b'{"type": "tool_use", "x": {"is_error":true}}', b'{"is_error": true}',
                                            b'{"is_error":true}', b'{"type": "tool_use"}']


async def test_manual_runs_are_audited_with_their_counts_or_their_error(db: Database, tmp_path: Path) -> None:
    generate_tree(tmp_path / "sessions", random.Random(2), users=1, sessions=2, turns=2)
    ok = await run_now(services_for(db, tmp_path / "sessions"), ToolsProcessor(), actor="cli", user="user0")
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(NotADirectoryError):  # the run itself fails (its transcript root is a file)
        await run_now(services_for(db, tmp_path / "not-a-folder"), ToolsProcessor(), actor="cli")

    rows = [r for r in await audit.list_entries(db) if r["action"] == "processor.run"]
    assert [(r["actor"], r["target_id"], r["details"]["outcome"]) for r in reversed(rows)] == [
        ("cli", "tools", "ok"), ("cli", "tools", "failed")]
    done, failed = rows[1]["details"], rows[0]["details"]
    assert (done["user"], done["processed"], done["failed"], done["items"]) == ("user0", 2, 0, ok.items)
    assert failed["error"].startswith("NotADirectoryError") and failed["user"] is None
