"""The ``roost`` command: serve, migrate, tenancy shortcuts, status, and a device client (the processor
and plugin commands are in ``roost.cli_processors``)."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from typing import Any

import httpx
import trio
import typer
from rich.console import Console
from rich.table import Table

from roost import __version__
from roost.errors import RoostError
from roost.runtime.clock import utcnow
from roost.runtime.config import Settings
from roost.runtime.logging import configure_logging

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="roost: one process for a product's background work."
)
console = Console()
err = Console(stderr=True)

DatabaseOpt = typer.Option(None, "--database-url", envvar="ROOST_DATABASE_URL", help="sqlite:///path or postgresql://...")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except RoostError as exc:
        _fail(exc.message)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        commit = os.environ.get("ROOST_BUILD_COMMIT") or _build_commit()
        console.print(f"roost {__version__}" + (f" ({commit})" if commit else ""))
        raise typer.Exit()


def _build_commit() -> str:
    try:
        from roost import _build  # type: ignore[attr-defined]  # written by `make dist`

        return _build.COMMIT
    except ImportError:
        return ""


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """roost: one process for a product's background work."""


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to bind (env ROOST_HOST; default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (env ROOST_PORT or PORT; default 8000)."),
    database_url: str | None = DatabaseOpt,
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Run pending migrations at start."),
) -> None:
    """Serve HTTP and the device WebSocket, and run every actor, until SIGTERM/SIGINT."""
    from roost.serve import run

    settings = _settings(host=host, port=port, database_url=database_url, migrate_on_start=migrate)
    configure_logging(settings.log_format, settings.log_level)
    try:
        run(settings)
    except RoostError as exc:
        _fail(exc.message)


@app.command()
def migrate(database_url: str | None = DatabaseOpt) -> None:
    """Apply pending migrations (idempotent)."""
    from roost.storage.database import open_database
    from roost.storage.migrator import migrate as run_migrations

    settings = _settings(database_url=database_url)

    async def go() -> list[Any]:
        async with open_database(settings.database_url) as db:
            return await run_migrations(db)

    try:
        applied = trio.run(go)
    except RoostError as exc:
        _fail(exc.message)
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("schema is up to date")


def _with_db(fn: Any, settings: Settings) -> Any:
    from roost.storage.database import open_database
    from roost.storage.migrator import check_current

    async def go() -> Any:
        async with open_database(settings.database_url) as db:
            await check_current(db)
            return await fn(db)

    try:
        return trio.run(go)
    except RoostError as exc:
        _fail(exc.message)


def _print_json(row: dict[str, Any]) -> None:
    console.print_json(json.dumps(row, default=str))


@app.command("create-account")
def create_account(
    name: str = typer.Option(...), timezone: str = typer.Option("UTC"), database_url: str | None = DatabaseOpt
) -> None:
    """Create an account."""
    from roost.http.models import AccountCreate
    from roost.storage import tenancy

    body = _validated(AccountCreate, name=name, timezone=timezone)
    row = _with_db(lambda db: tenancy.create_account(db, name=body.name, timezone=body.timezone, now=utcnow(),
                                                     actor="cli"), _settings(database_url=database_url))
    _print_json(row)


@app.command("create-user")
def create_user(
    account_id: str = typer.Option(...),
    email: str = typer.Option(...),
    display_name: str = typer.Option(...),
    timezone: str | None = typer.Option(None),
    role: str = typer.Option("member"),
    database_url: str | None = DatabaseOpt,
) -> None:
    """Create a user in an account."""
    from roost.http.models import UserCreate
    from roost.storage import tenancy

    body = _validated(UserCreate, account_id=account_id, email=email, display_name=display_name,
                      timezone=timezone, role=role)

    async def go(db: Any) -> Any:
        fields = body.model_dump()
        if fields["timezone"] is None:
            fields["timezone"] = (await tenancy.get_account(db, account_id))["timezone"]
        return await tenancy.create_user(db, account_id=account_id, fields=fields, now=utcnow(), actor="cli")

    _print_json(_with_db(go, _settings(database_url=database_url)))


@app.command("create-device")
def create_device(
    user_id: str = typer.Option(...), name: str = typer.Option(...), database_url: str | None = DatabaseOpt
) -> None:
    """Create a device and print its token (shown this once only)."""
    from roost.storage import tenancy

    row, token = _with_db(lambda db: tenancy.create_device(db, user_id=user_id, name=name, now=utcnow(), actor="cli"),
                          _settings(database_url=database_url))
    _print_json({**row, "token": token})
    err.print("[yellow]Store the token now: it is not shown again.[/yellow]")


