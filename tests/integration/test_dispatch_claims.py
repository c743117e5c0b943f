"""The claim transaction, the ledger and results, on SQLite and PostgreSQL, with time injected.

Time is passed to the storage calls (the claim's ``now``), stepping to each ``next_at`` the claim
returns, the same way the dispatcher sleeps to it: simulated hours on the real database clock.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any

import pytest

from roost.errors import Conflict, InvalidInput, NotFound
from roost.storage import dispatch, dispatch_lists, send_queue, tenancy
from roost.storage.database import Database, open_database

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = 300.0


async def setup_account(db: Database, *, tz: str = "UTC", devices: int = 1) -> dict[str, Any]:
    account = await tenancy.create_account(db, name="Acme", timezone=tz, now=T0, actor="t")
    user = await tenancy.create_user(db, account_id=account["id"], now=T0, actor="t", fields={
        "email": "ann@example.com", "display_name": "Ann", "timezone": tz, "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None})
    devs = [(await tenancy.create_device(db, user_id=user["id"], name=f"d{i}", now=T0, actor="t"))[0]
            for i in range(devices)]
    return {"account": account["id"], "user": user["id"], "devices": [d["id"] for d in devs]}


async def make_batch(db: Database, env: dict, n: int, *, device: int = 0, start: bool = True,
                     key: str | None = None) -> dict[str, Any]:
    items = [{"to_handle": f"+1555{i:07d}", "body": f"hello {i}", "device_id": env["devices"][device]}
             for i in range(n)]
    batch, _ = await dispatch.create_batch(db, account_id=env["account"], created_by=env["user"],
                                           idempotency_key=key, items=items, now=T0)
    if start:
        batch = (await dispatch.change_batch(db, batch["id"], "send", now=T0)).batch
    return batch


async def drain(db: Database, env: dict, *, start: dt.datetime, until: dt.datetime, device: int = 0,
                answer: bool = True) -> list[tuple[dt.datetime, str]]:
    """Claim as the dispatcher would, jumping to each next_at; returns (dispatch time, item id)."""
    now, sent = start, []
    while now < until:
        claim = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][device],
                                     max_items=100, now=now, lease_s=LEASE)
        for item in claim.items:
            sent.append((now, item["id"]))
            if answer:
                await send_queue.record_result(db, device_id=env["devices"][device], item_id=item["id"],
                                             status="sent", error=None, now=now)
        if claim.items and claim.more:
            continue
        if claim.next_at is None:
            break
        now = claim.next_at
    return sent


def max_in_window(times: list[dt.datetime], seconds: float) -> int:
    """The most dispatches in any half-open window [x, x + seconds)."""
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= dt.timedelta(seconds=seconds):
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_a_burst_of_1000_with_max_per_minute_10_sends_exactly_10_each_minute(db: Database) -> None:
    env = await setup_account(db)
    await dispatch.put_settings(db, env["account"], {"max_per_minute": 10}, now=T0)
    batch = await make_batch(db, env, 1000)

    sent = await drain(db, env, start=T0, until=T0 + dt.timedelta(hours=3))

    minutes = Counter(int((at - T0).total_seconds() // 60) for at, _ in sent)
    assert len(sent) == 1000
    assert set(minutes.values()) == {10} and sorted(minutes) == list(range(100))
    assert max_in_window(await send_queue.ledger(db, env["account"]), 60) == 10
    final = await dispatch.get_batch(db, batch["id"])
    assert final["status"] == "done" and final["counts"]["sent"] == 1000


async def test_hour_and_day_limits_hold_over_every_sliding_window(db: Database) -> None:
    env = await setup_account(db)
    await dispatch.put_settings(db, env["account"], {"max_per_minute": 5, "max_per_hour": 12, "max_per_day": 30},
                                now=T0)
    await make_batch(db, env, 40)

    sent = await drain(db, env, start=T0, until=T0 + dt.timedelta(days=2))

    times = [at for at, _ in sent]
    assert len(times) == 40
    assert max_in_window(times, 60) <= 5 and max_in_window(times, 3600) <= 12 and max_in_window(times, 86400) <= 30
    assert max_in_window(times, 3600) == 12 and max_in_window(times, 86400) == 30
    assert times[30] == times[0] + dt.timedelta(days=1)  # the 31st waits for the day window


async def test_min_gap_spaces_consecutive_dispatches(db: Database) -> None:
    env = await setup_account(db)
    await dispatch.put_settings(db, env["account"], {"min_gap_seconds": 7.5}, now=T0)
    await make_batch(db, env, 20)

    times = [at for at, _ in await drain(db, env, start=T0, until=T0 + dt.timedelta(hours=1))]

    assert len(times) == 20
    assert all(b - a == dt.timedelta(seconds=7.5) for a, b in zip(times, times[1:], strict=False))


async def test_limits_are_shared_by_every_batch_and_device_of_the_account(db: Database) -> None:
    """Regression for the seed counting limits per batch: two batches on two devices share one minute."""
    env = await setup_account(db, devices=2)
    await dispatch.put_settings(db, env["account"], {"max_per_minute": 4}, now=T0)
    await make_batch(db, env, 10, device=0)
    await make_batch(db, env, 10, device=1)

    first = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=100,
                                 now=T0, lease_s=LEASE)
    second = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][1], max_items=100,
                                  now=T0 + dt.timedelta(seconds=1), lease_s=LEASE)

    assert len(first.items) == 4 and second.items == []
    assert second.next_at == T0 + dt.timedelta(seconds=60)


async def test_quiet_hours_across_midnight_and_a_dst_change_in_the_accounts_zone(db: Database) -> None:
    ny = zoneinfo.ZoneInfo("America/New_York")
    env = await setup_account(db, tz="America/New_York")
    await dispatch.put_settings(db, env["account"], {"quiet_hours": {"start": "22:00", "end": "07:00"},
                                                     "min_gap_seconds": 1800}, now=T0)
    await make_batch(db, env, 30)
    start = dt.datetime(2024, 3, 9, 19, 0, tzinfo=ny).astimezone(UTC)  # the evening before clocks go forward

    times = [at for at, _ in await drain(db, env, start=start, until=start + dt.timedelta(days=2))]

    local = [t.astimezone(ny) for t in times]
    assert len(times) == 30
    assert all(not (t.hour >= 22 or t.hour < 7) for t in local)
    assert local[6].hour == 7 and local[6].minute == 0 and local[6].date() == dt.date(2024, 3, 10)
    assert times[6] == dt.datetime(2024, 3, 10, 11, 0, tzinfo=UTC)  # 07:00 EDT, not 07:00 EST


async def test_paused_account_dispatches_nothing_until_unpaused(db: Database) -> None:
    env = await setup_account(db)
    await dispatch.put_settings(db, env["account"], {"paused": True}, now=T0)
    await make_batch(db, env, 3)

    paused = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=10, now=T0,
                                  lease_s=LEASE)
    await dispatch.put_settings(db, env["account"], {"paused": False}, now=T0)
    resumed = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=10, now=T0,
                                   lease_s=LEASE)

    assert paused.items == [] and paused.next_at is None
    assert len(resumed.items) == 3


async def test_batch_pause_resume_and_cancel(db: Database) -> None:
    env = await setup_account(db)
    batch = await make_batch(db, env, 5)

    async def claim(n: int) -> list:
        return (await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=n,
                                     now=T0, lease_s=LEASE)).items

    first = await claim(2)
    assert (await dispatch.change_batch(db, batch["id"], "pause", now=T0)).batch["status"] == "paused"
    assert await claim(10) == []
    assert (await dispatch.change_batch(db, batch["id"], "resume", now=T0)).batch["status"] == "sending"
    second = await claim(1)
    cancelled = (await dispatch.change_batch(db, batch["id"], "cancel", now=T0)).batch
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"] == {**cancelled["counts"], "dispatched": 3, "cancelled": 2, "pending": 0}
    assert await claim(10) == []
    for item in first + second:  # dispatched items still finish
        await send_queue.record_result(db, device_id=env["devices"][0], item_id=item["id"], status="sent", error=None,
                                     now=T0)
    final = await dispatch.get_batch(db, batch["id"])
    assert final["status"] == "cancelled" and final["counts"]["sent"] == 3 and final["finished_at"] is not None
    with pytest.raises(Conflict):
        await dispatch.change_batch(db, batch["id"], "resume", now=T0)


async def test_a_new_runtime_over_the_same_database_keeps_the_windows(database_url: str) -> None:
    async with open_database(database_url) as db:
        env = await setup_account(db)
        await dispatch.put_settings(db, env["account"], {"max_per_minute": 10}, now=T0)
        await make_batch(db, env, 30)
        first = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=100,
                                     now=T0, lease_s=LEASE)
    async with open_database(database_url) as db:  # "restart"
        again = await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=100,
                                     now=T0 + dt.timedelta(seconds=30), lease_s=LEASE)
    assert len(first.items) == 10
    assert again.items == [] and again.next_at == T0 + dt.timedelta(seconds=60)


async def test_an_expired_lease_is_offered_again_with_the_same_id_and_not_counted_twice(db: Database) -> None:
    env = await setup_account(db)
    await make_batch(db, env, 1)
    device = env["devices"][0]
    claimed = await send_queue.claim(db, account_id=env["account"], device_id=device, max_items=5, now=T0,
                                   lease_s=LEASE)

    early = await send_queue.reoffer(db, device_id=device, now=T0 + dt.timedelta(seconds=299), lease_s=LEASE,
                                   only_expired=True)
    late = await send_queue.reoffer(db, device_id=device, now=T0 + dt.timedelta(seconds=300), lease_s=LEASE,
                                  only_expired=True)

    assert early == [] and [i["id"] for i in late] == [claimed.items[0]["id"]]
    assert await send_queue.dispatch_count(db, env["account"]) == 1
    assert await send_queue.next_lease_expiry(db, device) == T0 + dt.timedelta(seconds=600)


async def test_results_are_idempotent_and_checked(db: Database) -> None:
    env = await setup_account(db, devices=2)
    await make_batch(db, env, 3)
    mine, other = env["devices"]
    items = (await send_queue.claim(db, account_id=env["account"], device_id=mine, max_items=2, now=T0,
                                  lease_s=LEASE)).items
    pending_id = (await dispatch_lists.list_items(db, (await dispatch.get_batch(db, items[0]["batch_id"]))["id"],
                                            limit=10, cursor=None))["items"][2]["id"]

    first = await send_queue.record_result(db, device_id=mine, item_id=items[0]["id"], status="failed", error="nope",
                                         now=T0)
    repeat = await send_queue.record_result(db, device_id=mine, item_id=items[0]["id"], status="failed", error="nope",
                                          now=T0)
    assert first.changed and not repeat.changed
    with pytest.raises(Conflict, match="already has"):
        await send_queue.record_result(db, device_id=mine, item_id=items[0]["id"], status="sent", error=None, now=T0)
    with pytest.raises(NotFound):
        await send_queue.record_result(db, device_id=other, item_id=items[1]["id"], status="sent", error=None, now=T0)
    with pytest.raises(NotFound):
        await send_queue.record_result(db, device_id=mine, item_id="oit_nope", status="sent", error=None, now=T0)
    with pytest.raises(Conflict, match="not dispatched"):
        await send_queue.record_result(db, device_id=mine, item_id=pending_id, status="sent", error=None, now=T0)


async def test_an_idempotency_key_returns_the_first_batch_on_retry(db: Database) -> None:
    """Regression for the seed's lost enqueue response: the retry must not queue the messages twice."""
    env = await setup_account(db)
    first = await make_batch(db, env, 3, start=False, key="k-1")
    items = [{"to_handle": f"+1555{i:07d}", "body": f"hello {i}", "device_id": env["devices"][0]} for i in range(3)]

    retry, created = await dispatch.create_batch(db, account_id=env["account"], created_by=env["user"],
                                                 idempotency_key="k-1", items=items, now=T0)
    assert not created and retry["id"] == first["id"]
    with pytest.raises(Conflict):
        await dispatch.create_batch(db, account_id=env["account"], created_by=env["user"], idempotency_key="k-1",
                                    items=items[:1], now=T0)
    count = await db.fetchval("SELECT COUNT(*) FROM outreach_items WHERE account_id = $1", env["account"])
    assert count == 3


