"""Session processors: each one's schedule and recent runs, run now; token usage per user, day and model.

Run now calls ``roost.domain.processors.run_now`` (what ``POST /api/admin/run-session-processor``
calls), so a run already going on, here or in another process, is the same 409, shown as a message.
Usage is ``roost.domain.usage`` (what ``GET /api/v1/usage`` calls) with the sums over the filter and a
per-day chart drawn here as SVG (no script, no library).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from markupsafe import Markup, escape
from quart import Response, request, url_for

from roost.domain import processors as domain
from roost.domain import usage
from roost.errors import InvalidInput, NotFound
from roost.http.console import console_bp
from roost.http.console.auth import action, done, operator, page
from roost.http.console.render import add_nav, error_page, page_html
from roost.http.context import services
from roost.runtime.jobs import job_board
from roost.storage.usage import COUNTERS

add_nav("Processors", "console.processors", order=40)

DEFAULT_DAYS = 14
PAGE_SIZE = 50
RECENT_RUNS = 10
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
COLOURS = ("#2f6fdf", "#d9731a", "#2a9d6a", "#b8439b", "#8a6d1f", "#4f8fa8", "#c2413b", "#6a5acd")


def _day(name: str, default: dt.date) -> dt.date:
    """A query argument that is a day (YYYY-MM-DD), or ``default`` when absent. Raises InvalidInput."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) != 10 or not _DAY.match(raw):
        raise InvalidInput(f"{name}: a day as YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {raw} is not a day") from exc


def usage_filter() -> dict[str, Any]:
    """The usage filter of this request: user, from, to (the last DEFAULT_DAYS days by default) and cursor."""
    today = services().clock.now().date()
    day_to = _day("to", today)
    day_from = _day("from", day_to - dt.timedelta(days=DEFAULT_DAYS - 1))
    user = request.args.get("user") or None
    if user is not None and (len(user) > 200 or "\x00" in user):
        raise InvalidInput("user: at most 200 characters")
    cursor = request.args.get("cursor") or None
    if cursor is not None and len(cursor) > 1200:
        raise InvalidInput("cursor: not a cursor from a previous page of this list")
    return {"user": user, "day_from": day_from, "day_to": day_to, "cursor": cursor}


def chart_svg(days: list[dict[str, Any]], models: list[str]) -> Markup:
    """Tokens per day (every counter summed), stacked by model, as an inline SVG with a text alternative."""
    width, height, pad_left, pad_bottom, pad_top = 640, 200, 56, 22, 8
    totals = [sum(sum(c.values()) for c in d["models"].values()) for d in days]
    peak = max(totals, default=0) or 1
    slot = (width - pad_left) / max(len(days), 1)
    bar = max(slot * 0.7, 1.0)
    scale = (height - pad_bottom - pad_top) / peak
    colour = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(models)}
    parts = [f'<line x1="{pad_left}" y1="{height - pad_bottom}" x2="{width}" y2="{height - pad_bottom}" '
             'class="axis" stroke="currentColor" stroke-opacity="0.4"/>',
             f'<text x="{pad_left - 6}" y="{pad_top + 10}" text-anchor="end" font-size="11" '
             f'fill="currentColor">{_short(peak)}</text>',
             f'<text x="{pad_left - 6}" y="{height - pad_bottom}" text-anchor="end" font-size="11" '
             'fill="currentColor">0</text>']
    for i, d in enumerate(days):
        x = pad_left + i * slot + (slot - bar) / 2
        y = height - pad_bottom
        for model in models:
            n = sum(d["models"].get(model, {}).values())
            if not n:
                continue
            h = n * scale
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour[model]}">'
                         f'<title>{escape(d["day"])} {escape(model)}: {n:,} tokens</title></rect>')
        if len(days) <= 16 or i % max(len(days) // 8, 1) == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="10" '
                         f'fill="currentColor">{escape(d["day"][5:])}</text>')
    label = (f"Tokens per day from {days[0]['day']} to {days[-1]['day']}, stacked by model; "
             f"the busiest day had {peak:,} tokens") if days and any(totals) else "No token usage in this range"
    return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
                  f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>'
                  + "".join(parts) + "</svg>")


def _short(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


async def processors_context() -> dict[str, Any]:
    s = services()
    board = job_board(s)
    items = await domain.statuses(s)
    runs = await domain.recent_runs(s, limit=RECENT_RUNS)
    for item in items:
        status = board.jobs.get(domain.job_name(item["name"]))
        item["next_run_at"] = status.next_run_at if status else None
        item["runs"] = runs.get(item["name"], [])
    if request.args.get("fragment") == "procs":  # a live refresh of the runs: no usage to read
        return {"processors": items}
    f = usage_filter()
    seen = await usage.view(s, day_from=f["day_from"], day_to=f["day_to"], user=f["user"], limit=PAGE_SIZE,
                            cursor=f["cursor"])
    summary, rows = seen["summary"], seen["page"]
    models = list(summary["by_model"])
    args = {"user": f["user"] or "", "from": f["day_from"].isoformat(), "to": f["day_to"].isoformat()}
    next_url = (url_for("console.processors", **args, cursor=rows["next_cursor"]) + "#usage"
                if rows["next_cursor"] else None)
    first_url = url_for("console.processors", **args) + "#usage" if f["cursor"] else None
    return {"processors": items, "filter": f, "summary": summary, "usage_rows": rows["items"],
            "next_url": next_url, "first_url": first_url, "counters": COUNTERS, "models": models,
            "colours": {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(models)},
            "chart": chart_svg(summary["days"], models)}


@console_bp.get("/processors")
@page()
async def processors() -> Response:
    return await page_html("console/processors.html", **await processors_context())


@console_bp.post("/processors/<name>/run")
@action("processor_run")
async def run_processor(name: str) -> Any:
    """Run the processor now (the API's run); 409 while a run of it is going on, shown as a message."""
    s = services()
    if not _NAME.match(name):
        return await error_page(404, "no such processor")
    try:
        proc = domain.get_processor(s, name)
    except NotFound as exc:
        return await error_page(404, exc.message)
    op = operator()
    result = await domain.run_now(s, proc, actor=f"console:{op.name if op else '?'}")
    counts = result.counts()
    return done(f"{name} ran: {counts['scanned']} files scanned, {counts['processed']} processed, "
                f"{counts['failed']} failed, {result.items} items, {result.bytes_read:,} bytes read.",
                url_for("console.processors"), target=("processor", name),
                details={**counts, "items": result.items})
