"""Search and bulk actions for the operator console.

Search (``search``) finds items, mail, handoffs and dispatch items by id, ref, subject, sender or
recipient through the indexed sources of ``roost.storage.search``: pages of ``PAGE_SIZE``, never
past ``MAX_RESULTS``, whatever the query holds.

A bulk action (``apply``) retries or cancels everything a ``BulkFilter`` matches (failed items of a
scout, failed mail, a batch's pending items by cancelling the batch...), at most ``BULK_CAP`` rows,
each through the SAME domain function the HTTP API and the single-row console action call
(``scouts.retry_item``, ``mail.retry`` / ``mail.cancel``, ``sending.change_batch``). ``preview``
counts what it would touch first, for the confirmation. A row that changed in between (retried by
someone else, no longer failed) is skipped and counted, never an error for the whole action.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

from roost.errors import Conflict, InvalidInput, NotFound, RoostError
from roost.runtime.services import Services
from roost.storage import search as repo
from roost.storage.database import Row

PAGE_SIZE = 50
MAX_RESULTS = 1000  # pages reach this far and no further: narrow the query instead
MAX_PAGE = MAX_RESULTS // PAGE_SIZE
BULK_CAP = 1000
# Rows a bulk action works on at once: each is its own transaction through the domain function, so
# on PostgreSQL a few overlap their round trips (1,000 retries: 12 s one by one on a busy 2-core
# machine); a few, so a run never takes more than a few of the pool's connections. SQLite writes
# one at a time whatever this is.
BULK_CONCURRENCY = 4

KINDS = repo.KINDS
FIELDS = repo.FIELDS

Step = Callable[[Any, Services, Row, str], Awaitable[Any]]


@dataclass(frozen=True)
class BulkAction:
    """A bulk action: the kind it acts on, the statuses it applies to, and the domain function
    (``module.function``) it calls once per row through ``call(function, services, row, actor)``."""

    kind: str
    action: str
    statuses: tuple[str, ...]
    module: str
    function: str
    call: Step
    label: str

    def target(self) -> Callable[..., Awaitable[Any]] | None:
        """The domain function, or None when this build has none (the action is then not offered)."""
        try:
            return getattr(importlib.import_module(self.module), self.function, None)
        except ImportError:
            return None


def _by_batch(action: str) -> Step:
    return lambda fn, services, row, actor: fn(services, row["id"], action)


BULK_ACTIONS: dict[tuple[str, str], BulkAction] = {
    (a.kind, a.action): a for a in (
        BulkAction("item", "retry", ("failed",), "roost.domain.scouts", "retry_item",
                   lambda fn, services, row, actor: fn(services, row["parent_id"], row["id"], actor=actor),
                   "Retry failed items"),
        BulkAction("mail", "retry", ("failed",), "roost.domain.mail", "retry",
                   lambda fn, services, row, actor: fn(services, row["id"]), "Retry failed mail"),
        BulkAction("mail", "cancel", ("failed", "queued", "held"), "roost.domain.mail", "cancel",
                   lambda fn, services, row, actor: fn(services, row["id"], by=actor), "Cancel mail"),
        BulkAction("batch", "cancel", ("draft", "sending", "paused"), "roost.domain.dispatch.sending", "change_batch",
                   _by_batch("cancel"), "Cancel batches (and their pending items)"),
        BulkAction("batch", "pause", ("sending",), "roost.domain.dispatch.sending", "change_batch",
                   _by_batch("pause"), "Pause batches"),
        BulkAction("batch", "resume", ("paused",), "roost.domain.dispatch.sending", "change_batch",
                   _by_batch("resume"), "Resume batches"),
    )
}


def available_actions() -> list[BulkAction]:
    """The bulk actions this build can run (each one's domain function exists)."""
    return [bulk for bulk in BULK_ACTIONS.values() if bulk.target() is not None]


@dataclass(frozen=True)
class Results:
    query: str
    shortened: bool  # the query was cut to ``repo.MAX_QUERY_CHARS``
    kind: str | None
    field: str
    page: int
    rows: list[Row]
    more: bool  # another page exists (and is within MAX_RESULTS)


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise InvalidInput(f"{what}: one of {', '.join(allowed)}")


async def search(services: Services, text: str, *, kind: str | None = None, field: str = "any",
                 page: int = 1) -> Results:
    """One page of what ``text`` matches.

    Raises:
        InvalidInput: an unknown kind or field, or a page outside 1..MAX_PAGE.
    """
    _choice(kind, KINDS, "kind")
    _choice(field, FIELDS, "field")
    if not 1 <= page <= MAX_PAGE:
        raise InvalidInput(f"page: 1 to {MAX_PAGE} (narrow the search to see further)")
    query, shortened = repo.clean_query(text)
    rows, more = await repo.search(services.db, query, kind=kind, field=field, offset=(page - 1) * PAGE_SIZE,
                                   limit=PAGE_SIZE)
    return Results(query, shortened, kind, field, page, rows, more and page < MAX_PAGE)


@dataclass(frozen=True)
class BulkFilter:
    """Which rows a bulk action takes: the action (one of ``BULK_ACTIONS``, which names its kind),
    a status it applies to, and an optional scope id. Made by ``bulk_filter``, which checks them."""

    bulk: BulkAction
    status: str
    scope: str | None = None

    @property
    def kind(self) -> str:
        return self.bulk.kind

    @property
    def action(self) -> str:
        return self.bulk.action


def bulk_filter(kind: str, action: str, status: str, scope: str | None = None) -> BulkFilter:
    """A checked filter.

    Raises:
        InvalidInput: an action that does not exist for the kind, a status it does not apply to, or
            a scope that is not an id of what can hold that kind (a scout or user for items, a user for
            mail, an account or the batch itself for batches).
    """
    bulk = BULK_ACTIONS.get((kind, action))
    if bulk is None or bulk.target() is None:
        raise InvalidInput(f"no bulk action {action!r} on {kind!r}")
    if status not in bulk.statuses:
        raise InvalidInput(f"status: one of {', '.join(bulk.statuses)} for {action} on {kind}")
    scope = (scope or "").strip() or None
    if not repo.scope_ok(kind, scope):
        raise InvalidInput(f"scope: an id of a {' or '.join(_SCOPE_NAMES[kind])}, or nothing")
    return BulkFilter(bulk, status, scope)


_SCOPE_NAMES = {"item": ("scout", "user"), "mail": ("user",), "batch": ("account", "batch")}


@dataclass(frozen=True)
class Preview:
    count: int  # how many the action would take (at most BULK_CAP)
    more: bool  # more rows match than the cap: the first BULK_CAP (in id order) are taken


async def preview(services: Services, f: BulkFilter, *, cap: int = BULK_CAP) -> Preview:
    """How many rows ``f`` takes now: the count the confirmation shows."""
    rows = await repo.bulk_targets(services.db, f.kind, status=f.status, scope=f.scope, cap=cap)
    return Preview(min(len(rows), cap), len(rows) > cap)


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0  # changed by someone else since (no longer in the status, gone)
    more: bool = False  # rows past the cap were left for another run
    reasons: list[str] = field(default_factory=list)  # the first few skip reasons


async def apply(services: Services, f: BulkFilter, *, actor: str, cap: int = BULK_CAP) -> Outcome:
    """Run ``f``'s action on each row it matches now, at most ``cap``, each through the domain
    function the API calls (``BULK_CONCURRENCY`` at a time). A row that conflicts (no longer
    applies) is skipped and counted.

    Raises:
        RoostError: any other error of a row's domain function; rows done before it stay done.
    """
    rows = await repo.bulk_targets(services.db, f.kind, status=f.status, scope=f.scope, cap=cap)
    outcome = Outcome(more=len(rows) > cap)
    bulk = f.bulk
    function = bulk.target()
    pending = iter(rows[:cap])
    failure: list[RoostError] = []

    async def worker(scope: trio.CancelScope) -> None:
        for row in pending:  # the workers share one iterator: each row is taken once
            try:
                await bulk.call(function, services, row, actor)
            except (Conflict, NotFound) as exc:
                outcome.skipped += 1
                if len(outcome.reasons) < 3:
                    outcome.reasons.append(str(exc))
            except RoostError as exc:  # anything else ends the run, raised as itself (not in a group)
                failure.append(exc)
                scope.cancel()
                return
            else:
                outcome.done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(BULK_CONCURRENCY):
            nursery.start_soon(worker, nursery.cancel_scope)
    if failure:
        raise failure[0]
    return outcome
