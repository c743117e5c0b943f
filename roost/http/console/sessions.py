"""The console's session cookie and its per-app state: signing, the tokens, failed sign-ins.

A session cookie is ``<base64 json {name, session id, expiry}>.<HMAC-SHA256>``; the key is derived
from every configured console token (and the first ``ROOST_SECRET_KEYS`` key when set), so every
process with the same settings accepts it and changing any token ends every session
(``roost.http.console.auth`` sets and reads the cookie). Failed sign-ins are counted per client
address in a sliding window, bounded in the addresses kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from roost.http.console import console_bp
from roost.http.context import services

MAX_ADDRESSES = 10_000  # failed-sign-in counters kept; the oldest address is forgotten first


# -- per-app state --------------------------------------------------------------------------------


class FailedSignIns:
    """Failed sign-ins per client address within a sliding window, bounded in addresses kept."""

    def __init__(self) -> None:
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float, window_s: float) -> deque[float]:
        times = self._by_address.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - window_s:
            times.popleft()
        if not times:
            del self._by_address[address]
        return times

    def limited(self, address: str, now: float, *, limit: int, window_s: float) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        times = self._recent(address, now, window_s)
        return max(0.0, times[0] + window_s - now) if len(times) >= limit else 0.0

    def fail(self, address: str, now: float, window_s: float) -> int:
        """Count a failure; returns how many within the window."""
        times = self._recent(address, now, window_s)
        self._by_address[address] = times
        self._by_address.move_to_end(address)
        times.append(now)
        while len(self._by_address) > MAX_ADDRESSES:
            self._by_address.popitem(last=False)
        return len(times)

    def clear(self, address: str) -> None:
        self._by_address.pop(address, None)


@dataclass
class ConsoleState:
    """What the console keeps per app: the failed sign-ins and the count of open live streams."""

    failures: FailedSignIns = field(default_factory=FailedSignIns)
    live_clients: int = 0


STATE_KEY = "roost.console"


@console_bp.record_once
def _install(setup: Any) -> None:
    setup.app.extensions[STATE_KEY] = ConsoleState()


def state() -> ConsoleState:
    return current_app.extensions[STATE_KEY]


# -- signing ----------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tokens() -> dict[str, tuple[str, str]]:
    """The configured console tokens, ``{name: (role, token)}``."""
    return services().settings.console_tokens_by_name


def signing_key() -> bytes:
    """The session key: derived from every console token (and the first secret key, when set)."""
    settings = services().settings
    material = "\0".join(f"{name}:{role}:{token}" for name, (role, token) in sorted(tokens().items()))
    secret = (settings.sealing_keys[0] if settings.sealing_keys else "").encode()
    return hmac.new(b"roost console session v1\0" + secret, material.encode(), hashlib.sha256).digest()


def sign(payload: dict[str, Any]) -> str:
    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{b64(hmac.new(signing_key(), body.encode(), hashlib.sha256).digest())}"


def unsign(value: str | None) -> dict[str, Any] | None:
    """The payload of a value ``sign`` made with the current key, or None (tampered, foreign, malformed)."""
    if not value or len(value) > 2048 or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    expected = b64(hmac.new(signing_key(), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        payload = json.loads(unb64(body))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def session_value(name: str, expires_at: float, session_id: str | None = None) -> str:
    """A session cookie's value for token ``name`` (tests make expired ones with it)."""
    return sign({"n": name, "s": session_id or secrets.token_urlsafe(16), "e": int(expires_at)})


def now_s() -> float:
    return services().clock.now().timestamp()
