"""Processors: the jobs that read Claude Code transcripts, and their runs.

``run_processor`` is one run: under the processor's lock (``processor:<name>``: in-process, and a
PostgreSQL advisory lock, so a second process gets the same 409), it scans the transcript tree
(stat only) and, as each user folder is scanned, brings its changed transcripts up to date in
worker threads (see ``roost.domain.transcripts``), storing each batch's items together with the
transcripts' new state in one transaction. A transcript that fails is counted and left as it
was, so the next run retries it; the others go on.

``run_now`` is a manual run (HTTP, CLI), recorded on the job board like the scheduled runs of
the processor's actor (``roost.actors.processors``); ``processor_job`` is the job both record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Callable

import trio

from roost.domain import transcripts
from roost.errors import NotFound, RoostError, unwrap_group
from roost.plugins.guard import plugin_call
from roost.plugins.processors import Processor, load_processors
from roost.runtime import topics
from roost.runtime.jobs import Job, JobFn, job_board, tracked
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.storage import audit
from roost.storage import processor_runs as run_store
from roost.storage import transcripts as state_store

log = get_logger()

BATCH_FILES = 1000  # files per worker-thread call and per transaction storing their items and states
BATCH_BYTES = 32 << 20
READERS = 2  # worker threads reading and hashing files at once
RECORD_TIMEOUT_S = 5.0  # the most a run's record may wait for the database (also when cancelled)
SCANNERS = 1  # user folders statted at once (2 measured slower: the threads mostly contend for the GIL)


@dataclass
class RunResult:
    scanned: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_read: int = 0
    items: int = 0

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k in ("scanned", "processed", "skipped", "failed")}


Progress = Callable[[int, int], None]  # (files done, files to do)
Work = list[tuple[transcripts.FileEntry, state_store.FileState | None]]  # changed files and their last state


def lock_name(processor: str) -> str:
    return f"processor:{processor}"


def job_name(processor: str) -> str:
    """The processor's job on the board (a name the status pages and ``/api/admin/jobs`` show)."""
    return f"session-processor:{processor}"


def actor_name(processor: str) -> str:
    """The name of the processor's actor (and of its health entry)."""
    return f"session:{processor}"


def interval_for(services: Services, processor: Processor) -> float | None:
    """The processor's interval in seconds; None when it runs on a cron expression (``cron_for``)."""
    if cron_for(services, processor) is not None:
        return None
    return services.settings.processor_intervals_s.get(processor.name, processor.default_interval_s)


def cron_for(services: Services, processor: Processor) -> str | None:
    """The processor's cron expression (``ROOST_PROCESSOR_<NAME>_CRON``), if it has one instead of an interval."""
    return services.settings.processor_crons.get(processor.name)


def processor_job(services: Services, processor: Processor, run: JobFn) -> Job:
    """The processor's job: its interval or cron expression, late after that plus the processor grace."""
    return Job(job_name(processor.name), interval_for(services, processor), run,
               grace_s=services.settings.processor_grace_s, actor=actor_name(processor.name),
               cron=cron_for(services, processor))


def processors(services: Services) -> dict[str, Processor]:
    """The processors this process runs (loaded once per process, kept on ``services``)."""
    found = getattr(services, "_processors", None)
    if found is None:
        found = load_processors()
        services._processors = found  # type: ignore[attr-defined]
    return found


def get_processor(services: Services, name: str) -> Processor:
    """Raises: NotFound: no processor of that name."""
    proc = processors(services).get(name)
    if proc is None:
        raise NotFound(f"no processor named {name!r} (known: {', '.join(sorted(processors(services)))})")
    return proc


async def statuses(services: Services) -> list[dict[str, Any]]:
    """Each processor's cadence, last run (from the job board) and what it has read so far, by name."""
    board = job_board(services)
    now = services.clock.now()
    items = []
    for name, proc in sorted(processors(services).items()):
        status = board.jobs.get(job_name(name))
        summary = await state_store.summary(services.db, name)
        items.append({
            "name": name,
            "interval_s": interval_for(services, proc),
            "cron": cron_for(services, proc),
            "grace_s": services.settings.processor_grace_s,
            "running": bool(status and status.running),
            "late": bool(status and status.late(now)),
            "last_status": status.last_status if status else None,
            "last_success_at": status.last_success_at if status else None,
            "last_error": status.last_error if status else None,
            "last_result": status.last_result if status else None,
            "files": summary["files"],
            "items_extracted": summary["items"],
        })
    return items


async def run_processor(services: Services, processor: Processor, *, user: str | None = None,
                        progress: Progress | None = None) -> RunResult:
    """One run of ``processor`` over the transcript tree (or one user's folder).

    Raises:
        AlreadyRunning: a run of this processor holds its lock, here or in another process.
    """
    async with services.locks.hold(lock_name(processor.name)):
        return await _run_locked(services, processor, user, progress, kind="schedule", actor=None)


