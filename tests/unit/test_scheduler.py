"""The scheduler under a mock clock: parallel jobs, the in-flight set, bookkeeping however a run ends, late."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio
import trio.testing

from roost.actors.scheduler import Scheduler
from roost.errors import AlreadyRunning, PluginError, StorageError
from roost.runtime.actor import ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.jobs import Job, job_board
from roost.runtime.services import Services


def make_services() -> Services:
    return Services.build(Settings(), db=None, clock=Clock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC)))  # type: ignore[arg-type]


async def run_for(services: Services, scheduler: Scheduler, seconds: float) -> None:
    services.health.add(scheduler.name)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run, ActorContext(scheduler.name, services))
        await trio.sleep(seconds)
        services.stopping.set()
        nursery.cancel_scope.deadline = trio.current_time() + 1


async def test_a_long_job_delays_no_other_and_is_never_launched_twice(autojump_clock: trio.testing.MockClock) -> None:
    services = make_services()
    starts: dict[str, list[float]] = {"slow": [], "fast": []}

    def job(name: str, duration: float) -> Any:
        async def run(s: Services) -> None:
            starts[name].append(trio.current_time())
            await trio.sleep(duration)
        return run

    scheduler = Scheduler([Job("slow", 30, job("slow", 600)), Job("fast", 10, job("fast", 1))])
    t0 = trio.current_time()
    await run_for(services, scheduler, 650)

    assert [round(t - t0) for t in starts["slow"]] == [0, 630]  # never relaunched while in flight
    assert len(starts["fast"]) >= 55  # every ~11 s all along, while slow ran
    status = job_board(services).jobs["slow"]
    # The second slow run was cut by the drain deadline: recorded as cancelled, not as a failure.
    assert status.runs == 2 and status.last_status == "cancelled" and status.failures == 0


@pytest.mark.parametrize("how", ["fails", "plugin", "busy"])
async def test_a_failing_job_runs_at_its_cadence_not_every_tick(how: str, autojump_clock: trio.testing.MockClock
                                                                ) -> None:
    services = make_services()
    runs: list[float] = []

    async def bad(s: Services) -> None:
        runs.append(trio.current_time())
        if how == "fails":
            raise StorageError("upstream said no")
        if how == "plugin":
            raise PluginError("processor", "usage", KeyError("bug"), unexpected=True)
        raise AlreadyRunning("held elsewhere")

    scheduler = Scheduler([Job("bad", 60, bad)])
    await run_for(services, scheduler, 600)

    assert len(runs) == 10  # t = 0, 60, ..., 540
    status = job_board(services).jobs["bad"]
    assert status.runs == 10 and not status.running
    if how == "busy":
        assert status.last_status == "busy" and status.failures == 0
    else:
        assert status.last_status == "failed" and status.failures == 10
        assert status.last_error.startswith("StorageError" if how == "fails" else "PluginError: KeyError")
    text = services.metrics.render().decode()
    outcome = "busy" if how == "busy" else "failed"
    assert f'roost_job_runs_total{{job="bad",status="{outcome}"}} 10.0' in text
    assert 'roost_job_duration_seconds_count{job="bad"} 10.0' in text


async def test_a_bug_in_a_job_is_recorded_and_then_raised_to_the_supervisor(
        autojump_clock: trio.testing.MockClock) -> None:
    services = make_services()
    runs: list[float] = []

    async def buggy(s: Services) -> None:
        runs.append(trio.current_time())
        raise KeyError("bug")

    with pytest.raises(BaseExceptionGroup) as caught:
        await run_for(services, Scheduler([Job("buggy", 60, buggy)]), 600)
    assert caught.group_contains(KeyError)
    assert len(runs) == 1  # not retried in a loop that hides it: the supervisor restarts the actor
    status = job_board(services).jobs["buggy"]
    assert status.last_status == "failed" and status.last_error.startswith("KeyError")


async def test_a_job_without_success_is_late_after_interval_plus_grace(autojump_clock: trio.testing.MockClock) -> None:
    services = make_services()
    healthy = True

    async def flaky(s: Services) -> None:
        if not healthy:
            raise StorageError("disk gone")

    scheduler = Scheduler([Job("flaky", 60, flaky, grace_s=30, actor="session:x")], name="session:x")
    services.health.add("session:x")
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run, ActorContext("session:x", services))
        await trio.sleep(100)
        assert services.health.late() == []
        healthy = False  # last success at t=60
        await trio.sleep(60)  # t=160 > 60 + 60 + 30
        assert services.health.late() == ["session:x"]
        assert [a["late"] for a in services.health.snapshot()] == [True]
        healthy = True
        await trio.sleep(61)
        assert services.health.late() == []
        services.stopping.set()


async def test_draining_launches_nothing_new_and_lets_the_run_in_flight_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = make_services()
    finished: list[float] = []

    async def work(s: Services) -> None:
        await trio.sleep(20)
        finished.append(trio.current_time())

    scheduler = Scheduler([Job("work", 5, work)])
    services.health.add(scheduler.name)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run, ActorContext(scheduler.name, services))
        await trio.sleep(10)
        services.stopping.set()
    assert len(finished) == 1 and job_board(services).jobs["work"].runs == 1


def test_a_job_needs_a_positive_interval() -> None:
    async def noop(s: Services) -> None: ...

    with pytest.raises(ValueError):
        Job("x", 0, noop)


async def test_a_cron_job_runs_at_the_matching_times_not_at_start(autojump_clock: trio.testing.MockClock) -> None:
    services = make_services()  # the wall clock starts at 2025-01-01 00:00 UTC
    runs: list[dt.datetime] = []

    async def work(s: Services) -> None:
        runs.append(s.clock.now())

    scheduler = Scheduler([Job("every10", None, work, cron="*/10 * * * *")])
    await run_for(services, scheduler, 35 * 60)

    assert [r.strftime("%H:%M:%S") for r in runs] == ["00:10:00", "00:20:00", "00:30:00"]
    status = job_board(services).jobs["every10"]
    assert status.next_run_at == dt.datetime(2025, 1, 1, 0, 40, tzinfo=dt.UTC)
    assert status.as_dict(services.clock.now())["cron"] == "*/10 * * * *"


async def test_a_cron_run_that_overruns_is_followed_by_the_next_match_after_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = make_services()
    starts: list[str] = []

    async def slow(s: Services) -> None:
        starts.append(s.clock.now().strftime("%H:%M"))
        await trio.sleep(15 * 60)

    scheduler = Scheduler([Job("slow", None, slow, cron="*/10 * * * *")])
    await run_for(services, scheduler, 45 * 60)
    # 00:10 runs until 00:25: 00:20 is skipped (in flight), not caught up at 00:25; next is 00:30.
    assert starts == ["00:10", "00:30"]


async def test_a_failing_cron_job_runs_at_its_cadence_and_is_late_after_its_time_plus_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = make_services()
    runs: list[str] = []

    async def bad(s: Services) -> None:
        runs.append(s.clock.now().strftime("%H:%M"))
        raise StorageError("disk gone")

    scheduler = Scheduler([Job("hourly", None, bad, cron="0 * * * *", grace_s=120, actor="hourly")], name="hourly")
    services.health.add("hourly")
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run, ActorContext("hourly", services))
        await trio.sleep(3600 + 119)  # 01:01:59: due at 01:00, within the grace
        assert services.health.late() == []
        await trio.sleep(2)  # 01:02:01
        assert services.health.late() == ["hourly"]
        await trio.sleep(3 * 3600)
        services.stopping.set()
    assert runs == ["01:00", "02:00", "03:00", "04:00"]
    assert job_board(services).jobs["hourly"].failures == 4


@pytest.mark.parametrize(("interval", "cron"), [(None, None), (60, "* * * * *"), (None, "61 * * * *")])
def test_a_job_needs_an_interval_or_a_valid_cron_expression(interval: float | None, cron: str | None) -> None:
    async def noop(s: Services) -> None: ...

    with pytest.raises(ValueError, match="job x"):
        Job("x", interval, noop, cron=cron)
