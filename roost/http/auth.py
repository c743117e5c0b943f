"""Bearer-token checks: the service tokens for admin/app APIs, device tokens for device APIs.

Several named service tokens may be configured (``ROOST_SERVICE_TOKENS=app:...,ops:...``) so one can
be rotated while the others keep working. The token is compared against every configured one, each
in constant time and all of them every time, so neither the answer's timing nor which entry matched
says anything about a token. The matching token's *name* (never the token) goes into the request's
log context and, through ``roost.storage.audit.acting_as``, into the audit row of each admin change.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import wraps
from typing import Any, Awaitable, Callable, TypeVar

from quart import g, request

from roost.errors import NotConfigured, Unauthenticated
from roost.http.context import services
from roost.runtime.logging import bind
from roost.storage import audit, tenancy

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def bearer_token(headers: Any) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_service_token(token: str | None) -> str:
    """The name of the configured service token ``token`` is.

    Raises:
        NotConfigured: no service token is configured.
        Unauthenticated: ``token`` is missing or matches none of them.
    """
    expected = services().settings.service_tokens_by_name
    if not expected:
        raise NotConfigured(
            "the admin API is disabled: set ROOST_SERVICE_TOKEN (or ROOST_SERVICE_TOKENS=name:token,...) to a long "
            "random string and restart"
        )
    name = match_token(token, expected)
    if name is None:
        raise Unauthenticated("missing or wrong service token (Authorization: Bearer <a ROOST_SERVICE_TOKENS token>)")
    return name


def match_token(token: str | None, expected: dict[str, str]) -> str | None:
    """The name whose token equals ``token``, or None; constant time in the token and the match.

    Both sides are hashed first, so ``compare_digest`` sees equal lengths and a token's length does not
    show; every entry is compared, with no early exit.
    """
    given = hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).digest()
    found: str | None = None
    for name, value in expected.items():
        if hmac.compare_digest(given, hashlib.sha256(value.encode()).digest()) and token is not None:
            found = name
    return found


def service_auth(fn: F) -> F:
    @wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = check_service_token(bearer_token(request.headers))
        g.service_token_name = name
        bind(service_token=name)
        audit.acting_as.set(name)  # this request's task only: a context variable
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
