"""The supervisor: restart policy, readiness, graceful drain and cancellation.

Every test runs on ``MockClock(autojump_threshold=0)``: time only moves when every task is
blocked, so delays measured with ``trio.current_time()`` are exact, not approximate.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import structlog
import structlog.testing
import trio
from trio.testing import MockClock

from roost.runtime.actor import Actor, ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.health import ActorState
from roost.runtime.services import Services
from roost.runtime.supervisor import RestartPolicy, Supervisor

RunFn = Callable[[ActorContext, trio.TaskStatus[None]], Awaitable[None]]


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[dict[str, Any]]]:
    """Capture structlog events: cheap (no traceback rendering per crash) and assertable."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def make_services(**settings: object) -> Services:
    return Services.build(Settings(**settings), db=None)  # type: ignore[arg-type]  # runtime never touches db


class FnActor(Actor):
    """An actor whose run() is a plain function, so each test states its behaviour inline."""

    def __init__(self, name: str, fn: RunFn):
        self.name = name
        self._fn = fn

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._fn(ctx, task_status)


class Crasher:
    """Reports started, then raises at once; records the trio time of every start."""

    def __init__(self, *, before_started: bool = False, notify_at: int = 0):
        self.starts: list[float] = []
        self.before_started = before_started
        self.notify_at = notify_at
        self.reached = trio.Event()  # set on start number ``notify_at``

    async def __call__(self, ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        self.starts.append(trio.current_time())
        if len(self.starts) == self.notify_at:
            self.reached.set()
        await trio.lowlevel.checkpoint()
        if not self.before_started:
            task_status.started()
        raise RuntimeError(f"boom #{len(self.starts)}")


class Ticker:
    """Ticks every ``period_s`` until the process drains; records the trio time of every tick."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self.ticks: list[float] = []

    async def __call__(self, ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while await ctx.pause(self.period_s):
            self.ticks.append(trio.current_time())
            ctx.tick()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def assert_on_time(ticks: list[float], start: float, period_s: float) -> None:
    """Every tick landed exactly on its period (MockClock makes this exact, not approximate)."""
    expected = [start + period_s * (i + 1) for i in range(len(ticks))]
    assert ticks == pytest.approx(expected, abs=1e-9)


NO_JITTER = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=8.0, budget=1000, window_s=10_000.0, jitter=0.0)


# --- the restart policy on its own ---------------------------------------------------------------


def test_backoff_doubles_from_initial_and_caps_at_max():
    policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=60.0, jitter=0.0)
    rng = random.Random(0)
    delays = [policy.backoff(n, rng) for n in range(12)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    assert policy.backoff(10_000, rng) == 60.0  # no overflow for a long crash loop


def test_backoff_jitter_is_bounded_reproducible_and_never_exceeds_max():
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=16.0, jitter=0.25)
    first = [policy.backoff(n, random.Random(42)) for n in range(8)]
    again = [policy.backoff(n, random.Random(42)) for n in range(8)]
    assert first == again  # a seeded rng makes jitter reproducible

    rng = random.Random(1)
    for n in range(8):
        base = min(16.0, 2.0**n)
        samples = [policy.backoff(n, rng) for _ in range(200)]
        assert all(base * 0.75 <= d <= min(16.0, base * 1.25) for d in samples)
        assert len(set(samples)) > 50  # it really is jittered, not a constant
    assert max(policy.backoff(30, rng) for _ in range(200)) <= 16.0  # the cap holds after jitter


def test_restart_policy_from_settings_uses_the_restart_knobs():
    services = make_services(
        restart_initial_backoff_s=0.1, restart_max_backoff_s=3.0, restart_budget=4, restart_window_s=50.0
    )
    policy = RestartPolicy.from_settings(services)
    assert (policy.initial_backoff_s, policy.max_backoff_s, policy.budget, policy.window_s) == (0.1, 3.0, 4, 50.0)


def test_duplicate_actor_names_are_rejected():
    crasher = Crasher()
    with pytest.raises(ValueError, match="unique"):
        Supervisor(make_services(), [FnActor("a", crasher), FnActor("a", crasher)])


# --- restarts ------------------------------------------------------------------------------------


async def test_crashed_actor_restarts_with_doubling_backoff_capped_at_max(autojump_clock: MockClock):
    services = make_services()
    crasher = Crasher()
    sup = Supervisor(services, [FnActor("crasher", crasher)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(60)
        sup.request_stop()

    # Crashes are instant, so each gap between starts is exactly one backoff delay.
    assert gaps(crasher.starts)[:7] == pytest.approx([1, 2, 4, 8, 8, 8, 8])
    entry = services.health.get("crasher")
    assert entry.restarts == len(crasher.starts) - 1
    assert entry.last_error is not None and entry.last_error.startswith("RuntimeError: boom #")


async def test_killed_actor_is_back_within_its_jittered_backoff(autojump_clock: MockClock):
    services = make_services()
    policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=4.0, budget=1000, window_s=10_000.0, jitter=0.25)
    crasher = Crasher()
    sup = Supervisor(services, [FnActor("crasher", crasher)], policy=policy, rng=random.Random(1234))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(30)
        sup.request_stop()

    measured = gaps(crasher.starts)
    assert len(measured) >= 8
    # The supervisor draws its jitter from the rng it was given: replaying the same seed
    # reproduces every delay.
    replay = random.Random(1234)
    assert measured == pytest.approx([policy.backoff(n, replay) for n in range(len(measured))], abs=1e-9)
    for n, delay in enumerate(measured):
        base = min(4.0, 0.5 * 2**n)
        assert base * 0.75 <= delay <= min(4.0, base * 1.25)
    assert len(set(round(d, 9) for d in measured[4:])) > 1  # capped delays still jitter


async def test_backoff_starts_over_after_an_actor_ran_healthily_for_a_while(autojump_clock: MockClock):
    services = make_services()
    starts: list[float] = []

    async def crash_after_a_long_run_on_the_fourth_start(ctx: ActorContext, task_status: trio.TaskStatus[None]):
        starts.append(trio.current_time())
        task_status.started()
        if len(starts) == 4:
            await trio.sleep(100)  # longer than max_backoff_s: a healthy run
        raise RuntimeError("boom")

    sup = Supervisor(services, [FnActor("a", crash_after_a_long_run_on_the_fourth_start)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(125)
        sup.request_stop()

    # 1, 2, 4 → then 100 s healthy + the first delay again (1), then doubling resumes (2, 4).
    assert gaps(starts)[:6] == pytest.approx([1, 2, 4, 101, 2, 4])


async def test_actor_past_restart_budget_is_marked_failed_and_others_keep_ticking(
    autojump_clock: MockClock, logs: list[dict[str, Any]]
):
    services = make_services()
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=8.0, budget=3, window_s=600.0, jitter=0.0)
    crasher = Crasher()
    ticker = Ticker(period_s=1.0)
    sup = Supervisor(services, [FnActor("bad", crasher), FnActor("good", ticker)], policy=policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        t0 = trio.current_time()
        await trio.sleep(100)
        bad, good = services.health.get("bad"), services.health.get("good")
        # The budget allows three restarts; the fourth crash marks it failed, and it stays down.
        assert len(crasher.starts) == 4
        assert bad.state is ActorState.FAILED
        assert bad.restarts == 3
        assert bad.last_error == "RuntimeError: boom #4"
        assert bad.last_error_at is not None
        assert services.metrics.registry.get_sample_value("roost_actor_up", {"actor": "bad"}) == 0
        assert services.metrics.registry.get_sample_value("roost_actor_restarts_total", {"actor": "bad"}) == 3
        # Everyone else is untouched.
        assert good.state is ActorState.RUNNING
        assert good.restarts == 0 and good.last_error is None
        assert not services.health.ready
        sup.request_stop()

    assert len(ticker.ticks) == 100
    assert_on_time(ticker.ticks, t0, 1.0)
    assert services.health.get("good").ticks == 100
    assert services.health.get("bad").state is ActorState.FAILED  # a drain does not revive it
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["actor crashed"] * 4 + [
        "actor failed: restart budget spent"
    ]


async def test_crashes_older_than_the_window_do_not_count_toward_the_budget(autojump_clock: MockClock):
    services = make_services()
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=4.0, budget=2, window_s=50.0, jitter=0.0)
    starts: list[float] = []

    async def crash_every_thirty_seconds(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(30)
        raise RuntimeError("boom")

    sup = Supervisor(services, [FnActor("slow-crasher", crash_every_thirty_seconds)], policy=policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(400)
        # Ten crashes so far, but never more than two inside any 50 s window.
        assert len(starts) >= 10
        assert services.health.get("slow-crasher").state is ActorState.RUNNING
        sup.request_stop()


async def test_hundred_crashes_of_one_actor_leave_every_other_actors_ticks_on_time(autojump_clock: MockClock):
    services = make_services()
    policy = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.08, budget=1000, window_s=10_000.0)
    crasher = Crasher(notify_at=101)
    fast, slow = Ticker(period_s=0.25), Ticker(period_s=1.0)
    actors = [FnActor("crasher", crasher), FnActor("fast", fast), FnActor("slow", slow)]
    sup = Supervisor(services, actors, policy=policy, rng=random.Random(5))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        t0 = trio.current_time()
        with trio.fail_after(60):
            await crasher.reached.wait()  # the first start and a hundred restarts
        elapsed = trio.current_time() - t0
        sup.request_stop()

    assert services.health.get("crasher").restarts >= 100
    assert elapsed < 100 * 0.08 * 1.25 + 1  # every restart came back within its backoff
    assert len(fast.ticks) >= int(elapsed / 0.25) - 1 and len(slow.ticks) >= int(elapsed) - 1
    assert_on_time(fast.ticks, t0, 0.25)
    assert_on_time(slow.ticks, t0, 1.0)
    for name in ("fast", "slow"):
        assert services.health.get(name).restarts == 0
        assert services.health.get(name).state is ActorState.STOPPED


async def test_actor_returning_without_being_asked_to_stop_counts_as_a_crash(autojump_clock: MockClock):
    services = make_services()
    starts: list[float] = []

    async def returns_early(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(1)

    sup = Supervisor(services, [FnActor("quitter", returns_early)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.5)
        entry = services.health.get("quitter")
        assert entry.state is ActorState.BACKOFF
        assert entry.last_error == "ActorReturned: quitter returned without being asked to stop"
        await trio.sleep(1)
        assert entry.restarts == 1
        assert gaps(starts) == pytest.approx([2])  # ran 1 s, then the first backoff (1 s)
        sup.request_stop()


# --- readiness -----------------------------------------------------------------------------------


async def test_actor_crashing_before_it_reports_started_does_not_block_startup(autojump_clock: MockClock):
    services = make_services()
    crasher = Crasher(before_started=True)
    ticker = Ticker(period_s=1.0)
    sup = Supervisor(services, [FnActor("early", crasher), FnActor("good", ticker)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(0.5):  # it reports started at once, not after a backoff
            await nursery.start(sup.run)
        early = services.health.get("early")
        assert early.state is ActorState.BACKOFF
        assert early.last_error == "RuntimeError: boom #1"
        assert services.health.get("good").state is ActorState.RUNNING
        assert not services.health.ready
        await trio.sleep(5.5)
        assert len(crasher.starts) > 1  # still being retried
        assert len(ticker.ticks) == 5
        sup.request_stop()


async def test_health_is_ready_only_while_every_actor_is_running(autojump_clock: MockClock):
    services = make_services()
    seen: dict[str, bool] = {}
    crash = trio.Event()

    async def slow_start(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(5)  # e.g. connecting to something
        task_status.started()
        await ctx.stopping.wait()

    async def crash_on_demand(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await crash.wait()
        raise RuntimeError("asked to crash")

    sup = Supervisor(services, [FnActor("slow", slow_start), FnActor("fragile", crash_on_demand)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1)
        seen["while one is starting"] = services.health.ready
        assert services.health.get("slow").state is ActorState.STARTING
        await trio.sleep(5)
        seen["all running"] = services.health.ready
        crash.set()
        await trio.sleep(0.5)
        seen["one in backoff"] = services.health.ready
        assert services.health.get("fragile").state is ActorState.BACKOFF
        crash = trio.Event()  # the restarted actor waits on a fresh event
        await trio.sleep(1)
        seen["after the restart"] = services.health.ready
        sup.request_stop()
    seen["after the drain"] = services.health.ready

    assert seen == {
        "while one is starting": False,
        "all running": True,
        "one in backoff": False,
        "after the restart": True,
        "after the drain": False,
    }


# --- draining and cancellation -------------------------------------------------------------------


async def test_request_stop_sets_stopping_and_cooperative_actors_end_cleanly(autojump_clock: MockClock):
    services = make_services(grace_period_s=25.0)
    tickers = [Ticker(period_s=3600.0), Ticker(period_s=60.0)]
    sup = Supervisor(services, [FnActor("hourly", tickers[0]), FnActor("minutely", tickers[1])])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(7200)
        assert not services.stopping.is_set()
        stop_at = trio.current_time()
        sup.request_stop()
    # run() returned as soon as the actors did: nobody waited for the grace period.
    assert trio.current_time() == stop_at
    assert services.stopping.is_set()
    for name in ("hourly", "minutely"):
        entry = services.health.get(name)
        assert entry.state is ActorState.STOPPED
        assert entry.last_error is None and entry.restarts == 0
    assert [len(t.ticks) for t in tickers] == [2, 120]


async def test_actor_ignoring_stopping_is_cancelled_when_the_grace_period_ends(
    autojump_clock: MockClock, logs: list[dict[str, Any]]
):
    services = make_services(grace_period_s=7.0)
    cancelled_at: list[float] = []

    async def stubborn(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled_at.append(trio.current_time())
            raise

    async def finishes_its_work_first(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await ctx.stopping.wait()
        await trio.sleep(2)  # the unit of work in hand
        finished.append(trio.current_time())

    finished: list[float] = []
    sup = Supervisor(services, [FnActor("stubborn", stubborn), FnActor("polite", finishes_its_work_first)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        stop_at = trio.current_time()
        sup.request_stop()

    assert finished == [stop_at + 2]  # in-flight work finished within the grace period
    assert cancelled_at == [stop_at + 7]  # the stubborn one was cancelled exactly at its end
    assert trio.current_time() == stop_at + 7  # and run() returned then, without raising
    assert services.health.get("polite").state is ActorState.STOPPED
    assert services.health.get("stubborn").last_error is None  # being cancelled is not a crash
    assert {"event": "grace period over; cancelled what was still running", "log_level": "warning",
            "actors": ["stubborn"]} in logs  # named: the one the grace period cut short


async def test_stop_during_backoff_ends_the_actor_without_restarting_it(autojump_clock: MockClock):
    services = make_services(grace_period_s=25.0)
    policy = RestartPolicy(initial_backoff_s=30.0, max_backoff_s=60.0, budget=10, window_s=600.0, jitter=0.0)
    crasher = Crasher()
    sup = Supervisor(services, [FnActor("crasher", crasher)], policy=policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1)
        assert services.health.get("crasher").state is ActorState.BACKOFF
        stop_at = trio.current_time()
        sup.request_stop()
    assert trio.current_time() == stop_at  # no waiting out the 30 s backoff
    assert len(crasher.starts) == 1
    entry = services.health.get("crasher")
    assert entry.state is ActorState.STOPPED and entry.restarts == 0


async def test_request_stop_while_an_actor_is_still_starting_drains_within_the_grace_period(autojump_clock: MockClock):
    services = make_services(grace_period_s=5.0)

    async def never_ready(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    async def ready(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await ctx.stopping.wait()

    later_started = False

    async def later(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        nonlocal later_started
        later_started = True
        task_status.started()

    actors = [FnActor("ready", ready), FnActor("stuck", never_ready), FnActor("later", later)]
    sup = Supervisor(services, actors)
    with trio.fail_after(60):  # before the fix, a stop during start-up waited forever
        async with trio.open_nursery() as nursery:
            run_reported = trio.Event()
            nursery.start_soon(_start_and_flag, sup, run_reported)
            await trio.sleep(1)
            stop_at = trio.current_time()
            sup.request_stop()
            await run_reported.wait()
            assert trio.current_time() == stop_at  # start-up reported at once, not after the grace
    assert services.stopping.is_set()
    assert trio.current_time() == stop_at + 5  # the one still starting got the grace period, then was cancelled
    assert services.health.get("ready").state is ActorState.STOPPED
    assert services.health.get("later").state is ActorState.STOPPED
    assert not later_started  # nothing new starts once the process drains


async def _start_and_flag(sup: Supervisor, flag: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        flag.set()


async def test_every_actor_is_listed_as_starting_before_the_first_one_is_up(autojump_clock: MockClock):
    """Status shows the whole line-up at once, and readiness cannot come early."""
    services = make_services()

    async def slow(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(5)
        task_status.started()
        await ctx.stopping.wait()

    async def quick(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await ctx.stopping.wait()

    sup = Supervisor(services, [FnActor("http", quick), FnActor("slow", slow), FnActor("last", quick)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1)
        assert [(e["name"], e["state"]) for e in services.health.snapshot()] == [
            ("http", "running"),
            ("slow", "starting"),
            ("last", "starting"),
        ]
        assert not services.health.ready
        await trio.sleep(5)
        assert services.health.ready
        sup.request_stop()


async def test_actor_returning_before_it_reported_started_counts_as_a_crash(autojump_clock: MockClock):
    services = make_services()

    async def gives_up(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(1)

    sup = Supervisor(services, [FnActor("quitter", gives_up)], policy=NO_JITTER)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        entry = services.health.get("quitter")
        assert entry.state is ActorState.BACKOFF
        assert entry.last_error == "ActorReturned: quitter returned before it reported started"
        sup.request_stop()


async def test_actor_returning_on_stopping_before_it_reported_started_ends_cleanly(autojump_clock: MockClock):
    services = make_services(grace_period_s=5.0)

    async def waits_for_a_dependency(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        await ctx.stopping.wait()  # gave up on its set-up because the process is draining

    sup = Supervisor(services, [FnActor("waiting", waits_for_a_dependency)])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await trio.sleep(1)
            stop_at = trio.current_time()
            sup.request_stop()
    assert trio.current_time() == stop_at
    entry = services.health.get("waiting")
    assert entry.state is ActorState.STOPPED
    assert entry.last_error is None


async def test_cancelling_the_supervisor_propagates_and_nothing_is_restarted(autojump_clock: MockClock):
    services = make_services()
    ticker = Ticker(period_s=1.0)
    crasher = Crasher()
    sup = Supervisor(services, [FnActor("t", ticker), FnActor("c", crasher)], policy=NO_JITTER)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2.5)
            scope.cancel()
    assert scope.cancelled_caught  # the Cancelled reached its scope: nothing swallowed it
    starts_at_cancel = len(crasher.starts)
    await trio.sleep(100)
    assert len(crasher.starts) == starts_at_cancel  # no supervisor left restarting anything
    assert len(ticker.ticks) == 2
    assert services.health.get("t").last_error is None


async def test_actor_that_turns_cancellation_into_an_error_does_not_outlive_the_cancel(autojump_clock: MockClock):
    services = make_services()
    starts: list[float] = []

    async def converts_cancel(ctx: ActorContext, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise RuntimeError("cleanup failed") from None

    sup = Supervisor(services, [FnActor("c", converts_cancel)], policy=NO_JITTER)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(1)
            scope.cancel()
    assert scope.cancelled_caught  # the error did not stop the Cancelled from reaching its scope
    assert len(starts) == 1  # and the supervisor did not restart it
    assert services.health.get("c").restarts == 0


# --- the actor context ---------------------------------------------------------------------------


async def test_pause_sleeps_the_full_time_then_returns_true(autojump_clock: MockClock):
    services = make_services()
    services.health.add("a")
    ctx = ActorContext("a", services)
    t0 = trio.current_time()
    assert await ctx.pause(42.0) is True
    assert trio.current_time() - t0 == pytest.approx(42.0)


async def test_pause_returns_false_as_soon_as_the_process_drains(autojump_clock: MockClock):
    services = make_services()
    ctx = ActorContext("a", services)

    async def stop_later() -> None:
        await trio.sleep(3)
        services.stopping.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_later)
        t0 = trio.current_time()
        assert await ctx.pause(3600) is False
        assert trio.current_time() - t0 == pytest.approx(3.0)
    t1 = trio.current_time()
    assert await ctx.pause(3600) is False  # already draining: no sleep at all
    assert trio.current_time() == t1


async def test_pause_does_not_swallow_an_outer_cancellation(autojump_clock: MockClock):
    ctx = ActorContext("a", make_services())
    after_pause = False
    with trio.move_on_after(5) as scope:
        await ctx.pause(3600)
        after_pause = True
    assert scope.cancelled_caught and not after_pause
    assert trio.current_time() == pytest.approx(5.0)


async def test_tick_records_last_tick_time_and_count(autojump_clock: MockClock):
    services = Services.build(Settings(), db=None, clock=Clock())  # type: ignore[arg-type]
    services.health.add("a")
    ctx = ActorContext("a", services)
    ctx.tick()
    await trio.sleep(10)
    ctx.tick()
    entry = services.health.get("a")
    assert entry.ticks == 2
    assert entry.last_tick_at == services.clock.now()
    assert services.metrics.registry.get_sample_value("roost_actor_ticks_total", {"actor": "a"}) == 2
