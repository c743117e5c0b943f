"""Stall monitor: a trio Instrument that times every task step.

A step is the code a task runs between two checkpoints; a long one means something blocked
the event loop (a synchronous call that belonged in ``trio.to_thread``). The longest step is
kept in a gauge and each one over the threshold is logged with the task's name.
"""

from __future__ import annotations

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
        self._started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._started
        if took > self.longest_s:
            self.longest_s = took
            self.longest_task = task.name
            if self.metrics is not None:
                self.metrics.loop_lag.set(took)
        if took > self.warn_s:
            log.warning("event loop stalled", task=task.name, seconds=round(took, 4))
