# ruff: noqa: ASYNC110  (tests poll state other tasks and processes own)
"""Assessment by intent and account setting, and the claimer's briefing, on a real server with real
WebSocket clients, both backends: states in the API and in the socket events."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from roost.plugins.assessors import Assessor
from roost.plugins.assessors import registry as assessors
from roost.storage import handoffs as repo
from tests.support.handoffs import handoff_body, make_account, make_user, open_inboxes, settle
from tests.support.server import admin_client, running_server


class _Briefing(Assessor):
    """Assesses at once; briefs only once ``gate`` is set (a test sets it), naming the claimer."""

    name = "test_briefing"
    gate: trio.Event | None = None
    seen: list[tuple[str, dict[str, Any]]] = []

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        return {"likely_cause": f"looked at {handoff['subject_ref']}"}

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> str | None:
        _Briefing.seen.append((handoff["id"], claimer))
        if _Briefing.gate is not None:
            await _Briefing.gate.wait()
        return f"For {claimer['display_name']} ({claimer['team']}): {handoff['notes']}\x00 and {handoff['assessment']}"


class _StuckBriefing(_Briefing):
    name = "test_stuck_briefing"

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> str | None:
        await trio.sleep(3600)


assessors.register("test_briefing", _Briefing)
assessors.register("test_stuck_briefing", _StuckBriefing)


async def _wait_state(client: httpx.AsyncClient, handoff_id: str, field: str, state: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while (got := (await client.get(f"/api/v1/handoffs/{handoff_id}")).json())[field] != state:
            await trio.sleep(0.02)
    return got


async def _post(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/api/v1/handoffs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def test_parks_are_assessed_only_where_the_account_says_so_and_escalations_always(database_url: str) -> None:
    async with running_server(database_url, handoff_assessor="test_briefing") as server, \
            admin_client(server.url) as client:
        plain = await make_account(client, "Plain")
        r = await client.post("/api/admin/accounts", json={"name": "Keen", "timezone": "UTC", "assess_parks": True})
        assert r.status_code == 201 and r.json()["assess_parks"] is True
        keen = r.json()
        ann = await make_user(client, plain, "ann@example.com", role="engineer")
        kim = await make_user(client, keen, "kim@example.com", role="engineer")
        async with trio.open_nursery() as nursery:
            (inbox,) = await open_inboxes(nursery, server.url, [ann])
            park = await _post(client, handoff_body(plain["id"], ann["id"], intent="park"))
            assert park["assessment_state"] == "skipped"
            escalation = await _post(client, handoff_body(plain["id"], ann["id"], intent="escalate"))
            assert escalation["assessment_state"] == "pending" and escalation["assessment"] is None
            done = await _wait_state(client, escalation["id"], "assessment_state", "done")
            assert done["assessment"] == {"likely_cause": "looked at ticket-42"}

            keen_park = await _post(client, handoff_body(keen["id"], kim["id"], intent="park"))
            assert keen_park["assessment_state"] == "pending"
            await _wait_state(client, keen_park["id"], "assessment_state", "done")

            # The account's setting, changed: its next park is assessed; the earlier one stays skipped.
            r = await client.patch(f"/api/admin/accounts/{plain['id']}", json={"assess_parks": True})
            assert r.status_code == 200 and r.json()["assess_parks"] is True
            assert (await client.get(f"/api/admin/accounts/{plain['id']}")).json()["assess_parks"] is True
            later = await _post(client, handoff_body(plain["id"], ann["id"], intent="park"))
            await _wait_state(client, later["id"], "assessment_state", "done")
            assert (await client.get(f"/api/v1/handoffs/{park['id']}")).json()["assessment_state"] == "skipped"

            # The socket saw each state: created (skipped), created (pending), updated (done), ...
            await settle([inbox], 5)
            seen = [(f["type"], f["handoff"]["id"], f["handoff"]["assessment_state"]) for f in inbox.frames]
            assert seen == [
                ("handoff_created", park["id"], "skipped"),
                ("handoff_created", escalation["id"], "pending"),
                ("handoff_updated", escalation["id"], "done"),
                ("handoff_created", later["id"], "pending"),
                ("handoff_updated", later["id"], "done"),
            ]
            assert inbox.frames[2]["handoff"]["assessment"] == {"likely_cause": "looked at ticket-42"}
            nursery.cancel_scope.cancel()


async def test_a_claim_answers_at_once_and_its_briefing_is_stored_and_pushed_as_handoff_updated(
    database_url: str,
) -> None:
    _Briefing.gate, _Briefing.seen[:] = trio.Event(), []
    async with running_server(database_url, handoff_assessor="test_briefing") as server, \
            admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        r = await client.post("/api/admin/users", json={"account_id": a["id"], "email": "bo@example.com",
                                                         "display_name": "Bo", "role": "engineer", "team": "night"})
        bo = r.json()
        async with trio.open_nursery() as nursery:
            (inbox,) = await open_inboxes(nursery, server.url, [ann])
            handoff = await _post(client, handoff_body(a["id"], ann["id"], intent="escalate"))
            assert handoff["briefing_state"] == "skipped" and handoff["briefing"] is None  # nobody to brief yet
            await _wait_state(client, handoff["id"], "assessment_state", "done")
            with trio.fail_after(5):  # the briefing is held at the gate: the claim must not wait for it
                r = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": bo["id"]})
            assert r.status_code == 200, r.text
            assert (r.json()["briefing_state"], r.json()["briefing"]) in [("pending", None), ("running", None)]
            with trio.fail_after(10):
                while not _Briefing.seen:
                    await trio.sleep(0.02)
            running = (await client.get(f"/api/v1/handoffs/{handoff['id']}")).json()
            assert running["briefing_state"] == "running"
            _Briefing.gate.set()
            got = await _wait_state(client, handoff["id"], "briefing_state", "done")
            expected = "For Bo (night): printer on fire and {'likely_cause': 'looked at ticket-42'}"
            assert got["briefing"] == expected  # the NUL of the answer dropped, as PostgreSQL needs
            claimer = _Briefing.seen[0][1]
            assert (claimer["id"], claimer["role"], claimer["team"]) == (bo["id"], "engineer", "night")

            await settle([inbox], 4)
            kinds = [(f["type"], f["handoff"]["briefing_state"]) for f in inbox.frames]
            assert kinds == [("handoff_created", "skipped"), ("handoff_updated", "skipped"),
                             ("handoff_claimed", "pending"), ("handoff_updated", "done")]
            assert inbox.frames[-1]["handoff"]["briefing"] == expected
            assert inbox.frames[-1]["handoff"]["claimed_by"] == bo["id"]
            # Re-claiming your own claim changes nothing and briefs nobody again.
            again = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": bo["id"]})
            assert again.status_code == 200 and again.json()["briefing"] == expected
            await trio.sleep(0.3)
            assert len(_Briefing.seen) == 1 and len(inbox.frames) == 4
            nursery.cancel_scope.cancel()
    _Briefing.gate = None


async def test_a_briefing_past_the_assessors_timeout_is_failed_and_the_sockets_are_told(database_url: str) -> None:
    async with running_server(database_url, handoff_assessor="test_stuck_briefing",
                              handoff_assessor_timeout_s=0.2) as server, admin_client(server.url) as client:
        a = await make_account(client, "A")
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        async with trio.open_nursery() as nursery:
            (inbox,) = await open_inboxes(nursery, server.url, [ann])
            handoff = await _post(client, handoff_body(a["id"], ann["id"], intent="park"))
            assert handoff["assessment_state"] == "skipped"
            r = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": ann["id"]})
            assert r.status_code == 200 and r.json()["status"] == "claimed"
            got = await _wait_state(client, handoff["id"], "briefing_state", "failed")
            assert got["briefing"] is None and got["status"] == "claimed"
            await settle([inbox], 3)
            assert [(f["type"], f["handoff"]["briefing_state"]) for f in inbox.frames] == [
                ("handoff_created", "skipped"), ("handoff_claimed", "pending"), ("handoff_updated", "failed")]
            nursery.cancel_scope.cancel()


async def test_without_an_assessor_nothing_is_assessed_or_briefed(database_url: str) -> None:
    async with running_server(database_url) as server, admin_client(server.url) as client:
        r = await client.post("/api/admin/accounts", json={"name": "Keen", "timezone": "UTC", "assess_parks": True})
        a = r.json()
        ann = await make_user(client, a, "ann@example.com", role="engineer")
        for intent in ("park", "escalate"):
            handoff = await _post(client, handoff_body(a["id"], ann["id"], intent=intent))
            assert handoff["assessment_state"] == "skipped"
            r = await client.post(f"/api/v1/handoffs/{handoff['id']}/claim", json={"user_id": ann["id"]})
            assert (r.json()["briefing_state"], r.json()["briefing"]) == ("skipped", None)
        await trio.sleep(0.3)
        events = await repo.events_after(server.services.db, a["id"], 0)
        assert [e["kind"] for e in events] == ["handoff_created", "handoff_claimed"] * 2
