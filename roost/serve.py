"""``roost serve``: open the database, migrate, and run the supervisor until SIGTERM/SIGINT.

Shutdown always ends:

- The first SIGTERM/SIGINT starts a graceful drain: stop accepting, let work finish for
  ``grace_period_s``, then cancel what still runs (its shielded database cleanups have deadlines
  of their own, see ``roost.storage.postgres``). Exit 0 once everything has stopped.
- If anything still runs ``HARD_STOP_AFTER_GRACE_S`` after the grace period ended, what it is
  (actors not stopped, trio tasks) is logged and the process exits ``EXIT_STUCK`` (3) at once.
- A second SIGTERM/SIGINT exits at once with 128 + the signal number (143, 130), after one log
  line naming the actors still running.

On SQLite only one process may serve a database file: a lock file next to it refuses a second.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import threading
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator

import trio

from roost.actors.busrelay import BusRelay
from roost.actors.deliverer import Deliverer
from roost.actors.digest import DigestActor
from roost.actors.dispatcher import Dispatcher, dead_device_sweep, ledger_prune
from roost.actors.fanout import FanOut
from roost.actors.handoff_followups import HandoffFollowups
from roost.actors.heartbeat import Heartbeat
from roost.actors.keepalive import Keepalive
from roost.actors.mailer import Mailer
from roost.actors.processors import processor_runners
from roost.actors.pruner import Prune, Pruner
from roost.actors.scout import ScoutActor
from roost.actors.socket_events import SocketEvents
from roost.actors.webhooks import WebhookSender
from roost.domain import audit, scouting, webhooks
from roost.domain.handoffs import prune_events
from roost.domain.watchers import prune_keys as prune_topic_keys
from roost.http.app import create_app
from roost.http.server import HttpServer
from roost.runtime.actor import Actor
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.health import ActorState
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.runtime.stalls import StallMonitor
from roost.runtime.supervisor import Supervisor
from roost.runtime.topics import CLUSTER
from roost.storage.database import open_database
from roost.storage.migrator import check_current, migrate
from roost.storage.process_lock import single_process_lock

log = get_logger()


@dataclass
class Running:
    """What ``serve`` hands to ``task_status`` once every actor has started."""

    services: Services
    http: HttpServer
    supervisor: Supervisor

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"


def build_actors(services: Services) -> tuple[HttpServer, list[Actor]]:
    app = create_app(services)
    http = HttpServer(app, f"{services.settings.host}:{services.settings.port}")
    prunes = [  # what the pruner deletes or ends: one step per concern, each a domain operation
        Prune("audit_log", audit.prune),
        Prune("scout_proposals_expired", scouting.expire_proposals),
        Prune("handoff_events", prune_events),
        ledger_prune(),
        dead_device_sweep(),
        Prune("topic_event_keys", prune_topic_keys),
        Prune("webhook_deliveries", webhooks.prune_deliveries),
    ]
    runners = processor_runners(services)
    singletons = [DigestActor.name, Pruner.name, *(r.name for r in runners)]
    services.leadership.want(*singletons)
    services.bus.share(*CLUSTER)  # their wake-ups cross processes (PostgreSQL: the bus relay)
    relay = [BusRelay(services)] if services.db.shared else []
    heartbeat = Heartbeat(lambda: http.port if http.binds else None)
    return http, [*relay, http, heartbeat, Keepalive(), Pruner(prunes), ScoutActor(), Deliverer(),
                  DigestActor(), Mailer(), FanOut(), HandoffFollowups(), *runners, Dispatcher(),
                  SocketEvents(), WebhookSender()]


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    handle_signals: bool = True,
    freeze_heap: bool = False,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    stop = _StopWatch()
    try:
        await _serve(settings, clock, handle_signals, freeze_heap, stop, task_status)
    finally:
        stop.disarm()  # stopped in time (or serve failed): no hard exit, and the signal handlers back


async def _serve(settings: Settings, clock: Clock | None, handle_signals: bool, freeze_heap: bool,
                 stop: _StopWatch, task_status: trio.TaskStatus[Running]) -> None:
    with single_process_lock(settings):
        async with open_database(settings.database_url, pool_size=settings.pg_pool_size,
                                 readers=settings.sqlite_readers) as db:
            if settings.migrate_on_start:
                applied = await migrate(db)
                if applied:
                    log.info("migrated", versions=[m.version for m in applied])
            else:
                await check_current(db)
            services = Services.build(settings, db, clock)
            _log_secrets_state(settings)
            http, actors = build_actors(services)
            supervisor = Supervisor(services, actors)
            async with _stall_monitor(settings, services), trio.open_nursery() as nursery:
                if handle_signals:
                    nursery.start_soon(_watch_signals, supervisor, stop)
                await nursery.start(_run_supervisor, supervisor, nursery.cancel_scope)
                if freeze_heap:
                    _freeze_heap()
                log.info("ready", url=f"http://{http.binds[0].split('://', 1)[-1]}" if http.binds else None)
                task_status.started(Running(services, http, supervisor))


def _log_secrets_state(settings: Settings) -> None:
    """Say at start-up when scout secrets are stored unsealed (a warning), or how many keys open them."""
    from roost.http.ops import secrets_state

    state = secrets_state(settings)
    if state["sealed"]:
        log.info("secrets", sealed=True, keys=state["keys"], service_tokens=state["service_tokens"])
    else:
        log.warning(state["message"], sealed=False, service_tokens=state["service_tokens"])


@asynccontextmanager
async def _stall_monitor(settings: Settings, services: Services) -> AsyncIterator[None]:
    """Time every task step while serving, when ``stall_monitor`` is on (see ``roost.runtime.stalls``)."""
    if not settings.stall_monitor:
        yield
        return
    monitor = StallMonitor(services.metrics, settings.stall_warn_s)
    trio.lowlevel.add_instrument(monitor)
    try:
        yield
    finally:
        with suppress(KeyError):  # trio drops an instrument that raised
            trio.lowlevel.remove_instrument(monitor)
        monitor.close()


async def _run_supervisor(
    supervisor: Supervisor, done: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    try:
        await supervisor.run(task_status=task_status)
    finally:
        done.cancel()


HARD_STOP_AFTER_GRACE_S = 4.5  # the promise is grace + 5 s; the last 0.5 s is for the report and exit
EXIT_STUCK = 3  # something still ran HARD_STOP_AFTER_GRACE_S after the grace period
SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _watch_signals(supervisor: Supervisor, stop: _StopWatch) -> None:
    """First SIGTERM/SIGINT: drain, and arm the hard stop. A second one exits at once.

    The second signal is handled by a plain Python handler rather than through trio, so it works
    even while the event loop is held (a long synchronous step) or never comes back to it.
    """
    with trio.open_signal_receiver(*SIGNALS) as signals:
        signum = await signals.__anext__()
    log.info("signal received; draining", signal=signal.Signals(signum).name,
             grace_period_s=supervisor.services.settings.grace_period_s)
    stop.arm(supervisor, trio.lowlevel.current_trio_token())
    supervisor.request_stop()


class _StopWatch:
    """After the first signal: exit at once on a second one, and at grace + 4.5 s if still running."""

    def __init__(self) -> None:
        self._supervisor: Supervisor | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._timer: threading.Timer | None = None
        self._old_handlers: dict[int, Any] = {}

    def arm(self, supervisor: Supervisor, token: trio.lowlevel.TrioToken) -> None:
        self._supervisor, self._token = supervisor, token
        for signum in SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self._second_signal)
        after = supervisor.services.settings.grace_period_s + HARD_STOP_AFTER_GRACE_S
        # A thread, not a trio task: it must fire even if the loop is held, and a trio task would
        # be cancelled (or, shielded, keep the nursery open) once the supervisor returns.
        self._timer = threading.Timer(after, self._hard_stop)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _second_signal(self, signum: int, _frame: Any) -> None:
        log.error("second signal; exiting now", signal=signal.Signals(signum).name,
                  still_running=self._actors_running())
        _exit_now(128 + signum)

    def _hard_stop(self) -> None:
        tasks = self._tasks_from_the_loop()
        log.error("still running after the grace period; exiting", after_grace_s=HARD_STOP_AFTER_GRACE_S,
                  actors=self._actors_running(), tasks=tasks, exit_code=EXIT_STUCK)
        if tasks is None:  # the loop did not answer: show where every thread is instead
            faulthandler.dump_traceback(all_threads=True)
        _exit_now(EXIT_STUCK)

    def _actors_running(self) -> list[str]:
        if self._supervisor is None:
            return []
        health = self._supervisor.services.health
        done = (ActorState.STOPPED, ActorState.FAILED)
        return [a.name for a in self._supervisor.actors if health.get(a.name).state not in done]

    def _tasks_from_the_loop(self) -> list[str] | None:
        """The names (and where they wait) of trio's tasks, read on the loop; None if it does not answer."""
        answer: list[list[str]] = []
        ready = threading.Event()

        def collect() -> None:
            try:
                answer.append(task_tree())
            finally:
                ready.set()

        try:
            assert self._token is not None
            self._token.run_sync_soon(collect)
        except trio.RunFinishedError:
            return ["(trio run finished)"]
        return answer[0] if ready.wait(0.3) and answer else None


