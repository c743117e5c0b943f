"""A MockClock that does not leap over work a worker thread is still doing.

``MockClock(autojump_threshold=0)`` jumps to the next deadline the moment no task is runnable.
A task waiting on ``trio.to_thread.run_sync`` (every SQLite call) is not runnable, so the clock
used to leap while a database call was in flight: deadlines fired in the middle of work, an
actor's "wait until the next minute" ran before its own write had landed, and with no deadline
left the idle check spun the event loop, holding the GIL against the very thread it waited for
(a test of 2 s took 24 to 120 s). While any worker thread is in flight, ``thread_aware`` raises
the clock's threshold to a real ``busy_threshold``, so time stands still for the work, yet a
thread that hangs (a test of a timeout around blocking work) still lets the clock move after
that much real idleness. (MockClock is final, so this wraps ``to_thread`` instead of subclassing.)
"""

from __future__ import annotations

from typing import Any, Callable

import trio
from trio.testing import MockClock


class ThreadAwareness:
    """Counts worker threads in flight under ``clock`` and sets its autojump threshold to match."""

    def __init__(self, clock: MockClock, *, busy_threshold: float = 0.5) -> None:
        self.clock = clock
        self.busy_threshold = busy_threshold
        self.in_flight = 0
        self.idle_threshold = clock.autojump_threshold

    def started(self) -> None:
        self.in_flight += 1
        if self.in_flight == 1:
            # A test may have changed the threshold itself (to inf, to move the clock by hand): keep its choice.
            self.idle_threshold = self.clock.autojump_threshold
            if self.idle_threshold < self.busy_threshold:
                self.clock.autojump_threshold = self.busy_threshold

    def finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.clock.autojump_threshold == self.busy_threshold:
            self.clock.autojump_threshold = self.idle_threshold

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``trio.to_thread.run_sync``, counting its threads while this awareness's clock runs."""

        async def run_sync(*args: Any, **kwargs: Any) -> Any:
            if trio.lowlevel.current_clock() is not self.clock:
                return await original(*args, **kwargs)
            self.started()
            try:
                return await original(*args, **kwargs)
            finally:
                self.finished()

        return run_sync
