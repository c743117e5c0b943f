"""Token usage read back: the totals the API lists (``GET /api/v1/usage``) and the console shows.

Totals are per user, UTC day and model (``roost.storage.usage``); the console adds the sums over
a filter and a per-day series for its chart, over at most ``MAX_CHART_DAYS`` days.

The console's view (``view``) is kept per process and reused until a processor run ends (usage is
written only by processor runs, each recorded in ``processor_runs`` when it ends: the newest run's
id stamps the view) or ``VIEW_TTL_S`` passes: aggregating weeks of messages costs hundreds of
milliseconds at a million messages, and the page is refreshed live. While a run is going on, the
view shows usage as of the previous run's end.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any

from roost.errors import InvalidInput
from roost.runtime.services import Services
from roost.storage import processor_runs
from roost.storage import usage as usage_store

MAX_CHART_DAYS = 92
VIEW_TTL_S = 60.0
VIEWS_KEPT = 32


async def totals(services: Services, *, user: str | None = None, day_from: dt.date | None = None,
                 day_to: dt.date | None = None, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """One page of totals per (day, user, model), filtered by user and an inclusive day range.

    Raises:
        InvalidInput: a cursor this list did not hand out, ``day_from`` after ``day_to``, or a value
            the database cannot hold.
    """
    if day_from is not None and day_to is not None and day_from > day_to:
        raise InvalidInput("from is after to")
    if cursor is not None:
        usage_store.decode_cursor(cursor)  # a bad cursor fails before touching the database
    try:
        return await usage_store.totals(services.db, user=user, day_from=day_from, day_to=day_to, limit=limit,
                                        cursor=cursor)
    except OverflowError as exc:
        raise InvalidInput(str(exc)) from exc


async def summary(services: Services, *, day_from: dt.date, day_to: dt.date,
                  user: str | None = None) -> dict[str, Any]:
    """The sums over the filter (``totals``: each counter; ``by_model``: each model's counters) and the
    per-day series (``days``: one entry a day of the range, each with its models' counters).

    Raises:
        InvalidInput: ``day_from`` after ``day_to``, or a range longer than ``MAX_CHART_DAYS``.
    """
    if day_from > day_to:
        raise InvalidInput("from is after to")
    span = (day_to - day_from).days + 1
    if span > MAX_CHART_DAYS:
        raise InvalidInput(f"at most {MAX_CHART_DAYS} days at once (asked for {span})")
    rows = await usage_store.per_day_and_model(services.db, day_from=day_from, day_to=day_to, user=user)
    days: dict[str, dict[str, dict[str, int]]] = {
        (day_from + dt.timedelta(days=i)).isoformat(): {} for i in range(span)}
    by_model: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = {c: row[c] for c in usage_store.COUNTERS}
        days.setdefault(row["day"], {})[row["model"]] = counts
        model = by_model.setdefault(row["model"], dict.fromkeys(usage_store.COUNTERS, 0))
        for c, n in counts.items():
            model[c] += n
    overall = dict.fromkeys(usage_store.COUNTERS, 0)
    for counts in by_model.values():
        for c, n in counts.items():
            overall[c] += n
    return {"days": [{"day": d, "models": m} for d, m in sorted(days.items())],
            "by_model": dict(sorted(by_model.items())), "totals": overall}


async def view(services: Services, *, day_from: dt.date, day_to: dt.date, user: str | None = None,
               limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
    """``summary`` and one page of ``totals`` for the filter (``summary`` and ``page``), reused within this
    process until a processor run ends or ``VIEW_TTL_S`` passes.

    Raises:
        InvalidInput: as ``summary`` and ``totals``.
    """
    views: OrderedDict[tuple[Any, ...], tuple[float, dict[str, Any]]] | None = getattr(services, "_usage_views",
                                                                                       None)
    if views is None:
        views = services._usage_views = OrderedDict()  # type: ignore[attr-defined]
    key = (await processor_runs.latest_id(services.db), user, day_from, day_to, limit, cursor)
    now = services.clock.monotonic()
    found = views.get(key)
    if found is not None and now - found[0] < VIEW_TTL_S:
        views.move_to_end(key)
        return found[1]
    result = {"summary": await summary(services, day_from=day_from, day_to=day_to, user=user),
              "page": await totals(services, user=user, day_from=day_from, day_to=day_to, limit=limit,
                                   cursor=cursor)}
    views[key] = (now, result)
    while len(views) > VIEWS_KEPT:
        views.popitem(last=False)
    return result
