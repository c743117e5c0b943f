"""Dispatch over HTTP (the ``/outreach`` API): an account's settings (admin), batches (app), the
device's send queue.

Service token: ``GET|PUT /api/admin/accounts/{id}/outreach-settings``, ``POST
/api/v1/outreach/batches`` (a draft, or ``dry_run``), ``GET /api/v1/outreach/batches/{id}``
(counts by status), ``.../items``, ``POST .../{id}/send|pause|resume|cancel``.
Device token: ``GET /api/device/send-queue/pending`` and ``POST
/api/device/send-queue/{id}/result``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from quart import Blueprint, g
from quart_schema import validate_querystring, validate_request, validate_response

from roost.domain.dispatch import sending
from roost.domain.dispatch.sending import MAX_ERROR_CHARS
from roost.errors import InvalidInput
from roost.http.admin import documented_errors
from roost.http.auth import device_auth, service_auth
from roost.http.context import services
from roost.http.models import Body, Id, Out, Page, PageQuery, QuietHours, TimeZone
from roost.storage import dispatch

bp = Blueprint("dispatch", __name__)

Limit = Annotated[int, Field(gt=0, le=10_000_000, description="a positive number, or null for no limit")]
MAX_BATCH_ITEMS = 10_000
MAX_BODY_CHARS = 10_000
ItemStatus = Literal["pending", "dispatched", "sent", "failed", "skipped", "cancelled"]
BatchStatus = Literal["draft", "sending", "paused", "done", "cancelled"]


class OutreachQuietHours(QuietHours):
    @model_validator(mode="after")
    def _not_empty(self) -> OutreachQuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end are equal; send null for no quiet hours")
        return self


class OutreachSettingsPut(Body):
    paused: bool = False
    quiet_hours: OutreachQuietHours | None = Field(None, description="local times; start > end crosses midnight")
    timezone: TimeZone | None = Field(None, description="IANA zone of the quiet hours; null: the account's")
    max_per_minute: Limit | None = None
    max_per_hour: Limit | None = None
    max_per_day: Limit | None = None
    min_gap_seconds: float = Field(0.0, ge=0, le=86_400, allow_inf_nan=False)


class OutreachSettings(Out):
    account_id: str
    paused: bool
    quiet_hours: dict[str, str] | None
    timezone: str
    max_per_minute: int | None
    max_per_hour: int | None
    max_per_day: int | None
    min_gap_seconds: float
    updated_at: dt.datetime | None


class BatchItemIn(Body):
    to_handle: str = Field(min_length=1, max_length=320)
    body: str = Field(min_length=1, description=f"at most {MAX_BODY_CHARS:,} characters")
    device_id: Id | None = Field(None, description="default: the creator's (or account's) most recently seen device")


class BatchCreate(Body):
    account_id: Id
    # The caps are checked in the handler (400), not as schema maxItems/maxLength: a body over
    # them is usually also over the request size limit, and 413 is not what a schema violation answers.
    items: list[BatchItemIn] = Field(min_length=1, description=f"at most {MAX_BATCH_ITEMS:,} items")
    dry_run: bool = False
    created_by: Id | None = Field(None, description="the user who gets batch_done")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="unique per account: a retry with the same key returns the first batch instead of a new one",
    )


class BatchCounts(Out):
    pending: int
    dispatched: int
    sent: int
    failed: int
    skipped: int
    cancelled: int


class Batch(Out):
    id: str
    account_id: str
    created_by: str | None
    idempotency_key: str | None
    status: BatchStatus
    total_items: int
    counts: BatchCounts
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class DryRunItem(Out):
    seq: int
    to_handle: str
    body: str
    device_id: str | None
    status: Literal["pending", "skipped"]
    reason: str | None


class DryRun(Out):
    dry_run: bool
    account_id: str
    items: list[DryRunItem]
    counts: BatchCounts


class BatchItem(Out):
    id: str
    batch_id: str
    seq: int
    device_id: str | None
    to_handle: str
    body: str
    status: ItemStatus
    reason: str | None
    offers: int
    dispatched_at: dt.datetime | None
    result_at: dt.datetime | None


class SendQueueItem(Out):
    id: str = Field(description="stable: the device's idempotency key")
    batch_id: str
    to_handle: str
    body: str


class SendQueue(Out):
    items: list[SendQueueItem]
    retry_at: dt.datetime | None = Field(description="when nothing may go now, the earliest instant something may")


class SendResultIn(Body):
    status: Literal["sent", "failed"]
    error: str | None = Field(None, max_length=MAX_ERROR_CHARS)


class SendResult(Out):
    id: str
    status: Literal["sent", "failed"]
    error: str | None
    result_at: dt.datetime | None


# -- settings --------------------------------------------------------------------------------------


@bp.get("/api/admin/accounts/<account_id>/outreach-settings")
@service_auth
@validate_response(OutreachSettings)
@documented_errors(401, 404, 503)
async def get_settings(account_id: str) -> dict[str, Any]:
    return await dispatch.get_settings(services().db, account_id)


@bp.put("/api/admin/accounts/<account_id>/outreach-settings")
@service_auth
@validate_request(OutreachSettingsPut)
@validate_response(OutreachSettings)
@documented_errors(400, 401, 404, 413, 503)
async def put_settings(account_id: str, data: OutreachSettingsPut) -> dict[str, Any]:
    """Replace the account's dispatch settings; a field left out takes its default."""
    return await sending.put_settings(services(), account_id, data.model_dump())


