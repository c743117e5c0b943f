"""Signed one-click unsubscribe links (RFC 8058): ``<user id>.<HMAC-SHA256, base64url>``.

The key is ``ROOST_SECRET_KEY`` or, when that is unset, a random one generated once and kept in
the database (so every process, and every restart, signs alike).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from roost.runtime.services import Services
from roost.storage import digests

_PURPOSE = b"roost-unsubscribe-v1:"


async def key(services: Services) -> bytes:
    configured = services.settings.secret_key
    if configured:
        return configured.encode()
    return (await digests.secret(services.db, "unsubscribe_key", services.clock.now())).encode()


def sign(secret: bytes, user_id: str) -> str:
    mac = hmac.new(secret, _PURPOSE + user_id.encode(), hashlib.sha256).digest()
    return f"{user_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def verify(secret: bytes, token: str) -> str | None:
    """The user id a valid token names, else None (compared in constant time)."""
    if not token or len(token) > 200 or "." not in token:
        return None
    user_id, _, _ = token.rpartition(".")
    return user_id if hmac.compare_digest(sign(secret, user_id).encode(), token.encode()) else None


def url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe?token={quote(token)}"
