"""When may the next message go out? Pure math over the dispatch ledger and an account's settings.

No I/O and no clock of its own: the caller passes ``now`` and what it read from the ledger, so
the same function decides in the claim transaction and in tests.

Rules (all of them hold at once):

* paused: nothing goes out until the settings change (``next_at`` is None: only an event helps);
* quiet hours ``start``–``end`` (local wall time in the account's zone, DST included; ``start >
  end`` crosses midnight): nothing goes out while the local time is in ``[start, end)``;
* a limit ``L`` over a sliding window of ``W`` seconds: at most ``L`` dispatches with
  ``at > now - W``. When ``L`` are inside, the next one may go at ``t_L + W``, where ``t_L`` is
  the ``L``-th most recent dispatch: from then on ``t_L`` has left the window. So no half-open
  window ``[x, x + W)`` ever holds more than ``L``;
* minimum gap ``g``: the next dispatch is at least ``g`` seconds after the last one, so with a
  gap only one goes out per decision.

A decision that allows nothing names its reason (``PAUSED``, ``QUIET_HOURS``, ``MIN_GAP``,
``window:minute|hour|day``): the constraint that sets ``next_at``. The claim transaction
(``roost.storage.send_queue.claim``, the dispatcher's and a polling device's decision) and a
batch's ``next_send`` in the API (``next_send`` below) both come from ``decide``, so they never
disagree.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any, Mapping

UTC = dt.UTC
LIMIT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("max_per_minute", 60),
    ("max_per_hour", 3600),
    ("max_per_day", 86400),
)
UNLIMITED = 1 << 30

# Why nothing may go now (a Decision's and a batch's next_send reason).
PAUSED = "paused"  # the account's dispatch settings say paused
QUIET_HOURS = "quiet_hours"
MIN_GAP = "min_gap"
WINDOW_REASONS = {60: "window:minute", 3600: "window:hour", 86400: "window:day"}
# Only a batch's next_send: its own state, not the account's limits.
BATCH_PAUSED = "batch_paused"
DRAFT = "draft"
NOTHING_PENDING = "nothing_pending"  # finished, cancelled, or every item already handed to a device
NO_DEVICE_CONNECTED = "no_device_connected"
NEXT_SEND_REASONS = (PAUSED, QUIET_HOURS, MIN_GAP, *WINDOW_REASONS.values(), BATCH_PAUSED, DRAFT, NOTHING_PENDING,
                     NO_DEVICE_CONNECTED)


def parse_hhmm(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


@dataclass(frozen=True)
class Policy:
    """An account's effective dispatch settings."""

    timezone: str = "UTC"
    paused: bool = False
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None
    max_per_minute: int | None = None
    max_per_hour: int | None = None
    max_per_day: int | None = None
    min_gap_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Policy:
        """From the API's settings shape (``quiet_hours: {start, end} | None``, ``timezone``)."""
        quiet = settings.get("quiet_hours") or None
        return cls(
            timezone=settings.get("timezone") or "UTC",
            paused=bool(settings.get("paused")),
            quiet_start=parse_hhmm(quiet["start"]) if quiet else None,
            quiet_end=parse_hhmm(quiet["end"]) if quiet else None,
            max_per_minute=settings.get("max_per_minute"),
            max_per_hour=settings.get("max_per_hour"),
            max_per_day=settings.get("max_per_day"),
            min_gap_seconds=float(settings.get("min_gap_seconds") or 0.0),
        )

    def windows(self) -> list[tuple[int, int]]:
        """``(window_s, limit)`` for every limit that is set."""
        return [(seconds, getattr(self, name)) for name, seconds in LIMIT_WINDOWS if getattr(self, name)]

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def has_quiet_hours(self) -> bool:
        return self.quiet_start is not None and self.quiet_end is not None and self.quiet_start != self.quiet_end


@dataclass(frozen=True)
class WindowUse:
    """What the ledger says about one window: ``count`` dispatches with ``at > now - window_s``
    (the caller may stop counting at ``limit``), and when ``count >= limit`` the ``limit``-th most
    recent of them."""

    window_s: int
    limit: int
    count: int
    lth_recent: dt.datetime | None = None


@dataclass(frozen=True)
class Decision:
    """``allowed`` dispatches may happen now; if none, ``next_at`` is the earliest instant one may
    (None: not until something changes, e.g. the account is unpaused) and ``reason`` the
    constraint that sets it."""

    allowed: int
    next_at: dt.datetime | None = None
    reason: str | None = None


def in_quiet_hours(when: dt.datetime, policy: Policy) -> bool:
    if not policy.has_quiet_hours:
        return False
    assert policy.quiet_start is not None and policy.quiet_end is not None
    local = when.astimezone(policy.zone).time().replace(tzinfo=None)
    start, end = policy.quiet_start, policy.quiet_end
    if start < end:
        return start <= local < end
    return local >= start or local < end  # crosses midnight


