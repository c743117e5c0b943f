"""Schedules: intervals and cron expressions (UTC or CRON_TZ), their next time, and clear refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from roost.errors import InvalidInput
from roost.runtime.schedule import Schedule

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_an_interval_counts_from_the_given_time() -> None:
    assert Schedule.every(90).next_after(at(2025, 1, 1, 8, 0, 30)) == at(2025, 1, 1, 8, 2)


@pytest.mark.parametrize(("expr", "after", "expected"), [
    ("*/15 * * * *", at(2025, 1, 1, 8, 0), at(2025, 1, 1, 8, 15)),  # strictly after
    ("*/15 * * * *", at(2025, 1, 1, 8, 14, 59), at(2025, 1, 1, 8, 15)),
    ("0 8 * * *", at(2025, 1, 1, 8, 0, 30), at(2025, 1, 2, 8, 0)),  # a run ending after 08:00: tomorrow
    ("0 8 * * 1-5", at(2025, 1, 3, 9, 0), at(2025, 1, 6, 8, 0)),  # Friday 09:00 -> Monday
    ("@hourly", at(2025, 1, 1, 8, 59), at(2025, 1, 1, 9, 0)),
    ("0 0 1 * *", at(2025, 1, 31, 12, 0), at(2025, 2, 1, 0, 0)),
])
def test_a_cron_expression_is_read_in_utc(expr: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert Schedule.cron(expr).next_after(after) == expected


def test_cron_tz_reads_the_expression_in_that_zone_across_dst() -> None:
    daily = Schedule.cron("CRON_TZ=Europe/Paris 0 8 * * *")
    assert daily.next_after(at(2025, 3, 29, 12, 0)) == at(2025, 3, 30, 6, 0)  # 08:00 CEST = 06:00 UTC
    assert daily.next_after(at(2025, 3, 28, 12, 0)) == at(2025, 3, 29, 7, 0)  # 08:00 CET = 07:00 UTC
    assert daily.next_after(at(2025, 3, 30, 6, 0)).tzinfo == UTC


@pytest.mark.parametrize(("text", "mentions"), [
    ("61 * * * *", "out of range"),
    ("* * * *", "five fields"),
    ("* * * * * *", "five fields"),  # croniter would take a seconds field; roost asks for standard cron
    ("every day", "five fields"),
    ("@sometimes", "five fields"),
    ("CRON_TZ=Mars/Olympus 0 8 * * *", "unknown time zone"),
    ("0 8 * * mon-funday", "0 8 * * mon-funday"),
    ("", "five fields"),
])
def test_a_bad_cron_expression_is_refused_clearly(text: str, mentions: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Schedule.cron(text)
    assert mentions in caught.value.message


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_an_interval_must_be_a_positive_number_of_seconds(seconds: float) -> None:
    with pytest.raises(InvalidInput):
        Schedule.every(seconds)
