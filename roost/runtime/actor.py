"""The actor base: a long-running task the supervisor starts, watches and restarts.

An actor implements ``run(ctx, task_status=...)``: it sets itself up, calls
``task_status.started()`` when it is ready to work, then loops until ``ctx.stopping`` is set
(it should then finish the unit of work in hand and return) or it is cancelled. Raising
is a crash: the supervisor records the error and restarts it after a backoff.
"""

from __future__ import annotations

import abc

import trio

from roost.runtime.logging import get_logger
from roost.runtime.services import Services


async def first_of(*events: trio.Event) -> None:
    """Wait until any one of ``events`` is set (e.g. an actor's wake-up or ``ctx.stopping``)."""
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait_then_cancel, event)


class ActorContext:
    """What an actor gets: the shared services plus helpers bound to its name."""

    def __init__(self, name: str, services: Services):
        self.name = name
        self.services = services
        self.log = get_logger().bind(actor=name)

    @property
    def stopping(self) -> trio.Event:
        return self.services.stopping

    def tick(self) -> None:
        """Record one unit of work done (feeds ``last_tick`` in status and a metric)."""
        self.services.health.tick(self.name)

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the shared clock; False at once if the process is draining."""
        if self.stopping.is_set():
            return False
        with trio.move_on_after(max(0.0, seconds)):
            await self.stopping.wait()
            return False
        return True


class Actor(abc.ABC):
    """Base class of every supervised actor; ``name`` must be unique in the process."""

    name: str = "actor"

    @abc.abstractmethod
    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; call ``task_status.started()`` once ready."""
