"""How mails show things to a person: event kinds as labels, instants in the reader's time zone.

Pure functions (the template filters of ``roost.domain.digest.render``), memoised where a digest
tick calls them once per item.
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping

from roost.domain.digest.slots import zone

_default_labels: dict[str, str] = {}


def default_label(event_kind: str) -> str:
    """``comment_added`` -> "Comment added" (the label of a kind the app gave none for)."""
    text = event_kind.replace("_", " ").replace("-", " ").replace(".", " ").strip()
    return (text[:1].upper() + text[1:]) if text else event_kind


def label(event_kind: str, labels: Mapping[str, str]) -> str:
    """The app's label for ``event_kind`` (``ROOST_EVENT_LABELS``), else ``comment_added`` -> "Comment added"."""
    found = labels.get(event_kind)
    if found is not None:
        return found
    found = _default_labels.get(event_kind)
    if found is None:
        found = default_label(event_kind)
        if len(_default_labels) < 10_000:
            _default_labels[event_kind] = found
    return found


_local: dict[tuple[dt.datetime, str | None, bool], str] = {}


def local_time(instant: dt.datetime | None, timezone: str | None, *, with_day: bool = True) -> str:
    """``instant`` in the reader's zone: "Thu 5 Nov 2026, 19:13 CET" (or "19:13 CET").

    The zone's abbreviation ends it (its UTC offset where the zone has none, e.g. "+03"); an
    unknown or missing zone reads as UTC. A naive instant is taken as UTC. Memoised: a digest
    tick asks for the same few instants (its now, the users' last slots) in the same few zones.
    """
    if instant is None:
        return ""
    key = (instant, timezone, with_day)
    hit = _local.get(key)
    if hit is None:
        hit = _local_time(instant, timezone, with_day)
        if len(_local) >= 10_000:
            _local.clear()
        _local[key] = hit
    return hit


def _local_time(instant: dt.datetime, timezone: str | None, with_day: bool) -> str:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    try:
        local = instant.astimezone(zone(timezone or "UTC"))
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError; a malformed name a ValueError
        local = instant.astimezone(dt.UTC)
    name = local.tzname() or "UTC"
    clock = f"{local:%H:%M} {name}"
    if not with_day:
        return clock
    return f"{local:%a} {local.day} {local:%b %Y}, {clock}"
