"""Helpers for the handoff and dispatch console tests: the app on the test's database (Quart's test
client, no socket), signed-in clients, and a two-account world made through the storage and
domain functions."""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import unquote

from roost.http.app import create_app
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import audit, tenancy
from roost.storage.database import open_database
from tests.console.conftest import CONSOLE_TOKENS, OPERATE_TOKEN, READ_TOKEN

NOW = dt.datetime.now(dt.UTC)
HOSTILE_IDS = ("x" * 65, "a\x00b", "<script>alert(1)</script>", "../../etc", "a b", "é" * 10)


class Flows:
    """The console app, its services, and signed-in clients."""

    def __init__(self, app: Any, services: Services):
        self.app, self.services = app, services

    async def signed_in(self, role: str = "operate") -> Any:
        client = self.app.test_client()
        token = OPERATE_TOKEN if role == "operate" else READ_TOKEN
        r = await client.post("/console/login", form={"token": token, "next": "/console"})
        assert r.status_code == 303, await r.get_data(as_text=True)
        text = await (await client.get("/console")).get_data(as_text=True)
        client.csrf = text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
        return client

    async def audit_rows(self, action: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await audit.list_entries(self.services.db, limit=1000) if r["action"] == action]


@asynccontextmanager
async def flows_app(database_url: str) -> AsyncIterator[Flows]:
    settings = Settings(database_url=database_url, console_tokens=CONSOLE_TOKENS)
    async with open_database(database_url) as db:
        services = Services.build(settings, db)
        yield Flows(create_app(services), services)


@asynccontextmanager
async def acme_and_bravo(database_url: str) -> AsyncIterator[dict[str, Any]]:
    """Where each flows world starts: the app on a fresh database, account ``a`` (Acme) with ``ann`` and
    account ``b`` (Bravo) with ``zed`` (ids), and ``flows``; a test module's world adds its own rows."""
    async with flows_app(database_url) as flows:
        db = flows.services.db
        a, b = await make_account(db, "Acme"), await make_account(db, "Bravo")
        ann, zed = await make_user(db, a, "Ann"), await make_user(db, b, "Zed")
        yield {"flows": flows, "a": a, "b": b, "ann": ann, "zed": zed}


async def get(client: Any, url: str, **params: Any) -> tuple[int, str]:
    r = await client.get(url, query_string=params or None)
    return r.status_code, await r.get_data(as_text=True)


async def post(client: Any, url: str, **fields: str) -> tuple[int, str]:
    """POST a console form with the client's CSRF; (status, Location or body)."""
    r = await client.post(url, form={"csrf": client.csrf, **fields})
    if r.status_code == 303:
        return 303, unquote(r.headers["Location"])
    return r.status_code, await r.get_data(as_text=True)


async def flash_after(client: Any, url: str) -> str:
    """The page at ``url`` (where a 303 pointed), with the flash message it shows once."""
    return (await get(client, url))[1]


async def make_account(db: Any, name: str) -> str:
    return (await tenancy.create_account(db, name=name, timezone="UTC", now=NOW, actor="t"))["id"]


async def make_user(db: Any, account_id: str, name: str, *, active: bool = True) -> str:
    user = await tenancy.create_user(db, account_id=account_id, now=NOW, actor="t", fields={
        "email": f"{name.lower()}@example.com", "display_name": name, "timezone": "UTC", "role": "member",
        "active": active, "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday",
        "quiet_hours": None})
    return user["id"]


def assert_no_driver_text(body: str) -> None:
    for leak in ("Traceback", "asyncpg", "sqlite3", "psycopg", "invalid byte sequence", "Internal Server Error"):
        assert leak not in body, leak
