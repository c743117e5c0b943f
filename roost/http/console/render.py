"""Rendering console pages: the base layout's context, ``?fragment=`` partials, the navigation, errors.

``await page_html("console/x.html", **ctx)`` renders a page that extends ``console/base.html`` with
the signed-in operator, the CSRF token, the flash message and the navigation. A request with
``?fragment=<block>`` renders only that block of the template (what ``console.js`` swaps in when
the live stream reports a change). Pages add themselves to the navigation with ``add_nav`` at
import, so the base layout never needs editing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape
from quart import Response, current_app, request, url_for
from werkzeug.exceptions import HTTPException

from roost import errors
from roost.http.console import console_bp
from roost.http.console.auth import (
    FLASH_COOKIE,
    bodies_visible,
    clear_cookie,
    csrf_token,
    operator,
    public_message,
    take_flash,
)
from roost.http.errors import status_for

_FRAGMENT = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
# No inline scripts, no other origins; inline styles allowed (SVG charts, progress bars).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; object-src 'none'")


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str
    order: int


NAV: list[NavItem] = []


def add_nav(label: str, endpoint: str, order: int = 50) -> None:
    """Show a page in the navigation (``endpoint`` as for ``url_for``, e.g. ``console.scouts``)."""
    if all(item.endpoint != endpoint for item in NAV):
        NAV.append(NavItem(label, endpoint, order))
        NAV.sort(key=lambda item: (item.order, item.label))


def utc_text(value: dt.datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def time_tag(value: dt.datetime | str | None, empty: str = "—") -> Markup:
    """``<time datetime=ISO data-local title=UTC>``: console.js shows it in the viewer's zone."""
    if value is None:
        return Markup(escape(empty))
    text = utc_text(value)
    iso = value.isoformat() if isinstance(value, dt.datetime) else value
    return Markup('<time datetime="{0}" data-local title="{1}">{1}</time>').format(iso, text)


@console_bp.app_template_global("console_time")
def _console_time(value: Any, empty: str = "—") -> Markup:
    return time_tag(value, empty)


def here() -> str:
    """This page's path and query without ``fragment``: where a form on it (or on a part swapped into
    it) comes back to."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "fragment"]
    return f"{request.path}?{urlencode(args)}" if args else request.path


async def base_context() -> dict[str, Any]:
    """What every console template sees; ``m`` is ``console/_macros.html`` with this context (no import
    needed, and it works in a ``?fragment=`` block, which runs without the template's top level)."""
    op = operator()
    nav = [{"label": item.label, "url": url_for(item.endpoint), "current": request.endpoint == item.endpoint}
           for item in NAV] if op else []
    context = {"operator": op, "csrf": csrf_token(), "flash": take_flash(), "nav": nav,
               "bodies_visible": bodies_visible(), "here": here()}
    await current_app.update_template_context(context)
    macros = current_app.jinja_env.get_template("console/_macros.html")
    context["m"] = await macros.make_module_async(context)
    return context


async def render_block(template_name: str, block: str, context: dict[str, Any]) -> str | None:
    """Only ``block`` of the template, or None when it has no such block."""
    await current_app.update_template_context(context)
    template = current_app.jinja_env.get_template(template_name)
    render = template.blocks.get(block)
    if render is None:
        return None
    ctx = template.new_context(context)
    return "".join([part async for part in render(ctx)])


def html_response(body: str, status: int = 200) -> Response:
    response = Response(body, status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


async def page_html(template: str, *, status: int = 200, **ctx: Any) -> Response:
    """Render ``template`` (extending ``console/base.html``), or just the block ``?fragment=`` names."""
    context = {**await base_context(), **ctx}
    fragment = request.args.get("fragment")
    if fragment is not None:
        body = await render_block(template, fragment, context) if _FRAGMENT.match(fragment) else None
        if body is None:
            return await error_page(404, "no such fragment on this page")
        return html_response(body, status)
    await current_app.update_template_context(context)
    body = await current_app.jinja_env.get_template(template).render_async(context)
    response = html_response(body, status)
    if context["flash"] is not None:
        clear_cookie(response, FLASH_COOKIE)
    return response


async def error_page(status: int, message: str) -> Response:
    """The error page (for a ``?fragment=`` request: the message alone, to swap in)."""
    if request.args.get("fragment") is not None:
        return html_response(f'<p class="flash error" role="alert">{escape(message)}</p>', status)
    context = {**await base_context(), "status_code": status, "message": message}
    await current_app.update_template_context(context)
    body = await current_app.jinja_env.get_template("console/error.html").render_async(context)
    return html_response(body, status)


@console_bp.after_request
async def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@console_bp.errorhandler(errors.RoostError)
async def roost_error(exc: errors.RoostError) -> Response:
    """A domain error on a console page is a page with its message, never JSON or a 500 page."""
    status = status_for(exc)
    if status == 401:
        status = 403
    return await error_page(status, public_message(exc))


@console_bp.errorhandler(HTTPException)
async def http_error(exc: HTTPException) -> Response:
    return await error_page(exc.code or 500, exc.description or exc.name)
