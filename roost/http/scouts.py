"""Scouts: administration (service token) and the push intake ``POST /api/v1/scouts/{id}/items``.

Connector and classifier configs are checked by their plugin when saved; their secrets are
never returned (``"***"``) and are sealed at rest when ``ROOST_SECRET_KEY`` is set. Sending
``"***"`` back in a PATCH keeps the stored secret, unless the PATCH changes where the secret
goes (``host``, ``port``, ``user`` or ``base_url``): then the secret must be sent again (400
``secret_required``), so a stored password never follows a config to a new server.

The hosts a config names (an IMAP server, a classifier's ``base_url``) are checked when saved:
loopback, private, link-local, CGNAT, multicast and metadata addresses answer 400
``destination_not_allowed`` unless ``ROOST_ALLOWED_DESTINATIONS`` allows them (the check is
repeated on the resolved address at every connect).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from quart import Blueprint
from quart_schema import operation_id, validate_querystring, validate_request, validate_response

from roost.domain import scouting
from roost.domain import scouts as scout_ops
from roost.errors import InvalidInput
from roost.http.admin import documented_errors
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.models import Body, Id, Out, Page, PageQuery, only_nullable, plugin_names
from roost.plugins.classifiers import classifiers
from roost.plugins.connectors import connectors
from roost.storage import scout_list
from roost.storage import scouts as repo
from roost.storage.scout_config import redact

bp = Blueprint("scouts", __name__)
ACTOR = "service"

ConnectorName = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=plugin_names(connectors))]
ClassifierName = Annotated[str, Field(min_length=1, max_length=64, json_schema_extra=plugin_names(classifiers))]
Interval = Annotated[float, Field(ge=1, le=7 * 86400)]
PauseDays = Annotated[int, Field(ge=1, le=3650)]
TtlDays = Annotated[int, Field(ge=1, le=3650)]
MaxFailures = Annotated[int, Field(ge=1, le=100)]
ItemStatus = Literal["pending", "queued", "delivered", "acked", "discarded", "failed", "expired"]


class ScoutCreate(Body):
    user_id: Id
    provider: ConnectorName
    config: dict[str, Any] = Field(default_factory=dict)
    classifier: ClassifierName = "rules"
    classifier_config: dict[str, Any] = Field(default_factory=dict)
    poll_interval_s: Interval = 300.0
    enabled: bool = True
    auto_trash_spam: bool = False
    device_inactivity_pause_days: PauseDays | None = Field(7, description="null: never pause")
    ttl_days: TtlDays = 30
    max_failures: MaxFailures = 5


class ScoutPatch(Body):
    model_config = ConfigDict(json_schema_extra=only_nullable("device_inactivity_pause_days"))

    config: dict[str, Any] | None = None
    classifier: ClassifierName | None = None
    classifier_config: dict[str, Any] | None = None
    poll_interval_s: Interval | None = None
    enabled: bool | None = None
    auto_trash_spam: bool | None = None
    device_inactivity_pause_days: PauseDays | None = Field(None, description="null: never pause")
    ttl_days: TtlDays | None = None
    max_failures: MaxFailures | None = None

    @model_validator(mode="after")
    def _nullable(self) -> ScoutPatch:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name != "device_inactivity_pause_days":
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        return self


class Scout(Out):
    id: str
    user_id: str
    provider: str
    config: dict[str, Any] = Field(description="secrets read \"***\"")
    classifier: str
    classifier_config: dict[str, Any]
    poll_interval_s: float
    enabled: bool
    auto_trash_spam: bool
    device_inactivity_pause_days: int | None
    ttl_days: int
    max_failures: int
    status: Literal["active", "paused", "failing", "disabled"] = Field(
        description="disabled: enabled is false; paused: no device of its user seen lately; failing: its last"
                    " run ended with an error (last_error); active: otherwise")
    insecure: bool = Field(description="the connector logs in without TLS (its config says insecure: true)")
    last_run_at: dt.datetime | None
    next_run_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    counts: dict[str, int]


class ScoutItem(Out):
    id: str
    scout_id: str
    user_id: str
    source_type: str
    source_msg_ref: str
    status: ItemStatus
    sender: str | None
    raw_subject: str | None
    raw_snippet: str | None
    verdict: str | None
    reason: str | None
    category: str | None
    payload: dict[str, Any] | None
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    archived_at: dt.datetime | None
    archive_attempts: int
    archive_failed_at: dt.datetime | None  # auto-trashed spam the connector failed to archive max_failures times
    created_at: dt.datetime
    triaged_at: dt.datetime | None
    delivered_at: dt.datetime | None
    acked_at: dt.datetime | None
    expires_at: dt.datetime | None


class ItemQuery(PageQuery):
    status: ItemStatus | None = None


class ScoutListQuery(PageQuery):
    user_id: Id | None = None
    provider: ConnectorName | None = Field(None,
                                           description="a connector's name (400 unknown_connector if none has it)")
    state: Literal["active", "paused", "failing", "disabled"] | None = Field(
        None, description="the scouts whose status is this")


class RunResult(Out):
    scout_id: str
    paused: bool
    listed: int
    queued: int
    discarded: int
    retried: int
    failed: int
    archived: int
    archive_failed: int
    error: str | None


class PushItem(Body):
    source_msg_ref: Annotated[str, Field(min_length=1, max_length=500)]
    subject: Annotated[str, Field(max_length=1000)] = ""
    snippet: Annotated[str, Field(max_length=1000)] | None = None
    body: Annotated[str, Field(max_length=1_000_000)] = ""
    sender: Annotated[str, Field(max_length=320)] = ""


MAX_PUSH_ITEMS = 1000


class PushBody(Body):
    # The 1,000-item cap is checked in the handler, not declared as maxItems: a body with more
    # items is usually over the body-size limit too and gets 413 before it is parsed, which a
    # schema-level maxItems would make look like an undocumented acceptance.
    items: Annotated[list[PushItem], Field(min_length=1, description=f"1 to {MAX_PUSH_ITEMS} items (else 400)")]


class PushAccepted(Out):
    accepted: int = Field(description="items received; refs seen before are ignored")


async def _view(row: dict[str, Any]) -> dict[str, Any]:
    counts = row["counts"] if "counts" in row else await repo.item_counts(services().db, row["id"])
    status = scout_list.state_of(row)
    config = row["config"] if isinstance(row["config"], dict) else {}
    insecure = config.get("insecure") is True
    return {**row, "config": redact(row["config"]), "classifier_config": redact(row["classifier_config"]),
            "status": status, "counts": counts, "insecure": insecure}


@bp.post("/api/admin/scouts")
@service_auth
@validate_request(ScoutCreate)
@validate_response(Scout, 201)
@documented_errors(400, 401, 404, 413, 503)
async def create_scout(data: ScoutCreate) -> tuple[dict[str, Any], int]:
    """Create a scout for a user; its connector and classifier check their configs."""
    row = await scout_ops.create_scout(services(), data.user_id, data.model_dump(), actor=ACTOR)
    return await _view(row), 201


@bp.get("/api/admin/scouts")
@service_auth
@validate_querystring(ScoutListQuery)
@validate_response(Page[Scout])
@documented_errors(400, 401, 404, 503)
async def list_scouts(query_args: ScoutListQuery) -> dict[str, Any]:
    """List scouts (oldest first), filtered by user, provider and/or state (404 for an unknown user)."""
    q = query_args
    result = await scout_ops.list_scouts(services(), user_id=q.user_id, provider=q.provider, state=q.state,
                                        limit=q.limit, cursor=q.cursor)
    return {**result, "items": [await _view(row) for row in result["items"]]}


@bp.get("/api/admin/scouts/<scout_id>")
@service_auth
@validate_response(Scout)
@documented_errors(401, 404, 503)
async def get_scout(scout_id: str) -> dict[str, Any]:
    """Get a scout (its config's secrets read ``"***"``)."""
    return await _view(await repo.get_scout(services().db, scout_id))


@bp.patch("/api/admin/scouts/<scout_id>")
@service_auth
@validate_request(ScoutPatch)
@validate_response(Scout)
@documented_errors(400, 401, 404, 413, 503)
async def patch_scout(scout_id: str, data: ScoutPatch) -> dict[str, Any]:
    """Change a scout; a field left out keeps its value."""
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    return await _view(await scout_ops.change_scout(services(), scout_id, changes, actor=ACTOR))


@bp.delete("/api/admin/scouts/<scout_id>")
@service_auth
@validate_response(Scout)
@documented_errors(401, 404, 503)
async def delete_scout(scout_id: str) -> dict[str, Any]:
    """Delete the scout and all its items; answers the scout as it was."""
    s = services()
    view = await _view(await repo.get_scout(s.db, scout_id))
    await repo.delete_scout(s.db, scout_id, now=s.clock.now(), actor=ACTOR)
    return view


@bp.post("/api/admin/scouts/<scout_id>/run")
@operation_id("runScout")
@service_auth
@validate_response(RunResult)
@documented_errors(401, 404, 409, 503)
async def run_now(scout_id: str) -> dict[str, Any]:
    """Run the scout now and answer what the run did.

    Run the scout now and answer what the run did; 409 ``already_running`` while a run of it is
    going on anywhere, 409 ``scout_disabled`` when it is disabled."""
    s = services()
    await repo.get_scout(s.db, scout_id)
    return (await scouting.run_scout(s, scout_id)).as_dict()


@bp.get("/api/admin/scouts/<scout_id>/items")
@operation_id("listScoutItems")
@service_auth
@validate_querystring(ItemQuery)
@validate_response(Page[ScoutItem])
@documented_errors(400, 401, 404, 503)
async def list_items(scout_id: str, query_args: ItemQuery) -> dict[str, Any]:
    """List a scout's items, optionally of one status."""
    db = services().db
    await repo.get_scout(db, scout_id)
    return await repo.list_items(db, scout_id, status=query_args.status, limit=query_args.limit,
                                 cursor=query_args.cursor)


@bp.post("/api/admin/scouts/<scout_id>/items/<item_id>/retry")
@operation_id("retryScoutItem")
@service_auth
@validate_response(ScoutItem)
@documented_errors(401, 404, 409, 503)
async def retry_item(scout_id: str, item_id: str) -> dict[str, Any]:
    """Triage a failed item again.

    Puts a failed item back to pending with its attempts reset and wakes the scout; 404 for an
    item not in that scout, 409 ``item_not_failed`` for one in any other status."""
    return await scout_ops.retry_item(services(), scout_id, item_id, actor=ACTOR)


@bp.post("/api/v1/scouts/<scout_id>/items")
@operation_id("pushScoutItems")
@service_auth
@validate_request(PushBody)
@validate_response(PushAccepted, 202)
@documented_errors(400, 401, 404, 409, 413, 503)
async def push_items(scout_id: str, data: PushBody) -> tuple[dict[str, Any], int]:
    """Store items for triage (bodies kept only until the verdict) and wake the scout."""
    s = services()
    if len(data.items) > MAX_PUSH_ITEMS:
        raise InvalidInput(f"at most {MAX_PUSH_ITEMS} items per request", code="too_many_items")
    items = [repo.NewItem(i.source_msg_ref, i.subject, i.snippet, i.sender, i.body) for i in data.items]
    await scout_ops.push_items(s, scout_id, items)
    return {"accepted": len(items)}, 202
