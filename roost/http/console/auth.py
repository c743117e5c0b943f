"""Console sign-in: tokens with a role, a signed session cookie, CSRF, and the view decorators.

Tokens come from ``ROOST_CONSOLE_TOKENS="name:role:token,..."`` (role ``read`` or ``operate``; see
``roost.runtime.secrets.parse_console_tokens``). ``/console/login`` exchanges a token for a session
cookie ``roost_console``: ``<base64 json {name, session id, expiry}>.<HMAC-SHA256>``, HttpOnly,
SameSite=Strict, Secure when the request came over HTTPS (directly or per ``X-Forwarded-Proto``),
expiring after ``ROOST_CONSOLE_SESSION_S``. The signing key is derived from every configured
console token (and the first ``ROOST_SECRET_KEYS`` key when set), so every process with the same
settings accepts the cookie, and changing or removing any token ends every session. The role is
read from the settings on each request, never from the cookie. Logout clears the cookie in the
browser (the cookie itself stays valid until it expires: rotate a token to end sessions at once).
Signing and the failed-sign-in counts live in ``roost.http.console.sessions``.

CSRF: each form that changes state carries ``csrf``, an HMAC of the session id; ``action`` checks
it, and refuses a POST whose ``Origin`` names another host. Failed sign-ins are counted per client
address; past ``ROOST_CONSOLE_LOGIN_FAILURES`` within ``ROOST_CONSOLE_LOGIN_WINDOW_S`` the login
answers 429 until the window passes. Each failure is logged (address and count, never the token).

Decorators: ``@page()`` for GET pages (no or expired cookie: 303 to the login,
``next`` kept); ``@action(name)`` for POSTs (``operate`` only, else 403; CSRF, else 403; the view
returns ``done(message, back_to)``, the decorator writes the audit row with ``console:<token
name>`` and answers 303 with a flash message; a ``RoostError`` becomes a flash error message and a
303 back, never a 500 page). ``operator()`` is the signed-in ``Operator``. Inside an action
``roost.storage.audit.acting_as`` is ``console:<token name>``, so a domain function called with
``actor="service"`` (as the admin API calls it) records its own audit rows under that name too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import quote, urlsplit

from quart import Response, g, redirect, request

from roost import errors
from roost.http.console import console_bp
from roost.http.console.sessions import (
    b64,
    now_s,
    session_value,
    sign,
    signing_key,
    state,
    tokens,
    unsign,
)
from roost.http.context import services
from roost.http.errors import status_for
from roost.runtime.logging import get_logger
from roost.runtime.topics import AUDIT_WRITTEN
from roost.storage import audit

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
log = get_logger()

READ = "read"
OPERATE = "operate"
SESSION_COOKIE = "roost_console"
FLASH_COOKIE = "roost_console_flash"
MAX_TOKEN_CHARS = 512  # a longer "token" is a failed sign-in, never hashed at length
LOGIN_PATH = "/console/login"
_DRIVER_MODULES = ("asyncpg", "sqlite3", "_sqlite3")


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the console token's name and its role (``read`` or ``operate``)."""

    name: str
    role: str
    session_id: str = field(default="", repr=False)

    @property
    def can_operate(self) -> bool:
        return self.role == OPERATE


# -- who is signed in -------------------------------------------------------------------------------


def operator() -> Operator | None:
    """The signed-in operator of this request, or None (no cookie, expired, tampered, token gone)."""
    if "console_operator" in g:
        return g.console_operator
    found: Operator | None = None
    payload = unsign(request.cookies.get(SESSION_COOKIE)) if tokens() else None
    if payload is not None:
        name, session_id, expires = payload.get("n"), payload.get("s"), payload.get("e")
        entry = tokens().get(name) if isinstance(name, str) else None
        if entry and isinstance(session_id, str) and isinstance(expires, int) and expires > now_s():
            found = Operator(name, entry[0], session_id)
    g.console_operator = found
    return found


def csrf_token() -> str:
    """The CSRF value of this session (empty when nobody is signed in)."""
    op = operator()
    if op is None:
        return ""
    return b64(hmac.new(signing_key(), b"csrf\0" + op.session_id.encode(), hashlib.sha256).digest())[:32]


def bodies_visible() -> bool:
    """Whether item bodies, payloads and snapshots are shown: for ``operate``, or when asked (``?show=bodies``)."""
    op = operator()
    return op is not None and (op.can_operate or request.args.get("show") == "bodies")