# -- batches ---------------------------------------------------------------------------------------


def _counts(items: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(dispatch.ITEM_STATUSES, 0)
    for item in items:
        counts[item["status"]] += 1
    return counts


@bp.post("/api/v1/outreach/batches")
@service_auth
@validate_request(BatchCreate)
@validate_response(Batch, 201)
@validate_response(DryRun, 200)
@documented_errors(400, 401, 404, 409, 413, 503)
async def create_batch(data: BatchCreate) -> tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict]:
    """Store a draft batch (201), or with ``dry_run`` answer what would be sent and store nothing (200).

    A retry with the same ``idempotency_key`` answers 201 with the first batch and the header
    ``Idempotent-Replayed: true``; the same key with different content is 409.
    """
    s = services()
    if len(data.items) > MAX_BATCH_ITEMS:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH_ITEMS:,} items", code="too_many_items")
    for index, item in enumerate(data.items):
        if len(item.body) > MAX_BODY_CHARS:
            raise InvalidInput(f"items.{index}.body: at most {MAX_BODY_CHARS:,} characters", code="body_too_long")
    items = [i.model_dump() for i in data.items]
    if data.dry_run:
        resolved = await dispatch.resolve_items(s.db, data.account_id, data.created_by, items)
        return {"dry_run": True, "account_id": data.account_id, "items": resolved, "counts": _counts(resolved)}, 200
    batch, created = await dispatch.create_batch(s.db, account_id=data.account_id, created_by=data.created_by,
                                                 idempotency_key=data.idempotency_key, items=items,
                                                 now=s.clock.now())
    return batch, 201, {"Idempotent-Replayed": "false" if created else "true"}


@bp.get("/api/v1/outreach/batches/<batch_id>")
@service_auth
@validate_response(Batch)
@documented_errors(401, 404, 503)
async def get_batch(batch_id: str) -> dict[str, Any]:
    return await dispatch.get_batch(services().db, batch_id)


@bp.get("/api/v1/outreach/batches/<batch_id>/items")
@service_auth
@validate_querystring(PageQuery)
@validate_response(Page[BatchItem])
@documented_errors(400, 401, 404, 503)
async def list_items(batch_id: str, query_args: PageQuery) -> dict[str, Any]:
    return await dispatch.list_items(services().db, batch_id, limit=query_args.limit, cursor=query_args.cursor)


@bp.post("/api/v1/outreach/batches/<batch_id>/send")
@service_auth
@validate_response(Batch)
@documented_errors(401, 404, 409, 503)
async def send_batch(batch_id: str) -> dict[str, Any]:
    """Start sending a draft (again on a sending, paused or done batch: a no-op)."""
    return await sending.change_batch(services(), batch_id, "send")


@bp.post("/api/v1/outreach/batches/<batch_id>/pause")
@service_auth
@validate_response(Batch)
@documented_errors(401, 404, 409, 503)
async def pause_batch(batch_id: str) -> dict[str, Any]:
    """Stop dispatching this batch's items; dispatched ones still finish."""
    return await sending.change_batch(services(), batch_id, "pause")


@bp.post("/api/v1/outreach/batches/<batch_id>/resume")
@service_auth
@validate_response(Batch)
@documented_errors(401, 404, 409, 503)
async def resume_batch(batch_id: str) -> dict[str, Any]:
    return await sending.change_batch(services(), batch_id, "resume")


@bp.post("/api/v1/outreach/batches/<batch_id>/cancel")
@service_auth
@validate_response(Batch)
@documented_errors(401, 404, 409, 503)
async def cancel_batch(batch_id: str) -> dict[str, Any]:
    """Queued items become cancelled; dispatched ones finish."""
    return await sending.change_batch(services(), batch_id, "cancel")


# -- the device's send queue -----------------------------------------------------------------------

PENDING_MAX = 50


@bp.get("/api/device/send-queue/pending")
@device_auth
@validate_response(SendQueue)
@documented_errors(401, 503)
async def pending() -> dict[str, Any]:
    """Up to 50 items for this device, oldest first, marked dispatched with a lease: first those
    whose lease ran out (same ids), then new ones within the account's limits. An item offered
    ``ROOST_DISPATCH_MAX_OFFERS`` times without a result is failed ``no_result`` when its last
    lease runs out, instead of being offered again."""
    device = g.device
    return await sending.pull(services(), account_id=device["account_id"], device_id=device["device_id"],
                              limit=PENDING_MAX)


@bp.post("/api/device/send-queue/<item_id>/result")
@device_auth
@validate_request(SendResultIn)
@validate_response(SendResult)
@documented_errors(400, 401, 404, 409, 413, 503)
async def post_result(item_id: str, data: SendResultIn) -> dict[str, Any]:
    """Record the result; the same result again is a 200 no-op, another device's item 404, an
    item not dispatched (or with a different result) 409."""
    outcome = await sending.record_result(services(), device_id=g.device["device_id"], item_id=item_id,
                                          status=data.status, error=data.error)
    item = outcome.item
    return {"id": item["id"], "status": item["status"], "error": item["error"], "result_at": item["result_at"]}
