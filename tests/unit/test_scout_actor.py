"""The scout actor's loop under MockClock: intervals with jitter, one run at a time per scout,
wake-ups on push and on device registration, pause and resume.

No database here (MockClock and a real database do not mix, STACK-NOTES pitfall 4): the scout
table is a dict behind the two repo reads the loop makes, and ``run`` stands in for
``run_scout``, keeping its timing contract (``next_run_after``) and its pause rule. The run
itself, on both backends, is covered by tests/integration/test_scout_runs.py.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
import trio
import trio.testing

from roost.actors import scout as scout_actor
from roost.actors.scout import ScoutActor
from roost.domain.scouting import JITTER, RunReport, next_run_after
from roost.errors import AlreadyExists, AlreadyRunning, PluginError, StorageError
from roost.runtime.actor import ActorContext
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.runtime.topics import DEVICE_REGISTERED, SCOUT_ITEMS

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class World:
    """Scouts (id -> row), which users have a recent device, and a log of runs."""

    def __init__(self, services: Services, run_s: float = 2.0):
        self.services = services
        self.scouts: dict[str, dict[str, Any]] = {}
        self.active_users: set[str] = set()
        self.runs: list[tuple[str, float, bool]] = []  # (scout, trio time started, paused)
        self.running: set[str] = set()
        self.overlaps = 0
        self.run_s = run_s
        self.fail_with: dict[str, Exception] = {}  # raised once
        self.crash_until: dict[str, float] = {}  # crashes on every run before this trio time
        self.crashes: list[tuple[str, float]] = []
        self.held_until: dict[str, float] = {}  # another process holds the scout's lock until then
        self.pending: set[str] = set()  # scouts with due pending rows (pushed, untriaged)
        self.pending_check_fails = 0  # so many pending checks raise a storage error

    def add(self, sid: str, user: str, interval: float) -> None:
        self.scouts[sid] = {"id": sid, "user_id": user, "next_run_at": None, "interval": interval}
        self.active_users.add(user)

    async def enabled_scouts(self, db: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.scouts.values()]

    async def scouts_of_user(self, db: Any, user_id: str) -> list[str]:
        return [r["id"] for r in self.scouts.values() if r["user_id"] == user_id]

    async def next_pending_at(self, db: Any, sid: str) -> dt.datetime | None:
        if self.pending_check_fails:
            self.pending_check_fails -= 1
            raise StorageError("database error: connection reset")
        return T0 - dt.timedelta(days=1) if sid in self.pending else None

    async def run(self, services: Services, sid: str, *, rng: random.Random) -> RunReport:
        if trio.current_time() < self.held_until.get(sid, -1.0):
            raise AlreadyRunning(f"scout:{sid}")
        if sid in self.fail_with:
            raise self.fail_with.pop(sid)
        if trio.current_time() < self.crash_until.get(sid, -1.0):
            self.crashes.append((sid, trio.current_time()))
            # What the plugin boundary makes of a plugin's own bug (roost.plugins.guard).
            raise PluginError("connector", "scripted", RuntimeError("plugin bug"), unexpected=True)
        if sid in self.running:
            self.overlaps += 1
        self.running.add(sid)
        row = self.scouts[sid]
        paused = row["user_id"] not in self.active_users
        self.runs.append((sid, trio.current_time(), paused))
        try:
            await trio.sleep(self.run_s)  # the source takes a while
        finally:
            self.running.discard(sid)
        row["next_run_at"] = next_run_after(services.clock.now(), row["interval"], rng)
        return RunReport(sid, paused=paused)

    def starts(self, sid: str) -> list[float]:
        return [t for s, t, _ in self.runs if s == sid]


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> World:
    services = Services.build(Settings(), db=None, clock=Clock(T0))  # type: ignore[arg-type]
    services.health.add("scout")
    w = World(services)
    monkeypatch.setattr(scout_actor.repo, "enabled_scouts", w.enabled_scouts)
    monkeypatch.setattr(scout_actor.repo, "scouts_of_user", w.scouts_of_user)
    monkeypatch.setattr(scout_actor.repo, "next_pending_at", w.next_pending_at)
    return w


async def _run_actor(world: World, seconds: float, during: Any = None) -> None:
    actor = ScoutActor(rng=random.Random(7), run=world.run)
    ctx = ActorContext("scout", world.services)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, ctx)
        if during is not None:
            await during(actor)
        await trio.sleep_until(seconds)
        world.services.stopping.set()


def test_next_run_is_the_interval_with_at_most_ten_percent_jitter():
    rng = random.Random(1)
    gaps = [(next_run_after(T0, 600, rng) - T0).total_seconds() for _ in range(2000)]
    assert min(gaps) >= 600 * (1 - JITTER) and max(gaps) <= 600 * (1 + JITTER)
    assert max(gaps) - min(gaps) > 600 * JITTER  # it does spread, not a constant


async def test_each_scout_runs_on_its_own_interval_with_jitter(world, autojump_clock):
    world.add("fast", "u1", 60)
    world.add("slow", "u1", 600)
    await _run_actor(world, 3600)
    fast, slow = world.starts("fast"), world.starts("slow")
    assert fast[0] == 0 and slow[0] == 0  # new scouts run at once
    # each gap: the run's own length plus the interval ±10 %
    for starts, interval in ((fast, 60), (slow, 600)):
        gaps = [b - a - world.run_s for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps and all(interval * 0.9 - 1e-6 <= g <= interval * 1.1 + 1e-6 for g in gaps), gaps
    assert 50 <= len(fast) <= 62 and 5 <= len(slow) <= 7
    assert len({round(b - a, 3) for a, b in zip(fast, fast[1:], strict=False)}) > 1  # jittered
    assert world.overlaps == 0


async def test_a_push_wakes_the_scout_at_once_and_runs_never_overlap(world, autojump_clock):
    world.add("s", "u1", 3600)
    world.run_s = 30.0

    async def pushes(actor: ScoutActor) -> None:
        await trio.sleep(100)  # after the first run, long before the next is due
        world.services.bus.publish(SCOUT_ITEMS, "s")
        await trio.sleep(5)  # mid-run: three more pushes → exactly one more run after this one
        for _ in range(3):
            world.services.bus.publish(SCOUT_ITEMS, "s")
            await trio.sleep(1)

    await _run_actor(world, 1000, pushes)
    assert world.starts("s") == [0, 100, 130]
    assert world.overlaps == 0


async def test_a_scout_of_an_inactive_user_pauses_and_resumes_when_a_device_registers(world, autojump_clock):
    world.add("s", "u1", 3600)
    world.active_users.clear()  # no device seen lately: the run pauses

    async def device_connects(actor: ScoutActor) -> None:
        await trio.sleep(500)
        world.active_users.add("u1")
        world.services.bus.publish(DEVICE_REGISTERED, "u1")
        await trio.sleep(10)
        world.services.bus.publish(DEVICE_REGISTERED, "u2")  # another user's device wakes nothing here

    await _run_actor(world, 1000, device_connects)
    assert [(t, paused) for _, t, paused in world.runs] == [(0, True), (500, False)]


async def test_a_run_held_elsewhere_is_retried_later_and_a_crash_stops_only_that_run(world, autojump_clock):
    world.add("busy", "u1", 3600)
    world.add("broken", "u1", 3600)
    world.add("fine", "u1", 60)
    world.fail_with = {"busy": AlreadyRunning("scout:busy")}
    world.crash_until = {"broken": 250}

    async def wake_broken(actor: ScoutActor) -> None:
        await trio.sleep(300)
        world.services.bus.publish(SCOUT_ITEMS, "broken")

    await _run_actor(world, 400, wake_broken)
    assert world.starts("busy") == [1.0]  # not a spin: one retry, a second later
    # the crash ended neither the actor nor the other scouts; it backs off (30 s, 60 s, ...),
    # and a wake-up runs it at once
    assert world.crashes == [("broken", 0), ("broken", 30), ("broken", 90), ("broken", 210)]
    assert world.starts("broken") == [300]
    assert len(world.starts("fine")) >= 5


async def test_a_storage_conflict_in_a_run_backs_that_scout_off_like_any_other_roost_error(world, autojump_clock):
    # Only the code scout_disabled ends a run quietly; another Conflict (a unique key) is trouble.
    world.add("dup", "u1", 3600)
    world.fail_with = {"dup": AlreadyExists("a row with the same unique key already exists")}
    await _run_actor(world, 100)
    assert world.starts("dup") == [30]  # the 30 s backoff, then the run


async def test_a_bug_in_roost_during_a_run_is_not_swallowed_but_ends_the_actor_for_the_supervisor(
        world, autojump_clock):
    # Only RoostError (plugin, storage, configuration) is one scout's trouble; anything else is a
    # bug in roost's own code, and the supervisor must see it (traceback, restart budget).
    world.add("fine", "u1", 60)
    world.add("bug", "u1", 3600)
    world.fail_with = {"bug": KeyError("next_run_at")}
    with pytest.raises(BaseExceptionGroup) as caught:
        await _run_actor(world, 400)
    assert caught.group_contains(KeyError)


@pytest.mark.parametrize("pending", [True, False])
async def test_a_push_meeting_a_run_elsewhere_is_retried_until_that_run_ends_only_while_rows_wait(
        world, autojump_clock, pending):
    # The other process's run may have read its pending rows before the push committed: while
    # due rows wait, this process tries again (50 ms doubling to 1 s) until the lock is free;
    # with none, it leaves the scout to that run (no retry loop against a long pull elsewhere).
    world.add("pushed", "u1", 3600)
    world.scouts["pushed"]["next_run_at"] = T0 + dt.timedelta(hours=1)
    world.held_until = {"pushed": 3.5}
    if pending:
        world.pending.add("pushed")

    async def push(actor: ScoutActor) -> None:
        world.services.bus.publish(SCOUT_ITEMS, "pushed")

    await _run_actor(world, 100, push)
    if pending:  # tried at 0, 0.05, 0.15, 0.35, 0.75, 1.55, 2.55: through at 3.55
        assert world.starts("pushed") == [pytest.approx(3.55)]
    else:  # one look a second later, then left to the run elsewhere (not due here for an hour)
        assert world.starts("pushed") == []


async def test_a_push_during_the_wait_for_a_run_elsewhere_retries_at_once(world, autojump_clock):
    # Waiting out a run elsewhere (backoff at 1 s by then) must not hold back items pushed here
    # meanwhile: the push ends the wait, and the run starts as soon as the lock is free.
    world.add("pushed", "u1", 3600)
    world.scouts["pushed"]["next_run_at"] = T0 + dt.timedelta(hours=1)
    world.held_until = {"pushed": 5.2}
    world.pending.add("pushed")

    async def pushes(actor: ScoutActor) -> None:
        world.services.bus.publish(SCOUT_ITEMS, "pushed")
        await trio.sleep_until(5.3)  # tried at 0, 0.05, 0.15, 0.35, 0.75, 1.55, 2.55, 3.55, 4.55: waiting till 5.55
        world.services.bus.publish(SCOUT_ITEMS, "pushed")

    await _run_actor(world, 100, pushes)
    assert world.starts("pushed")[0] == pytest.approx(5.3)  # (the push may also ask for one more run after it)


async def test_the_backoff_for_a_run_elsewhere_starts_afresh_after_a_run_gets_the_scout(world, autojump_clock):
    # Held until 1.0 (tries at 0 .. 0.75, through at 1.55), then it runs until 3.55; pushed again at
    # 3.0, it tries again at 3.55 and meets a second hold (until 3.58): retried 50 ms later, not after
    # the 1 s the first backoff had reached.
    world.add("pushed", "u1", 3600)
    world.scouts["pushed"]["next_run_at"] = T0 + dt.timedelta(hours=1)
    world.pending.add("pushed")
    world.held_until = {"pushed": 1.0}

    async def pushes(actor: ScoutActor) -> None:
        world.services.bus.publish(SCOUT_ITEMS, "pushed")
        await trio.sleep_until(3.0)
        world.held_until["pushed"] = 3.58  # a run elsewhere holds the lock at 3.55
        world.services.bus.publish(SCOUT_ITEMS, "pushed")

    await _run_actor(world, 100, pushes)
    assert world.starts("pushed")[:2] == [pytest.approx(1.55), pytest.approx(3.6)]


async def test_a_storage_error_while_waiting_out_a_run_elsewhere_leaves_the_actor_running(world, autojump_clock):
    # The pending check runs inside the handler of AlreadyRunning: an error there must not take the
    # actor (and every other scout's run) down. Treated as rows waiting: retried on the backoff.
    world.add("pushed", "u1", 3600)
    world.add("other", "u2", 60)
    world.scouts["pushed"]["next_run_at"] = T0 + dt.timedelta(hours=1)
    world.held_until = {"pushed": 0.5}
    world.pending.add("pushed")
    world.pending_check_fails = 1

    async def push(actor: ScoutActor) -> None:
        world.services.bus.publish(SCOUT_ITEMS, "pushed")

    await _run_actor(world, 200, push)
    assert world.starts("pushed")[0] == pytest.approx(0.75)  # tried at 0, 0.05, 0.15, 0.35; free at 0.5
    assert len(world.starts("other")) >= 3  # the other scout kept its interval