def safe_next(target: str | None, default: str = "/console") -> str:
    """``target`` when it is a path inside the console, else ``default`` (no open redirects)."""
    if not target or len(target) > 2000 or "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return default
    if parts.path != "/console" and not parts.path.startswith("/console/"):
        return default
    return target


def login_redirect() -> Response:
    here = request.full_path.rstrip("?") if request.method == "GET" else "/console"
    return redirect(f"{LOGIN_PATH}?next={quote(safe_next(here), safe='/')}", 303)


def https() -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
                        secure=https())


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/console", httponly=True, samesite="Strict", secure=https())


def same_origin() -> bool:
    """False when the request says it comes from a page of another host (``Origin``).

    This host is the ``Host`` header, a proxy's ``X-Forwarded-Host``, or ``ROOST_PUBLIC_URL``'s host
    (a page of another site cannot set ``X-Forwarded-Host`` on a form post; CSRF is checked anyway).
    """
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin is None
    hosts = {request.host, request.headers.get("X-Forwarded-Host", "").split(",")[0].strip(),
             urlsplit(services().settings.public_url).netloc}
    return urlsplit(origin).netloc.lower() in {h.lower() for h in hosts if h}


def flash(response: Response, message: str, kind: str = "ok") -> Response:
    """Carry ``message`` to the next page shown (a signed, short-lived cookie)."""
    set_cookie(response, FLASH_COOKIE, sign({"m": message[:500], "k": kind, "e": int(now_s()) + 60}), 60)
    return response


def take_flash() -> dict[str, str] | None:
    payload = unsign(request.cookies.get(FLASH_COOKIE))
    if not payload or not isinstance(payload.get("m"), str) or payload.get("e", 0) < now_s():
        return None
    return {"message": payload["m"], "kind": "error" if payload.get("k") == "error" else "ok"}


async def refused(status: int, message: str) -> Response:
    from roost.http.console.render import error_page

    return await error_page(status, message)


# -- decorators --------------------------------------------------------------------------------------


def page() -> Callable[[F], F]:
    """A GET page any signed-in operator (``read`` or ``operate``) may see; others go to the login."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not tokens():
                return await refused(503, "the console is off: set ROOST_CONSOLE_TOKENS (name:role:token,...)")
            if operator() is None:
                return login_redirect()
            return await fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class Done:
    """What an action view returns: the message to flash, where to go, and what the audit row names."""

    message: str
    back_to: str
    target_type: str | None = None
    target_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def done(message: str, back_to: str, *, target: tuple[str, str] | None = None,
         details: dict[str, Any] | None = None) -> Done:
    """End an action: 303 to ``back_to`` (a console path) with ``message`` flashed.

    ``target`` is the audit row's ``(target_type, target_id)``; without it the view's first URL
    parameter is used (``scout_id=...`` -> ``("scout", ...)``).
    """
    return Done(message, back_to, *(target or (None, None)), details=details or {})


def public_message(exc: errors.RoostError) -> str:
    """What an operator reads for ``exc``: its message, unless it may hold a database driver's text."""
    cause = exc.__cause__ or exc.__context__
    from_driver = cause is not None and type(cause).__module__.split(".")[0] in _DRIVER_MODULES
    if status_for(exc) >= 500 or from_driver:
        return f"the server failed ({exc.code}); the log has details under request id {g.get('request_id', '')}"
    return exc.message


