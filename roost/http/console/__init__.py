"""The operator console (issue 20): server-rendered pages under ``/console``, live by Server-Sent Events.

Layout: ``auth`` (tokens with a role, the signed session cookie, CSRF, the ``page``/``action``
decorators and the audit row of each action), ``render`` (the base layout and ``?fragment=``
partials), ``live`` (the SSE stream fed by the bus), ``pages/`` (one module per page, each its own
owner; every module there is imported below, so a new page never edits a shared file),
``templates/console/`` and ``static/`` (served by roost itself: no build step, no CDN).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import wraps
from types import FunctionType
from typing import Any, Callable

from quart import Blueprint
from quart_schema.openapi import QUART_SCHEMA_HIDDEN_ATTRIBUTE

console_bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                       static_folder="static")

from roost.http.console import auth, live, pages, render  # noqa: E402,F401  (routes register on import)

for _module in pkgutil.iter_modules(pages.__path__):
    importlib.import_module(f"{pages.__name__}.{_module.name}")


@console_bp.record
def _hide_from_openapi(setup: object) -> None:
    """The console is HTML for people, not part of the API: keep every route of it out of /openapi.json."""
    app = setup.app  # type: ignore[attr-defined]
    for endpoint, view in list(app.view_functions.items()):
        if endpoint.startswith("console."):
            if not isinstance(view, FunctionType):  # the static view is a bound method: give it a function
                view = _as_function(view)
                app.view_functions[endpoint] = view
            setattr(view, QUART_SCHEMA_HIDDEN_ATTRIBUTE, True)


def _as_function(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await view(*args, **kwargs)

    return call
