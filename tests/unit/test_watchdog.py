"""The suite's own watchdog (tests/support/watchdog.py): a hung test fails alone, says where it
hung, and the run goes on to its summary; SIGTERM/SIGINT stop the run with a summary too.

Each test runs pytest in a subprocess on a throwaway project whose tests hang on purpose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
from tests.support import watchdog


def pytest_configure(config):
    watchdog.install(config)
"""

HANGS = '''
import time
from pathlib import Path

import trio


async def test_waits_forever_in_a_nursery():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        await trio.sleep_forever()  # HANG-SOFT


async def test_after_the_soft_stop():
    await trio.sleep(0)


async def test_waits_forever_in_a_shield():
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()  # HANG-SHIELDED


async def test_after_the_abandoned_run():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)


def test_blocks_without_trio():
    time.sleep(600)  # HANG-SYNC


def test_after_the_blocking_one():
    pass
'''

SIGNALLED = '''
import os
from pathlib import Path

import trio


def test_before():
    pass


async def test_hangs_until_signalled():
    Path(os.environ["STARTED"]).touch()
    with trio.CancelScope(shield=os.environ.get("SHIELD") == "1"):
        await trio.sleep_forever()  # HANG-SIGNALLED


def test_never_reached():
    pass
'''


# pytest with Python's own SIGINT handler, even when whoever started us ignores SIGINT (a shell
# does, for a job it starts in the background): the watchdog only replaces the default handler.
RUN_PYTEST = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


def _project(tmp_path: Path, tests: str, timeout_s: float) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\ntrio_mode = true\naddopts = -rfE -p no:cacheprovider\ntimeout = {timeout_s}\n"
    )
    (tmp_path / "test_inner.py").write_text(tests)
    return tmp_path


def _start(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # COLUMNS: wide enough that the summary lines are not cut short.
    environ.update({"PYTHONPATH": str(REPO), "ROOST_TEST_HARD_STOP_AFTER_S": "1", "COLUMNS": "300", **env})
    return subprocess.Popen(
        [sys.executable, "-c", RUN_PYTEST, *args, "test_inner.py"], cwd=project, env=environ, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the inner run did not end:\n{out}")
    return out


def _failure_section(out: str, name: str) -> str:
    """The text of one test's entry under FAILURES."""
    start = out.index(f" {name} ")
    rest = out[start + 1:]
    ends = [i for i in (rest.find("\n____"), rest.find("\n==========")) if i != -1]
    return rest[: min(ends)]


def test_a_hung_test_fails_alone_with_every_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = _start(_project(tmp_path, HANGS, timeout_s=1))
    out = _finish(proc)
    assert proc.returncode == 1, out
    assert "3 failed, 3 passed" in out, out
    summary = out[out.index("short test summary info"):]
    for name in ("test_waits_forever_in_a_nursery", "test_waits_forever_in_a_shield", "test_blocks_without_trio"):
        assert f"FAILED test_inner.py::{name} - Timeout: the test ran over its 1 s limit" in summary, out
        section = _failure_section(out, name)
        assert "== stacks of every thread ==" in section, section
    # Inside trio the task tree says where the test waits; outside, the main thread's stack does.
    soft = _failure_section(out, "test_waits_forever_in_a_nursery")
    assert "== trio tasks ==" in soft and "HANG-SOFT" in soft.split("== trio tasks ==")[1], soft
    shielded = _failure_section(out, "test_waits_forever_in_a_shield")
    assert "HANG-SHIELDED" in shielded and "did not end within 1 s of being stopped" in shielded, shielded
    assert "HANG-SYNC" in _failure_section(out, "test_blocks_without_trio")
    # 3 limits of 1 s and one hard stop 1 s later; nowhere near the 600 s the sync test asks for.
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_current_test_and_the_run_prints_its_summary(tmp_path: Path, signum: int) -> None:
    started_file = tmp_path / "started"
    proc = _start(_project(tmp_path, SIGNALLED, timeout_s=60), STARTED=str(started_file))
    deadline = time.monotonic() + 60
    while not started_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out = _finish(proc)
    name = signal.Signals(signum).name
    assert proc.returncode == 2, out  # interrupted
    assert f"FAILED test_inner.py::test_hangs_until_signalled - Stopped by {name}" in out, out
    assert f"Interrupted: {name} received" in out, out
    assert "1 failed, 1 passed" in out, out  # test_never_reached did not run
    assert "HANG-SIGNALLED" in _failure_section(out, "test_hangs_until_signalled"), out


def test_under_xdist_a_sigterm_to_the_controller_stops_each_workers_test_with_its_stacks(tmp_path: Path) -> None:
    # `make test` runs two workers; a CI runner cancelling the job signals only the controller.
    started_file = tmp_path / "started"
    proc = _start(_project(tmp_path, SIGNALLED, timeout_s=60), "-n", "2", STARTED=str(started_file))
    deadline = time.monotonic() + 60
    while not started_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc)
    assert proc.returncode == 2, out  # interrupted
    assert "FAILED test_inner.py::test_hangs_until_signalled - Stopped by SIGTERM" in out, out
    assert "HANG-SIGNALLED" in _failure_section(out, "test_hangs_until_signalled"), out


def test_a_second_signal_stops_a_test_stuck_in_a_shield_at_once(tmp_path: Path) -> None:
    started_file = tmp_path / "started"
    proc = _start(
        _project(tmp_path, SIGNALLED, timeout_s=60), STARTED=str(started_file), SHIELD="1",
        ROOST_TEST_HARD_STOP_AFTER_S="60",
    )
    deadline = time.monotonic() + 60
    while not started_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the first one cancels; the shield holds
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = _finish(proc)
    assert time.monotonic() - sent < 20, out
    assert proc.returncode == 2, out
    assert "A second SIGINT: raising into the main thread at once." in out, out
    assert "FAILED test_inner.py::test_hangs_until_signalled - Stopped by SIGINT" in out, out


def test_every_test_has_a_limit_and_failures_are_listed_at_the_end(pytestconfig: pytest.Config) -> None:
    assert float(pytestconfig.getini("timeout")) > 0
    assert "-rfE" in pytestconfig.getini("addopts")
    assert pytestconfig.pluginmanager.hasplugin("roost-watchdog")
