"""Dispatch over HTTP (the ``/outreach`` API): an account's settings (admin), batches (app), the
device's send queue.

Service token: ``GET|PUT /api/admin/accounts/{id}/outreach-settings``, ``GET
/api/admin/devices/{id}/send-queue`` (an operator's view of a device's queue), ``POST|GET
/api/v1/outreach/batches`` (a draft, or ``dry_run``; the list by account and status), ``GET
/api/v1/outreach/batches/{id}`` (counts by status, ``next_send``), ``.../items``, ``POST
.../{id}/send|pause|resume|cancel``, ``POST /api/v1/outreach/messages`` (one message without a
batch). Device token: ``GET /api/device/send-queue/pending`` and ``POST
/api/device/send-queue/{id}/result``. The models are ``roost.http.dispatch_models``.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from quart_schema import validate_querystring, validate_request, validate_response

from roost.domain.dispatch import sending
from roost.errors import InvalidInput
from roost.http.admin import documented_errors
from roost.http.auth import device_auth, service_auth
from roost.http.context import services
from roost.http.dispatch_models import (
    MAX_BATCH_ITEMS,
    MAX_BODY_CHARS,
    Batch,
    BatchCreate,
    BatchItem,
    BatchListQuery,
    BatchWithNextSend,
    DeviceQueueQuery,
    DryRun,
    MessageCreate,
    OutreachSettings,
    OutreachSettingsPut,
    SendQueue,
    SendResult,
    SendResultIn,
)
from roost.http.models import Page, PageQuery
from roost.storage import dispatch, dispatch_lists

bp = Blueprint("dispatch", __name__)

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


@bp.get("/api/v1/outreach/batches")
@service_auth
@validate_querystring(BatchListQuery)
@validate_response(Page[Batch])
@documented_errors(400, 401, 404, 503)
async def list_batches(query_args: BatchListQuery) -> dict[str, Any]:
    """List batches by account and status.

    Oldest first, each with its counts by item status; an unknown account is 404."""
    q = query_args
    return await dispatch_lists.list_batches(services().db, account_id=q.account_id, status=q.status,
                                             limit=q.limit, cursor=q.cursor)


@bp.get("/api/v1/outreach/batches/<batch_id>")
@service_auth
@validate_response(BatchWithNextSend)
@documented_errors(401, 404, 503)
async def get_batch(batch_id: str) -> dict[str, Any]:
    """A batch, with its counts and when its next item may go.

    ``next_send`` says when its next item may go and why not now (``{at, reason}``), or is null
    when one may go now; it is the decision the dispatcher's claim makes."""
    return await sending.batch_with_next_send(services(), batch_id)


@bp.get("/api/v1/outreach/batches/<batch_id>/items")
@service_auth
@validate_querystring(PageQuery)
@validate_response(Page[BatchItem])
@documented_errors(400, 401, 404, 503)
async def list_items(batch_id: str, query_args: PageQuery) -> dict[str, Any]:
    """A batch's items, in order."""
    return await dispatch_lists.list_items(services().db, batch_id, limit=query_args.limit, cursor=query_args.cursor)


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


# -- one message, and a device's queue for operators -----------------------------------------------


@bp.post("/api/v1/outreach/messages")
@service_auth
@validate_request(MessageCreate)
@validate_response(BatchItem, 201)
@documented_errors(400, 401, 404, 409, 413, 503)
async def send_message(data: MessageCreate) -> tuple[dict[str, Any], int, dict]:
    """Send one message without a batch.

    Stored as a one-item batch that is already sending, so it goes through the same limits,
    claim and results as every batch item. Answers the item (201);
    ``batch_id`` reads its progress. From ``device_id``, or from ``user_id``'s most recently seen
    live device (exactly one of them); an unknown one, or one outside ``account_id``, is 404; a
    revoked device, an inactive user or one without a live device 409 ``no_live_device``. A retry
    with the same ``idempotency_key`` answers the first item with ``Idempotent-Replayed: true``."""
    if len(data.body) > MAX_BODY_CHARS:
        raise InvalidInput(f"body: at most {MAX_BODY_CHARS:,} characters", code="body_too_long")
    item, created = await sending.send_message(services(), device_id=data.device_id, user_id=data.user_id,
                                               account_id=data.account_id, to_handle=data.to_handle,
                                               body=data.body, idempotency_key=data.idempotency_key)
    return item, 201, {"Idempotent-Replayed": "false" if created else "true"}


@bp.get("/api/admin/devices/<device_id>/send-queue")
@service_auth
@validate_querystring(DeviceQueueQuery)
@validate_response(Page[BatchItem])
@documented_errors(400, 401, 404, 503)
async def device_send_queue(device_id: str, query_args: DeviceQueueQuery) -> dict[str, Any]:
    """A device's send queue, as an operator sees it.

    The items offered to or held by the device (any status, or ``status``), in the order it gets
    them, with offers, lease and times."""
    q = query_args
    return await dispatch_lists.device_queue(services().db, device_id, status=q.status, limit=q.limit,
                                             cursor=q.cursor)


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
