"""Per-test time limits and signal handling that fail one test, say where it hung, and let the run go on.

pytest-timeout supplies the settings (``timeout`` in pyproject.toml, ``--timeout``,
``@pytest.mark.timeout(...)``); this plugin takes over its two hooks because neither of its
methods fits a trio suite: ``signal`` raises inside whatever frame runs, which inside trio's run
loop is an internal error and inside a shielded wait never unwinds, and ``thread`` ends the whole
process with ``os._exit``, so nothing after the hung test runs and no summary prints.

When a test (setup, call and teardown together) outlives its limit:

1. A watchdog thread records every thread's stack, then signals the main thread (SIGALRM).
2. In the main thread: inside a trio run, a callback on the run's loop records the trio task tree
   (each task with the frames it awaits in) and cancels the test's nurseries, so a test that can
   unwind fails like any other and its fixtures clean up. Outside trio, the test gets a ``Failed``.
3. If the test has still not finished ``HARD_STOP_AFTER_S`` later (a shielded wait that never
   ends, a loop that never checkpoints), a ``Failed`` is raised into the main thread wherever it
   is; inside trio that abandons the run (trio reports an internal error and tears it down), and
   the next test starts a fresh one. This repeats a few times, and only if even that cannot get
   the main thread back (it is stuck in C code) does it fall back to pytest-timeout's last resort:
   print the stacks and ``os._exit(1)``.

The test's report carries the reason, the stacks and the task tree, so ``-rfE`` lists it with
the rest and the run continues to its summary.

SIGTERM and SIGINT are treated the same way, once the session has started: the current test is
stopped as if it had timed out (stacks, tree, cancel), the session stops after it, and pytest
prints its summary (exit status 2). A second signal makes the hard stop at once; a third raises
``KeyboardInterrupt``. (Without this, SIGTERM ends pytest silently, and SIGINT cannot get past a
shielded wait inside trio.) Under pytest-xdist (``make test``) the controller runs no test: it
passes SIGTERM on to its workers, each stops its own test that way, and the run ends with their
reports (a terminal's Ctrl-C reaches the workers itself).
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import traceback
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Iterator

import pytest

# After the soft stop: time for a cancelled test to unwind and clean up (the env var is for the
# watchdog's own tests, which would otherwise wait this long for each hard stop).
HARD_STOP_AFTER_S = float(os.environ.get("ROOST_TEST_HARD_STOP_AFTER_S", "10"))
HARD_STOP_ATTEMPTS = 3  # raises into the main thread before the os._exit of last resort
MAX_TASKS_SHOWN = 200  # a test with thousands of sockets would otherwise print thousands of stacks


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc; empty where there is none)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found


class TestStopped(pytest.fail.Exception):
    """Raised into a test the watchdog stops (a timeout, or SIGTERM/SIGINT)."""

    __test__ = False  # not a test class, whatever its name


@dataclass
class _CrashLine:
    """What ``-rfE`` and JUnit show on the one line about a failure (pytest reads ``.message``)."""

    path: str
    lineno: int
    message: str


@dataclass
class StoppedRepr:
    """A report body: why the test was stopped, every thread's stack, the trio tasks, then the
    test's own failure as it unwound (if it had one)."""

    reprcrash: _CrashLine
    sections_text: list[str]
    original: Any = None

    def toterminal(self, tw: Any) -> None:
        for text in self.sections_text:
            for line in text.rstrip("\n").splitlines():
                tw.line(line)
        if self.original is not None:
            tw.sep("-", "the test's own failure, after it was stopped")
            if hasattr(self.original, "toterminal"):
                self.original.toterminal(tw)
            else:
                tw.line(str(self.original))

    def __str__(self) -> str:
        return "\n".join(self.sections_text)


@dataclass
class _Watch:
    """One test under watch, from the start of its setup to the end of its teardown."""

    item: pytest.Item
    timeout: float | None
    requested: str = ""  # a stop asked for by a signal, before the limit
    reason: str = ""
    fired: bool = False
    hard: bool = False
    finished: bool = False  # the teardown report is out: nothing may be raised any more
    in_phase: bool = False  # setup, call or teardown is running: a raise lands in the test's code
    reported: bool = False
    sections: list[str] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)  # the trio run's tasks, seen at the soft stop
    lock: threading.RLock = field(default_factory=threading.RLock)  # re-entered by signal handlers
    wake: threading.Event = field(default_factory=threading.Event)  # the limit came early: stop now
    done: threading.Event = field(default_factory=threading.Event)  # the test's protocol ended


