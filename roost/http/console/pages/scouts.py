"""Console: scouts (state, paused, next run, last error) and one scout's items by status.

Reads are bounded and indexed: the list pages scouts by id (``scout_list.list_scouts``, every
filter indexed); a scout's page shows each status's count up to ``COUNT_CAP`` (``over 10,000``
past it: ``scouts.item_counts_capped`` reads at most ``COUNT_CAP + 1`` index entries per status,
so a scout with a million items costs what one with 70,000 does) and a page of its items, newest
first, by the (scout_id, status, id) or (scout_id, id) index. Subjects, snippets, senders and payloads are shown
to ``operate``, and to ``read`` only with ``?show=bodies``.

Actions call the domain functions the HTTP API calls: run now (``scouting.run_scout``, as
``POST /api/admin/scouts/{id}/run``: 409 while it runs, shown as a message), enable and disable
(``scout_ops.change_scout``, as ``PATCH``), retry a failed item (``scout_ops.retry_item``, as
``POST /api/admin/scouts/{id}/items/{item_id}/retry``).

Live: the counts and the items refresh on ``scout.items`` (items pushed), ``scout.ran`` (a run
ended, in any process), ``scout.changed`` and ``proposal.queued``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from quart import request

from roost.domain import scouting
from roost.domain import scouts as scout_ops
from roost.errors import InvalidInput, NotFound
from roost.http.console import console_bp
from roost.http.console.auth import action, done, page
from roost.http.console.render import add_nav, page_html
from roost.http.context import services
from roost.plugins.connectors import connectors
from roost.runtime import topics
from roost.storage import scout_list
from roost.storage import scouts as repo
from roost.storage.audit import SERVICE

COUNT_CAP = 10_000
SCOUTS_PER_PAGE = 50
ITEMS_PER_PAGE = 50
MAX_ID_CHARS = 100  # ids are ``sct_`` / ``prp_`` / ``usr_`` and 26 characters; anything longer names nothing
_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
LIST_TOPICS = " ".join((topics.SCOUT_CHANGED, topics.SCOUT_RAN))
SCOUT_TOPICS = " ".join((topics.SCOUT_ITEMS, topics.SCOUT_RAN, topics.SCOUT_CHANGED, topics.PROPOSAL_QUEUED))

add_nav("Scouts", "console.scouts", 20)


def _arg(name: str, *, choices: tuple[str, ...] | None = None) -> str | None:
    """A query parameter, checked: an id-like value (or one of ``choices``); 400 otherwise."""
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if choices is not None:
        if value not in choices:
            raise InvalidInput(f"{name} must be one of {', '.join(choices)}")
        return value
    if not _ID.match(value):
        raise InvalidInput(f"{name} is not an id (letters, digits, _ and -, at most {MAX_ID_CHARS})")
    return value


def _checked_id(value: str, what: str) -> str:
    """A path id: too long or odd characters is "no such thing" (404), never a database round trip."""
    if not _ID.match(value):
        raise NotFound(f"no {what} {value[:40]!r}")
    return value


def _link(*, keep_cursor: bool = False, **params: str | None) -> str:
    """This page's URL with ``params`` changed (None drops one); ``fragment`` is never carried over,
    the cursor only with ``keep_cursor`` (a live refresh of the page shown)."""
    dropped = {"fragment"} if keep_cursor else {"fragment", "cursor"}
    args = {k: v for k, v in request.args.items() if k not in dropped}
    for k, v in params.items():
        if v is None:
            args.pop(k, None)
        else:
            args[k] = v
    query = urlencode(args)
    return request.path + (f"?{query}" if query else "")


@console_bp.get("/scouts")
@page()
async def scouts() -> Any:
    """Every scout, a page at a time, filtered by state, provider and user."""
    state = _arg("state", choices=scout_list.STATES)
    provider = _arg("provider")
    if provider is not None and provider not in connectors.names():
        raise InvalidInput(f"no connector is named {provider!r}")
    user_id = _arg("user_id")
    cursor = _arg("cursor")
    db = services().db
    result = await scout_list.list_scouts(db, user_id=user_id, provider=provider, state=state,
                                          limit=SCOUTS_PER_PAGE, cursor=cursor)
    rows = [{**row, "state": scout_list.state_of(row)} for row in result["items"]]
    more = result["next_cursor"]
    return await page_html(
        "console/scouts.html", scouts=rows, states=scout_list.STATES, providers=sorted(connectors.names()),
        state=state, provider=provider, user_id=user_id, live_topics=LIST_TOPICS,
        src=_link(keep_cursor=True, fragment="list"), next_link=_link(cursor=more) if more else None,
        first_link=_link() if cursor else None)


@console_bp.get("/scouts/<scout_id>")
@page()
async def scout(scout_id: str) -> Any:
    """One scout: its settings, its items' counts by status, and a page of its items (of one status), newest first."""
    _checked_id(scout_id, "scout")
    status = _arg("status", choices=repo.STATUSES)
    cursor = _arg("cursor")
    db = services().db
    row = await repo.get_scout(db, scout_id)
    counts = await repo.item_counts_capped(db, scout_id, cap=COUNT_CAP)
    items = await repo.list_items_newest(db, scout_id, status=status, limit=ITEMS_PER_PAGE, cursor=cursor)
    return await page_html(
        "console/scouts_detail.html", scout={**row, "state": scout_list.state_of(row)}, counts=counts,
        cap=COUNT_CAP, item_status=status, statuses=repo.STATUSES, items=items["items"], live_topics=SCOUT_TOPICS,
        counts_src=_link(keep_cursor=True, fragment="counts"), items_src=_link(keep_cursor=True, fragment="items"),
        status_link=lambda s: _link(status=s), back=_link(keep_cursor=True),
        next_link=_link(cursor=items["next_cursor"]) if items["next_cursor"] else None,
        first_link=_link() if cursor else None, bodies_link=_link(show="bodies"))


