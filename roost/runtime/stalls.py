"""Stall monitor: a trio Instrument that times every task step.

A step is the code a task runs between two checkpoints; a long one means something blocked
the event loop (a synchronous call that belonged in ``trio.to_thread``). The longest step is
kept in a gauge and each one over the threshold is logged with the task's name.

Where Linux tells (``/proc/thread-self/schedstat``), a long step's time spent waiting for a CPU
(runnable, but the machine busy with other processes) is taken off: that is a busy machine,
not a blocking call, and it would have stretched any step. Blocking calls, CPU work and garbage
collection all still count.
"""

from __future__ import annotations

import os
import time

import trio

from roost.runtime.logging import get_logger
from roost.runtime.metrics import Metrics

log = get_logger()


class StallMonitor(trio.abc.Instrument):
    def __init__(self, metrics: Metrics | None, warn_s: float = 0.05):
        self.metrics = metrics
        self.warn_s = warn_s
        self.longest_s = 0.0
        self.longest_task = ""
        self._started: float | None = None
        self._queued_ns = 0
        self._schedstat: int | None = None
        try:  # opened by the thread that runs trio (the one whose steps are timed)
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            self._run_queue_ns()
        except (OSError, ValueError, IndexError):
            self.close()

    def close(self) -> None:
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None

    def _run_queue_ns(self) -> int:
        """Nanoseconds this thread has spent runnable but waiting for a CPU, so far."""
        assert self._schedstat is not None
        return int(os.pread(self._schedstat, 64, 0).split()[1])

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._schedstat is not None:
            self._queued_ns = self._run_queue_ns()
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        # The step that installs the monitor ends without having begun under it: nothing to time.
        if self._started is None:
            return
        took = time.perf_counter() - self._started
        self._started = None
        if took <= min(self.longest_s, self.warn_s):
            return
        waited = 0.0
        if self._schedstat is not None:
            waited = min(took, (self._run_queue_ns() - self._queued_ns) / 1e9)
            took -= waited
        if took > self.longest_s:
            self.longest_s = took
            self.longest_task = task.name
            if self.metrics is not None:
                self.metrics.loop_lag.set(took)
        if took > self.warn_s:
            log.warning("event loop stalled", task=task.name, seconds=round(took, 4),
                        waited_for_cpu_s=round(waited, 4))
