"""Named SQL files: ``roost/storage/sql/<concern>.sql``, read once, a statement looked up by name.

The layout is procrastinate's ``sql/queries.sql``: a header line names each statement, comment
lines under it describe it. ``-- name: <name>`` is a statement both backends run; where they need
different ones, ``-- name: <name> (sqlite)`` and ``-- name: <name> (postgresql)`` sit side by
side. ``Queries.get(conn, name)`` picks the connection's version (``conn.dialect``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from roost.storage.database import Connection

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)(?: \((sqlite|postgresql)\))?\n(?:--.*\n)*", re.MULTILINE)


class Queries:
    """The statements of one file, by (name, backend or None for both)."""

    def __init__(self, text: str):
        parts = _HEADER.split(text)
        self._statements: dict[tuple[str, str | None], str] = {}
        for i in range(1, len(parts), 3):  # parts[0] is the file's header comment
            name, backend, statement = parts[i], parts[i + 1], parts[i + 2].strip()
            self._statements[(name, backend)] = statement

    def get(self, conn: Connection, name: str) -> str:
        """The statement ``name`` in ``conn``'s dialect (KeyError: no such statement)."""
        return self._statements.get((name, conn.dialect.name)) or self._statements[(name, None)]


@cache
def load(concern: str) -> Queries:
    """The statements of ``roost/storage/sql/<concern>.sql`` (read once per process)."""
    return Queries(resources.files("roost.storage").joinpath("sql", f"{concern}.sql").read_text("utf-8"))
