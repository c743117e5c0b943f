"""Helpers for digest and mail tests: services over a test database, users and notifications at chosen times."""

from __future__ import annotations

import datetime as dt
from typing import Any

from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import notifications, tenancy
from roost.storage.database import Database
from tests.support.server import SECRET_KEY


def make_services(db: Database, **settings: Any) -> Services:
    values: dict[str, Any] = {"database_url": "sqlite:///unused", "log_format": "json", "secret_key": SECRET_KEY,
                              "public_url": "https://roost.example"}
    values.update(settings)
    return Services.build(Settings(**values), db, Clock())


async def make_account(db: Database, now: dt.datetime) -> str:
    row = await tenancy.create_account(db, name="Acme", timezone="UTC", now=now, actor="test")
    return row["id"]


async def make_user(db: Database, account_id: str, *, now: dt.datetime, email: str, **fields: Any) -> dict[str, Any]:
    values = {"email": email, "display_name": email.split("@")[0].title(), "timezone": "UTC", "role": "member",
              "active": True, "digest_cadence": "daily", "digest_time": "08:00", "digest_weekday": "monday",
              "quiet_hours": None}
    values.update(fields)
    return await tenancy.create_user(db, account_id=account_id, fields=values, now=now, actor="test")


async def notify(db: Database, user_id: str, *, now: dt.datetime, topic: str = "rfc-1", kind: str = "comment",
                 payload: dict[str, Any] | None = None, actor: str | None = None, email: bool = False) -> str:
    async with db.transaction() as tx:
        return await notifications.insert(tx, recipient_user_id=user_id, event_kind=kind, topic=topic,
                                          actor_user_id=actor, payload=payload or {}, email=email, now=now)