# Frames of the machinery every stack passes through; the frames that say where a test hangs are
# the others. (A stack of nothing else keeps its last frame, so it still says where it waits.)
_MACHINERY = ("/_pytest/", "/pluggy/", "/pytest/__main__.py", "<frozen runpy>", "/trio/_core/", "/outcome/",
              "/pytest_trio/")


def _format_frames(frames: Iterator[tuple[FrameType, int]], indent: str = "") -> str:
    summary = traceback.StackSummary.extract(frames, lookup_lines=True)
    kept = [f for f in summary if not any(part in f.filename for part in _MACHINERY)]
    if not kept and len(summary):
        kept = [summary[-1]]
    return textwrap.indent("".join(traceback.StackSummary.from_list(kept).format()), indent)


def format_thread_stacks(skip_ident: int | None = None) -> str:
    """Every thread's current stack (innermost last), without pytest's and trio's own frames."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        if ident == skip_ident:
            continue
        frames = reversed(list(traceback.walk_stack(frame)))
        parts.append(f"--- thread {names.get(ident, '<unknown>')} ({ident}) ---\n{_format_frames(frames)}")
    return "\n".join(parts)


def _await_frames(task: Any) -> Iterator[tuple[FrameType, int]]:
    try:
        yield from task.iter_await_frames()
    except Exception:  # a task half torn down: show what we can
        return


def format_trio_task_tree(root: Any, limit: int = MAX_TASKS_SHOWN) -> str:
    """Every task of a trio run, indented by nursery, each with the frames it is awaiting in."""
    lines: list[str] = []
    shown = 0
    skipped = 0

    def walk(task: Any, depth: int) -> None:
        nonlocal shown, skipped
        if shown >= limit:
            skipped += 1
        else:
            shown += 1
            pad = "    " * depth
            lines.append(f"{pad}task {task.name}")
            if task is not root:  # trio's own <init> task: its frames say nothing about the test
                lines.append(_format_frames(_await_frames(task), pad + "  "))
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(root, 0)
    if skipped:
        lines.append(f"... and {skipped} more tasks not shown")
    return "\n".join(line.rstrip("\n") for line in lines if line.strip())


def _main_tasks_nurseries(root: Any) -> list[Any]:
    """The nurseries to cancel to stop what ``trio.run`` was asked to run.

    trio's root task holds three nurseries: the run_sync_soon task's, the system tasks', and last
    the one holding the main task. The main task's own nurseries (pytest-trio's, around the test
    and its fixtures) are cancelled first, so fixtures tear down as after any failure; a main task
    awaiting outside any nursery is cancelled through the nursery holding it.
    """
    if not root.child_nurseries:
        return []
    holder = root.child_nurseries[-1]
    inner = [n for task in holder.child_tasks for n in task.child_nurseries]
    return inner or [holder]


def _all_tasks(root: Any) -> Iterator[Any]:
    yield root
    for nursery in root.child_nurseries:
        for child in nursery.child_tasks:
            yield from _all_tasks(child)


# The tasks of trio runs a hard stop abandoned. Kept alive on purpose: collected, each coroutine
# would run its cleanup outside any trio run and print a page of errors about it.
_ABANDONED: list[Any] = []


def _abandon_trio_run(frame: FrameType | None, exc: BaseException) -> None:
    """End the trio run the main thread is in, if it is idle in its loop, by throwing ``exc`` into it.

    Raising from the signal handler alone would leave the run half alive: ``trio.run`` would
    propagate the exception from its I/O wait, but the run-loop generator, which tears the run
    down and clears trio's per-thread state, would only be closed whenever it is collected, and
    until then every ``trio.run`` says "Attempted to call run() from inside a run()". Thrown into
    that generator, the exception ends the run as an internal error would (trio closes the run
    and raises ``TrioInternalError`` from it), and the next test starts a clean one. This reads two
    locals of ``trio.run`` (``gen``, ``runner``); the watchdog's own tests pin it. When a task is
    running instead (the generator is executing), this does nothing: the caller's plain raise lands
    in that task, which unwinds through trio as any error does.
    """
    while frame is not None:
        if frame.f_code.co_name == "run" and frame.f_globals.get("__name__") == "trio._core._run":
            gen = frame.f_locals.get("gen")
            runner = frame.f_locals.get("runner")
            if gen is not None and not gen.gi_running and gen.gi_frame is not None:
                _ABANDONED.extend(getattr(runner, "tasks", ()))
                gen.throw(exc)  # raises TrioInternalError from exc, the run now closed
            return
        frame = frame.f_back


class Watchdog:
    """The pytest plugin: pytest-timeout's timer hooks, the reports, SIGTERM/SIGINT."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.current: _Watch | None = None
        self.session: pytest.Session | None = None
        self.interrupts = 0
        self._previous: dict[int, Any] = {}

    # -- pytest-timeout's hooks: its settings, our timer --------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False  # let pytest-timeout's thread method handle it
        watch = _Watch(item=item, timeout=settings.timeout)
        self.current = watch
        threading.Thread(
            target=self._watch, args=(watch, settings), name=f"watchdog {item.nodeid}", daemon=True
        ).start()
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool:
        watch = self.current
        if watch is None or watch.item is not item:
            return False
        with watch.lock:
            watch.finished = True
        watch.done.set()
        watch.wake.set()
        self.current = None
        return True

    def _watch(self, watch: _Watch, settings: Any) -> None:
        """The watchdog thread: wait for the limit (or a signal), stop softly, then harder."""
        watch.wake.wait(watch.timeout)
        with watch.lock:
            if watch.finished:
                return
            requested = watch.requested
        import pytest_timeout

        if not requested and not settings.disable_debugger_detection and pytest_timeout.is_debugging():
            return  # someone is at a breakpoint: the clock does not apply
        reason = requested or f"Timeout: the test ran over its {watch.timeout:g} s limit"
        with watch.lock:
            if watch.finished:
                return
            watch.fired = True
            watch.reason = reason
            stacks = format_thread_stacks(skip_ident=threading.get_ident())
            watch.sections.append(f"{reason}\n\n== stacks of every thread ==\n{stacks}")
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
        attempts = 0
        while not watch.done.wait(HARD_STOP_AFTER_S):
            with watch.lock:
                if watch.finished:
                    return
                if not watch.in_phase:
                    continue  # pytest is between phases (writing a report): nothing of the test runs
                if attempts == HARD_STOP_ATTEMPTS:
                    break
                attempts += 1
                watch.hard = True
                watch.sections.append(
                    f"The test did not end within {HARD_STOP_AFTER_S:g} s of being stopped: raising into "
                    "the main thread (inside trio this abandons the run)."
                )
            signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)
        else:
            return
        pytest_timeout.timeout_timer(watch.item, settings)  # stacks to the terminal, os._exit(1)

    # -- in the main thread ---------------------------------------------------------------------

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        watch = self.current
        if watch is None:
            return
        with watch.lock:
            if watch.finished or not watch.fired or not watch.in_phase:
                return
            hard = watch.hard
        if not hard:
            try:
                import trio.lowlevel

                token = trio.lowlevel.current_trio_token()
            except (ImportError, RuntimeError):
                token = None
            if token is not None:
                token.run_sync_soon(self._in_trio, watch)
                return
        stopped = TestStopped(watch.reason, pytrace=False)
        if hard:
            _abandon_trio_run(frame, stopped)
        raise stopped

    def _in_trio(self, watch: _Watch) -> None:
        """On the trio loop (between task steps): record the task tree, cancel the test."""
        import trio.lowlevel

        try:
            root = trio.lowlevel.current_root_task()
            tree = format_trio_task_tree(root)
            with watch.lock:
                watch.sections.append(f"== trio tasks ==\n{tree}")
                watch.tasks = list(_all_tasks(root))
            for nursery in _main_tasks_nurseries(root):
                nursery.cancel_scope.cancel()
        except Exception:  # never let a callback on trio's loop raise: that is an internal error
            with watch.lock:
                watch.sections.append(f"== trio tasks: could not stop the run ==\n{traceback.format_exc()}")

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: stop the current test as on a timeout (a second signal: hard stop at
        once, a third: KeyboardInterrupt), and end the session after it."""
        name = signal.Signals(signum).name
        self.interrupts += 1
        if self.session is not None:
            self.session.shouldstop = f"{name} received"
        watch = self.current
        if watch is None and signum == signal.SIGTERM and self.interrupts == 1 and self._forward(signum):
            return  # a pytest-xdist controller: each worker stops its own test and the run ends
        if watch is None or self.interrupts > 2:
            raise KeyboardInterrupt(name)
        with watch.lock:
            if watch.finished:
                raise KeyboardInterrupt(name)
            if not watch.requested:
                watch.requested = f"Stopped by {name} (the run stops after this test)"
                watch.wake.set()  # the watchdog thread stops the test as if its limit had come
                return
            watch.hard = True
            watch.reason = watch.reason or watch.requested
            watch.sections.append(f"A second {name}: raising into the main thread at once.")
            in_phase = watch.in_phase
        if in_phase:
            stopped = TestStopped(watch.reason, pytrace=False)
            _abandon_trio_run(frame, stopped)
            raise stopped

    def _forward(self, signum: int) -> bool:
        """Under pytest-xdist, pass SIGTERM on to the workers (this process's children); False if
        this is not a controller with workers. (SIGINT from a terminal reaches them already: a
        second one from here would be their hard stop.)"""
        if self.session is None or not self.session.config.pluginmanager.has_plugin("dsession"):
            return False
        workers = [pid for pid in _children(os.getpid())]
        for pid in workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return bool(workers)

    def pytest_report_header(self, config: pytest.Config) -> str:
        return (f"watchdog: tests/support/watchdog.py enforces the timeout (stacks + trio tasks, cancel, "
                f"hard stop {HARD_STOP_AFTER_S:g} s later; the run goes on): pytest-timeout's method does not apply")

    # -- the session ------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)
        # Only replace the defaults: an embedding program's own handlers stay its own.
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_stop_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_stop_signal)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _phase(self, item: pytest.Item, *, cleanup: bool = False) -> Iterator[None]:
        watch = self.current
        if watch is None or watch.item is not item:
            yield
            return
        with watch.lock:
            if watch.fired and not cleanup:
                # Stopped between phases (its signal found nothing to stop): do not start the next.
                raise TestStopped(watch.reason, pytrace=False)
            watch.in_phase = True
        try:
            yield
        finally:
            with watch.lock:
                watch.in_phase = False

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._phase(item))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._phase(item))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        return (yield from self._phase(item, cleanup=True))  # teardown runs even for a stopped test

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report: pytest.TestReport = yield
        watch = self.current
        if watch is None or watch.item is not item:
            return report
        with watch.lock:
            if call.when == "teardown":
                watch.finished = True  # from here on a raise would land in pytest itself
            if not watch.fired or watch.reported:
                return report
            watch.reported = True
            sections = list(watch.sections)
            if watch.hard:
                _ABANDONED.extend(watch.tasks)
        path, lineno, _ = item.location
        # The test's own failure as it unwound, unless it is only the watchdog's raise.
        excinfo = call.excinfo
        ours = excinfo is not None and (
            isinstance(excinfo.value, TestStopped) or isinstance(excinfo.value.__cause__, TestStopped)
        )
        original = report.longrepr if report.failed and not ours else None
        report.outcome = "failed"
        report.longrepr = StoppedRepr(_CrashLine(path, (lineno or 0) + 1, watch.reason), sections, original)
        return report


def install(config: pytest.Config) -> None:
    """Register the watchdog when pytest-timeout is there to supply its settings."""
    if config.pluginmanager.hasplugin("timeout") and not config.pluginmanager.hasplugin("roost-watchdog"):
        config.pluginmanager.register(Watchdog(config), "roost-watchdog")


__all__ = ["HARD_STOP_AFTER_S", "TestStopped", "Watchdog", "install"]
