"""Numbered migrations, recorded in ``schema_version``.

Files live in ``roost/storage/migrations/`` as ``NNNN_name.sqlite.sql`` and
``NNNN_name.postgres.sql`` side by side (or ``NNNN_name.sql`` when the SQL is the same on both).
Each pending step runs in its own transaction together with the row that records it, so a crash
leaves either the whole step or none of it; a second migrator waits (PostgreSQL advisory lock,
SQLite's write lock) and then finds nothing left to do. Running ``migrate`` twice changes nothing
the second time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from roost.errors import SchemaError
from roost.runtime.clock import utcnow
from roost.storage.database import Database
from roost.storage.dialect import Dialect

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(sqlite|postgres))?\.sql$")

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available(dialect: Dialect) -> list[Migration]:
    """Every migration shipped for ``dialect`` (``db.dialect``), in order."""
    wanted = dialect.pick(sqlite="sqlite", postgresql="postgres")
    found: dict[int, Migration] = {}
    for entry in resources.files("roost.storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version, name, flavour = int(match[1]), match[2], match[3]
        if flavour not in (None, wanted):
            continue
        if version in found and flavour is None:
            continue  # a dialect-specific file wins over the shared one
        found[version] = Migration(version, name, entry.read_text())
    # Numbers are reserved per job ahead of time, so a branch may ship 0004 before 0002 exists;
    # order is what matters, and a number is used once (the dict above keeps one file per number).
    return [found[v] for v in sorted(found)]


async def _ensure_version_table(db: Database) -> None:
    # Under the migration lock: two sessions running CREATE TABLE IF NOT EXISTS at once can both
    # pass the existence check on PostgreSQL and one then fails on a catalog unique index.
    async with db.transaction() as tx:
        await db.lock_migrations(tx)
        await tx.execute(_CREATE_VERSION_TABLE)


async def applied_versions(db: Database) -> list[int]:
    await _ensure_version_table(db)
    rows = await db.fetch("SELECT version FROM schema_version ORDER BY version")
    return [r["version"] for r in rows]


async def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration; return the ones this call applied.

    Raises:
        SchemaError: the database is newer than this code, or a step failed.
    """
    steps = available(db.dialect)
    done: list[Migration] = []
    await _ensure_version_table(db)
    for step in steps:
        async with db.transaction() as tx:
            await db.lock_migrations(tx)
            if await tx.fetchval("SELECT version FROM schema_version WHERE version = $1", step.version):
                continue
            try:
                await db.run_script(tx, step.sql)
            except Exception as exc:
                raise SchemaError(f"migration {step.version:04d}_{step.name} failed: {exc}") from exc
            await tx.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                step.version, step.name, utcnow(),
            )
            done.append(step)
    newest = await db.fetchval("SELECT MAX(version) FROM schema_version")
    known = steps[-1].version if steps else 0
    if newest is not None and newest > known:
        raise SchemaError(
            f"the database is at schema version {newest} but this roost knows only up to {known}: "
            "upgrade roost before serving this database"
        )
    return done


async def check_current(db: Database) -> None:
    """Raise SchemaError unless the database is at exactly the schema version this code ships."""
    have = await applied_versions(db)
    want = [m.version for m in available(db.dialect)]
    missing = sorted(set(want) - set(have))
    if missing:
        raise SchemaError(f"the database lacks migrations {missing}: run `roost migrate`")
    if have and want and have[-1] > want[-1]:
        raise SchemaError(
            f"the database is at schema version {have[-1]} but this roost knows only up to {want[-1]}: "
            "upgrade roost before serving this database"
        )
