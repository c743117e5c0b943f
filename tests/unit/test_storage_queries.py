"""Named SQL files (roost.storage.queries): headers, per-backend variants side by side."""

from __future__ import annotations

import pytest

from roost.storage.dialect import POSTGRESQL, SQLITE, Dialect
from roost.storage.queries import Queries, load

TEXT = """-- A file's opening comment is not a statement.

-- name: shared
-- A description under the header is left out.
SELECT 1

-- name: forked (sqlite)
SELECT 'sqlite'

-- name: forked (postgresql)
-- Described too.
SELECT 'postgresql'
"""


class _On:
    def __init__(self, dialect: Dialect):
        self.dialect = dialect


def test_a_backend_gets_its_own_variant_or_the_shared_statement() -> None:
    queries = Queries(TEXT)
    assert queries.get(_On(SQLITE), "shared") == queries.get(_On(POSTGRESQL), "shared") == "SELECT 1"
    assert queries.get(_On(SQLITE), "forked") == "SELECT 'sqlite'"
    assert queries.get(_On(POSTGRESQL), "forked") == "SELECT 'postgresql'"


def test_a_statement_uses_a_shared_statement_named_in_braces_as_a_part() -> None:
    queries = Queries(TEXT + """
-- name: columns
SELECT a, b FROM t

-- name: one (sqlite)
{columns} WHERE a = $1 AND b = '{not_a_statement}'

-- name: one (postgresql)
{columns} WHERE a = $1
""")
    assert queries.get(_On(SQLITE), "one") == "SELECT a, b FROM t WHERE a = $1 AND b = '{not_a_statement}'"
    assert queries.get(_On(POSTGRESQL), "one") == "SELECT a, b FROM t WHERE a = $1"


def test_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        Queries(TEXT).get(_On(SQLITE), "missing")


def test_every_digest_statement_exists_for_both_backends() -> None:
    queries = load("digests")
    names = {name for name, _ in queries._statements}
    assert "eligible_notifications" in names
    for name in names:
        for dialect in (SQLITE, POSTGRESQL):
            assert queries.get(_On(dialect), name).strip()