def quiet_end_after(when: dt.datetime, policy: Policy) -> dt.datetime:
    """The first instant at or after ``when`` that is outside quiet hours.

    Candidates are the local ``end`` time on the days around ``when``, in both folds, so an end
    time that happens twice (autumn DST) or not at all (spring DST: it maps to the first instant
    after the jump) is handled; the earliest one that is really outside quiet hours wins.
    """
    if not in_quiet_hours(when, policy):
        return when
    assert policy.quiet_end is not None
    zone = policy.zone
    local_date = when.astimezone(zone).date()
    candidates = []
    for days in (-1, 0, 1, 2):
        day = local_date + dt.timedelta(days=days)
        for fold in (0, 1):
            local = dt.datetime.combine(day, policy.quiet_end, tzinfo=zone).replace(fold=fold)
            instant = local.astimezone(UTC)
            if instant > when and not in_quiet_hours(instant, policy):
                candidates.append(instant)
    # A DST jump can skip the end time (02:30 on a spring-forward night): quiet hours then end
    # at the jump itself, which is also a candidate.
    candidates.extend(t for t in _offset_changes(when, zone, hours=50) if t > when and not in_quiet_hours(t, policy))
    if not candidates:  # unreachable for a real zone: an end time recurs daily
        raise ValueError(f"no end of quiet hours found after {when.isoformat()}")
    return min(candidates)


def _offset_changes(start: dt.datetime, zone: zoneinfo.ZoneInfo, *, hours: int) -> list[dt.datetime]:
    """Instants in ``(start, start + hours]`` at which the zone's UTC offset changes (to the second)."""
    step = dt.timedelta(minutes=30)
    found = []
    t, offset = start, start.astimezone(zone).utcoffset()
    for _ in range(hours * 2):
        nxt = t + step
        nxt_offset = nxt.astimezone(zone).utcoffset()
        if nxt_offset != offset:
            # Zones change offset on whole seconds: bisect over integer Unix times.
            lo, hi = int(t.timestamp()), int(nxt.timestamp()) + 1  # offset(lo) == offset, offset(hi) != offset
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if dt.datetime.fromtimestamp(mid, zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            found.append(dt.datetime.fromtimestamp(hi, UTC))
        t, offset = nxt, nxt_offset
    return found


def decide(now: dt.datetime, policy: Policy, uses: list[WindowUse], last_at: dt.datetime | None) -> Decision:
    """How many dispatches may happen at ``now``, or when the next one may."""
    if policy.paused:
        return Decision(0, None, PAUSED)
    if in_quiet_hours(now, policy):
        return Decision(0, quiet_end_after(now, policy), QUIET_HOURS)
    blockers: list[tuple[dt.datetime, int, str]] = []  # (until, rank on a tie: the longer window, reason)
    gap = dt.timedelta(seconds=policy.min_gap_seconds)
    if policy.min_gap_seconds > 0 and last_at is not None and now < last_at + gap:
        blockers.append((last_at + gap, 0, MIN_GAP))
    allowed = UNLIMITED
    for use in uses:
        if use.count >= use.limit:
            assert use.lth_recent is not None, "a full window needs its limit-th most recent dispatch"
            blockers.append((use.lth_recent + dt.timedelta(seconds=use.window_s), use.window_s,
                             WINDOW_REASONS.get(use.window_s, f"window:{use.window_s}s")))
        else:
            allowed = min(allowed, use.limit - use.count)
    if blockers:
        # Each constraint, once met, stays met until the next dispatch, so the latest blocker wins
        # (the longer window on a tie); quiet hours win when it falls inside them.
        latest, _, reason = max(blockers)
        at = quiet_end_after(latest, policy)
        return Decision(0, at, reason if at == latest else QUIET_HOURS)
    if policy.min_gap_seconds > 0:
        allowed = min(allowed, 1)
    return Decision(allowed, None)


@dataclass(frozen=True)
class NextSend:
    """When a batch's next item may go (None: not until something changes) and why not now."""

    at: dt.datetime | None
    reason: str


def next_send(batch_status: str, pending: int, decision: Decision, device_connected: bool) -> NextSend | None:
    """A batch's ``next_send``: None when one of its items may go now.

    In this order: a draft (``DRAFT``) or a batch with nothing pending (finished, cancelled, or
    every item with a device already: ``NOTHING_PENDING``); the batch paused (``BATCH_PAUSED``);
    the account's limits, with ``decision`` from ``decide`` (the same decision a claim makes);
    no device of its pending items connected (``NO_DEVICE_CONNECTED``).
    """
    if batch_status == "draft":
        return NextSend(None, DRAFT)
    if batch_status not in ("sending", "paused") or pending == 0:
        return NextSend(None, NOTHING_PENDING)
    if batch_status == "paused":
        return NextSend(None, BATCH_PAUSED)
    if decision.allowed <= 0:
        assert decision.reason is not None, "a decision that allows nothing names its reason"
        return NextSend(decision.next_at, decision.reason)
    if not device_connected:
        return NextSend(None, NO_DEVICE_CONNECTED)
    return None