async def test_items_without_a_device_go_to_the_most_recently_seen_one_or_are_skipped(db: Database) -> None:
    env = await setup_account(db, devices=2)
    await tenancy.touch_device(db, env["devices"][1], T0)
    items = [{"to_handle": "+1", "body": "x"}]
    resolved = await dispatch.resolve_items(db, env["account"], env["user"], items)
    assert resolved[0]["device_id"] == env["devices"][1] and resolved[0]["status"] == "pending"

    lonely = await tenancy.create_account(db, name="Solo", timezone="UTC", now=T0, actor="t")
    batch, _ = await dispatch.create_batch(db, account_id=lonely["id"], created_by=None, idempotency_key=None,
                                           items=items, now=T0)
    assert batch["counts"]["skipped"] == 1
    started = await dispatch.change_batch(db, batch["id"], "send", now=T0)
    assert started.done and started.batch["status"] == "done"
    with pytest.raises(InvalidInput):
        await dispatch.resolve_items(db, lonely["id"], None, [{**items[0], "device_id": env["devices"][0]}])


async def test_the_ledger_prune_drops_only_rows_no_window_can_see(db: Database) -> None:
    env = await setup_account(db)
    await make_batch(db, env, 2)
    await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=1, now=T0,
                         lease_s=LEASE)
    await send_queue.claim(db, account_id=env["account"], device_id=env["devices"][0], max_items=1,
                         now=T0 + dt.timedelta(days=3), lease_s=LEASE)

    removed = await send_queue.prune_ledger(db, older_than=T0 + dt.timedelta(days=1))

    assert removed == 1 and await send_queue.ledger(db, env["account"]) == [T0 + dt.timedelta(days=3)]