def _validated(model: Any, **values: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


@app.command()
def status(
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ROOST_URL", help="Base URL of a running server."),
    token: str | None = typer.Option(None, envvar="ROOST_SERVICE_TOKEN", help="Service token."),
) -> None:
    """Print a running server's status as tables."""
    if not token:  # with only named tokens set, use the first of them
        first = os.environ.get("ROOST_SERVICE_TOKENS", "").split(",")[0]
        token = first.partition(":")[2].strip() or None
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/admin/status",
                             headers={"Authorization": f"Bearer {token or ''}"}, timeout=10)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        _fail(f"{response.status_code}: {message}")
    body = response.json()
    proc = body["process"]
    console.print(f"[bold]{proc['id']}[/bold] pid {proc['pid']} on {proc['host']}, roost {proc['version']}, "
                  f"{proc['database']}; ready: {'yes' if body['ready'] else '[red]no[/red]'}; "
                  f"connected devices: {body['connected_devices']}")
    secrets_state = body.get("secrets") or {}
    if secrets_state and not secrets_state.get("sealed"):
        console.print(f"[yellow]{secrets_state.get('message')}[/yellow]")
    table = Table("actor", "state", "restarts", "last tick", "last error")
    for actor in body["actors"]:
        state = actor["state"]
        colour = {"running": "green", "failed": "red", "backoff": "yellow"}.get(state, "white")
        table.add_row(actor["name"], f"[{colour}]{state}[/{colour}]", str(actor["restarts"]),
                      actor["last_tick_at"] or "-", (actor["last_error"] or "-")[:80])
    console.print(table)
    queues = Table("queue", "depth")
    for name, depth in body["queues"].items():
        queues.add_row(name, str(depth))
    console.print(queues)
    procs = Table("process", "port", "sockets", "leads", "last heartbeat", "alive")
    for p in body.get("processes", []):
        name = f"[bold]{p['id']}[/bold]" if p["id"] == body.get("process_id") else p["id"]
        procs.add_row(name, str(p["port"] or "-"), str(p["sockets"]), ", ".join(p["leads"]) or "-",
                      p["last_heartbeat"], "yes" if p["alive"] else "[red]no[/red]")
    console.print(procs)


@app.command()
def reseal(database_url: str | None = DatabaseOpt) -> None:
    """Re-encrypt every stored scout and webhook secret under the first of ROOST_SECRET_KEYS (and seal plaintext ones).

    Run it after putting a new key first in ROOST_SECRET_KEYS; once it reports no failures, the old keys
    can be dropped. Safe to run again, and while servers run (one scout per transaction).
    """
    from roost.domain import webhooks
    from roost.storage.scout_config import SecretBox, reseal_all

    settings = _settings(database_url=database_url)
    if not settings.sealing_keys:
        _fail("no key to seal with: set ROOST_SECRET_KEYS (or ROOST_SECRET_KEY). Make a key with: "
              'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"')
    box = SecretBox(settings.sealing_keys)
    report = _with_db(lambda db: reseal_all(db, box), settings)
    console.print(f"scouts: {report.scouts}, resealed: {report.changed}, failed: {len(report.failed or [])}")
    hooks_changed, hooks_failed = _with_db(lambda db: webhooks.reseal(db, settings.sealing_keys), settings)
    console.print(f"webhooks: resealed: {hooks_changed}, failed: {len(hooks_failed)}")
    if report.failed:
        _fail("these scouts hold a secret that none of ROOST_SECRET_KEYS opens (left unchanged; send their "
              f"secrets again through the API): {', '.join(report.failed)}", code=2)
    if hooks_failed:
        _fail("these webhook endpoints hold a secret that none of ROOST_SECRET_KEYS opens (left unchanged; "
              f"rotate their secret): {', '.join(hooks_failed)}", code=2)


@app.command()
def device(
    token: str = typer.Option(..., envvar="ROOST_DEVICE_TOKEN", help="Device token."),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ROOST_URL", help="Base URL of the server."),
    since: int | None = typer.Option(None, help="Replay account events after this sequence number."),
    ack: bool = typer.Option(True, "--ack/--no-ack", help="Acknowledge proposals (--no-ack: they come again "
                             "on the next connection)."),
) -> None:
    """Connect as a device, print every frame received, and ack proposals (unless --no-ack)."""
    from roost.client import run_device, ws_url_from_http

    async def show(frame: dict[str, Any]) -> None:
        print(json.dumps(frame), flush=True)

    try:
        code = trio.run(partial(run_device, ws_url_from_http(url), token, show, since=since, ack=ack))
    except (OSError, RuntimeError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return
    err.print(f"closed by server: {code}")
    sys.exit(0 if code in (1000, 1001) else 1)


from roost import cli_processors  # noqa: E402,F401  (registers process, usage, tools, plugins on ``app``)


def main() -> None:
    app()
