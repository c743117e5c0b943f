"""Signed one-click unsubscribe links (RFC 8058): ``<user id>.<epoch>.<HMAC-SHA256, base64url>``.

The MAC key is a sub-key (HKDF, purpose ``unsubscribe``) of each configured secret key, or of a
random key generated once and kept in the database when none is set (so every process, and every
restart, signs alike). The first key signs; every configured key verifies, so a key rotation does
not break links already mailed.

The epoch is the user's ``unsubscribe_epoch``, bumped when their digest is turned back on: a link
mailed before a re-subscribe then stops working (``verify`` gives the epoch; the caller compares).

Links mailed before epochs existed (``<user id>.<mac>``, MAC'd with the raw key) still verify, as
epoch 0, so they stop working after the user's first re-subscribe like any other old link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from roost.runtime.services import Services
from roost.storage import digests
from roost.storage.scout_config import PURPOSE_UNSUBSCRIBE, subkey

_PURPOSE = b"roost-unsubscribe-v2:"
_LEGACY_PURPOSE = b"roost-unsubscribe-v1:"
MAX_TOKEN_CHARS = 200


async def keys(services: Services) -> tuple[bytes, ...]:
    """The MAC keys, signing key first."""
    configured = services.settings.sealing_keys
    if not configured:
        configured = (await digests.secret(services.db, "unsubscribe_key", services.clock.now()),)
    return tuple(subkey(k, PURPOSE_UNSUBSCRIBE) for k in configured)


async def legacy_keys(services: Services) -> tuple[bytes, ...]:
    """The raw keys links were MAC'd with before sub-keys and epochs (session 5): verify only."""
    configured = services.settings.sealing_keys
    if not configured:
        configured = (await digests.secret(services.db, "unsubscribe_key", services.clock.now()),)
    return tuple(k.encode() if isinstance(k, str) else k for k in configured)


def verify_legacy(secrets: tuple[bytes, ...], token: str) -> tuple[str, int] | None:
    """(user id, 0) of a pre-epoch ``<user id>.<mac>`` link one of ``secrets`` signed, else None."""
    if not token or len(token) > MAX_TOKEN_CHARS or "." not in token:
        return None
    user_id, _, mac = token.rpartition(".")
    if not user_id or not mac:
        return None
    ok = False
    for secret in secrets:  # every key, no early exit
        expected = base64.urlsafe_b64encode(hmac.new(secret, _LEGACY_PURPOSE + user_id.encode("utf-8", "surrogatepass"),
                                                     hashlib.sha256).digest()).rstrip(b"=")
        ok |= hmac.compare_digest(expected, mac.encode("utf-8", "surrogatepass"))
    return (user_id, 0) if ok else None


def _mac(secret: bytes, user_id: str, epoch: int) -> str:
    mac = hmac.new(secret, _PURPOSE + f"{user_id}.{epoch}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign(secret: bytes, user_id: str, epoch: int = 0) -> str:
    """A token for ``user_id`` at ``epoch``, signed with ``secret`` (the first of ``keys``)."""
    return f"{user_id}.{epoch}.{_mac(secret, user_id, epoch)}"


def verify(secrets: tuple[bytes, ...] | bytes, token: str) -> tuple[str, int] | None:
    """(user id, epoch) of a token one of ``secrets`` signed, else None (compared in constant time)."""
    if isinstance(secrets, bytes):
        secrets = (secrets,)
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    rest, _, mac = token.rpartition(".")
    user_id, _, epoch_text = rest.rpartition(".")
    if not user_id or not mac or not (epoch_text.isascii() and epoch_text.isdigit()) or len(epoch_text) > 9:
        return None
    epoch = int(epoch_text)
    ok = False
    for secret in secrets:  # every key, no early exit
        ok |= hmac.compare_digest(_mac(secret, user_id, epoch).encode(), mac.encode("utf-8", "surrogatepass"))
    return (user_id, epoch) if ok else None


def url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe?token={quote(token)}"
