"""The pure dispatch math: windows, gap, quiet hours (midnight, DST), pause; the reason of each
wait and a batch's next_send."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from roost.domain.dispatch.limits import (
    Decision,
    NextSend,
    Policy,
    WindowUse,
    decide,
    in_quiet_hours,
    next_send,
    quiet_end_after,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NY = zoneinfo.ZoneInfo("America/New_York")


def quiet(start: str, end: str, tz: str = "America/New_York", **kw) -> Policy:
    return Policy.from_settings({"timezone": tz, "quiet_hours": {"start": start, "end": end}, **kw})


def test_no_limits_allow_any_number_now() -> None:
    decision = decide(T0, Policy(), [], None)
    assert decision.allowed > 10_000 and decision.next_at is None


def test_a_full_window_blocks_until_its_limit_th_most_recent_dispatch_leaves_it() -> None:
    policy = Policy(max_per_minute=10)
    lth = T0 - dt.timedelta(seconds=45)
    decision = decide(T0, policy, [WindowUse(60, 10, 10, lth)], None)
    assert decision.allowed == 0
    assert decision.next_at == lth + dt.timedelta(seconds=60)


def test_a_partly_used_window_allows_the_rest() -> None:
    decision = decide(T0, Policy(max_per_minute=10, max_per_hour=100),
                      [WindowUse(60, 10, 4), WindowUse(3600, 100, 97)], None)
    assert decision.allowed == 3


def test_the_latest_blocker_wins_when_several_block() -> None:
    uses = [WindowUse(60, 1, 1, T0 - dt.timedelta(seconds=10)), WindowUse(3600, 5, 5, T0 - dt.timedelta(seconds=600))]
    decision = decide(T0, Policy(max_per_minute=1, max_per_hour=5), uses, None)
    assert decision.next_at == T0 + dt.timedelta(seconds=3000)


def test_min_gap_allows_one_at_a_time_and_waits_out_the_gap() -> None:
    policy = Policy(min_gap_seconds=2.5)
    assert decide(T0, policy, [], None).allowed == 1
    assert decide(T0, policy, [], T0 - dt.timedelta(seconds=3)).allowed == 1
    blocked = decide(T0, policy, [], T0 - dt.timedelta(seconds=1))
    assert blocked.allowed == 0 and blocked.next_at == T0 + dt.timedelta(seconds=1.5)


def test_a_gap_exactly_elapsed_allows_the_next_one() -> None:
    """Regression for the seed's inverted gap test: a send is allowed once the gap has passed, not before."""
    policy = Policy(min_gap_seconds=5)
    assert decide(T0, policy, [], T0 - dt.timedelta(seconds=5)).allowed == 1
    assert decide(T0, policy, [], T0 - dt.timedelta(seconds=4.999)).allowed == 0


def test_paused_allows_nothing_and_names_no_time() -> None:
    decision = decide(T0, Policy(paused=True), [], None)
    assert decision.allowed == 0 and decision.next_at is None


def test_quiet_hours_crossing_midnight_are_read_in_the_accounts_zone() -> None:
    """Regression for the seed reading quiet hours in server-local time."""
    policy = quiet("22:00", "07:00")
    at_2330_local = dt.datetime(2024, 5, 1, 23, 30, tzinfo=NY).astimezone(UTC)
    at_0800_local = dt.datetime(2024, 5, 2, 8, 0, tzinfo=NY).astimezone(UTC)
    assert in_quiet_hours(at_2330_local, policy)
    assert not in_quiet_hours(at_0800_local, policy)
    assert quiet_end_after(at_2330_local, policy) == dt.datetime(2024, 5, 2, 7, 0, tzinfo=NY).astimezone(UTC)
    decision = decide(at_2330_local, policy, [], None)
    assert decision.allowed == 0 and decision.next_at == dt.datetime(2024, 5, 2, 11, 0, tzinfo=UTC)


def test_quiet_hours_end_across_the_spring_dst_change() -> None:
    policy = quiet("22:00", "07:00")
    before = dt.datetime(2024, 3, 9, 23, 0, tzinfo=NY).astimezone(UTC)  # EST, the night clocks go forward
    assert quiet_end_after(before, policy) == dt.datetime(2024, 3, 10, 11, 0, tzinfo=UTC)  # 07:00 EDT
    assert dt.datetime(2024, 3, 10, 11, 0, tzinfo=UTC) - before == dt.timedelta(hours=7)


def test_quiet_hours_ending_in_the_skipped_hour_end_when_the_clock_jumps() -> None:
    policy = quiet("01:00", "02:30")
    at_0130 = dt.datetime(2024, 3, 10, 1, 30, tzinfo=NY).astimezone(UTC)
    end = quiet_end_after(at_0130, policy)
    assert end == dt.datetime(2024, 3, 10, 7, 0, tzinfo=UTC)  # 03:00 EDT, the first instant after 02:00 EST
    assert not in_quiet_hours(end, policy)


