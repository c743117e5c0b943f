"""Scouting: a scout's run (shared by HTTP and the actor; saving scouts is ``roost.domain.scouts``).

One run of a scout (``run_scout``: the scout actor's, and ``POST /api/admin/scouts/{id}/run``)
holds the job lock ``scout:<id>`` and:

0. refuses (409 ``scout_disabled``) when the scout is disabled;
1. pauses instead when the user has no device active within ``device_inactivity_pause_days``:
   a socket of the user open in this process counts, and so does ``devices.last_seen_at``,
   which every process keeps fresh for the devices it holds a socket of or hears from
   (``roost.runtime.activity``); a device registering wakes the user's scouts again;
2. for a pull connector, lists new refs page by page; each page's refs are recorded as
   ``pending`` rows *in the same transaction that advances the cursor*, so the cursor never
   passes a ref that has no row, and a crash between the two is impossible;
3. triages due ``pending`` rows in batches: fetch the content, classify (a group of items per
   ``classify_many`` call), and record every verdict of the batch in one transaction that also
   erases pushed bodies. A fetch or classify error leaves the row pending with a backoff
   (retried on later runs); at ``max_failures`` the row becomes ``failed`` with its reason.
   Spam is ``discarded`` with its reason, and with ``auto_trash_spam`` archived through the
   connector; a failed archive is retried with the same backoff, and at ``max_failures``
   recorded as failed to archive (``archive_failed_at``);
4. wakes the deliverer (``PROPOSAL_QUEUED``, user ids) when it queued anything;
5. publishes ``SCOUT_RAN`` (a cluster topic: the open consoles of every process refresh).

Errors: every call into the connector or classifier goes through the plugin boundary
(``roost.plugins.guard``), so whatever a plugin raises is a ``PluginError``, recorded on the
item or the scout.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass
from typing import Any

from roost.domain import webhooks
from roost.errors import Conflict, PluginError, RoostError
from roost.plugins.classifiers import TriageUnavailable, classifiers
from roost.plugins.connectors import Content, Ref, bounded, connectors
from roost.plugins.guard import declared_errors, plugin_call, plugin_context, plugin_error
from roost.runtime.destinations import describe_error
from roost.runtime.logging import get_logger
from roost.runtime.services import Services
from roost.runtime.topics import PROPOSAL_QUEUED, SCOUT_RAN
from roost.storage import proposals
from roost.storage import scouts as repo
from roost.storage.database import Row
from roost.storage.scout_config import SecretBox

log = get_logger()

TRIAGE_BATCH = 500
CLASSIFY_GROUP_CHARS = 1_000_000  # fetched text held for one classify_many call, at most (about)
MAX_LIST_PAGES = 100
RETRY_BASE_S = 30.0
RETRY_MAX_S = 3600.0
JITTER = 0.1


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
    """The job lock a run of the scout holds (one run at a time, across processes)."""
    return f"scout:{scout_id}"


def reason_of(exc: RoostError) -> str:
    """What a failure records as ``last_error``: by kind, never the remote side's own text.

    A PluginError's message is its original's ``Type: text``, which may be what a server said;
    the original is described instead (``describe_error`` keeps our words and the kind).
    """
    return describe_error(exc.error if isinstance(exc, PluginError) else exc)


# -- a run ----------------------------------------------------------------------------------------


async def run_scout(services: Services, scout_id: str, *, rng: random.Random | None = None) -> RunReport:
    """One run of one scout (see the module docstring).

    Raises:
        AlreadyRunning: a run of this scout is going on (here or in another process).
        Conflict: the scout is disabled (``scout_disabled``).
        NotFound: no such scout.
        StorageError: the database failed (a plugin's failure is recorded on the scout instead).
    """
    async with services.locks.hold(lock_name(scout_id)):
        report = await _run_locked(services, scout_id, rng or random.Random())
    services.bus.publish(SCOUT_RAN, scout_id)  # for open consoles, in every process
    return report


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
                                  source.connector_errors) as connection:
            source.connection = connection
            if connector.pull:
                cursor = scout["cursor"]
                for _ in range(MAX_LIST_PAGES):
                    with source.connector_call():
                        items, next_cursor = await connection.list_new(cursor)
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
        self.connection: Any = None  # the connector's connection, open for the run

    def connector_call(self) -> Any:
        return plugin_call("connector", self.connector_name, self.connector_errors)


async def _triage_pending(services: Services, scout: dict[str, Any], source: _Source, report: RunReport) -> None:
    db, clock = services.db, services.clock
    while True:
        now = clock.now()
        rows = await repo.due_pending(db, scout["id"], now=now, limit=TRIAGE_BATCH)
        if not rows:
            return
        batch = _Triage(scout, source, report, now)
        for row in rows:
            ref = Ref(row["source_msg_ref"], row["sender"], row["raw_subject"], row["raw_snippet"], row["body"])
            try:
                with source.connector_call():
                    fetched = await source.connection.fetch_content(ref)
            except RoostError as exc:
                batch.failed(row, exc)
                continue
            await batch.add(row, bounded(fetched))  # roost's own caps, outside the plugin boundary
        await batch.classify()
        outcomes = batch.outcomes
        await repo.record_outcomes(db, outcomes, now=now)
        if outcomes.failures:
            webhooks.wake(services.bus)  # their scout.failed_item webhooks
        if any(v[1] == "queued" for v in outcomes.verdicts):
            services.bus.publish(PROPOSAL_QUEUED, scout["user_id"])
        if len(rows) < TRIAGE_BATCH:
            return


class _Triage:
    """One triage batch's outcomes; fetched items are classified a group at a time.

    The classifier decides a group at once (``classify_many``: one worker-thread hop for many
    rules verdicts), while each item's error still goes through the plugin boundary alone.
    """

    def __init__(self, scout: dict[str, Any], source: _Source, report: RunReport, now: dt.datetime):
        self.scout, self.source, self.report, self.now = scout, source, report, now
        self.expires_at = now + dt.timedelta(days=scout["ttl_days"])
        self.outcomes = repo.Outcomes.empty()
        self.fetched: list[tuple[Row, Content]] = []  # fetched, not yet classified
        self.size = 0

    async def add(self, row: Row, content: Content) -> None:
        self.fetched.append((row, content))
        self.size += len(content.body) + len(content.subject)
        if self.size >= CLASSIFY_GROUP_CHARS:  # fetched text is held a group at a time
            await self.classify()

    async def classify(self) -> None:
        if not self.fetched:
            return
        source, report = self.source, self.report
        verdicts = await source.classifier.classify_many(source.classifier_config, [c for _, c in self.fetched])
        for (row, content), verdict in zip(self.fetched, verdicts, strict=True):
            if isinstance(verdict, Exception):
                self.failed(row, verdict if isinstance(verdict, RoostError) else
                            plugin_error("classifier", source.classifier_name, verdict, source.classifier_errors))
                continue
            queued = verdict.verdict == "relevant"
            self.outcomes.verdicts.append((
                row["id"], "queued" if queued else "discarded", content.subject[:1000], content.snippet[:1000],
                content.sender[:320], verdict.verdict, verdict.reason[:1000], verdict.category, verdict.payload,
                self.expires_at if queued else None,
            ))
            if queued:
                report.queued += 1
            else:
                report.discarded += 1
        self.fetched, self.size = [], 0

    def failed(self, row: Row, exc: RoostError) -> None:
        """Only plugin code failed: the item is retried, then recorded as failed."""
        attempts = row["attempts"] + 1
        reason = reason_of(exc)[:1000]
        if attempts >= self.scout["max_failures"]:
            self.outcomes.failures.append((row["id"], attempts, reason))
            self.report.failed += 1
        else:
            due = self.now + dt.timedelta(seconds=retry_delay_s(attempts))
            self.outcomes.retries.append((row["id"], attempts, due, reason))
            self.report.retried += 1


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
                    await source.connection.archive(Ref(row["source_msg_ref"]))
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


async def expire_proposals(services: Services, now: dt.datetime) -> int:
    """Mark proposals past their TTL ``expired`` (never delivered after); the pruner's step."""
    return await proposals.expire(services.db, now=now)
