"""Webhook endpoints (service token): create, list, get, change, delete, rotate the secret, deliveries.

The secret (``whsec_...``) is in the answer of create and rotate-secret only. Every route that
names an endpoint takes an optional ``account_id`` query: given, an endpoint of another account
is 404. URLs must be http(s) and an allowed destination (400 ``destination_not_allowed``, see
``roost.runtime.destinations``); events must be from ``roost.domain.webhooks.EVENTS``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from roost.domain import webhooks
from roost.http.admin import documented_errors
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.models import Body, Id, Out, Page, PageQuery, _refuse_nul

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks")

Event = Literal[webhooks.EVENTS]  # type: ignore[valid-type]
Url = Annotated[str, Field(min_length=1, max_length=webhooks.MAX_URL_CHARS, description="http(s), a public host")]
Events = Annotated[list[Event], Field(min_length=1, max_length=32, description="the events to send here")]
Description = Annotated[str, Field(max_length=500)]
DeliveryStatus = Literal["pending", "sending", "delivered", "failed"]


class WebhookCreate(Body):
    account_id: Id
    url: Url
    events: Events
    description: Description = ""
    enabled: bool = True


class WebhookPatch(Body):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = Field(None, description="true re-enables a disabled endpoint: its queue resumes")

    @model_validator(mode="after")
    def _not_null(self) -> WebhookPatch:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        return self


class Webhook(Out):
    id: str
    account_id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="why it was disabled (410 Gone, failing for days, the API)")
    failing_since: dt.datetime | None = Field(description="the first failed attempt since the last success")
    previous_secret_expires_at: dt.datetime | None = Field(description="until then the old secret signs too")
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookWithSecret(Webhook):
    secret: str = Field(description="whsec_...: shown this once; verify webhook-signature with it")


class Delivery(Out):
    id: str = Field(description="the webhook-id header, the same on every retry")
    endpoint_id: str
    seq: int
    event: str
    status: DeliveryStatus
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    payload: Any


class Scope(BaseModel):
    account_id: Id | None = Field(None, description="when given, an endpoint of another account is 404")

    refuse_nul = model_validator(mode="before")(_refuse_nul)


class ListQuery(PageQuery):
    account_id: Id | None = None


class DeliveryQuery(PageQuery):
    account_id: Id | None = Field(None, description="when given, an endpoint of another account is 404")
    status: DeliveryStatus | None = None


@bp.post("")
@service_auth
@validate_request(WebhookCreate)
@validate_response(WebhookWithSecret, 201)
@documented_errors(400, 401, 409, 413, 503)
async def create_webhook(data: WebhookCreate) -> tuple[dict[str, Any], int]:
    """Register an endpoint; the answer holds its secret, shown this once."""
    row, secret = await webhooks.create_endpoint(services(), account_id=data.account_id, url=data.url,
                                                 events=data.events, description=data.description,
                                                 enabled=data.enabled)
    return {**row, "secret": secret}, 201


@bp.get("")
@service_auth
@validate_querystring(ListQuery)
@validate_response(Page[Webhook])
@documented_errors(400, 401, 503)
async def list_webhooks(query_args: ListQuery) -> dict[str, Any]:
    """Endpoints in creation order, of one account (``account_id``) or all."""
    q = query_args
    return await webhooks.list_endpoints(services(), account_id=q.account_id, limit=q.limit, cursor=q.cursor)


@bp.get("/<endpoint_id>")
@service_auth
@validate_querystring(Scope)
@validate_response(Webhook)
@documented_errors(400, 401, 404, 503)
async def get_webhook(endpoint_id: str, query_args: Scope) -> dict[str, Any]:
    """One endpoint (never its secret)."""
    return await webhooks.get_endpoint(services(), endpoint_id, query_args.account_id)


@bp.patch("/<endpoint_id>")
@service_auth
@validate_querystring(Scope)
@validate_request(WebhookPatch)
@validate_response(Webhook)
@documented_errors(400, 401, 404, 409, 413, 503)
async def update_webhook(endpoint_id: str, data: WebhookPatch, query_args: Scope) -> dict[str, Any]:
    """Change url, events, description or enabled; enabling a disabled endpoint resumes its queue."""
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    return await webhooks.update_endpoint(services(), endpoint_id, query_args.account_id, changes)


@bp.delete("/<endpoint_id>")
@service_auth
@validate_querystring(Scope)
@validate_response(Webhook)
@documented_errors(400, 401, 404, 503)
async def delete_webhook(endpoint_id: str, query_args: Scope) -> dict[str, Any]:
    """Delete the endpoint and its deliveries (pending ones are not sent); answers it as it was."""
    return await webhooks.delete_endpoint(services(), endpoint_id, query_args.account_id)


@bp.post("/<endpoint_id>/rotate-secret")
@service_auth
@validate_querystring(Scope)
@validate_response(WebhookWithSecret)
@documented_errors(400, 401, 404, 503)
async def rotate_webhook_secret(endpoint_id: str, query_args: Scope) -> dict[str, Any]:
    """A new secret, shown this once; the old one also signs until ``previous_secret_expires_at``."""
    row, secret = await webhooks.rotate_secret(services(), endpoint_id, query_args.account_id)
    return {**row, "secret": secret}


@bp.get("/<endpoint_id>/deliveries")
@service_auth
@validate_querystring(DeliveryQuery)
@validate_response(Page[Delivery])
@documented_errors(400, 401, 404, 503)
async def list_webhook_deliveries(endpoint_id: str, query_args: DeliveryQuery) -> dict[str, Any]:
    """The endpoint's deliveries, newest first: status, attempts, the last answer's code and time."""
    q = query_args
    return await webhooks.list_deliveries(services(), endpoint_id, q.account_id, status=q.status, limit=q.limit,
                                          cursor=q.cursor)
