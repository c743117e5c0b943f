"""Two real processes on one PostgreSQL racing for the same session processor: exactly one runs, the other gets 409."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.support.server import SERVICE_TOKEN, ServerProcess
from tests.support.transcripts import generate_session

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

HOLD_LOCK = textwrap.dedent("""
    import sys, trio
    from roost.runtime.locks import JobLocks
    from roost.storage.database import open_database

    async def main():
        async with open_database(sys.argv[1]) as db:
            async with JobLocks(db).hold("processor:usage"):
                print("held", flush=True)
                await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(main)
""")


def post_run(url: str) -> httpx.Response:
    return httpx.post(f"{url}/api/admin/run-session-processor", params={"processor": "usage"},
                      headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=60)


def test_a_lock_held_by_another_process_gives_409_to_http_and_cli(pg_url: str, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    (sessions / "ann").mkdir(parents=True)
    env = {"ROOST_SESSION_DIR": str(sessions), "ROOST_PROCESSOR_USAGE_INTERVAL": "3600"}
    server = ServerProcess.start(pg_url, tmp_path, env=env)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, pg_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

        assert post_run(server.url).status_code == 409
        cli = subprocess.run([sys.executable, "-m", "roost", "process", "usage"], capture_output=True, text=True,
                             env={**os.environ, **env, "ROOST_DATABASE_URL": pg_url}, timeout=60)
        assert cli.returncode == 1 and "already running" in cli.stderr

        holder.communicate("", timeout=30)  # the other process lets go
        assert post_run(server.url).status_code == 200
    finally:
        holder.kill()
        holder.wait()
        server.terminate()


def test_manual_runs_racing_on_two_servers_run_exactly_once(pg_url: str, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    env = {"ROOST_SESSION_DIR": str(sessions), "ROOST_PROCESSOR_USAGE_INTERVAL": "3600"}
    (sessions / "ann").mkdir(parents=True)
    servers = [ServerProcess.start(pg_url, tmp_path, env=env) for _ in range(2)]
    try:
        rng = random.Random(5)
        start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
        for i in range(12):  # enough work (~40 MB) that both requests arrive while the first run goes on
            (sessions / "ann" / f"s{i}.jsonl").write_text(
                generate_session(rng, start=start, turns=40, big_tool_output=20000).text())
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda s: post_run(s.url), servers))
        assert sorted(r.status_code for r in answers) == [200, 409]
        ok = next(r for r in answers if r.status_code == 200).json()
        assert ok["processed"] == 12 and ok["failed"] == 0
    finally:
        for s in servers:
            s.terminate()
