"""Where the two SQL dialects differ, in one place: everything above ``roost/storage`` speaks one.

Every ``Connection`` (a pool, or one inside a transaction) has a ``dialect``; a repository builds
the few clauses that differ from it (``conn.dialect.in_list('$1')``) and never tests the
backend's name itself. Where a whole statement must differ, its two versions sit side by side
(``conn.dialect.pick(sqlite=..., postgresql=...)``), as the per-dialect migration files do.
Placeholders are ``$1, $2`` in both: the SQLite backend rewrites them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Dialect:
    name: str  # "sqlite" or "postgresql"

    @property
    def postgresql(self) -> bool:
        return self.name == "postgresql"

    def pick(self, *, sqlite: T, postgresql: T) -> T:
        """The SQLite or the PostgreSQL version of a statement (or of any value), side by side."""
        return postgresql if self.postgresql else sqlite

    def in_list(self, placeholder: str) -> str:
        """SQL for "is one of the list bound at ``placeholder``" (pass the list as one parameter).

        One parameter, not one per value, so the statement's text (and its prepared plan) is the
        same for every length: a PostgreSQL array, or on SQLite the JSON the list is stored as.
        """
        if self.postgresql:
            return f"= ANY({placeholder}::text[])"
        return f"IN (SELECT value FROM json_each({placeholder}))"

    def unindexed(self, column: str) -> str:
        """``column`` in a WHERE term that must not choose the plan: SQLite's ``+column`` keeps its
        planner off the indexes on that column (without ANALYZE it may prefer ``(status, ...)`` to
        the primary key of an ``id IN (...)`` list, a scan of every row of that status);
        PostgreSQL plans from statistics, so the column as it is."""
        return column if self.postgresql else f"+{column}"

    def for_update(self, *, skip_locked: bool = False, of: str | None = None) -> str:
        """The clause a claim appends to a SELECT inside a transaction to lock the rows it reads.

        PostgreSQL: `` FOR UPDATE [OF of] [SKIP LOCKED]``. SQLite returns "": its ``BEGIN
        IMMEDIATE`` transaction already holds the one write lock, which serialises claims.
        ``of`` names the table alias to lock when the SELECT joins.
        """
        if not self.postgresql:
            return ""
        return " FOR UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip_locked else "")

    @property
    def greatest(self) -> str:
        """The name of the two-argument maximum (``GREATEST``; SQLite's scalar ``MAX``)."""
        return self.pick(sqlite="MAX", postgresql="GREATEST")

    @property
    def least(self) -> str:
        """The name of the two-argument minimum (``LEAST``; SQLite's scalar ``MIN``)."""
        return self.pick(sqlite="MIN", postgresql="LEAST")

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of top-level ``key`` of the JSON in ``column``."""
        return self.pick(sqlite=f"json_extract({column}, '$.{key}')", postgresql=f"({column} ->> '{key}')")


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")