async def test_an_item_never_answered_is_offered_max_offers_times_then_failed_no_result_and_its_batch_ends(
    db: Database,
) -> None:
    env = await setup_account(db)
    batch = await make_batch(db, env, 1)
    device = env["devices"][0]
    claimed = await send_queue.claim(db, account_id=env["account"], device_id=device, max_items=5, now=T0,
                                     lease_s=LEASE)
    offers = [T0] if claimed.items else []
    now = T0
    for _ in range(10):
        now += dt.timedelta(seconds=LEASE)
        assert await send_queue.fail_unanswered(db, now=now, max_offers=5, device_id=device) == [] or len(offers) == 5
        again = await send_queue.reoffer(db, device_id=device, now=now, lease_s=LEASE, only_expired=True, max_offers=5)
        offers += [now for _ in again]
        if (await dispatch.get_batch(db, batch["id"]))["status"] == "done":
            break
    # 5 offers, one lease apart; when the fifth lease ran out the item failed and the batch ended.
    assert offers == [T0 + dt.timedelta(seconds=LEASE * i) for i in range(5)]
    assert now == T0 + dt.timedelta(seconds=LEASE * 5)
    item = (await dispatch_lists.list_items(db, batch["id"], limit=10, cursor=None))["items"][0]
    assert (item["status"], item["reason"], item["offers"]) == ("failed", "no_result", 5)
    done = await dispatch.get_batch(db, batch["id"])
    assert done["status"] == "done" and done["counts"]["failed"] == 1
    assert await send_queue.next_lease_expiry(db, device) is None


