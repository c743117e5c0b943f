"""The ``roost`` commands about processors and plugins: process, usage, tools, plugins.

Registered on ``roost.cli.app`` when ``roost.cli`` is imported (it imports this module last).
"""

from __future__ import annotations

import datetime as dt
import gc
from typing import Any

import typer
from rich.table import Table

from roost.cli import DatabaseOpt, _fail, _settings, _with_db, app, console, err
from roost.errors import Conflict

GC_THRESHOLDS = (50_000, 20, 100)  # CPython's defaults are (700, 10, 10)


@app.command()
def process(
    name: str = typer.Argument(..., help="Processor name (see GET /api/admin/session-processors)."),
    user: str | None = typer.Option(None, "--user", help="Only this user's folder."),
    session_dir: str | None = typer.Option(None, envvar="ROOST_SESSION_DIR", help="Root of <user>/*.jsonl."),
    database_url: str | None = DatabaseOpt,
) -> None:
    """Run one processor now, with a progress bar over the files (exit 1 if it is already running).

    The run is recorded in the audit log with actor ``cli``. On SQLite it takes the lock ``roost serve``
    holds on the database, so it refuses while a server runs (run it through the server's
    POST /api/admin/run-session-processor instead), and a server cannot start while it runs.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from roost.domain.processors import get_processor, run_now
    from roost.runtime.services import Services
    from roost.storage.process_lock import single_process_lock

    settings = _settings(database_url=database_url, session_dir=session_dir)
    # A first pass allocates an item per message line, all alive until stored: collect the young rarely,
    # and never walk what start-up built (bench/sessions.py).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    async def go(db: Any) -> Any:
        services = Services.build(settings, db)
        processor = get_processor(services, name)
        with Progress(TextColumn(f"[bold]{name}[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=False) as bar:
            task = bar.add_task("files", total=None)
            return await run_now(services, processor, actor="cli", user=user,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))

    try:  # _with_db turns the run's own errors into an exit: a Conflict here is the lock's
        with single_process_lock(settings):
            result = _with_db(go, settings)
    except Conflict as exc:
        _fail(f"{exc.message}. `roost process` cannot run beside it on SQLite: run the processor through that "
              f"server (POST /api/admin/run-session-processor?processor={name}) or stop it first")
    table = Table("scanned", "processed", "skipped", "failed", "items", "bytes read")
    table.add_row(*(str(v) for v in (result.scanned, result.processed, result.skipped, result.failed, result.items,
                                      result.bytes_read)))
    console.print(table)
    if result.failed:
        raise typer.Exit(2)


def _days(day_from: str | None, day_to: str | None) -> tuple[dt.date | None, dt.date | None]:
    try:
        first = dt.date.fromisoformat(day_from) if day_from else None
        last = dt.date.fromisoformat(day_to) if day_to else None
    except ValueError as exc:
        _fail(f"--from/--to: {exc}")
    if first and last and first > last:
        _fail("--from is after --to")
    return first, last


def _all_pages(totals: Any, **filters: Any) -> Any:
    async def go(db: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await totals(db, **filters, limit=1000, cursor=cursor)
            rows.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return rows

    return go


UserOpt = typer.Option(None, "--user", help="Only this user.")
FromOpt = typer.Option(None, "--from", help="First day, YYYY-MM-DD (UTC).")
ToOpt = typer.Option(None, "--to", help="Last day, YYYY-MM-DD (UTC).")


def _print_totals(totals: Any, header: tuple[str, ...], cells: Any, *, user: str | None, day_from: str | None,
                  day_to: str | None, database_url: str | None) -> None:
    """Every page of a processor's totals (``totals``: its storage function) as one table."""
    first, last = _days(day_from, day_to)
    rows = _with_db(_all_pages(totals, user=user, day_from=first, day_to=last), _settings(database_url=database_url))
    table = Table(*header)
    for r in rows:
        table.add_row(*cells(r))
    console.print(table)


@app.command()
def usage(user: str | None = UserOpt, day_from: str | None = FromOpt, day_to: str | None = ToOpt,
          database_url: str | None = DatabaseOpt) -> None:
    """Token usage per user, day and model, as a table."""
    from roost.storage import usage as usage_store

    _print_totals(usage_store.totals, ("day", "user", "model", "input", "output", "cache write", "cache read"),
                  lambda r: (r["day"], r["user"], r["model"], *(f"{r[c]:,}" for c in usage_store.COUNTERS)),
                  user=user, day_from=day_from, day_to=day_to, database_url=database_url)


@app.command()
def tools(user: str | None = UserOpt, day_from: str | None = FromOpt, day_to: str | None = ToOpt,
          database_url: str | None = DatabaseOpt) -> None:
    """Tool calls and failed calls per user, day and tool (the ``tools`` processor's counts), as a table."""
    from roost.storage import tools as tools_store

    _print_totals(tools_store.totals, ("day", "user", "tool", "calls", "failed"),
                  lambda r: (r["day"], r["user"], r["tool"], f"{r['calls']:,}", f"{r['failed']:,}"),
                  user=user, day_from=day_from, day_to=day_to, database_url=database_url)


@app.command()
def plugins() -> None:
    """List the plugins of every kind (connectors, classifiers, assessors, session processors, mail
    transports): kind, name, and where each comes from (built in, or an installed package's entry point).

    Plain aligned columns, one plugin a line (never wrapped, so it greps and diffs well).
    """
    from roost.plugins.catalog import catalog

    rows = [("KIND", "NAME", "FROM")] + [(i.kind, i.name, i.source) for i in catalog()]
    kind_w, name_w = (max(len(r[n]) for r in rows) for n in (0, 1))
    for kind, name, source in rows:
        print(f"{kind.ljust(kind_w)}  {name.ljust(name_w)}  {source}")
