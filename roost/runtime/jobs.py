"""Jobs and the job board: what a scheduled job is, and each job's bookkeeping in this process.

A job is a name, an interval or a cron expression (``roost.runtime.schedule``), and a coroutine;
the ``Scheduler`` actor (``roost.actors.scheduler``) runs jobs on their cadence, and a manual run
(``roost.domain.processors.run_now``) is recorded here too. Each job's last status, duration,
error and next run are kept on the process's ``JobBoard`` (``job_board(services)``, served at
``GET /api/admin/jobs``) and exported as metrics; ``tracked`` records one run however it ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from roost.errors import AlreadyRunning, InvalidInput
from roost.runtime.schedule import Schedule
from roost.runtime.services import Services

JobFn = Callable[[Services], Awaitable[Any]]


@dataclass(frozen=True)
class Job:
    name: str
    interval_s: float | None  # None with ``cron``
    run: JobFn
    grace_s: float = 300.0
    first_delay_s: float = 0.0  # interval jobs: the first run comes this long after start
    actor: str | None = None  # the actor whose health shows the job as late
    cron: str | None = None  # instead of an interval: a cron expression (UTC unless CRON_TZ=<zone> is given)
    schedule: Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.interval_s is None) == (self.cron is None):
            raise ValueError(f"job {self.name}: give an interval or a cron expression (one of them)")
        try:
            schedule = Schedule.cron(self.cron) if self.cron is not None else Schedule.every(self.interval_s)  # type: ignore[arg-type]
        except InvalidInput as exc:
            raise ValueError(f"job {self.name}: {exc.message}") from exc
        object.__setattr__(self, "schedule", schedule)

    def first_run(self, now: dt.datetime) -> dt.datetime:
        """When the first run is due, the scheduler starting at ``now``."""
        if self.cron is not None:
            return self.schedule.next_after(now)
        return now + dt.timedelta(seconds=self.first_delay_s)


@dataclass
class JobStatus:
    name: str
    interval_s: float | None
    grace_s: float
    registered_at: dt.datetime
    schedule: Schedule = field(repr=False)
    running: bool = False
    runs: int = 0
    failures: int = 0
    last_status: str | None = None  # ok | failed | busy | cancelled
    last_started_at: dt.datetime | None = None
    last_finished_at: dt.datetime | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    last_success_at: dt.datetime | None = None
    last_result: Any = None
    next_run_at: dt.datetime | None = None
    standby_at: dt.datetime | None = None  # last time a run was due here while another process led the job

    def late(self, now: dt.datetime) -> bool:
        """No successful run by the schedule's next time + grace (counting from registration before the
        first one, or from the last time another process led it)."""
        since = self.last_success_at or self.registered_at  # registration counts only before a first success
        if self.standby_at is not None and self.standby_at > since:
            since = self.standby_at
        return (now - self.schedule.next_after(since)).total_seconds() > self.grace_s

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "name": self.name, "interval_s": self.interval_s, "cron": self.schedule.cron_expr,
            "grace_s": self.grace_s, "running": self.running,
            "late": self.late(now), "runs": self.runs, "failures": self.failures, "last_status": self.last_status,
            "last_started_at": self.last_started_at, "last_finished_at": self.last_finished_at,
            "last_duration_s": self.last_duration_s, "last_error": self.last_error,
            "last_success_at": self.last_success_at, "next_run_at": self.next_run_at,
        }


@dataclass
class JobBoard:
    """Every job's bookkeeping in this process, and the job metrics."""

    services: Services
    jobs: dict[str, JobStatus] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reg = self.services.metrics.registry
        self.m_runs = Counter("roost_job_runs", "Job runs ended, by status", ["job", "status"], registry=reg)
        self.m_duration = Histogram("roost_job_duration_seconds", "How long a job run took", ["job"], registry=reg,
                                    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
        self.m_running = Gauge("roost_job_running", "1 while a run of the job is going on", ["job"], registry=reg)
        self.m_success = Gauge("roost_job_last_success_timestamp_seconds", "When the job last succeeded",
                               ["job"], registry=reg)

    def register(self, job: Job) -> JobStatus:
        status = self.jobs.get(job.name)
        if status is None:
            status = self.jobs[job.name] = JobStatus(job.name, job.interval_s, job.grace_s,
                                                     self.services.clock.now(), job.schedule)
            self.m_running.labels(job.name).set(0)
            for outcome in ("ok", "failed", "busy"):
                self.m_runs.labels(job.name, outcome).inc(0)
        if job.actor is not None:
            self.services.health.add_late_check(job.actor, lambda now, s=status: s.late(now))
        return status

    def started(self, name: str) -> None:
        status = self.jobs[name]
        status.running = True
        status.last_started_at = self.services.clock.now()
        self.m_running.labels(name).set(1)

    def finished(self, name: str, outcome: str, duration_s: float, *, error: str | None = None,
                 result: Any = None) -> None:
        status = self.jobs[name]
        now = self.services.clock.now()
        status.running = False
        status.runs += 1
        status.last_status = outcome
        status.last_finished_at = now
        status.last_duration_s = duration_s
        status.last_error = error
        if outcome == "ok":
            status.last_success_at = now
            status.last_result = result
            self.m_success.labels(name).set(now.timestamp())
        elif outcome == "failed":
            status.failures += 1
        self.m_running.labels(name).set(0)
        self.m_runs.labels(name, outcome).inc()
        self.m_duration.labels(name).observe(duration_s)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.services.clock.now()
        return [s.as_dict(now) for s in sorted(self.jobs.values(), key=lambda s: s.name)]


def job_board(services: Services) -> JobBoard:
    """The process's job board, made on first use (``services.job_board``, so every caller shares it)."""
    if services.job_board is None:
        services.job_board = JobBoard(services)
    return services.job_board


async def tracked(services: Services, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn`` as a run of job ``name``, recording status, duration and error however it ends."""
    board = job_board(services)
    clock = services.clock
    start = clock.monotonic()
    board.started(name)
    outcome, error, result = "cancelled", None, None
    try:
        result = await fn()
        outcome = "ok"
        return result
    except AlreadyRunning as exc:
        outcome, error = "busy", exc.message
        raise
    except Exception as exc:
        outcome, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        board.finished(name, outcome, clock.monotonic() - start, error=error, result=result)
