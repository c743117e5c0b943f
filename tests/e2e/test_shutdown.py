"""Shutdown always ends: a real ``roost serve`` on PostgreSQL, SIGTERM mid-stream, healthy or frozen.

- Healthy database: SIGTERM while a device receives proposals; exit 0 within the grace period,
  several tries in a row (bench/shutdown.py does 20).
- Frozen database (a throwaway server of the test's own, every process sent SIGSTOP): the process
  still exits within grace + 5 s.
- A second SIGTERM exits at once (143); something stuck past grace + 4.5 s is named in the log
  and the process exits 3. Both also while the event loop itself is held.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest
import trio

from tests.support.pg import PgServer, ServerUnavailable, ThrowawayCluster, start_throwaway_server
from tests.support.shutdown import cluster_pids, signal_all, sigterm_mid_stream, start_serve, thaw_and_stop

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

GRACE_S = 3.0
TRIES = 3


def _events(log: str) -> list[dict]:
    out = []
    for line in log.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.timeout(240)
async def test_sigterm_mid_delivery_stream_exits_0_within_the_grace_period_every_try(
    pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for attempt in range(TRIES):
        name = pg_server.create_database()
        try:
            workdir = tmp_path / f"try{attempt}"
            workdir.mkdir()
            proc, url, log_path = await trio.to_thread.run_sync(
                partial(start_serve, pg_server.url_for(name), workdir, GRACE_S))
            outcome = await sigterm_mid_stream(proc, url, log_path, wait_s=GRACE_S + 10)
        finally:
            pg_server.drop_database(name)

        with capsys.disabled():
            print(f"\n[e2e] SIGTERM mid-stream, try {attempt + 1}: exit {outcome.exit_code} after "
                  f"{outcome.took_s:.2f} s (grace {GRACE_S:g} s, {outcome.proposals} proposals)")
        assert outcome.exit_code == 0, f"try {attempt}: exit {outcome.exit_code}\n{outcome.log[-4000:]}"
        assert outcome.took_s < GRACE_S, f"try {attempt}: {outcome.took_s:.2f} s"
        assert "grace period over" not in outcome.log  # it drained; nothing had to be cancelled


@pytest.fixture
def frozen_cluster() -> Iterator[tuple[PgServer, ThrowawayCluster]]:
    """A PostgreSQL server of this test's own (it gets SIGSTOP); thawed and stopped afterwards."""
    try:
        server, cluster = start_throwaway_server()
    except ServerUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"cannot start a throwaway PostgreSQL server: {exc}")
    try:
        yield server, cluster
    finally:
        thaw_and_stop(cluster)


