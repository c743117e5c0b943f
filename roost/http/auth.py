"""Bearer-token checks: the service token for admin/app APIs, device tokens for device APIs."""

from __future__ import annotations

import hmac
from functools import wraps
from typing import Any, Awaitable, Callable, TypeVar

from quart import g, request

from roost.errors import NotConfigured, Unauthenticated
from roost.http.context import services
from roost.runtime.logging import bind
from roost.storage import tenancy

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def bearer_token(headers: Any) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_service_token(token: str | None) -> None:
    """Raises NotConfigured when no service token is set, Unauthenticated when it does not match."""
    expected = services().settings.service_token
    if not expected:
        raise NotConfigured(
            "the admin API is disabled: set ROOST_SERVICE_TOKEN to a long random string and restart"
        )
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthenticated("missing or wrong service token (Authorization: Bearer <ROOST_SERVICE_TOKEN>)")


def service_auth(fn: F) -> F:
    @wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_service_token(bearer_token(request.headers))
        return await fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def device_auth(fn: F) -> F:
    """Authenticate a device token; the device row is left in ``g.device``."""

    @wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = bearer_token(request.headers)
        device = await tenancy.authenticate_device(services().db, token or "")
        if device is None:
            raise Unauthenticated("missing, unknown or revoked device token")
        g.device = device
        services().activity.seen(device["device_id"])  # a device HTTP call is activity (written once a minute)
        bind(device_id=device["device_id"])
        return await fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