def action(name: str | None = None) -> Callable[[F], F]:
    """A POST that changes state: ``operate`` only, a valid ``csrf`` field, audited, answered with a 303."""

    def decorate(fn: F) -> F:
        action_name = f"console.{name or fn.__name__}"

        @wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not tokens():
                return await refused(503, "the console is off: set ROOST_CONSOLE_TOKENS (name:role:token,...)")
            op = operator()
            if op is None:
                return login_redirect()
            if not op.can_operate:
                return await refused(403, f"the token {op.name!r} may read, not act (its role is read)")
            form = await request.form
            given = form.get("csrf", "")
            if not same_origin() or not hmac.compare_digest(given.encode(), csrf_token().encode()):
                log.warning("console_csrf_refused", operator=op.name, path=request.path)
                return await refused(403, "this form is out of date or came from elsewhere: reload the page and "
                                          "try again")
            back = safe_next(form.get("back") or "/console")
            reset = audit.acting_as.set(f"console:{op.name}")
            try:
                result = await fn(*args, **kwargs)
            except errors.RoostError as exc:
                log.info("console_action_refused", operator=op.name, action=action_name, code=exc.code)
                return flash(redirect(back, 303), public_message(exc), "error")
            finally:
                audit.acting_as.reset(reset)
            if not isinstance(result, Done):
                return result
            target_type, target_id = result.target_type, result.target_id
            if target_type is None:
                key, value = next(iter(kwargs.items()), ("console", "-"))
                target_type, target_id = key.removesuffix("_id"), str(value)
            await write_audit(op, action_name, target_type, target_id or "-",
                              {"message": result.message, **result.details})
            return flash(redirect(safe_next(result.back_to), 303), result.message)

        return wrapper  # type: ignore[return-value]

    return decorate


async def write_audit(op: Operator, action_name: str, target_type: str, target_id: str,
                      details: dict[str, Any]) -> None:
    """One audit row by ``console:<token name>``, then a wake-up for open audit pages."""
    s = services()
    await audit.record(s.db, at=s.clock.now(), actor=f"console:{op.name}", action=action_name,
                       target_type=target_type, target_id=target_id, details={"role": op.role, **details})
    s.bus.publish(AUDIT_WRITTEN)


# -- routes -------------------------------------------------------------------------------------------


def client_address() -> str:
    return (request.remote_addr or "unknown")[:100]


@console_bp.get("/login")
async def login_form() -> Any:
    from roost.http.console.render import page_html

    target = safe_next(request.args.get("next"))
    if tokens() and operator() is not None:
        return redirect(target, 303)
    return await page_html("console/login.html", next=target, error=None)


@console_bp.post("/login")
async def login() -> Any:
    from roost.http.console.render import page_html

    settings = services().settings
    if not tokens():
        return await refused(503, "the console is off: set ROOST_CONSOLE_TOKENS (name:role:token,...)")
    if not same_origin():
        return await refused(403, "this sign-in form came from another site")
    address, now = client_address(), time.monotonic()
    failures = state().failures
    wait_s = failures.limited(address, now, limit=settings.console_login_failures,
                              window_s=settings.console_login_window_s)
    form = await request.form
    target = safe_next(form.get("next"))
    if wait_s:
        log.warning("console_sign_in_limited", address=address, retry_after_s=round(wait_s))
        response = await page_html("console/login.html", status=429, next=target,
                                   error=f"Too many failed sign-ins from here: try again in {int(wait_s) + 1} s.")
        response.headers["Retry-After"] = str(int(wait_s) + 1)
        return response
    given = form.get("token", "").strip()
    name = None
    if 0 < len(given) <= MAX_TOKEN_CHARS:
        matches = [n for n, (_, token) in tokens().items()
                   if hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
                                          hashlib.sha256(token.encode()).digest())]
        name = matches[0] if matches else None
    if name is None:
        count = failures.fail(address, now, settings.console_login_window_s)
        log.warning("console_sign_in_failed", address=address, failures=count,
                    window_s=settings.console_login_window_s)
        return await page_html("console/login.html", status=401, next=target,
                               error="That is not a console token. Check it and try again.")
    failures.clear(address)
    expires = now_s() + settings.console_session_s
    g.console_operator = op = Operator(name, tokens()[name][0], secrets.token_urlsafe(16))
    response = redirect(target, 303)
    set_cookie(response, SESSION_COOKIE, session_value(name, expires, op.session_id), int(settings.console_session_s))
    log.info("console_signed_in", operator=name, role=op.role, address=address)
    await write_audit(op, "console.sign_in", "console_token", name, {"address": address})
    return response


@console_bp.post("/logout")
async def logout() -> Any:
    """Sign out: clears the cookie. Needs the CSRF field, so another site cannot sign anyone out."""
    op = operator() if tokens() else None
    if op is not None:
        form = await request.form
        if not same_origin() or not hmac.compare_digest(form.get("csrf", "").encode(), csrf_token().encode()):
            return await refused(403, "this form is out of date or came from elsewhere: reload the page")
        await write_audit(op, "console.sign_out", "console_token", op.name, {})
    response = redirect(LOGIN_PATH, 303)
    clear_cookie(response, SESSION_COOKIE)
    return response