def task_tree(task: trio.lowlevel.Task | None = None, depth: int = 0) -> list[str]:
    """Each trio task as ``name @ function:line`` (where it waits), indented by nesting; call on the loop."""
    task = task or trio.lowlevel.current_root_task()
    if task is None:
        return []
    # trio's own frames (the nursery, the trap it waits in) say nothing about what the task is on
    frames = [f"{f.f_code.co_name}:{line}" for f, line in task.iter_await_frames()
              if "/trio/" not in f.f_code.co_filename]
    where = " > ".join(frames[-4:])
    lines = [f"{'  ' * depth}{task.name} @ {where}"]
    for nursery in task.child_nurseries:
        for child in list(nursery.child_tasks):
            lines.extend(task_tree(child, depth + 1))
    return lines


def _exit_now(code: int) -> None:
    """Flush what was logged and leave without unwinding (nothing left may block the exit)."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


GC_YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def _freeze_heap() -> None:
    """Keep the garbage collector's full passes off what start-up built, and make them rarer.

    Modules, the app, its schemas and the actors are some 75,000 objects that live as long as
    the process; a full (generation 2) collection walked all of them on the event loop, for
    30-100 ms at a time under load. ``gc.freeze`` moves them to a generation the collector
    never scans, so its passes only walk what requests and sockets allocate.

    Those are still many: a device socket is some 230 tracked objects, so with 2,000 open a full
    pass takes ~200 ms, and fan-out to them promoted enough short-lived objects to bring one on
    every few seconds. Collecting the youngest generation every 10,000 allocations instead of
    700 lets those objects die young (measured with 2,000 sockets on PostgreSQL: stalls over 50 ms
    13 -> 1, fan-out CPU per frame ~11 -> ~9.5 us); cyclic garbage is still collected as before.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


GIL_SWITCH_INTERVAL_S = 0.001  # CPython's default is 0.005


def share_the_gil() -> None:
    """Make a thread that holds the GIL hand it over after 1 ms instead of 5 ms when another waits.

    Worker threads here are of two kinds: CPU-bound ones (rendering digests, hashing) and ones
    that mostly wait in system calls (the mailer's file and SMTP sends, SQLite). Each system call
    gives the GIL up, and taking it back behind a CPU-bound thread waits out the whole switch
    interval: with the default 5 ms, a mailer thread wrote about one file per 20 ms while a digest
    batch rendered, and on PostgreSQL the bench's 20,000 digests were written 13.5 to 18.2 s after
    the tick started depending on how its phases fell; with 1 ms, 12.9-13.0 s, most of them during
    the tick (BENCHMARKS.md, session 4). The event loop's own wake-ups wait the same way.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def run(settings: Settings) -> None:
    """Serve until stopped (blocking)."""
    share_the_gil()
    trio.run(partial(serve, settings, freeze_heap=True))
