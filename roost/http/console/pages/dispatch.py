"""Dispatch: an account's limits and when its next send may go, its batches with progress by
status (pause, resume, cancel, send a draft), its devices, a batch's items and a device's send
queue.

The live parts listen to the dispatch topics (``dispatch.changed``: a batch sent, paused, resumed
or cancelled, in any process on PostgreSQL; ``dispatch.queued``, ``dispatch.result``,
``dispatch.batch_done``) and ``console.tick`` (the next send moves with time). The actions call
``roost.domain.dispatch.sending.change_batch``, the function the API's ``POST
/api/v1/outreach/batches/{id}/send|pause|resume|cancel`` call, scoped to the page's account: a
batch of another account is 404. A paused batch's items are offered to no device until resumed.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Response, request, url_for

from roost.domain.dispatch import overview, sending
from roost.errors import NotFound
from roost.http.console import console_bp
from roost.http.console.args import matched_arg
from roost.http.console.auth import action, done, page
from roost.http.console.pages.handoffs import BadForm, bad_form, form_id, optional_id, pick_account, user_names
from roost.http.console.render import add_nav, error_page, page_html
from roost.http.context import services
from roost.storage import dispatch, dispatch_lists

add_nav("Dispatch", "console.dispatch_page", order=70)

BATCHES_SHOWN = 25
ITEMS_SHOWN = 100
LIVE = "dispatch.changed dispatch.queued dispatch.result dispatch.batch_done"
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[0-9]{1,9})?$")
ACTIONS = {"send": "sent", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def choice(name: str, allowed: tuple[str, ...]) -> str | None:
    """A query value that must be one of ``allowed`` (or absent).

    Raises:
        BadForm: any other value.
    """
    value = request.args.get(name)
    if value in (None, ""):
        return None
    if value not in allowed:
        raise BadForm(f"{name} must be one of {', '.join(allowed)}")
    return value


def cursor_arg(name: str) -> str | None:
    """A cursor this page handed out: an id, a seq, or ``<id>.<seq>`` (or absent).

    Raises:
        BadForm: anything else.
    """
    return matched_arg(name, _CURSOR, BadForm, "is not a cursor this page handed out")


def in_account(path_id: str, what: str) -> tuple[str, str, str | None]:
    """A batch's or a device's page address: the path's id, the ``account`` it is shown within and the
    ``after`` cursor of its items.

    Raises:
        BadForm: any of them malformed (the account missing too).
    """
    return form_id(path_id, what), form_id(request.args.get("account"), "account"), cursor_arg("after")


@console_bp.get("/dispatch")
@page()
async def dispatch_page() -> Response:
    s = services()
    try:
        accounts, account = await pick_account(optional_id("account"))
        status = choice("status", dispatch.BATCH_STATUSES)
        before = cursor_arg("before")
    except BadForm as exc:
        return await bad_form(exc)
    context: dict[str, Any] = {"state": None, "batches": None, "devices": None, "names": {}}
    if account is not None:
        fragment, aid = request.args.get("fragment"), account["id"]
        if fragment in (None, "limits"):
            context["state"] = await overview.account_state(s, aid)
        if fragment in (None, "batches"):
            context["batches"] = await overview.recent_batches(s, aid, status=status, limit=BATCHES_SHOWN,
                                                               before=before)
            context["names"] = await user_names(aid)
        if fragment in (None, "devices"):
            context["devices"] = await overview.devices(s, aid)
    return await page_html("console/dispatch.html", accounts=accounts, account=account, status_filter=status,
                           before=before, statuses=dispatch.BATCH_STATUSES, live=LIVE, **context)


@console_bp.get("/dispatch/batches/<batch_id>")
@page()
async def batch_page(batch_id: str) -> Response:
    try:
        bid, account_id, after = in_account(batch_id, "batch")
    except BadForm as exc:
        return await bad_form(exc)
    s = services()
    batch = await overview.batch(s, account_id, bid)
    items = await dispatch_lists.list_items(s.db, bid, limit=ITEMS_SHOWN, cursor=after)
    return await page_html("console/dispatch_batch.html", batch=batch, items=items, account={"id": account_id},
                           after=after, names=await user_names(account_id))


@console_bp.get("/dispatch/devices/<device_id>")
@page()
async def device_page(device_id: str) -> Response:
    try:
        did, account_id, after = in_account(device_id, "device")
        status = choice("status", dispatch.ITEM_STATUSES)
    except BadForm as exc:
        return await bad_form(exc)
    s = services()
    queue = await overview.device_queue(s, account_id, did, status=status, limit=ITEMS_SHOWN, cursor=after)
    return await page_html("console/dispatch_device.html", device_id=did, queue=queue, account={"id": account_id},
                           status_filter=status, after=after, statuses=dispatch.ITEM_STATUSES,
                           connected=bool(s.sockets.for_device(did)))


async def _change(batch_id: str, verb: str) -> Any:
    """Send, pause, resume or cancel ``batch_id`` within the form's ``account``."""
    form = await request.form
    try:
        bid = form_id(batch_id, "batch")
        account_id = form_id(form.get("account"), "account")
    except BadForm as exc:
        return await bad_form(exc)
    try:
        batch = await sending.change_batch(services(), bid, verb, account_id=account_id)
    except NotFound as exc:
        return await error_page(404, exc.message)
    state = "" if batch["status"] == ACTIONS[verb] else f" It is {batch['status']}."
    return done(f"Batch {bid} {ACTIONS[verb]}.{state}",
                form.get("back") or url_for("console.dispatch_page", account=account_id),
                target=("batch", bid), details={"account_id": account_id})


def batch_action(verb: str) -> None:
    """Route ``POST /dispatch/batches/<batch_id>/<verb>`` (endpoint ``console.<verb>_batch``, audited as
    ``batch.<verb>``) to ``_change``: the four buttons differ only in the verb."""

    async def view(batch_id: str) -> Any:
        return await _change(batch_id, verb)

    console_bp.add_url_rule(f"/dispatch/batches/<batch_id>/{verb}", endpoint=f"{verb}_batch",
                            view_func=action(f"batch.{verb}")(view), methods=["POST"])


for _verb in ACTIONS:
    batch_action(_verb)
