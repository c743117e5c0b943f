"""The domain reads and account-scoped actions the console's handoff and dispatch pages stand on,
on SQLite and PostgreSQL: the event log, who may claim, a batch's pause keeping its items from
devices, the account's limits and next send, its batches newest first, its devices and a device's
queue; an id of another account is not found and changes nothing."""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from roost.domain import handoffs
from roost.domain.dispatch import overview, sending
from roost.errors import NotFound
from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.runtime.topics import DISPATCH_CHANGED, HANDOFF_EVENTS
from roost.storage import dispatch, send_queue, tenancy
from roost.storage import handoffs as repo
from roost.storage.database import open_database
from tests.integration.test_dispatch_claims import LEASE, T0, make_batch, setup_account
from tests.support.checks import CheckGroups, run

pytestmark = pytest.mark.timeout(60)
checks = CheckGroups()


@asynccontextmanager
async def services_at_t0(url: str) -> AsyncIterator[Services]:
    async with open_database(url) as db:
        yield Services.build(Settings(database_url=url), db, Clock(wall_start=T0))


async def add_user(db: Any, account_id: str, email: str, *, active: bool = True) -> str:
    user = await tenancy.create_user(db, account_id=account_id, now=T0, actor="t", fields={
        "email": email, "display_name": email.split("@")[0], "timezone": "UTC", "role": "member", "active": active,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None})
    return user["id"]


async def park(services: Services, env: dict, ref: str) -> dict[str, Any]:
    return await handoffs.create(services, account_id=env["account"], subject_ref=ref, intent="park", notes="",
                                 priority="normal", snapshot={}, created_by=env["user"])


# -- handoffs --------------------------------------------------------------------------------------


@checks("handoff_event_log_claimable_users_and_account_scoped_claim_and_cancel")
async def check_event_log_is_the_accounts_events_newest_first_paged_on_seq(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db), await setup_account(s.db)
        rows = [await park(s, env, f"ref-{i}") for i in range(3)]
        await park(s, other, "elsewhere")
        await handoffs.claim(s, rows[0]["id"], env["user"])

        first = await handoffs.event_log(s, env["account"], limit=3)
        rest = await handoffs.event_log(s, env["account"], limit=3, before=first["next_cursor"])
        with pytest.raises(NotFound):
            await handoffs.event_log(s, "acc_nope", limit=3)

    assert [e["seq"] for e in first["items"]] == [4, 3, 2] and first["next_cursor"] == 2
    assert [e["seq"] for e in rest["items"]] == [1] and rest["next_cursor"] is None
    assert first["items"][0]["kind"] == "handoff_claimed" and first["items"][0]["handoff_id"] == rows[0]["id"]
    assert first["items"][0]["handoff"]["claimed_by"] == env["user"]
    assert {e["handoff"]["account_id"] for e in first["items"] + rest["items"]} == {env["account"]}


@checks("handoff_event_log_claimable_users_and_account_scoped_claim_and_cancel")
async def check_claimable_users_are_the_accounts_active_users_only(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db), await setup_account(s.db)
        bob = await add_user(s.db, env["account"], "bob@example.com")
        await add_user(s.db, env["account"], "gone@example.com", active=False)
        users = await handoffs.claimable_users(s, env["account"])
        with pytest.raises(NotFound):
            await handoffs.claimable_users(s, "acc_nope")
    assert {u["id"] for u in users} == {env["user"], bob} and other["user"] not in {u["id"] for u in users}


@checks("handoff_event_log_claimable_users_and_account_scoped_claim_and_cancel")
async def check_claim_and_cancel_in_another_accounts_scope_are_not_found_and_change_nothing(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db), await setup_account(s.db)
        row = await park(s, env, "mine")
        with s.bus.subscribe(HANDOFF_EVENTS) as inbox:
            for act in (handoffs.claim, handoffs.cancel):
                with pytest.raises(NotFound):  # the handoff is not of the page's account
                    await act(s, row["id"], env["user"], account_id=other["account"])
                with pytest.raises(NotFound):  # a user of another account
                    await act(s, row["id"], other["user"], account_id=env["account"])
            assert inbox.take() == ([], False)
            claimed = await handoffs.claim(s, row["id"], env["user"], account_id=env["account"])
            assert inbox.take()[0][0].ids == (env["account"],)
        stored = await repo.get(s.db, row["id"])
    assert claimed["status"] == stored["status"] == "claimed" and stored["claimed_by"] == env["user"]


# -- dispatch --------------------------------------------------------------------------------------


