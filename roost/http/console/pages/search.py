"""Search and bulk actions (issue 20): find items, mail, handoffs and dispatch items; retry or cancel
everything a filter matches, after a confirmation that says how many.

The queries and the caps live in ``roost.domain.search`` (indexed, bounded); each bulk action runs
the domain function the API calls, once per row, and the ``action`` decorator writes one audit row
with the count. Results link to the pages that own each row.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from quart import Response, request

from roost.domain import search
from roost.errors import InvalidInput
from roost.http.console import console_bp
from roost.http.console.auth import action, done, page
from roost.http.console.render import add_nav, page_html
from roost.http.context import services

add_nav("Search", "console.search_page", order=80)

# Where each kind of row is shown, by the page that owns it (CONSOLE.md): the row and its parent id.
def _q(value: str | None) -> str:
    return quote(value or "", safe="")


_LINKS = {
    "item": lambda row: f"/console/scouts/{_q(row['parent_id'])}?status={_q(row['status'])}",
    "mail": lambda row: f"/console/mail?state={_q(row['status'])}",
    "handoff": lambda row: f"/console/handoffs/{_q(row['id'])}",
    "dispatch": lambda row: f"/console/dispatch/batches/{_q(row['parent_id'])}",
}
_KIND_LABELS = {"item": "Scout item", "mail": "Mail", "handoff": "Handoff", "dispatch": "Dispatch item"}
_FIELD_LABELS = {"any": "Any field", "id": "Id", "ref": "Ref", "subject": "Subject", "sender": "Sender",
                 "recipient": "Recipient"}
_ARG_CHARS = 10_000  # any request argument is cut to this before it is looked at


def _arg(name: str, default: str = "") -> str:
    return request.args.get(name, default)[:_ARG_CHARS]


def _page_number(text: str) -> int:
    if not text:
        return 1
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise InvalidInput("page: a number")
    return int(text)


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "kind_label": _KIND_LABELS[row["kind"]], "link": _LINKS[row["kind"]](row)}


def _bulk_choices() -> list[dict[str, Any]]:
    return [{"kind": b.kind, "action": b.action, "statuses": b.statuses, "label": b.label}
            for b in search.available_actions()]


@console_bp.get("/search")
@page()
async def search_page() -> Response:
    text = _arg("q")
    kind = _arg("kind") or None
    field = _arg("field") or "any"
    number = _page_number(_arg("page"))
    results = await search.search(services(), text, kind=kind, field=field, page=number)

    def url(page_number: int) -> str:
        args = {"q": results.query, "kind": kind or "", "field": field, "page": page_number}
        return "/console/search?" + urlencode(args)

    return await page_html(
        "console/search.html", results=results, rows=[_row_view(r) for r in results.rows], asked=bool(text.strip()),
        kinds=_KIND_LABELS, fields=_FIELD_LABELS, bulk_choices=_bulk_choices(), page_size=search.PAGE_SIZE,
        max_results=search.MAX_RESULTS, bulk_cap=search.BULK_CAP,
        prev_url=url(number - 1) if number > 1 else None, next_url=url(number + 1) if results.more else None,
    )


def _filter_from(values: Any) -> search.BulkFilter:
    """The bulk filter a form or query string names (``bulk`` is ``kind:action``)."""
    kind, _, name = str(values.get("bulk", ""))[:100].partition(":")
    return search.bulk_filter(kind, name, str(values.get("status", ""))[:100],
                              str(values.get("scope", ""))[:200] or None)


def _filter_query(f: search.BulkFilter) -> str:
    return urlencode({"bulk": f"{f.kind}:{f.action}", "status": f.status, "scope": f.scope or ""})


@console_bp.get("/search/bulk")
@page()
async def search_bulk_confirm() -> Response:
    f = _filter_from(request.args)
    preview = await search.preview(services(), f)
    return await page_html("console/search_bulk.html", filter=f, label=f.bulk.label, preview=preview,
                           cap=search.BULK_CAP, query=_filter_query(f))


@console_bp.post("/search/bulk")
@action("search.bulk")
async def search_bulk_run() -> Any:
    f = _filter_from(await request.form)
    outcome = await search.apply(services(), f, actor="service")
    parts = [f"{f.bulk.label}: {outcome.done} done"]
    if outcome.skipped:
        parts.append(f"{outcome.skipped} skipped (changed since: {'; '.join(outcome.reasons)})")
    if outcome.more:
        parts.append(f"more than {search.BULK_CAP} matched: run it again for the rest")
    return done(", ".join(parts) + ".", "/console/search/bulk?" + _filter_query(f),
                target=("bulk", f"{f.kind}:{f.action}"),
                details={"count": outcome.done, "skipped": outcome.skipped, "more": outcome.more,
                         "status": f.status, "scope": f.scope})
