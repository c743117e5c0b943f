"""Scout: polls each enabled scout on its own interval and triages what it finds.

One run of a scout (``run_scout``, also behind ``POST /api/admin/scouts/{id}/run``) holds the
job lock ``scout:<id>`` and:

0. refuses (409 ``scout_disabled``) when the scout is disabled;
1. pauses instead when the user has no device active within ``device_inactivity_pause_days``:
   a socket of the user open in this process counts, and so does ``devices.last_seen_at``,
   which every process keeps fresh for the devices it holds a socket of or hears from
   (``roost.runtime.activity``); a device registering wakes the user's scouts again;
2. for a pull connector, lists new refs page by page; each page's refs are recorded as
   ``pending`` rows *in the same transaction that advances the cursor*, so the cursor never
   passes a ref that has no row, and a crash between the two is impossible;
3. triages due ``pending`` rows in batches: fetch the content, classify, and record every
   verdict of the batch in one transaction that also erases pushed bodies. A fetch or classify
   error leaves the row pending with a backoff (retried on later runs); at ``max_failures``
   the row becomes ``failed`` with its reason. Spam is ``discarded`` with its reason, and with
   ``auto_trash_spam`` archived through the connector; a failed archive is retried with the same
   backoff, and at ``max_failures`` recorded as failed to archive (``archive_failed_at``);
4. wakes the deliverer (bus topic ``proposal.queued``, user ids) when it queued anything.

Errors: every call into the connector or classifier goes through the plugin boundary
(``roost.plugins.guard``), so whatever a plugin raises is a ``PluginError``: recorded on the item
or the scout, never the end of the actor. The actor catches ``RoostError`` (plugin, storage,
configuration) per scout, with a per-scout backoff; anything else is a bug in roost and goes to
the supervisor.

The actor starts runs when a scout is due (``next_run_at``, interval with ±10 % jitter, earlier
when a pending retry falls due), when items are pushed (bus ``scout.items``), when a scout is
created or changed (``scout.changed``), and when a device of the user registers
(``device.registered``).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable

import trio

from roost.errors import AlreadyRunning, Conflict, NotFound, PluginError, RoostError, StorageError
from roost.plugins.classifiers import TriageUnavailable, classifiers
from roost.plugins.connectors import Ref, bounded, connectors
from roost.plugins.guard import declared_errors, plugin_call, plugin_context
from roost.runtime.actor import Actor, ActorContext, first_of
from roost.runtime.bus import Subscription
from roost.runtime.destinations import describe_error
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.storage import scouts as repo
from roost.storage.scout_config import SecretBox

log = get_logger()

TRIAGE_BATCH = 500
MAX_LIST_PAGES = 100
RETRY_BASE_S = 30.0
RETRY_MAX_S = 3600.0
JITTER = 0.1
MAX_CONCURRENT_RUNS = 8
IDLE_RECHECK_S = 60.0
STORAGE_RETRY_S = 5.0  # the database failed listing scouts: look again this much later
HELD_RETRY_FIRST_S = 0.05  # a run elsewhere holds the scout while our pushed rows wait: retry soon
HELD_RETRY_MAX_S = 1.0

TOPIC_ITEMS = "scout.items"
TOPIC_CHANGED = "scout.changed"
TOPIC_DEVICE = "device.registered"
TOPIC_QUEUED = "proposal.queued"


@dataclass
class RunReport:
    scout_id: str
    paused: bool = False
    listed: int = 0
    queued: int = 0
    discarded: int = 0
    retried: int = 0
    failed: int = 0
    archived: int = 0
    archive_failed: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def retry_delay_s(attempts: int) -> float:
    """Backoff before retry number ``attempts`` (1-based): 30 s doubling, at most an hour."""
    return min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempts - 1))


def next_run_after(now: dt.datetime, interval_s: float, rng: random.Random) -> dt.datetime:
    """When a scout polled at ``now`` is due again: its interval, ±10 % jitter so scouts spread out."""
    return now + dt.timedelta(seconds=interval_s * (1 + rng.uniform(-JITTER, JITTER)))


def lock_name(scout_id: str) -> str:
    return f"scout:{scout_id}"


async def run_scout(services: Services, scout_id: str, *, rng: random.Random | None = None) -> RunReport:
    """One run of one scout (see the module docstring).

    Raises:
        AlreadyRunning: a run of this scout is going on (here or in another process).
        Conflict: the scout is disabled (``scout_disabled``).
        NotFound: no such scout.
        StorageError: the database failed (a plugin's failure is recorded on the scout instead).
    """
    async with services.locks.hold(lock_name(scout_id)):
        return await _run_locked(services, scout_id, rng or random.Random())


async def _run_locked(services: Services, scout_id: str, rng: random.Random) -> RunReport:
    db, clock = services.db, services.clock
    scout = await repo.get_scout(db, scout_id)
    if not scout["enabled"]:
        raise Conflict(f"scout {scout_id} is disabled; enable it (PATCH enabled: true) to run it",
                       code="scout_disabled")
    now = clock.now()
    report = RunReport(scout_id)
    next_run = next_run_after(now, float(scout["poll_interval_s"]), rng)

    days = scout["device_inactivity_pause_days"]
    if days is not None and not services.sockets.for_user(scout["user_id"]):
        seen = await repo.last_device_activity(db, scout["user_id"])
        if seen is None or seen < now - dt.timedelta(days=days):
            if not scout["paused"]:
                log.info("scout paused: no device seen", scout_id=scout_id, days=days)
            await repo.finish_run(db, scout_id, now=now, next_run_at=next_run, paused=True, error=None)
            report.paused = True
            return report

    box = SecretBox(services.settings.sealing_keys)
    try:
        connector = connectors.create(scout["provider"])
        classifier = classifiers.create(scout["classifier"])
        config = box.open(scout["config"])
        classifier_config = box.open(scout["classifier_config"])
        source = _Source(connector, scout["provider"], classifier, scout["classifier"], classifier_config)
        async with plugin_context("connector", source.connector_name, lambda: connector.open(config),
                                  source.connector_errors) as session:
            source.session = session
            if connector.pull:
                cursor = scout["cursor"]
                for _ in range(MAX_LIST_PAGES):
                    with source.connector_call():
                        items, next_cursor = await session.list_new(cursor)
                    if not items and next_cursor == cursor:
                        break
                    await repo.record_refs(db, scout, items, cursor=next_cursor, now=clock.now())
                    report.listed += len(items)
                    cursor = next_cursor
                    if not items:
                        break
            await _triage_pending(services, scout, source, report)
            if scout["auto_trash_spam"]:
                await _archive_spam(services, scout, source, report)
    except RoostError as exc:
        # A plugin failed (PluginError), or the database, or the scout's setup (an unknown plugin,
        # a secret sealed with another key): recorded on the scout, retried on the next run.
        report.error = reason_of(exc)
        log.warning("scout run failed", scout_id=scout_id, error=report.error)

    pending_at = await repo.next_pending_at(db, scout_id)
    if scout["auto_trash_spam"]:
        archive_at = await repo.next_archive_at(db, scout_id)
        if archive_at is not None:
            pending_at = archive_at if pending_at is None else min(pending_at, archive_at)
    if pending_at is not None:
        next_run = min(next_run, max(pending_at, clock.now() + dt.timedelta(seconds=1)))
    await repo.finish_run(db, scout_id, now=clock.now(), next_run_at=next_run, paused=False, error=report.error)
    return report


class _Source:
    """A run's plugins, and the boundary every call into them goes through."""

    def __init__(self, connector: Any, connector_name: str, classifier: Any, classifier_name: str,
                 classifier_config: dict[str, Any]):
        self.connector_name = connector_name
        self.connector_errors = declared_errors(connector)
        self.classifier = classifier
        self.classifier_name = classifier_name
        self.classifier_config = classifier_config
        self.classifier_errors = (*declared_errors(classifier), TriageUnavailable)
        self.session: Any = None

    def connector_call(self) -> Any:
        return plugin_call("connector", self.connector_name, self.connector_errors)

    def classifier_call(self) -> Any:
        return plugin_call("classifier", self.classifier_name, self.classifier_errors)


async def _triage_pending(services: Services, scout: dict[str, Any], source: _Source, report: RunReport) -> None:
    db, clock = services.db, services.clock
    ttl = dt.timedelta(days=scout["ttl_days"])
    while True:
        now = clock.now()
        rows = await repo.due_pending(db, scout["id"], now=now, limit=TRIAGE_BATCH)
        if not rows:
            return
        outcomes = repo.Outcomes.empty()
        for row in rows:
            ref = Ref(row["source_msg_ref"], row["sender"], row["raw_subject"], row["raw_snippet"], row["body"])
            try:
                with source.connector_call():
                    fetched = await source.session.fetch_content(ref)
                content = bounded(fetched)  # roost's own caps, outside the plugin boundary
                with source.classifier_call():
                    verdict = await source.classifier.classify(source.classifier_config, content)
            except RoostError as exc:  # only plugin code ran here: retried, then recorded on the item
                attempts = row["attempts"] + 1
                reason = reason_of(exc)[:1000]
                if attempts >= scout["max_failures"]:
                    outcomes.failures.append((row["id"], attempts, reason))
                    report.failed += 1
                else:
                    due = now + dt.timedelta(seconds=retry_delay_s(attempts))
                    outcomes.retries.append((row["id"], attempts, due, reason))
                    report.retried += 1
                continue
            queued = verdict.verdict == "relevant"
            outcomes.verdicts.append((
                row["id"], "queued" if queued else "discarded", content.subject[:1000], content.snippet[:1000],
                content.sender[:320], verdict.verdict, verdict.reason[:1000], verdict.category, verdict.payload,
                now + ttl if queued else None,
            ))
            if queued:
                report.queued += 1
            else:
                report.discarded += 1
        await repo.record_outcomes(db, outcomes, now=now)
        if any(v[1] == "queued" for v in outcomes.verdicts):
            services.bus.publish(TOPIC_QUEUED, scout["user_id"])
        if len(rows) < TRIAGE_BATCH:
            return


async def _archive_spam(services: Services, scout: dict[str, Any], source: _Source, report: RunReport) -> None:
    """Archive due spam; a failure is retried with the triage backoff, then recorded as failed to archive."""
    db, clock = services.db, services.clock
    while True:
        rows = await repo.unarchived_spam(db, scout["id"], now=clock.now(), limit=TRIAGE_BATCH)
        if not rows:
            return
        for row in rows:
            try:
                with source.connector_call():
                    await source.session.archive(Ref(row["source_msg_ref"]))
            except RoostError as exc:  # only plugin code ran here: recorded on the item, visible in the items API
                attempts = row["archive_attempts"] + 1
                now = clock.now()
                if attempts >= scout["max_failures"]:
                    await repo.mark_archive_failed(db, row["id"], reason_of(exc)[:1000], attempts=attempts, now=now)
                    report.archive_failed += 1
                else:
                    due = now + dt.timedelta(seconds=retry_delay_s(attempts))
                    await repo.mark_archive_retry(db, row["id"], reason_of(exc)[:1000], attempts=attempts, due=due)
                continue
            await repo.mark_archived(db, row["id"], clock.now())
            report.archived += 1
        if len(rows) < TRIAGE_BATCH:
            return


def reason_of(exc: RoostError) -> str:
    """What a failure records as ``last_error``: by kind, never the remote side's own text.

    A PluginError's message is its original's ``Type: text``, which may be what a server said;
    the original is described instead (``describe_error`` keeps our words and the kind).
    """
    return describe_error(exc.error if isinstance(exc, PluginError) else exc)


class ScoutActor(Actor):
    """Starts scout runs when they are due or woken; at most one run per scout at a time."""

    name = "scout"

    def __init__(self, rng: random.Random | None = None,
                 run: Callable[..., Awaitable[RunReport]] | None = None):
        """``run`` replaces ``run_scout`` (tests drive the loop under a mock clock without a database)."""
        self._rng = rng or random.Random()
        self._run = run or run_scout
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._woken: set[str] = set()
        self._crashes: dict[str, tuple[int, float]] = {}  # scout -> (crashes in a row, not before)
        self._held: dict[str, trio.Event] = {}  # scouts waiting out a run elsewhere: set to retry at once
        self._wake = trio.Event()
        self._wake_all = False

    def wake(self, *scout_ids: str) -> None:
        self._woken.update(scout_ids)
        for sid in scout_ids:
            held = self._held.get(sid)
            if held is not None:
                held.set()
        self._wake.set()

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.services
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_RUNS)
        with s.bus.subscribe(TOPIC_ITEMS) as items, s.bus.subscribe(TOPIC_CHANGED) as changed, \
                s.bus.subscribe(TOPIC_DEVICE) as devices:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, items, False, ctx)
                nursery.start_soon(self._listen, changed, False, ctx)
                nursery.start_soon(self._listen, devices, True, ctx)
                task_status.started()
                while not ctx.stopping.is_set():
                    try:
                        wait = await self._start_due(ctx, nursery, limiter)
                    except StorageError as exc:  # the database is away: keep the actor, look again soon
                        ctx.log.warning("scouts not listed; retrying", error=exc.message, retry_in_s=STORAGE_RETRY_S)
                        wait = STORAGE_RETRY_S
                    with trio.move_on_after(wait):
                        await first_of(self._wake, ctx.stopping)
                    self._wake = trio.Event()
                nursery.cancel_scope.cancel()

    async def _listen(self, sub: Subscription, by_user: bool, ctx: ActorContext) -> None:
        while True:
            message = await sub.receive()
            try:
                if message.overflowed:
                    self.wake(*[r["id"] for r in await repo.enabled_scouts(ctx.services.db)])
                elif by_user:
                    for user_id in message.ids:
                        self.wake(*await repo.scouts_of_user(ctx.services.db, user_id))
                else:
                    self.wake(*message.ids)
            except StorageError as exc:  # unknown whom it meant: wake every scout at the next look
                ctx.log.warning("scout wake-up not resolved; waking all", error=exc.message)
                self._wake_all = True
                self._wake.set()

    async def _start_due(self, ctx: ActorContext, nursery: trio.Nursery, limiter: trio.CapacityLimiter) -> float:
        """Start every due or woken scout; return how long to sleep until the next is due."""
        rows = await repo.enabled_scouts(ctx.services.db)
        now = ctx.services.clock.now()
        woken, self._woken = self._woken, set()
        if self._wake_all:
            woken.update(r["id"] for r in rows)
            self._wake_all = False
        wait = IDLE_RECHECK_S
        for row in rows:
            sid = row["id"]
            due = row["next_run_at"] is None or row["next_run_at"] <= now or sid in woken
            if sid in self._running:
                if sid in woken:
                    self._again.add(sid)
                continue
            crashed = self._crashes.get(sid)
            if due and crashed is not None and sid not in woken and crashed[1] > trio.current_time():
                wait = min(wait, crashed[1] - trio.current_time())  # a crashing run backs off
                continue
            if due:
                self._running.add(sid)
                nursery.start_soon(self._run_one, ctx, sid, limiter)
            else:
                wait = min(wait, (row["next_run_at"] - now).total_seconds())
        return max(0.0, wait)

    async def _run_one(self, ctx: ActorContext, scout_id: str, limiter: trio.CapacityLimiter) -> None:
        try:
            async with limiter:
                held_retry_s = HELD_RETRY_FIRST_S
                while True:
                    self._again.discard(scout_id)
                    try:
                        report = await self._run(ctx.services, scout_id, rng=self._rng)
                        self._crashes.pop(scout_id, None)
                        # Under steady pushes to several processes this loop lives on: start the
                        # backoff afresh after each run that got the scout.
                        held_retry_s = HELD_RETRY_FIRST_S
                        ctx.tick()
                        if report.queued or report.failed or report.error:
                            ctx.log.info("scout run", **report.as_dict())
                    except AlreadyRunning:
                        # A run elsewhere has it. It may have read its pending rows before ours
                        # (pushed to this process) were committed, so while due rows wait, try
                        # again soon (50 ms, doubling to 1 s) until that run ends. With none, its
                        # run covers the scout: look again in a second, not in a spin.
                        try:
                            next_at = await repo.next_pending_at(ctx.services.db, scout_id)
                            due = next_at is not None and next_at <= ctx.services.clock.now()
                        except StorageError as exc:  # raised here it would escape the handlers below
                            ctx.log.warning("scout pending check failed", scout_id=scout_id, error=exc.message)
                            due = True  # unknown: keep trying on the backoff rather than leave rows waiting
                        # A wake (new items pushed here) ends the wait at once: the backoff spaces out
                        # retries with nothing new, it must not hold back what was just pushed.
                        delay = held_retry_s if due else HELD_RETRY_MAX_S
                        held_retry_s = min(held_retry_s * 2, HELD_RETRY_MAX_S)
                        woken = self._held[scout_id] = trio.Event()
                        try:
                            with trio.move_on_after(delay):
                                await first_of(woken, ctx.stopping)
                        finally:
                            del self._held[scout_id]
                        if ctx.stopping.is_set():
                            return
                        if due or woken.is_set():
                            self._again.add(scout_id)
                    except NotFound:
                        return
                    except RoostError as exc:
                        if isinstance(exc, Conflict) and exc.code == "scout_disabled":
                            return  # disabled since it was listed: nothing to run
                        # One scout's trouble (its database rows, its plugins) never stops the others.
                        # Anything else is a bug in roost: it goes to the supervisor (restart budget).
                        count = self._crashes.get(scout_id, (0, 0.0))[0] + 1
                        delay = retry_delay_s(count)
                        self._crashes[scout_id] = (count, trio.current_time() + delay)
                        ctx.log.error("scout run failed", scout_id=scout_id, error=reason_of(exc), detail=repr(exc),
                                      retry_in_s=delay)
                        return  # due again after the backoff, or at once when woken
                    if scout_id not in self._again or ctx.stopping.is_set():
                        return
        finally:
            self._running.discard(scout_id)
            self._wake.set()


async def _expire_proposals(services: Services, now: dt.datetime) -> int:
    return await repo.expire(services.db, now=now)


def expire_prune() -> Any:
    """The pruner's step that marks proposals past their TTL ``expired`` (never delivered after)."""
    from roost.actors.pruner import Prune

    return Prune("scout_proposals_expired", _expire_proposals)
