"""Token usage read back: the totals the API lists (``GET /api/v1/usage``) and the console shows.

Totals are per user, UTC day and model (``roost.storage.usage``); the console adds the sums over
a filter and a per-day series for its chart, over at most ``MAX_CHART_DAYS`` days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.errors import InvalidInput
from roost.runtime.services import Services
from roost.storage import usage as usage_store

MAX_CHART_DAYS = 92


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