@checks("a_paused_batch_reaches_no_device_until_resumed_another_accounts_batch_404")
async def check_a_paused_batchs_items_go_to_no_device_until_resumed(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env = await setup_account(s.db)
        batch = await make_batch(s.db, env, 3)

        async def claim() -> list:
            return (await send_queue.claim(s.db, account_id=env["account"], device_id=env["devices"][0],
                                           max_items=10, now=s.clock.now(), lease_s=LEASE)).items

        with s.bus.subscribe(DISPATCH_CHANGED) as inbox:
            paused = await sending.change_batch(s, batch["id"], "pause", account_id=env["account"])
            none_while_paused = await claim()
            state = await overview.batch(s, env["account"], batch["id"])
            resumed = await sending.change_batch(s, batch["id"], "resume", account_id=env["account"])
            after = await claim()
            messages, _ = inbox.take()
    assert paused["status"] == "paused" and none_while_paused == []
    assert state["next_send"] == {"at": None, "reason": "batch_paused"}
    assert resumed["status"] == "sending" and len(after) == 3
    assert [m.ids for m in messages] == [(env["account"],), (env["account"],)]


@checks("a_paused_batch_reaches_no_device_until_resumed_another_accounts_batch_404")
async def check_changing_another_accounts_batch_is_not_found_and_changes_nothing(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db), await setup_account(s.db)
        batch = await make_batch(s.db, env, 2)
        for action in ("pause", "resume", "cancel", "send"):
            with pytest.raises(NotFound):
                await sending.change_batch(s, batch["id"], action, account_id=other["account"])
        with pytest.raises(NotFound):
            await overview.batch(s, other["account"], batch["id"])
        with pytest.raises(NotFound):
            await sending.change_batch(s, "obt_nope", "pause", account_id=env["account"])
        stored = await dispatch.get_batch(s.db, batch["id"])
    assert stored["status"] == "sending" and stored["counts"]["pending"] == 2


@checks("dispatch_overview_limits_next_send_batches_devices_and_a_devices_queue")
async def check_account_state_says_the_limits_use_and_when_the_next_send_may_go(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env = await setup_account(s.db)
        free = await overview.account_state(s, env["account"])
        await dispatch.put_settings(s.db, env["account"], {"max_per_minute": 2, "max_per_day": 50}, now=T0)
        await make_batch(s.db, env, 5)
        claimed = await send_queue.claim(s.db, account_id=env["account"], device_id=env["devices"][0], max_items=10,
                                         now=s.clock.now(), lease_s=LEASE)
        full = await overview.account_state(s, env["account"])
        await dispatch.put_settings(s.db, env["account"], {"paused": True}, now=T0)
        paused = await overview.account_state(s, env["account"])
        with pytest.raises(NotFound):
            await overview.account_state(s, "acc_nope")
    assert free["next_send"] is None and free["allowed_now"] is None and free["usage"]["day"] == 0
    first = min(i["created_at"] for i in claimed.items)
    assert len(claimed.items) == 2
    assert full["next_send"]["reason"] == "window:minute"
    assert full["next_send"]["at"] >= first + dt.timedelta(seconds=60)
    assert full["usage"]["minute"] == full["usage"]["day"] == 2 and full["usage"]["last_at"] is not None
    assert full["settings"]["max_per_minute"] == 2
    assert paused["next_send"] == {"at": None, "reason": "paused"}


@checks("dispatch_overview_limits_next_send_batches_devices_and_a_devices_queue")
async def check_recent_batches_are_newest_first_by_status_and_paged(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db), await setup_account(s.db)
        made = [await make_batch(s.db, env, 1, start=i != 1) for i in range(3)]
        await make_batch(s.db, other, 1)
        first = await overview.recent_batches(s, env["account"], limit=2)
        rest = await overview.recent_batches(s, env["account"], limit=2, before=first["next_cursor"])
        drafts = await overview.recent_batches(s, env["account"], status="draft")
        with pytest.raises(NotFound):
            await overview.recent_batches(s, "acc_nope")
    ids = [b["id"] for b in made]
    assert [b["id"] for b in first["items"] + rest["items"]] == ids[::-1] and rest["next_cursor"] is None
    assert [b["id"] for b in drafts["items"]] == [ids[1]]
    assert first["items"][0]["counts"]["pending"] == 1


@checks("dispatch_overview_limits_next_send_batches_devices_and_a_devices_queue")
async def check_devices_with_their_queue_and_a_devices_queue_within_the_account(database_url: str) -> None:
    async with services_at_t0(database_url) as s:
        env, other = await setup_account(s.db, devices=2), await setup_account(s.db)
        await make_batch(s.db, env, 3)
        await send_queue.claim(s.db, account_id=env["account"], device_id=env["devices"][0], max_items=1,
                               now=s.clock.now(), lease_s=LEASE)
        s.sockets.open(env["devices"][0], env["user"], env["account"])
        devices = {d["id"]: d for d in await overview.devices(s, env["account"])}
        queue = await overview.device_queue(s, env["account"], env["devices"][0], limit=2)
        for account, device in ((other["account"], env["devices"][0]), (env["account"], other["devices"][0]),
                                (env["account"], "dev_nope")):
            with pytest.raises(NotFound):
                await overview.device_queue(s, account, device)
    first, second = devices[env["devices"][0]], devices[env["devices"][1]]
    assert (first["pending"], first["dispatched"], first["connected"]) == (2, 1, True)
    assert (second["pending"], second["dispatched"], second["connected"]) == (0, 0, False)
    assert [i["status"] for i in queue["items"]] == ["dispatched", "pending"] and queue["next_cursor"]


# -- the tests: several checks a database (each check opens its own services and accounts) --------


@checks.parametrize()
async def test_each_group_of_checks_on_a_fresh_database(database_url: str, group: list) -> None:
    await run(group, database_url)