async def _find_changed(services: Services, processor: Processor, user: str | None, result: RunResult,
                        send: trio.MemorySendChannel[Work], found: Callable[[int], None]) -> None:
    """Send each user folder's changed files, with their last state: stat only, no content read.

    The known (file, size, mtime_ns) rows load while the user folders are statted, SCANNERS folders at a
    time in worker threads; each folder is compared in a worker thread too, as soon as both are
    there, and only its changed files' full states are loaded. Folders go out as they are done, so
    reading the first ones overlaps statting the others.
    """
    db = services.db
    root = services.settings.session_dir
    known: set[transcripts.ScanRow] = set()
    loaded = trio.Event()

    async def load_known() -> None:
        nonlocal known
        known = await state_store.fingerprints(db, processor.name, user)
        loaded.set()

    async def scan_one(name: str, limiter: trio.CapacityLimiter, out: trio.MemorySendChannel[Work]) -> None:
        async with out:
            rows = await trio.to_thread.run_sync(transcripts.scan_folder, root, name, limiter=limiter)
            await loaded.wait()
            entries = await trio.to_thread.run_sync(transcripts.changed, root, rows, known, limiter=limiter)
            result.scanned += len(rows)
            result.skipped += len(rows) - len(entries)
            if entries:
                # The states of the changed files that have one (none on a first run: no query).
                states = await state_store.load_some(db, processor.name, [e.key for e in entries]) if known else {}
                found(len(entries))
                await out.send([(e, states.get(e.key)) for e in entries])

    async with send, trio.open_nursery() as nursery:
        nursery.start_soon(load_known)
        names = [user] if user is not None else await trio.to_thread.run_sync(transcripts.users, root)
        limiter = trio.CapacityLimiter(SCANNERS)
        for name in names:
            nursery.start_soon(scan_one, name, limiter, send.clone())


async def _batches(folders: trio.MemoryReceiveChannel[Work], out: trio.MemorySendChannel[Work]) -> None:
    """Regroup folders' work into batches of up to BATCH_FILES files or BATCH_BYTES bytes to read."""
    async with folders, out:
        batch: Work = []
        size = 0
        async for work in folders:
            for item in work:
                batch.append(item)
                size += item[0].size - (item[1].processed_bytes if item[1] else 0)
                if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                    await out.send(batch)
                    batch, size = [], 0
        if batch:
            await out.send(batch)


async def _run_locked(services: Services, processor: Processor, user: str | None,
                      progress: Progress | None, *, kind: str, actor: str | None) -> RunResult:
    """The run under its lock, recorded in ``processor_runs`` however it ends."""
    started, start = services.clock.now(), services.clock.monotonic()
    result = RunResult()
    outcome, error = "cancelled", None
    try:
        result = await _run_unwrapped(services, processor, user, progress, result)
        outcome = "ok"
        return result
    except BaseExceptionGroup as group:  # one real error: raise it as itself (callers map it to a status)
        single = unwrap_group(group)
        outcome, error = _ended(single)
        if isinstance(single, Exception) and not isinstance(single, BaseExceptionGroup):
            raise single from None
        raise
    except Exception as exc:
        outcome, error = _ended(exc)
        raise
    finally:
        # Shielded with a deadline: a cancelled run is recorded too, and a stuck database cannot hold the drain.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + RECORD_TIMEOUT_S
            try:
                async with services.db.transaction() as tx:
                    await run_store.record(
                        tx, processor=processor.name, kind=kind, actor=audit.actor_name(actor) if actor else None,
                        started_at=started, finished_at=services.clock.now(),
                        duration_s=services.clock.monotonic() - start, outcome=outcome,
                        counts=asdict(result), error=error)
            except RoostError as exc:  # the run's own outcome is what the caller needs
                log.error("processor run not recorded", processor=processor.name, error=exc.message)
        if scope.cancelled_caught:
            log.error("processor run not recorded: the database did not answer in time", processor=processor.name)
        services.bus.publish(topics.PROCESSOR_RAN, processor.name)


def _ended(exc: BaseException) -> tuple[str, str | None]:
    """(outcome, error) of a run that raised ``exc``."""
    if isinstance(exc, trio.Cancelled):
        return "cancelled", None
    message = exc.message if isinstance(exc, RoostError) else f"{type(exc).__name__}: {exc}"
    return "failed", message[:500]


