"""Health registry: what each actor is doing, fed by the supervisor, read by /readyz and status."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable

from roost.runtime.clock import Clock
from roost.runtime.metrics import Metrics


class ActorState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class ActorHealth:
    name: str
    state: ActorState = ActorState.STARTING
    restarts: int = 0
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    last_tick_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    ticks: int = 0
    # Ticks per minute over the last hour ({epoch minute: ticks}; at most WINDOW_MINUTES entries): the
    # console's throughput chart. This process only; a tick is one unit of work the actor reports.
    per_minute: dict[int, int] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "last_tick_at": iso(self.last_tick_at),
            "started_at": iso(self.started_at),
            "ticks": self.ticks,
        }


WINDOW_MINUTES = 60


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class HealthRegistry:
    """One entry per supervised task; the process is ready when every entry is running."""

    def __init__(self, clock: Clock, metrics: Metrics):
        self._clock = clock
        self._metrics = metrics
        self._actors: dict[str, ActorHealth] = {}
        # Jobs with a cadence (session processors) say when an actor is "late": running, but its
        # last successful run is older than its interval plus a grace window. Shown, not a readiness failure.
        self._late_checks: dict[str, Callable[[dt.datetime], bool]] = {}

    def add(self, name: str) -> ActorHealth:
        entry = self._actors.setdefault(name, ActorHealth(name))
        self._metrics.actor_up.labels(name).set(0)
        self._metrics.actor_restarts.labels(name).inc(0)  # export 0, not "absent", before a first crash
        return entry

    def get(self, name: str) -> ActorHealth:
        return self._actors[name]

    def set_state(self, name: str, state: ActorState) -> None:
        entry = self._actors[name]
        entry.state = state
        if state is ActorState.RUNNING:
            entry.started_at = self._clock.now()
        self._metrics.actor_up.labels(name).set(1 if state is ActorState.RUNNING else 0)

    def record_crash(self, name: str, error: BaseException) -> None:
        entry = self._actors[name]
        entry.last_error = f"{type(error).__name__}: {error}"[:500]
        entry.last_error_at = self._clock.now()

    def record_restart(self, name: str) -> None:
        self._actors[name].restarts += 1
        self._metrics.actor_restarts.labels(name).inc()

    def tick(self, name: str) -> None:
        entry = self._actors[name]
        entry.last_tick_at = now = self._clock.now()
        entry.ticks += 1
        minute = int(now.timestamp() // 60)
        entry.per_minute[minute] = entry.per_minute.get(minute, 0) + 1
        if len(entry.per_minute) > WINDOW_MINUTES:
            for old in [m for m in entry.per_minute if m <= minute - WINDOW_MINUTES]:
                del entry.per_minute[old]
        self._metrics.actor_ticks.labels(name).inc()

    def add_late_check(self, name: str, check: Callable[[dt.datetime], bool]) -> None:
        self._late_checks[name] = check

    def late(self) -> list[str]:
        """Names of the actors whose job is late."""
        now = self._clock.now()
        return sorted(name for name, check in self._late_checks.items() if check(now))

    def throughput(self) -> dict[str, list[int]]:
        """Ticks per minute of each actor over the last hour, oldest minute first (60 values)."""
        now_minute = int(self._clock.now().timestamp() // 60)
        minutes = range(now_minute - WINDOW_MINUTES + 1, now_minute + 1)
        return {a.name: [a.per_minute.get(m, 0) for m in minutes] for a in self._actors.values()}

    @property
    def ready(self) -> bool:
        return bool(self._actors) and all(a.state is ActorState.RUNNING for a in self._actors.values())

    def snapshot(self) -> list[dict[str, Any]]:
        late = set(self.late())
        return [{**a.as_dict(), "late": a.name in late} for a in self._actors.values()]
