"""The processor commands as real processes on SQLite: ``roost process`` refuses while ``roost serve`` holds
the database, runs (audited as ``cli``) once it is gone; ``roost tools`` prints the counts; ``roost plugins``
lists every kind, entry-point plugins with their package."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.tool_transcripts import generate_tree

pytestmark = [pytest.mark.e2e]


def roost(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "250", **env}, cwd=cwd)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table, as cells."""
    return [[c.strip() for c in line.strip("│ ").split("│")] for line in text.splitlines()
            if line.startswith("│")]


def test_roost_process_refuses_while_serve_holds_the_sqlite_database_and_runs_after(
    sqlite_url: str, tmp_path: Path
) -> None:
    sessions = tmp_path / "sessions"
    truth = generate_tree(sessions, random.Random(5), users=2, sessions=2, turns=3)
    env = {"ROOST_DATABASE_URL": sqlite_url, "ROOST_SESSION_DIR": str(sessions),
           "ROOST_PROCESSOR_USAGE_INTERVAL": "3600", "ROOST_PROCESSOR_TOOLS_INTERVAL": "3600"}
    server = ServerProcess.start(sqlite_url, tmp_path, env=env)
    try:
        refused = roost("process", "tools", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = " ".join(refused.stderr.split())
        assert f"pid {server.proc.pid}" in message and "cannot run beside it on SQLite" in message, message
        assert "POST /api/admin/run-session-processor?processor=tools" in message
    finally:
        assert server.terminate() == 0

    ran = roost("process", "tools", env=env)
    assert ran.returncode == 0, ran.stderr
    db_path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as conn:
        audited = conn.execute("SELECT actor, target_type, target_id FROM audit_log WHERE action = 'processor.run'"
                               ).fetchall()
    assert audited == [("cli", "processor", "tools")]  # the refused run is not in it

    shown = roost("tools", env=env)
    assert shown.returncode == 0, shown.stderr
    rows = {(day, user, tool): (int(calls.replace(",", "")), int(failed.replace(",", "")))
            for day, user, tool, calls, failed in table_rows(shown.stdout)}
    assert rows == truth.totals()
    one_user = table_rows(roost("tools", "--user", "user1", env=env).stdout)
    assert one_user and {r[1] for r in one_user} == {"user1"}
    bad = roost("tools", "--from", "2025-06-05", "--to", "2025-06-01", env=env)
    assert bad.returncode == 1 and "--from is after --to" in bad.stderr


def test_roost_plugins_lists_every_kind_and_where_each_comes_from(tmp_path: Path) -> None:
    # An installed package (a dist-info on the path) that declares a session processor and a transport.
    site = tmp_path / "site"
    (site / "acme_plugins").mkdir(parents=True)
    (site / "acme_plugins" / "__init__.py").write_text(
        "from roost.plugins.processors import Processor\n\n"
        "class Lines(Processor):\n    name = 'lines'\n\n    def extract(self, username, lines):\n        return []\n\n"
        "class Pigeon:\n    name = 'pigeon'\n")
    info = site / "acme_plugins-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[roost.session_processors]\nlines = acme_plugins:Lines\n\n"
                                           "[roost.transports]\npigeon = acme_plugins:Pigeon\n")
    listed = roost("plugins", env={"PYTHONPATH": str(site)}, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split(None, 2) if not line.startswith(("session processor", "mail transport"))
            else [" ".join(line.split()[:2]), *line.split(None, 3)[2:]] for line in listed.stdout.splitlines()[1:]]
    found = {(r[0], r[1]): r[2] for r in rows}
    for kind, name in [("connector", "push"), ("connector", "imap"), ("classifier", "rules"), ("assessor", "none"),
                       ("session processor", "usage"), ("session processor", "tools"), ("mail transport", "smtp"),
                       ("mail transport", "console"), ("mail transport", "file")]:
        assert found[(kind, name)] == "built-in", (kind, name, listed.stdout)
    assert found[("session processor", "lines")] == (
        "entry point roost.session_processors: acme_plugins:Lines (package acme-plugins 1.2)")
    assert found[("mail transport", "pigeon")] == (
        "entry point roost.transports: acme_plugins:Pigeon (package acme-plugins 1.2)")
