"""Named SQL files: ``roost/storage/sql/<concern>.sql``, read once, a statement looked up by name.

The layout is procrastinate's ``sql/queries.sql``: a header line names each statement, comment
lines under it describe it. ``-- name: <name>`` is a statement both backends run; where they need
different ones, ``-- name: <name> (sqlite)`` and ``-- name: <name> (postgresql)`` sit side by
side. ``Queries.get(conn, name)`` picks the connection's version (``conn.dialect``).

A statement may use a shared statement of its file as a part, named in braces: ``{digest_user}``
stands for that statement's text (one level deep), so statements that differ only in their
``WHERE`` write their common select list once.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from roost.storage.database import Connection

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)(?: \((sqlite|postgresql)\))?\n(?:--.*\n)*", re.MULTILINE)
_PART = re.compile(r"\{([a-z0-9_]+)\}")


class Queries:
    """The statements of one file, by (name, backend or None for both)."""

    def __init__(self, text: str):
        parts = _HEADER.split(text)
        self._statements: dict[tuple[str, str | None], str] = {}
        for i in range(1, len(parts), 3):  # parts[0] is the file's header comment
            name, backend, statement = parts[i], parts[i + 1], parts[i + 2].strip()
            self._statements[(name, backend)] = statement
        shared = {name: text for (name, backend), text in self._statements.items() if backend is None}
        for key, statement in self._statements.items():  # {name}: a shared statement's text, as a part
            self._statements[key] = _PART.sub(lambda m: shared.get(m.group(1), m.group(0)), statement)

    def get(self, conn: Connection, name: str) -> str:
        """The statement ``name`` in ``conn``'s dialect (KeyError: no such statement)."""
        return self._statements.get((name, conn.dialect.name)) or self._statements[(name, None)]


@cache
def load(concern: str) -> Queries:
    """The statements of ``roost/storage/sql/<concern>.sql`` (read once per process)."""
    return Queries(resources.files("roost.storage").joinpath("sql", f"{concern}.sql").read_text("utf-8"))
