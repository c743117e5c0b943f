"""The console's handoffs pages on both backends: each account's queue, recent handoffs and event log
(and their live fragments), acting for a user, claim and cancel through the domain (audited, the
fan-out woken), the read role, and bad or hostile input (a clear 4xx, never a 500)."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from roost.domain import handoffs
from roost.runtime.topics import HANDOFF_EVENTS
from roost.storage import handoffs as repo
from tests.console.flows_support import (
    HOSTILE_IDS,
    Flows,
    acme_and_bravo,
    assert_no_driver_text,
    get,
    make_user,
    post,
)
from tests.support.checks import CheckGroups, run

pytestmark = pytest.mark.timeout(60)
checks = CheckGroups()


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[dict[str, Any]]:
    """Account A (Ann, Bob, inactive Carl; a normal and an urgent handoff), account B (Zed; one)."""
    async with acme_and_bravo(database_url) as base:
        a, b, ann, zed = base["a"], base["b"], base["ann"], base["zed"]
        s = base["flows"].services
        bob, carl = await make_user(s.db, a, "Bob"), await make_user(s.db, a, "Carl", active=False)

        async def make(account: str, user: str, ref: str, priority: str) -> dict[str, Any]:
            return await handoffs.create(s, account_id=account, subject_ref=ref, intent="escalate",
                                         notes=f"secret notes of {ref}", priority=priority,
                                         snapshot={"draft": f"snapshot of {ref}"}, created_by=user)

        yield {**base, "bob": bob, "carl": carl,
               "normal": await make(a, ann, "ticket-normal", "normal"),
               "urgent": await make(a, ann, "ticket-urgent", "urgent"),
               "other": await make(b, zed, "ticket-bravo", "high")}


@checks("pages_show_the_accounts_queue_recent_and_events_to_both_roles_with_fragments")
async def check_page_shows_the_accounts_queue_urgent_first_recent_and_event_log(world: dict) -> None:
    client = await world["flows"].signed_in()
    status, body = await get(client, "/console/handoffs", account=world["a"])
    assert status == 200
    assert body.index("ticket-urgent") < body.index("ticket-normal") and "ticket-bravo" not in body
    assert 'data-live="handoff.events"' in body and "Event log" in body and "Recent handoffs" in body
    assert "secret notes of ticket-urgent" in body  # operate sees notes
    assert "choose whom to act for" in body and "Claim for" not in body
    # The first account is the default; the other account shows its own.
    assert "ticket-urgent" in (await get(client, "/console/handoffs"))[1]
    status, body = await get(client, "/console/handoffs", account=world["b"])
    assert status == 200 and "ticket-bravo" in body and "ticket-urgent" not in body


@checks("pages_show_the_accounts_queue_recent_and_events_to_both_roles_with_fragments")
async def check_read_role_sees_the_page_with_notes_hidden_unless_asked(world: dict) -> None:
    client = await world["flows"].signed_in("read")
    status, body = await get(client, "/console/handoffs", account=world["a"])
    assert status == 200 and "ticket-urgent" in body and "secret notes" not in body
    assert "show them" in body and "disabled" not in body.split("Open queue")[1].split("</section>")[0]
    shown = (await get(client, "/console/handoffs", account=world["a"], show="bodies"))[1]
    assert "secret notes of ticket-urgent" in shown
    detail = (await get(client, f"/console/handoffs/{world['urgent']['id']}"))[1]
    assert "ticket-urgent" in detail and "snapshot of ticket-urgent" not in detail
    detail = (await get(client, f"/console/handoffs/{world['urgent']['id']}", show="bodies"))[1]
    assert "snapshot of ticket-urgent" in detail


@checks("pages_show_the_accounts_queue_recent_and_events_to_both_roles_with_fragments")
async def check_fragments_render_each_live_part_alone(world: dict) -> None:
    client = await world["flows"].signed_in("read")
    for fragment, expect in (("queue", "Open queue"), ("recent", "Recent handoffs"), ("events", "Event log")):
        status, body = await get(client, "/console/handoffs", account=world["a"], fragment=fragment)
        assert status == 200 and expect in body and "<html" not in body, fragment
    status, body = await get(client, "/console/handoffs", account=world["a"], fragment="queue", act_for=world["bob"])
    assert status == 200 and "Claim for Bob" in body


@checks("claim_and_cancel_for_a_chosen_user_through_the_domain_audited_409_as_message")
async def check_claim_for_a_chosen_user_goes_through_the_domain_is_audited_and_wakes_the_fanout(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    status, body = await get(client, "/console/handoffs", account=world["a"], act_for=world["bob"])
    assert status == 200 and "Claim for Bob" in body
    hid = world["urgent"]["id"]
    with flows.services.bus.subscribe(HANDOFF_EVENTS) as inbox:
        status, where = await post(client, f"/console/handoffs/{hid}/claim", account=world["a"], user_id=world["bob"],
                                   back=f"/console/handoffs?account={world['a']}")
        assert inbox.take()[0][0].ids == (world["a"],)
    assert status == 303 and where == f"/console/handoffs?account={world['a']}"
    row = await repo.get(flows.services.db, hid)
    assert row["status"] == "claimed" and row["claimed_by"] == world["bob"]
    [entry] = await flows.audit_rows("console.handoff.claim")
    assert (entry["actor"], entry["target_type"], entry["target_id"]) == ("console:ops", "handoff", hid)
    page = (await get(client, where))[1]
    assert "ticket-urgent claimed for" in page and 'class="flash ok"' in page
    events = (await get(client, "/console/handoffs", account=world["a"], fragment="events"))[1]
    assert "claimed" in events and "by Bob" in events
    # A second claim by someone else: 409, shown as a message.
    status, where = await post(client, f"/console/handoffs/{hid}/claim", account=world["a"], user_id=world["ann"],
                               back=f"/console/handoffs?account={world['a']}")
    assert status == 303
    page = (await get(client, where))[1]
    assert 'class="flash error"' in page and "already claimed" in page


@checks("claim_and_cancel_for_a_chosen_user_through_the_domain_audited_409_as_message")
async def check_cancel_for_a_user_and_a_claimed_one_cannot_be_cancelled(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    hid = world["normal"]["id"]
    status, _ = await post(client, f"/console/handoffs/{hid}/cancel", account=world["a"], user_id=world["ann"])
    assert status == 303
    row = await repo.get(flows.services.db, hid)
    assert row["status"] == "cancelled" and row["cancelled_by"] == world["ann"]
    assert len(await flows.audit_rows("console.handoff.cancel")) == 1
    if (await repo.get(flows.services.db, world["urgent"]["id"]))["status"] == "open":
        await handoffs.claim(flows.services, world["urgent"]["id"], world["ann"])
    status, where = await post(client, f"/console/handoffs/{world['urgent']['id']}/cancel", account=world["a"],
                               user_id=world["bob"], back="/console/handoffs")
    assert status == 303 and "already claimed" in (await get(client, where))[1]


@checks("claim_from_a_handoffs_own_page_and_signed_out_or_read_role_are_refused")
async def check_read_role_is_refused_every_action_and_nothing_changes(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in("read")
    hid = world["urgent"]["id"]
    for verb in ("claim", "cancel"):
        status, body = await post(client, f"/console/handoffs/{hid}/{verb}", account=world["a"], user_id=world["ann"])
        assert status == 403 and "role is read" in body
    assert (await repo.get(flows.services.db, hid))["status"] == "open"
    assert await flows.audit_rows("console.handoff.claim") == []


@checks("claim_from_a_handoffs_own_page_and_signed_out_or_read_role_are_refused")
async def check_signed_out_pages_go_to_sign_in(world: dict) -> None:
    client = world["flows"].app.test_client()
    for url in ("/console/handoffs", f"/console/handoffs/{world['urgent']['id']}"):
        r = await client.get(url)
        assert r.status_code == 303 and r.headers["Location"].startswith("/console/login")
    r = await client.post(f"/console/handoffs/{world['urgent']['id']}/claim", form={"account": world["a"]})
    assert r.status_code in (303, 403)


@checks("another_accounts_ids_unknown_ids_and_malformed_values_are_clear_4xx_never_500")
async def check_another_accounts_handoff_or_user_and_unknown_ids_are_404_and_change_nothing(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    a, b, mine, theirs = world["a"], world["b"], world["urgent"]["id"], world["other"]["id"]
    for verb in ("claim", "cancel"):
        for hid, account, user in ((theirs, a, world["ann"]),   # another account's handoff, on A's page
                                   (theirs, a, world["zed"]),   # ... for its own user, still on A's page
                                   (mine, a, world["zed"]),     # a user of another account
                                   (mine, b, world["zed"]),     # the page of another account
                                   ("hnd_nope", a, world["ann"]), (mine, a, "usr_nope"), (mine, "acc_nope", "x")):
            status, body = await post(client, f"/console/handoffs/{hid}/{verb}", account=account, user_id=user)
            assert status == 404, (verb, hid, account, user, status)
            assert_no_driver_text(body)
    for row in (world["urgent"], world["other"]):
        assert (await repo.get(flows.services.db, row["id"]))["status"] == "open"
    # A deactivated user of the account: refused with the domain's message.
    status, where = await post(client, f"/console/handoffs/{mine}/claim", account=a, user_id=world["carl"],
                               back="/console/handoffs")
    assert status == 303 and "deactivated" in (await get(client, where))[1]
    assert await flows.audit_rows("console.handoff.claim") == []


@checks("another_accounts_ids_unknown_ids_and_malformed_values_are_clear_4xx_never_500")
async def check_malformed_huge_or_missing_form_values_are_400_never_500(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    a, hid, ann = world["a"], world["urgent"]["id"], world["ann"]
    cases = [{"account": a}, {"user_id": ann}, {"account": a, "user_id": ""}]
    cases += [{"account": a, "user_id": bad} for bad in HOSTILE_IDS]
    cases += [{"account": bad, "user_id": ann} for bad in HOSTILE_IDS]
    for form in cases:
        status, body = await post(client, f"/console/handoffs/{hid}/claim", **form)
        assert status == 400, (form, status)
        assert_no_driver_text(body)
    for bad in ("x" * 2000, "a%00b", "%3Cscript%3E"):
        status, body = await post(client, f"/console/handoffs/{bad}/claim", account=a, user_id=ann)
        assert status in (400, 404), (bad, status)
        assert_no_driver_text(body)
    r = await client.post(f"/console/handoffs/{hid}/claim", form={"csrf": client.csrf, "account": a,
                                                                   "user_id": "u" * 600_000})
    assert 400 <= r.status_code < 500
    assert (await repo.get(flows.services.db, hid))["status"] == "open"


@checks("another_accounts_ids_unknown_ids_and_malformed_values_are_clear_4xx_never_500")
async def check_bad_query_values_on_the_pages_are_clear_4xx(world: dict) -> None:
    client = await world["flows"].signed_in("read")
    for params, expected in (({"account": "acc_nope"}, 404), ({"account": "a\x00b"}, 400),
                             ({"account": "x" * 500}, 400),
                             ({"account": world["a"], "act_for": world["zed"]}, 404),  # another account's user
                             ({"account": world["a"], "act_for": world["carl"]}, 404),  # deactivated
                             ({"account": world["a"], "act_for": "<b>"}, 400),
                             ({"account": world["a"], "before": "abc"}, 400),
                             ({"account": world["a"], "before": "9" * 40}, 400),
                             ({"account": world["a"], "before": "-1"}, 400),
                             ({"account": world["a"], "fragment": "nope"}, 404)):
        status, body = await get(client, "/console/handoffs", **params)
        assert status == expected, (params, status)
        assert_no_driver_text(body)
    for hid, expected in (("hnd_nope", {404}), ("x" * 500, {400}), (world["other"]["id"] + "%00", {400, 404})):
        status, body = await get(client, f"/console/handoffs/{hid}")
        assert status in expected, (hid, status)
        assert_no_driver_text(body)
    status, _ = await get(client, f"/console/handoffs/{world['other']['id']}", account=world["a"])
    assert status == 404  # asked within another account
    status, body = await get(client, "/console/handoffs", account=world["a"], before="1")
    assert status == 200 and "Newer" in body


@checks("claim_from_a_handoffs_own_page_and_signed_out_or_read_role_are_refused")
async def check_claim_from_a_handoffs_own_page_with_the_user_chosen(world: dict) -> None:
    flows: Flows = world["flows"]
    client = await flows.signed_in()
    hid = world["urgent"]["id"]
    status, body = await get(client, f"/console/handoffs/{hid}")
    assert status == 200 and 'name="user_id"' in body and "Bob" in body and "Carl" not in body
    status, where = await post(client, f"/console/handoffs/{hid}/claim", account=world["a"], user_id=world["ann"],
                               back=f"/console/handoffs/{hid}")
    assert status == 303 and where == f"/console/handoffs/{hid}"
    page = (await get(client, where))[1]
    assert "claimed" in page and 'name="user_id"' not in page  # nothing left to act on


# -- the tests: each runs several checks on one world (a fresh database costs more than a check) ----


@checks.parametrize()
async def test_each_group_of_checks_on_a_fresh_world(world: dict, group: list) -> None:
    await run(group, world)