async def recent_runs(services: Services, *, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Each processor's newest ``limit`` runs (newest first), by name: the console's recent runs."""
    return await run_store.recent_by_processor(services.db, sorted(processors(services)), limit=limit)


async def _run_unwrapped(services: Services, processor: Processor, user: str | None,
                         progress: Progress | None, result: RunResult) -> RunResult:
    found = done = 0

    def found_more(n: int) -> None:
        nonlocal found
        found += n
        if progress:
            progress(done, found)

    # A pipeline: the scan sends changed folders as it goes; they are regrouped into batches, read and
    # hashed by the processor's readers (READERS worker threads unless it says; hashlib releases the GIL),
    # and stored here, batch by batch.
    # Bounded channels keep the scan and the readers at most a few batches ahead of storing.
    folders_send, folders_recv = trio.open_memory_channel[Work](SCANNERS * 2)
    batches_send, batches_recv = trio.open_memory_channel[Work](READERS)
    results_send, results_recv = trio.open_memory_channel[list[transcripts.FileResult]](READERS)
    readers = processor.readers or READERS
    limiter = trio.CapacityLimiter(readers)

    async def reader(batches: trio.MemoryReceiveChannel[Work],
                     out: trio.MemorySendChannel[list[transcripts.FileResult]]) -> None:
        async with batches, out:
            async for batch in batches:
                await out.send(await trio.to_thread.run_sync(transcripts.process_batch, batch, processor,
                                                             limiter=limiter))

    if progress:
        progress(0, 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_find_changed, services, processor, user, result, folders_send, found_more)
        nursery.start_soon(_batches, folders_recv, batches_send)
        async with batches_recv, results_send:
            for _ in range(readers):
                nursery.start_soon(reader, batches_recv.clone(), results_send.clone())
        async with results_recv:
            async for outcomes in results_recv:
                await _persist(services, processor, outcomes, result)
                done += len(outcomes)
                if progress:
                    progress(done, found)
    log.info("processor ran", processor=processor.name, **asdict(result))
    return result


async def _persist(services: Services, processor: Processor, outcomes: list[transcripts.FileResult],
                   result: RunResult) -> None:
    """Store items and new file states in one transaction; on failure, file by file, to fail only the culprit."""
    now = services.clock.now()
    good = [o for o in outcomes if o.outcome != "failed"]
    for o in outcomes:
        result.bytes_read += o.bytes_read
        if o.outcome == "failed":
            result.failed += 1
            log.warning("transcript failed", processor=processor.name, file=o.entry.key, error=o.error)
    # RoostError: the database (StorageError, a constraint) or the processor's store (PluginError);
    # anything else is a bug in roost and goes up to the run, then the supervisor.
    try:
        await _store(services, processor, good, now)
    except RoostError as exc:
        log.warning("batch store failed; storing transcript by transcript", processor=processor.name, error=exc.message)
        stored = []
        for o in good:
            try:
                await _store(services, processor, [o], now)
                stored.append(o)
            except RoostError as one_exc:
                result.failed += 1
                log.warning("transcript failed", processor=processor.name, file=o.entry.key,
                            error=one_exc.message)
        good = stored
    for o in good:
        if o.outcome == "processed":
            result.processed += 1
            result.items += len(o.items)
        else:
            result.skipped += 1


async def _store(services: Services, processor: Processor, outcomes: list[transcripts.FileResult],
                 now: dt.datetime) -> None:
    if not outcomes:
        return
    by_user: dict[str, list] = defaultdict(list)
    for o in outcomes:
        if o.items:
            by_user[o.entry.username].extend(o.items)
    async with services.db.transaction() as tx:
        for username, items in by_user.items():
            with plugin_call("processor", processor.name):
                await processor.store(tx, username, items)
        await state_store.save(tx, processor.name, [(o.entry.key, o.state) for o in outcomes if o.state], now)


async def run_now(services: Services, processor: Processor, *, actor: str, user: str | None = None,
                  progress: Progress | None = None) -> RunResult:
    """A manual run (HTTP or CLI), recorded on the job board like a scheduled one, and in the audit log.

    ``actor`` is who asked (``service`` inside an API request, recorded as ``service:<token name>``;
    ``cli``). The audit row (action ``processor.run``) is written when the run ends, with its counts,
    or with its error if it failed.

    Raises:
        AlreadyRunning: a scheduled or manual run of this processor is going on (not recorded as a run).
    """
    board = job_board(services)
    name = job_name(processor.name)
    if name not in board.jobs:
        board.register(dataclasses.replace(processor_job(services, processor, _never), actor=None))
    async with services.locks.hold(lock_name(processor.name)):
        started = services.clock.now()
        try:
            result = await tracked(services, name, lambda: _run_locked(services, processor, user, progress,
                                                                       kind="manual", actor=actor))
        except Exception as exc:
            error = exc.message if isinstance(exc, RoostError) else f"{type(exc).__name__}: {exc}"
            try:
                await _audit(services, processor, actor, started, {"user": user, "outcome": "failed",
                                                                   "error": error[:500]})
            except RoostError as audit_exc:  # the run's own error is the one to raise
                log.error("manual run not audited", processor=processor.name, error=audit_exc.message)
            raise
        await _audit(services, processor, actor, started, {"user": user, "outcome": "ok", **result.counts(),
                                                           "items": result.items})
        return result


async def _audit(services: Services, processor: Processor, actor: str, at: dt.datetime,
                 details: dict[str, Any]) -> None:
    async with services.db.transaction() as tx:
        await audit.record(tx, at=at, actor=actor, action="processor.run", target_type="processor",
                           target_id=processor.name, details=details)


async def _never(services: Services) -> None:
    raise RuntimeError("placeholder job: runs only by hand")
