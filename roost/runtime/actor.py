"""The one shape every actor has: a long-running task the supervisor starts, watches and restarts.

An actor subclasses ``Actor`` and implements ``run(ctx, task_status=...)`` in this order:

1. set up: open its ``Inbox`` (``ctx.inbox(*topics)``), register socket or bus hooks, add its
   queue probes; nothing of this happens in ``__init__``;
2. call ``task_status.started()``: from now on the supervisor counts it ready;
3. loop on ``await ctx.wait(inbox, at_most=...)``, which returns False once the process drains
   (return then, after finishing the unit of work in hand), and True on a wake-up or a timeout;
   work that runs on a cadence, possibly only in the process that leads it, is ``ctx.every``.

An actor's fields are changed only by its own task. Other tasks (a socket's, a request's) post
to its inbox, or call a domain function (``roost.domain``) that writes rows and publishes a
wake-up; the actor then reads the rows. Inbox messages are hints, never the data: an inbox that
overflows says so once, and the actor catches up by reading everything pending.

Raising is a crash: the supervisor records the error and restarts the actor after a backoff.
"""

from __future__ import annotations

import abc
import datetime as dt
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Iterable, Protocol, TypeVar

import trio

from roost.runtime.logging import get_logger
from roost.runtime.schedule import Schedule

if TYPE_CHECKING:
    from roost.runtime.services import Services

T = TypeVar("T")


class Waitable(Protocol):
    async def wait(self) -> Any: ...


async def first_of(*events: Waitable) -> None:
    """Wait until any one of ``events`` is set (for the few waits that are not an actor's inbox)."""
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(event: Waitable) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait_then_cancel, event)


class Inbox(Generic[T]):
    """An actor's one inbox: a bounded queue that only its owner reads.

    ``post`` never blocks and never fails: past ``size`` items the post is dropped and the inbox
    marked overflowed, which the owner's next ``take`` reports (it then reads everything pending
    from the database instead). Bus subscriptions (``roost.runtime.bus``) are inboxes of
    ``Message``; an actor that also takes requests from sockets posts them to the same inbox.
    """

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: deque[T] = deque()
        self._overflowed = False
        self._lot = trio.lowlevel.ParkingLot()

    def post(self, item: T) -> bool:
        """Queue ``item`` for the owner without waiting; False (and overflowed) when full."""
        if len(self._items) >= self.size:
            self.overflow()
            return False
        self._items.append(item)
        self._lot.unpark_all()
        return True

    def overflow(self) -> None:
        """Mark the inbox overflowed: the owner's next ``take`` says "read everything pending"."""
        self._overflowed = True
        self._lot.unpark_all()

    @property
    def ready(self) -> bool:
        """Whether ``take`` would return something now."""
        return bool(self._items) or self._overflowed

    def take(self, limit: int | None = None) -> tuple[list[T], bool]:
        """Everything queued now (at most ``limit``), and whether posts were dropped since the last take."""
        if limit is None or limit >= len(self._items):
            items = list(self._items)
            self._items.clear()
        else:
            items = [self._items.popleft() for _ in range(limit)]
        overflowed, self._overflowed = self._overflowed, False
        return items, overflowed

    async def wait_ready(self) -> None:
        """Wait until something was posted (or the inbox overflowed)."""
        while not self.ready:
            await self._lot.park()

    def __len__(self) -> int:
        return len(self._items)


class Stopping:
    """The process-wide "drain now" flag: a ``trio.Event`` that also ends every ``ActorContext.wait``."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._scopes: set[trio.CancelScope] = set()

    def set(self) -> None:
        self._event.set()
        for scope in list(self._scopes):
            scope.cancel()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def watch(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when the drain starts (at once if it has)."""
        if self._event.is_set():
            scope.cancel()
        self._scopes.add(scope)

    def unwatch(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)


class ActorContext:
    """What an actor gets: the shared services plus the helpers of the actor shape, bound to its name."""

    def __init__(self, name: str, services: Services):
        self.name = name
        self.services = services
        self.log = get_logger().bind(actor=name)

    @property
    def stopping(self) -> Stopping:
        return self.services.stopping

    def tick(self) -> None:
        """Record one unit of work done (feeds ``last_tick`` in status and a metric)."""
        self.services.health.tick(self.name)

    def inbox(self, *topics: str, size: int = 1024) -> Any:
        """A new inbox subscribed to ``topics`` on the bus (a context manager that unsubscribes)."""
        return self.services.bus.subscribe(*topics, size=size)

    async def wait(self, inbox: Inbox[Any] | None = None, *, at_most: float = math.inf) -> bool:
        """Wait for something in ``inbox``, ``at_most`` seconds, or the drain, whichever comes first.

        Returns False when the process is draining (the actor should return), True otherwise: the
        inbox has something (``inbox.take()``), or ``at_most`` seconds passed.
        """
        if self.stopping.is_set():
            return False
        if inbox is not None and inbox.ready:
            return True
        with trio.move_on_after(max(0.0, at_most)) as scope:
            self.stopping.watch(scope)
            try:
                if inbox is None:
                    await trio.sleep_forever()
                else:
                    await inbox.wait_ready()
            finally:
                self.stopping.unwatch(scope)
        return not self.stopping.is_set()

    async def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the shared clock; False at once if the process is draining."""
        return await self.wait(at_most=seconds)

    async def every(
        self,
        when: float | Schedule | Callable[[], float],
        work: Callable[[], Awaitable[Any]],
        *,
        leader: str | None = None,
        first_delay_s: float = 0.0,
    ) -> None:
        """Run ``work`` on a cadence until the drain: the one primitive for periodic work.

        ``when`` is an interval in seconds (counted from the end of a run), a callable returning
        one (read before each wait, for settings that change), or a ``Schedule`` (an interval or
        a cron expression on the wall clock). With ``leader``, ``work`` runs only while this
        process leads that singleton (``roost.runtime.leadership``); the others keep the cadence
        and skip, so a process that takes over runs it within one period. Each period ticks.
        """
        if first_delay_s > 0 and not await self.wait(at_most=first_delay_s):
            return
        while True:
            if leader is None or self.services.leadership.leads(leader):
                await work()
            self.tick()
            if not await self.wait(at_most=self.seconds_until_next(when)):
                return

    def seconds_until_next(self, when: float | Schedule | Callable[[], float]) -> float:
        """Seconds from now to the next run of a cadence given as ``ctx.every`` takes it."""
        if isinstance(when, Schedule):
            now = self.services.clock.now()
            return max(0.0, (when.next_after(now) - now) / dt.timedelta(seconds=1))
        return float(when() if callable(when) else when)


class Actor(abc.ABC):
    """Base class of every supervised actor; ``name`` must be unique in the process."""

    name: str = "actor"

    @abc.abstractmethod
    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; call ``task_status.started()`` once ready (see the module docstring)."""


class Readiness:
    """A task status that remembers whether ``started()`` was called (to tell "returned before ready")."""

    def __init__(self, inner: trio.TaskStatus[Any], value: Any = None):
        self._inner = inner
        self._value = value
        self.reported = False

    def started(self, value: object = None) -> None:
        self._inner.started(self._value)
        self.reported = True


def iter_topics(messages: Iterable[Any]) -> set[str]:
    """The topics of a batch of bus messages taken from an inbox."""
    return {m.topic for m in messages}
