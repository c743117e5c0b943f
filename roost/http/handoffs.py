"""Handoffs (service token): park or escalate, get, claim, cancel, the account's open queue and the
list of all its handoffs (each by team and intent; the list by state too).

The writes are ``roost.domain.handoffs``: each commits the handoff change and its event together
and only then publishes the wake-ups (the fan-out for sockets, the follow-ups for mail and
assessment), so the answer never waits on a socket, a mail server or a model.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from quart import Blueprint
from quart_schema import operation_id, validate_querystring, validate_request, validate_response

from roost.domain import handoffs
from roost.http.admin import documented_errors
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.models import Body, Id, Out, Page, PageQuery, Team, _refuse_nul, cursor_type
from roost.storage import handoffs as repo

bp = Blueprint("handoffs", __name__, url_prefix="/api/v1/handoffs")

Intent = Literal["park", "escalate"]
Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal["open", "claimed", "cancelled"]
FollowupState = Literal["pending", "running", "done", "failed", "skipped"]


class HandoffCreate(Body):
    account_id: Id
    subject_ref: str = Field(min_length=1, max_length=300, description="the app's own id for what is handed off")
    intent: Intent
    notes: str = Field("", max_length=10_000)
    priority: Priority = "normal"
    snapshot: dict[str, Any] = Field(default_factory=dict, description="free JSON, at most 64 KiB encoded")
    created_by: Id
    team: Team | None = Field(None, description="left out: the creator's team; null: no team")

    def fields(self) -> dict[str, Any]:
        """The create's arguments; ``team`` only when the client sent it (else the creator's)."""
        return self.model_dump(exclude=None if "team" in self.model_fields_set else {"team"})


class HandoffAct(Body):
    user_id: Id


class Notification(Out):
    model_config = ConfigDict(title="HandoffRecipient")  # its name in the OpenAPI document

    user_id: str
    channel: str
    state: str = Field(description="the mail's outbox state: held, queued, sending, sent or failed")


class HandoffCard(Out):
    """A handoff without its snapshot (queue items and socket events carry this)."""

    id: str
    account_id: str
    team: str | None
    subject_ref: str
    intent: Intent
    notes: str
    priority: Priority
    created_by: str
    created_at: dt.datetime
    claimed_by: str | None
    claimed_at: dt.datetime | None
    cancelled_by: str | None
    cancelled_at: dt.datetime | None
    status: Status
    assessment: dict[str, Any] | None
    assessment_state: FollowupState = Field(description="skipped: no assessor, or a park where the account "
                                                        "does not assess parks")
    briefing: str | None = Field(description="the claimer's briefing, written after the claim")
    briefing_state: FollowupState = Field(description="skipped: not claimed, or the assessor writes none")


class Handoff(HandoffCard):
    snapshot: dict[str, Any]
    notifications: list[Notification]


class QueueQuery(PageQuery):
    account_id: Id
    cursor: cursor_type(r"^([0-9]{1,9}\.[A-Za-z0-9_.=-]+)?$") | None = None  # type: ignore[valid-type]
    team: Team | None = None
    intent: Intent | None = None


class ListQuery(QueueQuery):
    cursor: cursor_type(r"^(hnd_[0-9abcdefghjkmnpqrstvwxyz]{26})?$") | None = None  # type: ignore[valid-type]
    state: Status | None = None


class GetQuery(BaseModel):
    account_id: Id | None = Field(None, description="when given, a handoff of another account is 404")

    refuse_nul = model_validator(mode="before")(_refuse_nul)


async def _full(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "notifications": await repo.notifications(services().db, row["id"])}


@bp.post("")
@service_auth
@validate_request(HandoffCreate)
@validate_response(Handoff, 201)
@documented_errors(400, 401, 413, 503)
async def create_handoff(data: HandoffCreate) -> tuple[dict[str, Any], int]:
    """Park or escalate; escalations e-mail the account's owners, admins and engineers after the commit."""
    return await _full(await handoffs.create(services(), **data.fields())), 201


@bp.get("")
@service_auth
@validate_querystring(ListQuery)
@validate_response(Page[HandoffCard])
@documented_errors(400, 401, 404, 503)
async def list_handoffs(query_args: ListQuery) -> dict[str, Any]:
    """Every handoff of the account, newest first; narrowed by state, team and intent."""
    q = query_args
    return await handoffs.list_handoffs(services(), q.account_id, limit=q.limit, cursor=q.cursor, state=q.state,
                                        team=q.team, intent=q.intent)


@bp.get("/queue")
@operation_id("listHandoffQueue")
@service_auth
@validate_querystring(QueueQuery)
@validate_response(Page[HandoffCard])
@documented_errors(400, 401, 404, 503)
async def handoff_queue(query_args: QueueQuery) -> dict[str, Any]:
    """Open handoffs of the account (of one team, of one intent), urgent first, then oldest."""
    q = query_args
    return await handoffs.queue(services(), q.account_id, limit=q.limit, cursor=q.cursor, team=q.team,
                                intent=q.intent)


@bp.get("/<handoff_id>")
@service_auth
@validate_querystring(GetQuery)
@validate_response(Handoff)
@documented_errors(400, 401, 404, 503)
async def get_handoff(handoff_id: str, query_args: GetQuery) -> dict[str, Any]:
    """The handoff with its snapshot and each e-mail recipient's delivery state."""
    return await handoffs.get(services(), handoff_id, query_args.account_id)


@bp.post("/<handoff_id>/claim")
@service_auth
@validate_request(HandoffAct)
@validate_response(Handoff)
@documented_errors(400, 401, 404, 409, 413, 503)
async def claim_handoff(handoff_id: str, data: HandoffAct) -> dict[str, Any]:
    """Exactly one claim wins; the others get 409 naming who holds it. Re-claiming your own is a no-op."""
    return await _full(await handoffs.claim(services(), handoff_id, data.user_id))


@bp.post("/<handoff_id>/cancel")
@service_auth
@validate_request(HandoffAct)
@validate_response(Handoff)
@documented_errors(400, 401, 404, 409, 413, 503)
async def cancel_handoff(handoff_id: str, data: HandoffAct) -> dict[str, Any]:
    """Cancel an open handoff (409 once claimed); cancelling a cancelled one is a no-op."""
    return await _full(await handoffs.cancel(services(), handoff_id, data.user_id))

