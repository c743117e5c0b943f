"""Tenancy administration: accounts, users and devices (service token)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response, validate_querystring, validate_request, validate_response

from roost.domain import devices
from roost.domain import tenancy as tenancy_ops
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.errors import ErrorBody
from roost.http.models import (
    Account,
    AccountCreate,
    AccountListQuery,
    AccountPatch,
    Device,
    DeviceCreate,
    DeviceCreated,
    DeviceListQuery,
    Page,
    User,
    UserCreate,
    UserListQuery,
    UserPatch,
)
from roost.storage import tenancy

bp = Blueprint("admin", __name__, url_prefix="/api/admin")
ACTOR = "service"


def documented_errors(*codes: int):
    """Document the error body for each status code a route can answer with."""

    def decorate(fn):
        for code in codes:
            fn = document_response(ErrorBody, code)(fn)
        return fn

    return decorate


@bp.post("/accounts")
@service_auth
@validate_request(AccountCreate)
@validate_response(Account, 201)
@documented_errors(400, 401, 413, 503)
async def create_account(data: AccountCreate) -> tuple[dict[str, Any], int]:
    s = services()
    row = await tenancy.create_account(s.db, name=data.name, timezone=data.timezone, now=s.clock.now(), actor=ACTOR,
                                       assess_parks=data.assess_parks)
    return row, 201


@bp.get("/accounts/<account_id>")
@service_auth
@validate_response(Account)
@documented_errors(401, 404, 503)
async def get_account(account_id: str) -> dict[str, Any]:
    return await tenancy.get_account(services().db, account_id)


@bp.get("/accounts")
@service_auth
@validate_querystring(AccountListQuery)
@validate_response(Page[Account])
@documented_errors(400, 401, 503)
async def list_accounts(query_args: AccountListQuery) -> dict[str, Any]:
    """List accounts (oldest first), optionally only those with exactly the given name."""
    return await tenancy.list_accounts(services().db, name=query_args.name, limit=query_args.limit,
                                       cursor=query_args.cursor)


@bp.patch("/accounts/<account_id>")
@service_auth
@validate_request(AccountPatch)
@validate_response(Account)
@documented_errors(400, 401, 404, 413, 503)
async def patch_account(account_id: str, data: AccountPatch) -> dict[str, Any]:
    """Change an account's name, time zone or ``assess_parks`` (audited as ``account.update``); fields left
    out are kept."""
    changes = data.changes()
    return await tenancy_ops.update_account(services(), account_id, changes, actor=ACTOR)


@bp.delete("/accounts/<account_id>")
@service_auth
@validate_response(Account)
@documented_errors(401, 404, 503)
async def delete_account(account_id: str) -> dict[str, Any]:
    """Delete the account and all its users (see docs/tenancy.md): their devices are revoked and
    their live sockets closed with 1008, open batches and handoffs cancelled; answers the account
    as it was. It then answers 404 everywhere."""
    return await tenancy_ops.delete_account(services(), account_id, actor=ACTOR)


@bp.post("/users")
@service_auth
@validate_request(UserCreate)
@validate_response(User, 201)
@documented_errors(400, 401, 404, 409, 413, 503)
async def create_user(data: UserCreate) -> tuple[dict[str, Any], int]:
    s = services()
    fields = data.model_dump()
    if fields["timezone"] is None:
        fields["timezone"] = (await tenancy.get_account(s.db, data.account_id))["timezone"]
    row = await tenancy.create_user(s.db, account_id=data.account_id, fields=fields, now=s.clock.now(), actor=ACTOR)
    return row, 201


@bp.get("/users")
@service_auth
@validate_querystring(UserListQuery)
@validate_response(Page[User])
@documented_errors(400, 401, 404, 503)
async def list_users(query_args: UserListQuery) -> dict[str, Any]:
    db = services().db
    await tenancy.get_account(db, query_args.account_id)
    return await tenancy.list_users(db, account_id=query_args.account_id, limit=query_args.limit,
                                    cursor=query_args.cursor)


@bp.get("/users/<user_id>")
@service_auth
@validate_response(User)
@documented_errors(401, 404, 503)
async def get_user(user_id: str) -> dict[str, Any]:
    return await tenancy.get_user(services().db, user_id)


@bp.patch("/users/<user_id>")
@service_auth
@validate_request(UserPatch)
@validate_response(User)
@documented_errors(400, 401, 404, 409, 413, 503)
async def patch_user(user_id: str, data: UserPatch) -> dict[str, Any]:
    return await devices.update_user(services(), user_id, data.changes(), actor=ACTOR)


@bp.delete("/users/<user_id>")
@service_auth
@validate_response(User)
@documented_errors(401, 404, 503)
async def delete_user(user_id: str) -> dict[str, Any]:
    """Delete the user (see docs/tenancy.md): personal data erased, devices revoked and live sockets
    closed with 1008, scouts, notifications and watches deleted; answers the user as it was."""
    return await tenancy_ops.delete_user(services(), user_id, actor=ACTOR)


@bp.post("/devices")
@service_auth
@validate_request(DeviceCreate)
@validate_response(DeviceCreated, 201)
@documented_errors(400, 401, 404, 413, 503)
async def create_device(data: DeviceCreate) -> tuple[dict[str, Any], int]:
    s = services()
    row, token = await tenancy.create_device(s.db, user_id=data.user_id, name=data.name, now=s.clock.now(),
                                             actor=ACTOR)
    return {**row, "token": token}, 201


@bp.get("/devices")
@service_auth
@validate_querystring(DeviceListQuery)
@validate_response(Page[Device])
@documented_errors(400, 401, 404, 503)
async def list_devices(query_args: DeviceListQuery) -> dict[str, Any]:
    db = services().db
    await tenancy.get_user(db, query_args.user_id)
    return await tenancy.list_devices(db, user_id=query_args.user_id, limit=query_args.limit,
                                      cursor=query_args.cursor)


@bp.get("/devices/<device_id>")
@service_auth
@validate_response(Device)
@documented_errors(401, 404, 503)
async def get_device(device_id: str) -> dict[str, Any]:
    return await tenancy.get_device(services().db, device_id)


@bp.delete("/devices/<device_id>")
@service_auth
@validate_response(Device)
@documented_errors(401, 404, 503)
async def revoke_device(device_id: str) -> dict[str, Any]:
    """Revoke the device, close its live sockets with 1008 and end its queued sends."""
    return await devices.revoke_device(services(), device_id, actor=ACTOR)