def test_quiet_hours_across_the_autumn_dst_change_cover_the_repeated_hour() -> None:
    policy = quiet("00:30", "01:30")
    first_0100 = dt.datetime(2024, 11, 3, 5, 0, tzinfo=UTC)  # 01:00 EDT
    second_0100 = dt.datetime(2024, 11, 3, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert quiet_end_after(first_0100, policy) == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert in_quiet_hours(second_0100, policy)
    assert quiet_end_after(second_0100, policy) == dt.datetime(2024, 11, 3, 6, 30, tzinfo=UTC)


def test_a_window_that_frees_up_inside_quiet_hours_waits_for_their_end() -> None:
    policy = quiet("22:00", "07:00", max_per_day=1)
    last = dt.datetime(2024, 5, 1, 23, 0, tzinfo=NY).astimezone(UTC) - dt.timedelta(days=1)
    now = dt.datetime(2024, 5, 1, 21, 0, tzinfo=NY).astimezone(UTC)
    decision = decide(now, policy, [WindowUse(86400, 1, 1, last)], None)
    assert decision.next_at == dt.datetime(2024, 5, 2, 7, 0, tzinfo=NY).astimezone(UTC)


def test_quiet_hours_within_one_day() -> None:
    policy = quiet("12:00", "13:00", tz="Europe/Berlin")
    noon_berlin = dt.datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert in_quiet_hours(noon_berlin, policy)
    assert quiet_end_after(noon_berlin, policy) == dt.datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
    assert not in_quiet_hours(dt.datetime(2024, 5, 1, 11, 0, tzinfo=UTC), policy)


# -- reasons and next_send -------------------------------------------------------------------------


@pytest.mark.parametrize(("window_s", "field", "reason"), [
    (60, "max_per_minute", "window:minute"),
    (3600, "max_per_hour", "window:hour"),
    (86400, "max_per_day", "window:day"),
])
def test_a_full_window_names_itself_as_the_reason(window_s: int, field: str, reason: str) -> None:
    lth = T0 - dt.timedelta(seconds=10)
    decision = decide(T0, Policy(**{field: 3}), [WindowUse(window_s, 3, 3, lth)], None)
    assert (decision.allowed, decision.next_at, decision.reason) == (0, lth + dt.timedelta(seconds=window_s), reason)


def test_each_wait_names_its_reason_and_an_allowing_decision_none() -> None:
    assert decide(T0, Policy(), [], None).reason is None
    assert decide(T0, Policy(paused=True, max_per_minute=1), [WindowUse(60, 1, 1, T0)], None).reason == "paused"
    assert decide(T0, Policy(min_gap_seconds=5), [], T0 - dt.timedelta(seconds=1)).reason == "min_gap"
    at_2330 = dt.datetime(2024, 5, 1, 23, 30, tzinfo=NY).astimezone(UTC)
    assert decide(at_2330, quiet("22:00", "07:00"), [], None).reason == "quiet_hours"


def test_the_reason_is_the_latest_blocker_and_the_longer_window_on_a_tie() -> None:
    uses = [WindowUse(60, 1, 1, T0 - dt.timedelta(seconds=10)), WindowUse(3600, 5, 5, T0 - dt.timedelta(seconds=600))]
    assert decide(T0, Policy(max_per_minute=1, max_per_hour=5), uses, None).reason == "window:hour"
    gap = decide(T0, Policy(max_per_minute=1, min_gap_seconds=300), uses[:1], T0 - dt.timedelta(seconds=10))
    assert (gap.reason, gap.next_at) == ("min_gap", T0 + dt.timedelta(seconds=290))
    tie = [WindowUse(60, 1, 1, T0 - dt.timedelta(seconds=10)), WindowUse(3600, 2, 2, T0 - dt.timedelta(seconds=3550))]
    assert decide(T0, Policy(max_per_minute=1, max_per_hour=2), tie, None).reason == "window:hour"


def test_a_window_that_frees_up_inside_quiet_hours_gives_quiet_hours_as_the_reason() -> None:
    policy = quiet("22:00", "07:00", max_per_day=1)
    last = dt.datetime(2024, 5, 1, 23, 0, tzinfo=NY).astimezone(UTC) - dt.timedelta(days=1)
    now = dt.datetime(2024, 5, 1, 21, 0, tzinfo=NY).astimezone(UTC)
    decision = decide(now, policy, [WindowUse(86400, 1, 1, last)], None)
    assert (decision.reason, decision.next_at) == ("quiet_hours", dt.datetime(2024, 5, 2, 11, 0, tzinfo=UTC))


ALLOW = Decision(5)
WAIT = Decision(0, T0 + dt.timedelta(seconds=42), "window:minute")


@pytest.mark.parametrize(("status", "pending", "decision", "connected", "expected"), [
    ("draft", 3, ALLOW, True, NextSend(None, "draft")),
    ("done", 0, ALLOW, True, NextSend(None, "nothing_pending")),
    ("cancelled", 0, ALLOW, True, NextSend(None, "nothing_pending")),
    ("sending", 0, ALLOW, True, NextSend(None, "nothing_pending")),  # every item with a device already
    ("paused", 3, WAIT, True, NextSend(None, "batch_paused")),
    ("sending", 3, WAIT, False, NextSend(WAIT.next_at, "window:minute")),
    ("sending", 3, Decision(0, None, "paused"), True, NextSend(None, "paused")),
    ("sending", 3, ALLOW, False, NextSend(None, "no_device_connected")),
    ("sending", 3, ALLOW, True, None),
])
def test_next_send_checks_the_batch_then_the_limits_then_the_devices(
    status: str, pending: int, decision: Decision, connected: bool, expected: NextSend | None
) -> None:
    assert next_send(status, pending, decision, connected) == expected