async def test_a_result_before_the_last_lease_ends_keeps_the_item_and_the_sweep_fails_only_used_up_ones(
    db: Database,
) -> None:
    env = await setup_account(db)
    await make_batch(db, env, 2)
    device = env["devices"][0]
    claimed = await send_queue.claim(db, account_id=env["account"], device_id=device, max_items=5, now=T0,
                                     lease_s=LEASE)
    answered, silent = (i["id"] for i in claimed.items)
    now = T0
    for _ in range(1, 3):
        now += dt.timedelta(seconds=LEASE)
        await send_queue.reoffer(db, device_id=device, now=now, lease_s=LEASE, only_expired=True, max_offers=3)
    await send_queue.record_result(db, device_id=device, item_id=answered, status="sent", error=None, now=now)
    # The device went away: only the pruner's sweep (every device) sees the used-up item.
    assert await send_queue.fail_unanswered(db, now=now + dt.timedelta(seconds=LEASE - 1), max_offers=3) == []
    [batch] = await send_queue.fail_unanswered(db, now=now + dt.timedelta(seconds=LEASE), max_offers=3)
    statuses = {i["id"]: (i["status"], i["reason"]) for i in
                (await dispatch_lists.list_items(db, batch["id"], limit=10, cursor=None))["items"]}
    assert statuses == {answered: ("sent", None), silent: ("failed", "no_result")}