@pytest.mark.timeout(180)
async def test_sigterm_with_postgres_frozen_exits_within_grace_plus_5_s(
    frozen_cluster: tuple[PgServer, ThrowawayCluster], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, cluster = frozen_cluster
    name = await trio.to_thread.run_sync(server.create_database)
    proc, url, log_path = await trio.to_thread.run_sync(lambda: start_serve(server.url_for(name), tmp_path, GRACE_S))
    frozen: list[int] = []

    def freeze() -> None:
        frozen.extend(cluster_pids(cluster.datadir))
        signal_all(frozen, signal.SIGSTOP)

    try:
        outcome = await sigterm_mid_stream(proc, url, log_path, wait_s=GRACE_S + 15, before_signal=freeze)
    finally:
        signal_all(frozen, signal.SIGCONT)

    with capsys.disabled():
        print(f"\n[e2e] SIGTERM with PostgreSQL frozen ({len(frozen)} processes stopped): exit "
              f"{outcome.exit_code} after {outcome.took_s:.2f} s (grace {GRACE_S:g} s, bound {GRACE_S + 5:g} s)")
    assert len(frozen) >= 3  # the postmaster and its backends and workers
    assert outcome.exit_code is not None, f"still running {GRACE_S + 15} s after SIGTERM:\n{outcome.log[-4000:]}"
    assert outcome.took_s < GRACE_S + 5, f"{outcome.took_s:.2f} s, exit {outcome.exit_code}\n{outcome.log[-4000:]}"
    assert outcome.exit_code in (0, 3), outcome.log[-4000:]


@pytest.mark.timeout(180)
async def test_a_second_sigterm_exits_at_once_with_143(
    frozen_cluster: tuple[PgServer, ThrowawayCluster], tmp_path: Path
) -> None:
    """With the database frozen the drain would take the grace period; the second signal does not wait."""
    server, cluster = frozen_cluster
    name = await trio.to_thread.run_sync(server.create_database)
    proc, url, log_path = await trio.to_thread.run_sync(lambda: start_serve(server.url_for(name), tmp_path, 30))
    pids = cluster_pids(cluster.datadir)
    signal_all(pids, signal.SIGSTOP)
    try:
        proc.send_signal(signal.SIGTERM)
        await trio.sleep(0.5)
        assert proc.poll() is None  # draining (30 s grace)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await trio.to_thread.run_sync(lambda: proc.wait(5))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        took = time.monotonic() - signalled
    finally:
        signal_all(pids, signal.SIGCONT)

    log = log_path.read_text(errors="replace")
    assert code == 128 + signal.SIGTERM, log[-4000:]
    assert took < 1.0
    second = [e for e in _events(log) if e.get("event") == "second signal; exiting now"]
    assert second and second[0]["signal"] == "SIGTERM"
    assert second[0]["still_running"], second  # named: the drain was still waiting on them


# A supervisor with one actor that ignores the drain and shields itself from the cancel: what the
# hard stop is for. Run as ``roost serve`` is (signals handled), on a SQLite file.
STUCK_SERVE = textwrap.dedent("""
    import sys, time, trio
    from roost.runtime.actor import Actor
    from roost.runtime.config import Settings
    from roost.runtime.logging import configure_logging
    from roost.runtime.services import Services
    from roost.runtime.supervisor import Supervisor
    from roost.serve import _StopWatch, _watch_signals
    from roost.storage.database import open_database

    class Stuck(Actor):
        name = "stuck"
        async def run(self, ctx, *, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await ctx.stopping.wait()
            if sys.argv[2] == "held":  # holds the event loop itself: nothing in trio runs any more
                time.sleep(3600)
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()

    async def main():
        settings = Settings(database_url=sys.argv[1], grace_period_s=0.5, log_format="json")
        configure_logging("json", "info")
        async with open_database(settings.database_url) as db:
            supervisor = Supervisor(Services.build(settings, db), [Stuck()])
            stop = _StopWatch()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, supervisor, stop)
                await supervisor.run()
                nursery.cancel_scope.cancel()
            stop.disarm()

    print("ready", flush=True)
    trio.run(main)
""")


def _stuck_serve(sqlite_url: str, cwd: Path, mode: str, *signals: float) -> tuple[int, float, str]:
    """Run STUCK_SERVE, send SIGTERM once per entry of ``signals`` (seconds after the previous one);
    returns (exit code, seconds from the first signal to the exit, output)."""
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SERVE, sqlite_url, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the supervisor has started the actor
        first = None
        for delay in signals:
            time.sleep(delay)
            first = first or time.monotonic()
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert first is not None
        return proc.returncode, time.monotonic() - first, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.timeout(60)
def test_what_still_runs_at_grace_plus_4_5_s_is_logged_and_the_process_exits_3(
    sqlite_url: str, tmp_path: Path
) -> None:
    code, took, out = _stuck_serve(sqlite_url, tmp_path, "shielded", 0)

    assert code == 3, out
    assert 0.5 + 4.5 - 0.5 < took < 0.5 + 5 + 1, took
    [stuck] = [e for e in _events(out) if e.get("event") == "still running after the grace period; exiting"]
    assert stuck["actors"] == ["stuck"]
    assert any("supervise:stuck" in t for t in stuck["tasks"]), stuck["tasks"]


@pytest.mark.timeout(60)
def test_with_the_event_loop_held_the_hard_stop_still_exits_3_and_shows_where_threads_are(
    sqlite_url: str, tmp_path: Path
) -> None:
    code, took, out = _stuck_serve(sqlite_url, tmp_path, "held", 0)

    assert code == 3, out
    assert took < 0.5 + 5 + 1, took
    [stuck] = [e for e in _events(out) if e.get("event") == "still running after the grace period; exiting"]
    assert stuck["tasks"] is None  # the loop did not answer ...
    assert "Current thread" in out or "Thread 0x" in out  # ... so every thread's stack is dumped,
    assert "in run" in out  # the stuck actor's frame among them


@pytest.mark.timeout(60)
def test_with_the_event_loop_held_a_second_signal_still_exits_at_once(sqlite_url: str, tmp_path: Path) -> None:
    code, took, out = _stuck_serve(sqlite_url, tmp_path, "held", 0, 0.5)

    assert code == 128 + signal.SIGTERM, out
    assert took < 0.5 + 1.0, took
    assert any(e.get("event") == "second signal; exiting now" for e in _events(out)), out
