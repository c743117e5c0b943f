"""The audit log: every admin and console action, newest first, filtered by who, what and target.

Read-only for both roles. Filters are exact matches (``actor`` such as ``console:ops`` or
``service:app``, ``action``, ``target_type``, ``target_id``); pages go back by id (``before``).
New rows appear live (``audit.written``, published by console actions).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from quart import Response, request

from roost.errors import InvalidInput
from roost.http.console import console_bp
from roost.http.console.auth import page
from roost.http.console.render import add_nav, page_html
from roost.http.context import services
from roost.runtime.topics import AUDIT_WRITTEN
from roost.storage import audit

add_nav("Audit log", "console.audit_log", order=90)

PAGE = 50
MAX_FILTER_CHARS = 200
_CURSOR = re.compile(r"^aud_[0-9a-z]{26}$")


def read_filters(args: Any) -> tuple[dict[str, str], str | None]:
    """The filters and cursor of the query string.

    Raises:
        InvalidInput: a filter over ``MAX_FILTER_CHARS`` or a malformed cursor.
    """
    filters = {}
    for name in audit.FILTERS:
        value = (args.get(name) or "").strip()
        if len(value) > MAX_FILTER_CHARS or "\x00" in value:
            raise InvalidInput(f"the {name} filter is over {MAX_FILTER_CHARS} characters or holds NUL")
        if value:
            filters[name] = value
    before = args.get("before") or None
    if before is not None and not _CURSOR.match(before):
        raise InvalidInput("before= is not an audit entry id")
    return filters, before


def view(row: dict[str, Any]) -> dict[str, Any]:
    details = row.get("details") or {}
    if isinstance(details, str):
        details = json.loads(details)
    text = json.dumps(details, ensure_ascii=False, sort_keys=True, default=str)
    return {**row, "details_text": text if len(text) <= 500 else text[:500] + "…"}


@console_bp.get("/audit")
@page()
async def audit_log() -> Response:
    filters, before = read_filters(request.args)
    rows = await audit.list_page(services().db, filters=filters, before=before, limit=PAGE + 1)
    older = None
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        older = f"{request.path}?{urlencode({**filters, 'before': rows[-1]['id']})}"
    newest = f"{request.path}?{urlencode(filters)}".rstrip("?") if before else None
    return await page_html("console/audit.html", entries=[view(dict(r)) for r in rows], filters=filters,
                           older=older, newest=newest, live_topic=AUDIT_WRITTEN, paged=before is not None,
                           fragment_url=f"{request.path}?{urlencode({**filters, 'fragment': 'entries'})}")
