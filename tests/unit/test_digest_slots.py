"""Digest slot math and quiet hours: local times in real zones, DST gaps and folds."""

from __future__ import annotations

import datetime as dt

from roost.domain.digest.render import group_items
from roost.domain.digest.slots import next_slot, quiet_until

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def daily(after: dt.datetime, time: str, tz: str) -> dt.datetime | None:
    return next_slot(after, cadence="daily", digest_time=time, weekday="monday", timezone=tz)


def test_subscribing_after_the_slot_waits_for_tomorrow_and_before_it_gets_today() -> None:
    assert daily(at(2024, 5, 1, 8, 30), "08:00", "UTC") == at(2024, 5, 2, 8, 0)
    assert daily(at(2024, 5, 1, 3, 0), "08:00", "UTC") == at(2024, 5, 1, 8, 0)


def test_a_slot_is_strictly_after_the_instant_so_firing_at_the_slot_moves_to_the_next_day() -> None:
    assert daily(at(2024, 5, 1, 8, 0), "08:00", "UTC") == at(2024, 5, 2, 8, 0)


def test_slot_in_a_quarter_hour_zone() -> None:
    assert daily(at(2024, 5, 1, 0, 0), "08:00", "Asia/Kathmandu") == at(2024, 5, 1, 2, 15)


def test_a_slot_skipped_by_the_spring_gap_fires_when_the_clocks_jump() -> None:
    # Berlin, 2024-03-31: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:30 does not exist.
    assert daily(at(2024, 3, 30, 12, 0), "02:30", "Europe/Berlin") == at(2024, 3, 31, 1, 0)
    assert daily(at(2024, 3, 31, 1, 0), "02:30", "Europe/Berlin") == at(2024, 4, 1, 0, 30)


def test_a_slot_repeated_by_the_autumn_fold_fires_once_at_its_first_occurrence() -> None:
    # Berlin, 2024-10-27: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
    first = daily(at(2024, 10, 26, 12, 0), "02:30", "Europe/Berlin")
    assert first == at(2024, 10, 27, 0, 30)
    assert daily(first, "02:30", "Europe/Berlin") == at(2024, 10, 28, 1, 30)


def test_weekly_slot_is_on_the_chosen_weekday() -> None:
    slot = next_slot(at(2024, 5, 1, 12, 0), cadence="weekly", digest_time="09:00", weekday="friday",
                     timezone="America/New_York")
    assert slot == at(2024, 5, 3, 13, 0)


def test_cadence_off_has_no_slot() -> None:
    assert next_slot(at(2024, 5, 1), cadence="off", digest_time="08:00", weekday="monday", timezone="UTC") is None


def test_quiet_hours_crossing_midnight_hold_until_the_morning() -> None:
    window = {"start": "22:00", "end": "07:00"}
    assert quiet_until(at(2024, 5, 1, 23, 0), window, "UTC") == at(2024, 5, 2, 7, 0)
    assert quiet_until(at(2024, 5, 2, 6, 59), window, "UTC") == at(2024, 5, 2, 7, 0)
    assert quiet_until(at(2024, 5, 2, 7, 0), window, "UTC") is None
    assert quiet_until(at(2024, 5, 2, 12, 0), window, "UTC") is None


def test_quiet_hours_are_read_in_the_users_zone() -> None:
    window = {"start": "12:00", "end": "14:00"}
    assert quiet_until(at(2024, 5, 1, 10, 30), window, "Europe/Berlin") == at(2024, 5, 1, 12, 0)
    assert quiet_until(at(2024, 5, 1, 10, 30), window, "UTC") is None
    assert quiet_until(at(2024, 5, 1, 10, 30), None, "UTC") is None
    assert quiet_until(at(2024, 5, 1, 10, 30), {"start": "09:00", "end": "09:00"}, "UTC") is None


def test_grouping_puts_the_most_active_topic_first_then_kinds_by_count() -> None:
    items = [{"topic": t, "event_kind": k, "read_at": None, "payload": {}} for t, k in [
        ("a", "x"), ("b", "x"), ("b", "y"), ("b", "y"), ("c", "z"), ("c", "z"),
    ]]
    groups = group_items(items)
    assert [(g.topic, g.count) for g in groups] == [("b", 3), ("c", 2), ("a", 1)]
    assert [(k.event_kind, k.count, k.unread) for k in groups[0].kinds] == [("y", 2, 2), ("x", 1, 1)]
