"""Device-token HTTP endpoints (the device's own view; jobs add theirs beside it)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from quart_schema import document_response, operation_id, validate_response

from roost.http.auth import device_auth
from roost.http.errors import ErrorBody
from roost.http.models import DeviceMe

bp = Blueprint("device", __name__, url_prefix="/api/device")


@bp.get("/me")
@operation_id("getDeviceMe")
@device_auth
@validate_response(DeviceMe)
@document_response(ErrorBody, 401)
async def me() -> dict[str, Any]:
    """Who this device token belongs to."""
    return dict(g.device)
