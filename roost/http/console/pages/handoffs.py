"""Handoffs: each account's live queue, claim or cancel on behalf of one of its users, recent
handoffs, the event log, and one handoff with its snapshot.

The queue, the recent list and the event log are live: each is an element listening to
``handoff.events`` (an account's new committed events, in any process on PostgreSQL) and swapped
in from its ``?fragment=``. The operator picks whom to act for (``?act_for=``, an active user of
the account); each open handoff then has its claim and cancel buttons. Claim and cancel call
``roost.domain.handoffs`` ``claim`` and ``cancel``, the functions the API's ``POST
/api/v1/handoffs/{id}/claim|cancel`` call, scoped to the page's account: a handoff or a user of
another account is 404. Form values are checked before anything is read (``form_id``): a missing,
malformed or oversized one is 400.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Response, request, url_for

from roost.domain import handoffs
from roost.errors import NotFound
from roost.http.console import console_bp
from roost.http.console.auth import action, done, page
from roost.http.console.render import add_nav, error_page, page_html
from roost.http.context import services
from roost.storage import tenancy

add_nav("Handoffs", "console.handoffs_page", order=60)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ACCOUNTS_SHOWN = 200
QUEUE_SHOWN = 50
RECENT_SHOWN = 20
EVENTS_SHOWN = 50
NAMES_SHOWN = 1000


class BadForm(Exception):
    """A form or query value that is missing, malformed or too long: answered 400."""


def form_id(value: str | None, what: str) -> str:
    """An id from a form or query string: 1 to 64 letters, digits, ``_`` or ``-``.

    Raises:
        BadForm: anything else (missing, too long, NUL or other characters).
    """
    if value is None or not _ID.match(value):
        raise BadForm(f"{what} is missing or not an id")
    return value


def optional_id(name: str) -> str | None:
    value = request.args.get(name)
    return None if value in (None, "") else form_id(value, name)


def int_arg(name: str) -> int | None:
    """A non-negative integer query value of at most 18 digits, or None when absent."""
    value = request.args.get(name)
    if value in (None, ""):
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise BadForm(f"{name} is not a number")
    return int(value)


def shown() -> str | None:
    """``bodies`` when the page was asked to show bodies (kept in its live fragments' URLs)."""
    return "bodies" if request.args.get("show") == "bodies" else None


async def bad_form(exc: BadForm) -> Response:
    return await error_page(400, str(exc))


async def pick_account(requested: str | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The accounts to choose from and the chosen one (the first when none is asked for).

    Raises:
        NotFound: the account asked for does not exist.
    """
    db = services().db
    accounts = (await tenancy.list_accounts(db, name=None, limit=ACCOUNTS_SHOWN, cursor=None))["items"]
    if requested is None:
        return accounts, accounts[0] if accounts else None
    chosen = next((a for a in accounts if a["id"] == requested), None)
    if chosen is None:  # beyond the first page of accounts, or none such (NotFound)
        chosen = await tenancy.get_account(db, requested)
        accounts = [*accounts, chosen]
    return accounts, chosen


async def user_names(account_id: str) -> dict[str, str]:
    """The display names of the account's users (deactivated ones too), by id, to show for ids."""
    rows = (await tenancy.list_users(services().db, account_id=account_id, limit=NAMES_SHOWN, cursor=None))["items"]
    return {r["id"]: r["display_name"] for r in rows}


async def handoffs_context(account: dict[str, Any] | None) -> dict[str, Any]:
    """What the page shows for ``account``: only the part a ``?fragment=`` asks for, else all.

    Raises:
        BadForm: a malformed ``act_for`` or ``before``.
        NotFound: ``act_for`` is not an active user of the account.
    """
    s = services()
    context: dict[str, Any] = {"queue": None, "recent": None, "events": None, "users": [], "acting_for": None,
                               "before": None, "names": {}}
    if account is None:
        return context
    aid, fragment = account["id"], request.args.get("fragment")
    acting = optional_id("act_for")
    context["before"] = before = int_arg("before")
    context["names"] = await user_names(aid)
    if fragment in (None, "queue"):
        context["users"] = users = await handoffs.claimable_users(s, aid)
        if acting is not None:
            context["acting_for"] = next((u for u in users if u["id"] == acting), None)
            if context["acting_for"] is None:
                raise NotFound(f"no active user {acting!r} in this account")
        context["queue"] = await handoffs.queue(s, aid, limit=QUEUE_SHOWN, cursor=None)
    if fragment in (None, "recent"):
        context["recent"] = await handoffs.list_handoffs(s, aid, limit=RECENT_SHOWN, cursor=None)
    if fragment in (None, "events"):
        context["events"] = await handoffs.event_log(s, aid, limit=EVENTS_SHOWN, before=before)
    return context


@console_bp.get("/handoffs")
@page()
async def handoffs_page() -> Response:
    try:
        accounts, account = await pick_account(optional_id("account"))
        context = await handoffs_context(account)
    except BadForm as exc:
        return await bad_form(exc)
    return await page_html("console/handoffs.html", accounts=accounts, account=account, show=shown(), **context)


@console_bp.get("/handoffs/<handoff_id>")
@page()
async def handoff_page(handoff_id: str) -> Response:
    try:
        handoff = await handoffs.get(services(), form_id(handoff_id, "handoff"), optional_id("account"))
    except BadForm as exc:
        return await bad_form(exc)
    users = await handoffs.claimable_users(services(), handoff["account_id"])
    return await page_html("console/handoff.html", handoff=handoff, users=users,
                           account={"id": handoff["account_id"]}, names=await user_names(handoff["account_id"]))


async def _act(verb: str, handoff_id: str) -> Any:
    """Claim or cancel ``handoff_id`` for the form's ``user_id``, within the form's ``account``."""
    form = await request.form
    try:
        hid = form_id(handoff_id, "handoff")
        account_id = form_id(form.get("account"), "account")
        user_id = form_id(form.get("user_id"), "user_id")
    except BadForm as exc:
        return await bad_form(exc)
    fn = handoffs.claim if verb == "claim" else handoffs.cancel
    try:
        row = await fn(services(), hid, user_id, account_id=account_id)
    except NotFound as exc:
        return await error_page(404, exc.message)
    past = "claimed" if verb == "claim" else "cancelled"
    name = (await user_names(account_id)).get(user_id, user_id)
    return done(f"Handoff {row['subject_ref']} {past} for {name}.",
                form.get("back") or url_for("console.handoffs_page", account=account_id),
                target=("handoff", hid), details={"user_id": user_id, "account_id": account_id})


@console_bp.post("/handoffs/<handoff_id>/claim")
@action("handoff.claim")
async def claim_handoff(handoff_id: str) -> Any:
    return await _act("claim", handoff_id)


@console_bp.post("/handoffs/<handoff_id>/cancel")
@action("handoff.cancel")
async def cancel_handoff(handoff_id: str) -> Any:
    return await _act("cancel", handoff_id)