def _scout_path(scout_id: str) -> str:
    return f"/console/scouts/{scout_id}"


@console_bp.post("/scouts/<scout_id>/run")
@action("scout.run")
async def run_scout(scout_id: str) -> Any:
    """Run the scout now (``scouting.run_scout``); a run going on is a 409, shown as a message."""
    _checked_id(scout_id, "scout")
    report = await scouting.run_scout(services(), scout_id)
    if report.paused:
        message = f"Scout {scout_id} is paused: no device of its user was seen lately."
    elif report.error:
        message = f"Scout {scout_id} ran and failed: {report.error}"
    else:
        message = (f"Scout {scout_id} ran: {report.listed} listed, {report.queued} queued, {report.discarded}"
                   f" discarded, {report.retried} to retry, {report.failed} failed.")
    return done(message, _scout_path(scout_id), details=report.as_dict())


async def _set_enabled(scout_id: str, enabled: bool) -> Any:
    _checked_id(scout_id, "scout")
    await scout_ops.change_scout(services(), scout_id, {"enabled": enabled}, actor=SERVICE)
    word = "enabled" if enabled else "disabled"
    return done(f"Scout {scout_id} {word}.", _scout_path(scout_id))


@console_bp.post("/scouts/<scout_id>/enable")
@action("scout.enable")
async def enable_scout(scout_id: str) -> Any:
    """Enable the scout (``scout_ops.change_scout`` with ``enabled: true``, as the API's PATCH)."""
    return await _set_enabled(scout_id, True)


@console_bp.post("/scouts/<scout_id>/disable")
@action("scout.disable")
async def disable_scout(scout_id: str) -> Any:
    """Disable the scout (``scout_ops.change_scout`` with ``enabled: false``, as the API's PATCH)."""
    return await _set_enabled(scout_id, False)


@console_bp.post("/scouts/<scout_id>/items/<item_id>/retry")
@action("scout.item_retry")
async def retry_item(scout_id: str, item_id: str) -> Any:
    """Triage a failed item again (``scout_ops.retry_item``); an item of another scout is not found."""
    _checked_id(scout_id, "scout")
    _checked_id(item_id, "item")
    await scout_ops.retry_item(services(), scout_id, item_id, actor=SERVICE)
    return done(f"Item {item_id} goes back to triage.", _scout_path(scout_id) + "?status=pending",
                target=("scout_item", item_id), details={"scout_id": scout_id})
