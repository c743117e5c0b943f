"""The supervisor: one nursery that owns every actor, restarts crashed ones, and drains on stop.

Restart policy: a crashed actor waits an exponential backoff with jitter and is started again.
More than ``budget`` crashes inside ``window_s`` marks it failed: it stays down (``/readyz``
answers 503 and status shows its last error) while every other actor keeps running.

Draining: ``request_stop()`` sets ``services.stopping``; actors finish what they hold and
return, the HTTP server stops accepting, and whatever is still running when the grace period
ends is cancelled.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import trio

from roost.runtime.actor import Actor, ActorContext
from roost.runtime.health import ActorState
from roost.runtime.logging import bind, get_logger
from roost.runtime.services import Services

log = get_logger()


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    budget: int = 10
    window_s: float = 600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.budget < 0 or not self.window_s > 0:
            raise ValueError("need budget >= 0 and window_s > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("need 0 <= jitter < 1")

    def backoff(self, consecutive: int, rng: random.Random) -> float:
        """Delay before restart number ``consecutive`` (0-based): doubling, ±jitter, never over the cap.

        The cap applies after the jitter, so ``max_backoff_s`` really is the longest wait; at the
        cap the jitter only shortens the delay, which still spreads restarts out.
        """
        base = min(self.max_backoff_s, self.initial_backoff_s * (2 ** min(consecutive, 32)))
        return min(self.max_backoff_s, base * (1 + rng.uniform(-self.jitter, self.jitter)))

    @classmethod
    def from_settings(cls, services: Services) -> RestartPolicy:
        s = services.settings
        return cls(s.restart_initial_backoff_s, s.restart_max_backoff_s, s.restart_budget, s.restart_window_s)


class ActorReturned(RuntimeError):
    """An actor's run() returned while the process was not stopping."""


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Supervisor:
    def __init__(
        self,
        services: Services,
        actors: list[Actor],
        policy: RestartPolicy | None = None,
        rng: random.Random | None = None,
    ):
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique: {names}")
        self.services = services
        self.actors = actors
        self.policy = policy or RestartPolicy.from_settings(services)
        self._rng = rng or random.Random()
        self._stop = trio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor (each reports ready or its first crash), then wait for a stop."""
        async with trio.open_nursery() as nursery:
            for actor in self.actors:
                await nursery.start(self._supervise, actor)
            task_status.started()
            await self._stop.wait()
            grace = self.services.settings.grace_period_s
            log.info("draining", grace_period_s=grace)
            self.services.stopping.set()
            nursery.cancel_scope.deadline = trio.current_time() + grace
        if nursery.cancel_scope.cancelled_caught:
            log.warning("grace period over; cancelled what was still running")
        log.info("stopped")

    async def _supervise(self, actor: Actor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        bind(actor=actor.name)
        health = self.services.health
        health.add(actor.name)
        ctx = ActorContext(actor.name, self.services)
        crashes: deque[float] = deque()
        consecutive = 0
        reported = False
        while not self.services.stopping.is_set():
            health.set_state(actor.name, ActorState.STARTING)
            began = trio.current_time()
            try:
                async with trio.open_nursery() as inner:
                    await inner.start(self._run_actor, actor, ctx)
                    health.set_state(actor.name, ActorState.RUNNING)
                    if not reported:
                        task_status.started()
                        reported = True
                if self.services.stopping.is_set():
                    break
                raise ActorReturned(f"{actor.name} returned without being asked to stop")
            except Exception as group:
                exc = _unwrap(group)
                health.record_crash(actor.name, exc)
                log.error("actor crashed", error=str(exc), exc_info=exc)
            if not reported:
                task_status.started()
                reported = True
            now = trio.current_time()
            if now - began >= self.policy.max_backoff_s:
                consecutive = 0  # it ran healthily for a while: start the backoff over
            crashes.append(now)
            while crashes and crashes[0] < now - self.policy.window_s:
                crashes.popleft()
            if len(crashes) > self.policy.budget:
                health.set_state(actor.name, ActorState.FAILED)
                log.error("actor failed: restart budget spent", restarts=health.get(actor.name).restarts)
                return
            health.set_state(actor.name, ActorState.BACKOFF)
            delay = self.policy.backoff(consecutive, self._rng)
            consecutive += 1
            with trio.move_on_after(delay):
                await self.services.stopping.wait()
            if self.services.stopping.is_set():
                break
            health.record_restart(actor.name)
        health.set_state(actor.name, ActorState.STOPPED)
        if not reported:
            task_status.started()

    @staticmethod
    async def _run_actor(
        actor: Actor, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await actor.run(ctx, task_status=task_status)
