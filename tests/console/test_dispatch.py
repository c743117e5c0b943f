"""The console's dispatch pages on both backends: an account's limits and next send, batches with
progress (and their live fragments), pause, resume, cancel and send through the domain (audited;
a paused batch's items reach no device until resumed), a batch's items, a device's queue, the
read role, and bad or hostile input (a clear 4xx, never a 500)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
import trio

from roost.runtime.topics import DISPATCH_CHANGED
from roost.storage import dispatch, send_queue, tenancy
from tests.console.conftest import CONSOLE_TOKENS, sign_in
from tests.console.flows_support import (
    HOSTILE_IDS,
    NOW,
    Flows,
    acme_and_bravo,
    assert_no_driver_text,
    get,
    make_account,
    make_user,
    post,
)
from tests.console.test_console_smoke import read_event
from tests.support.checks import CheckGroups, run
from tests.support.server import running_server

pytestmark = pytest.mark.timeout(60)
checks = CheckGroups()
LEASE = 300.0


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[dict[str, Any]]:
    """Account A (Ann with two devices; a sending batch of 3, a draft of 1; 2 a minute), account B
    (Zed; a sending batch of 2)."""
    async with acme_and_bravo(database_url) as base:
        a, b, ann, zed = base["a"], base["b"], base["ann"], base["zed"]
        db = base["flows"].services.db
        phone = (await tenancy.create_device(db, user_id=ann, name="ann-phone", now=NOW, actor="t"))[0]["id"]
        tablet = (await tenancy.create_device(db, user_id=ann, name="ann-tablet", now=NOW, actor="t"))[0]["id"]
        zphone = (await tenancy.create_device(db, user_id=zed, name="zed-phone", now=NOW, actor="t"))[0]["id"]
        await dispatch.put_settings(db, a, {"max_per_minute": 2}, now=NOW)

        async def batch(account: str, user: str, device: str, n: int, start: bool) -> str:
            items = [{"to_handle": f"+1555000{i:04d}", "body": f"secret body {i}", "device_id": device}
                     for i in range(n)]
            made, _ = await dispatch.create_batch(db, account_id=account, created_by=user, idempotency_key=None,
                                                  items=items, now=NOW)
            if start:
                await dispatch.change_batch(db, made["id"], "send", now=NOW)
            return made["id"]

        yield {**base, "phone": phone, "tablet": tablet, "zphone": zphone,
               "sending": await batch(a, ann, phone, 3, True),
               "draft": await batch(a, ann, phone, 1, False), "theirs": await batch(b, zed, zphone, 2, True)}


async def claim(flows: Flows, account: str, device: str) -> list:
    return (await send_queue.claim(flows.services.db, account_id=account, device_id=device, max_items=10,
                                   now=flows.services.clock.now(), lease_s=LEASE)).items


@checks("pages_show_limits_next_send_batches_devices_and_queues_to_both_roles")
async def check_read_role_sees_pages_with_bodies_hidden_and_may_not_act(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in("read")
    status, body = await get(client, "/console/dispatch", account=world["a"])
    assert status == 200 and "disabled" in body
    status, body = await get(client, f"/console/dispatch/batches/{world['sending']}", account=world["a"])
    assert status == 200 and "+15550000000" in body and "secret body" not in body
    shown = (await get(client, f"/console/dispatch/batches/{world['sending']}", account=world["a"], show="bodies"))[1]
    assert "secret body 0" in shown
    status, body = await get(client, f"/console/dispatch/devices/{world['phone']}", account=world["a"])
    assert status == 200 and "secret body" not in body and world["sending"] in body
    for verb in ("pause", "cancel", "send", "resume"):
        status, body = await post(client, f"/console/dispatch/batches/{world['sending']}/{verb}", account=world["a"])
        assert status == 403 and "role is read" in body
    assert (await dispatch.get_batch(flows.services.db, world["sending"]))["status"] == "sending"
    anonymous = flows.app.test_client()
    for url in ("/console/dispatch", f"/console/dispatch/batches/{world['sending']}?account={world['a']}",
                f"/console/dispatch/devices/{world['phone']}?account={world['a']}"):
        r = await anonymous.get(url)
        assert r.status_code == 303 and r.headers["Location"].startswith("/console/login")


@checks("pages_show_limits_next_send_batches_devices_and_queues_to_both_roles")
async def check_page_shows_limits_next_send_batches_and_devices(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    status, body = await get(client, "/console/dispatch", account=world["a"])
    assert status == 200
    assert "A message may go now (up to 2)" in body
    assert world["sending"] in body and world["draft"] in body and world["theirs"] not in body
    assert body.index(world["draft"]) < body.index(world["sending"])  # newest first
    assert "3 pending" in body and "ann-phone" in body and "ann-tablet" in body
    assert 'data-live="dispatch.changed' in body
    assert ">Pause<" in body and ">Send<" in body
    # Two sent this minute: the next may go once the minute has passed.
    await claim(flows, world["a"], world["phone"])
    status, body = await get(client, "/console/dispatch", account=world["a"], fragment="limits")
    assert status == 200 and "The next send may go at" in body and "window: minute" in body
    status, body = await get(client, "/console/dispatch", account=world["a"], fragment="batches")
    assert status == 200 and "2 dispatched" in body and "1 pending" in body and "<html" not in body
    status, body = await get(client, "/console/dispatch", account=world["a"], fragment="devices")
    assert status == 200 and "ann-phone" in body
    status, body = await get(client, "/console/dispatch", account=world["a"], status="draft")
    assert status == 200
    assert world["draft"] in body and world["sending"] not in body


@checks("pause_resume_send_and_cancel_through_the_domain_audited_409_as_message")
async def check_pause_keeps_items_from_devices_until_resume_audited(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    bid, back = world["sending"], f"/console/dispatch?account={world['a']}"
    with flows.services.bus.subscribe(DISPATCH_CHANGED) as inbox:
        status, where = await post(client, f"/console/dispatch/batches/{bid}/pause", account=world["a"], back=back)
        assert inbox.take()[0][0].ids == (world["a"],)
    assert status == 303 and where == back
    page = (await get(client, where))[1]
    assert "paused" in page and 'class="flash ok"' in page and ">Resume<" in page
    assert await claim(flows, world["a"], world["phone"]) == []
    detail = (await get(client, f"/console/dispatch/batches/{bid}", account=world["a"]))[1]
    assert "batch paused" in detail
    status, _ = await post(client, f"/console/dispatch/batches/{bid}/resume", account=world["a"], back=back)
    assert status == 303 and len(await claim(flows, world["a"], world["phone"])) == 2
    status, _ = await post(client, f"/console/dispatch/batches/{world['draft']}/send", account=world["a"], back=back)
    assert (await dispatch.get_batch(flows.services.db, world["draft"]))["status"] == "sending"
    status, _ = await post(client, f"/console/dispatch/batches/{bid}/cancel", account=world["a"], back=back)
    batch = await dispatch.get_batch(flows.services.db, bid)
    assert batch["status"] == "cancelled" and batch["counts"]["cancelled"] == 1
    actions = [(r["action"], r["target_id"], r["actor"]) for r in
               await flows.audit_rows("console.batch.pause") + await flows.audit_rows("console.batch.resume")
               + await flows.audit_rows("console.batch.send") + await flows.audit_rows("console.batch.cancel")]
    assert actions == [("console.batch.pause", bid, "console:ops"), ("console.batch.resume", bid, "console:ops"),
                       ("console.batch.send", world["draft"], "console:ops"),
                       ("console.batch.cancel", bid, "console:ops")]
    # Resuming a cancelled batch: 409, shown as a message.
    status, where = await post(client, f"/console/dispatch/batches/{bid}/resume", account=world["a"], back=back)
    assert status == 303 and "cannot resume a batch that is cancelled" in (await get(client, where))[1]


@checks("another_accounts_ids_unknown_ids_and_malformed_values_are_clear_4xx_never_500")
async def check_another_accounts_ids_and_unknown_ids_are_404_and_change_nothing(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    a, b, theirs = world["a"], world["b"], world["theirs"]
    for verb in ("pause", "cancel", "resume", "send"):
        for bid, account in ((theirs, a), ("obt_nope", a), (world["sending"], b), (world["sending"], "acc_nope")):
            status, body = await post(client, f"/console/dispatch/batches/{bid}/{verb}", account=account)
            assert status == 404, (verb, bid, account, status)
            assert_no_driver_text(body)
    assert (await dispatch.get_batch(flows.services.db, theirs))["status"] == "sending"
    for url, params in ((f"/console/dispatch/batches/{theirs}", {"account": a}),
                        ("/console/dispatch/batches/obt_nope", {"account": a}),
                        (f"/console/dispatch/devices/{world['zphone']}", {"account": a}),
                        ("/console/dispatch/devices/dev_nope", {"account": a}),
                        ("/console/dispatch", {"account": "acc_nope"})):
        status, body = await get(client, url, **params)
        assert status == 404, (url, params, status)
        assert_no_driver_text(body)
    r = await client.post(f"/console/dispatch/batches/{world['sending']}/explode",
                          form={"csrf": client.csrf, "account": a})
    assert r.status_code in (404, 405)


@checks("another_accounts_ids_unknown_ids_and_malformed_values_are_clear_4xx_never_500")
async def check_malformed_huge_or_missing_values_are_400_never_500(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    a, bid = world["a"], world["sending"]
    for form in [{}, {"account": ""}, *({"account": bad} for bad in HOSTILE_IDS)]:
        status, body = await post(client, f"/console/dispatch/batches/{bid}/pause", **form)
        assert status == 400, (form, status)
        assert_no_driver_text(body)
    r = await client.post(f"/console/dispatch/batches/{bid}/pause",
                          form={"csrf": client.csrf, "account": "a" * 600_000})
    assert 400 <= r.status_code < 500
    assert (await dispatch.get_batch(flows.services.db, bid))["status"] == "sending"
    device, batch_url = f"/console/dispatch/devices/{world['phone']}", f"/console/dispatch/batches/{bid}"
    for url, params in (("/console/dispatch", {"account": "a\x00b"}), ("/console/dispatch", {"status": "nope"}),
                        ("/console/dispatch", {"account": a, "before": "a.b.c"}),
                        ("/console/dispatch", {"account": a, "before": "x" * 200}),
                        (batch_url, {}), (batch_url, {"account": a, "after": "x\x00"}),
                        (batch_url, {"account": a, "after": "9" * 30}),
                        (device, {"account": a, "status": "<script>"}), (device, {"account": a, "after": "a.x"}),
                        (device, {"account": a, "after": "obt_x." + "9" * 12})):
        status, body = await get(client, url, **params)
        assert status == 400, (url, params, status)
        assert_no_driver_text(body)
    status, _ = await get(client, batch_url, account=a, after="abc")  # the list's own check: bad_cursor
    assert status == 400
    status, _ = await get(client, "/console/dispatch", account=a, fragment="nope")
    assert status == 404
    status, body = await get(client, device, account=a, status="pending")
    assert status == 200 and "pending" in body


# -- the tests: each runs several checks on one world (a fresh database costs more than a check) ----








@pytest.mark.postgres
async def test_a_pause_in_one_process_reaches_the_open_dispatch_consoles_of_another(pg_url: str) -> None:
    """On PostgreSQL the pause's ``dispatch.changed`` crosses processes, so every console re-reads."""
    async with running_server(pg_url, console_tokens=CONSOLE_TOKENS) as a, \
            running_server(pg_url, console_tokens=CONSOLE_TOKENS) as b:
        db = a.services.db
        account = await make_account(db, "Acme")
        ann = await make_user(db, account, "Ann")
        phone = (await tenancy.create_device(db, user_id=ann, name="p", now=NOW, actor="t"))[0]["id"]
        made, _ = await dispatch.create_batch(db, account_id=account, created_by=ann, idempotency_key=None,
                                              items=[{"to_handle": "+15550001", "body": "hi", "device_id": phone}],
                                              now=NOW)
        await dispatch.change_batch(db, made["id"], "send", now=NOW)
        watcher, acting = await sign_in(b.url, "read"), await sign_in(a.url, "operate")
        try:
            async with watcher.stream("GET", "/console/live", params={"topics": "dispatch.changed"}) as r:
                lines = r.aiter_lines()
                assert (await read_event(lines))[0] == "hello"
                done = await acting.act(f"/console/dispatch/batches/{made['id']}/pause", account=account)
                assert done.status_code == 303
                with trio.fail_after(5):
                    name, data = await read_event(lines)
                assert name == "change" and "dispatch.changed" in data and account in data
        finally:
            await watcher.aclose()
            await acting.aclose()


@checks.parametrize()
async def test_each_group_of_checks_on_a_fresh_world(world: dict, group: list) -> None:
    await run(group, world)
