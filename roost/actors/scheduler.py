"""The scheduler: jobs on their own cadence, each run in its own task.

Errors: a run failing with a ``RoostError`` (the database, a plugin, a job already running) is
recorded on the board and logged, and the scheduler goes on; any other error is a bug: it is
recorded too, logged with its traceback, and raised to the supervisor (restart budget, status).

Each job (``roost.runtime.jobs.Job``) has a task of its own that runs it through ``ctx.every``, so
a job that takes ten minutes delays no other, and a job still running is never launched again.
When a run ends — success, failure, crash, or "already running elsewhere" — the job's next run is
set from that end (one interval later, or the cron expression's next time), so a failing job runs
at its cadence instead of hot-looping; the next run is kept across a restart by the supervisor.
Each job's last status, duration and error are kept on the process's ``JobBoard``. A scheduler
is a singleton: with several processes only the leader of its name runs its jobs
(``roost.runtime.leadership``); the others keep the cadence, skip, and mark the job as standing by.
"""

from __future__ import annotations

import datetime as dt

import trio

from roost.errors import AlreadyRunning, RoostError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.jobs import Job, job_board, tracked


class Scheduler(Actor):
    """Runs ``jobs``, each on its own cadence, in tasks of their own."""

    name = "scheduler"

    def __init__(self, jobs: list[Job], *, name: str | None = None):
        self.jobs = list(jobs)
        if name is not None:
            self.name = name
        self.next_due: dict[str, float] = {}  # each job's next run, in trio time (kept across restarts)

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        board = job_board(ctx.services)
        now = ctx.services.clock.now()
        for job in self.jobs:
            board.register(job)
            if job.name not in self.next_due:
                self._due_at(ctx, job, job.first_run(now))
        async with trio.open_nursery() as nursery:
            for job in self.jobs:
                nursery.start_soon(self._cadence, ctx, job, name=f"job:{job.name}")
            task_status.started()
        # Draining: each job's task launches nothing new, and this waits for the runs in flight (the
        # supervisor's grace period cancels them if they take too long).

    async def _cadence(self, ctx: ActorContext, job: Job) -> None:
        await ctx.every(lambda: self._seconds_to_due(ctx, job), lambda: self._run_once(ctx, job),
                        first_delay_s=self._seconds_to_due(ctx, job))

    async def _run_once(self, ctx: ActorContext, job: Job) -> None:
        services = ctx.services
        clock = services.clock
        # A drain that starts at the very time a run is due wins: let the tasks woken with this one
        # run first, and launch nothing if one of them started the drain.
        await trio.lowlevel.checkpoint()
        if ctx.stopping.is_set():
            return
        if not services.leadership.leads(self.name):
            # Another process leads this scheduler: keep the cadence, run nothing, so taking over
            # (the leader died) runs the job within one interval (or at the next cron time).
            status = job_board(services).jobs[job.name]
            status.standby_at = clock.now()
            self._due_at(ctx, job, job.schedule.next_after(status.standby_at))
            return
        try:
            await tracked(services, job.name, lambda: job.run(services))
        except AlreadyRunning:
            ctx.log.info("job skipped: already running", job=job.name)
        except RoostError as exc:  # recorded on the board; the scheduler and the other jobs go on
            ctx.log.error("job failed", job=job.name, error=f"{type(exc).__name__}: {exc.message}")
        except Exception as exc:  # a bug: recorded on the board (tracked), and the supervisor sees it
            ctx.log.error("job crashed", job=job.name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            raise
        finally:
            # However the run ended: the next one is scheduled from this end, never "at once".
            self._due_at(ctx, job, job.schedule.next_after(clock.now()))

    def _seconds_to_due(self, ctx: ActorContext, job: Job) -> float:
        return max(0.0, self.next_due[job.name] - ctx.services.clock.monotonic())

    def _due_at(self, ctx: ActorContext, job: Job, when: dt.datetime) -> None:
        """Set ``job``'s next run to wall time ``when`` (kept as trio time, which ``ctx.every`` waits on)."""
        clock = ctx.services.clock
        self.next_due[job.name] = clock.monotonic() + (when - clock.now()).total_seconds()
        job_board(ctx.services).jobs[job.name].next_run_at = when
