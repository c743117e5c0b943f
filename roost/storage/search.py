"""Console search: items, mail, handoffs and dispatch by id, ref, subject, sender and recipient.

Every match is an index range, never a scan of the table: an id is one equality on a primary key,
a ref is a byte-order prefix range, a subject, sender or recipient a prefix range over its ASCII
lower case (migration 0035 builds the indexes; each ends in ``id``, the order results come out in).
So ``%``, ``_``, regex-looking text and quotes are only characters, and a query reads at most
``offset + limit + 1`` index entries per source, however many rows the table holds.

Bulk targets (``bulk_ids``) read the status indexes the same way, at most ``cap + 1`` ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from roost.storage.database import Connection, Row

KINDS = ("item", "mail", "handoff", "dispatch")
FIELDS = ("any", "id", "ref", "subject", "sender", "recipient")
MAX_QUERY_CHARS = 200  # a longer query is cut to this (a prefix of it still matches what it would)
ID_SHAPE = re.compile(r"^([a-z]{2,4})_[0-9a-z]{26}$")
_TOP = 0x10FFFF


def clean_query(text: str) -> tuple[str, bool]:
    """The query as searched, and whether it was shortened.

    NUL and lone surrogates cannot be stored in (or sent to) PostgreSQL text, so they are dropped;
    surrounding space is stripped; at most ``MAX_QUERY_CHARS`` are kept.
    """
    kept = "".join(ch for ch in text if ch != "\x00" and not 0xD800 <= ord(ch) <= 0xDFFF).strip()
    return kept[:MAX_QUERY_CHARS], len(kept) > MAX_QUERY_CHARS


def fold(text: str) -> str:
    """ASCII lower case, as SQLite's ``lower()`` and PostgreSQL's ``lower(x COLLATE "C")`` fold."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``, in code point (= UTF-8
    byte) order; None when there is none (the prefix is all U+10FFFF)."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates are not characters
        if code <= _TOP:
            return "".join(chars) + chr(code)
    return None


@dataclass(frozen=True)
class Source:
    """One indexed way to match: a kind, a field, and the SQL of both dialects."""

    kind: str
    field: str
    table: str
    columns: str
    sqlite_key: str
    postgres_key: str
    exact: bool = False  # equality (an id, a user id, a Message-ID) rather than a prefix
    unique: bool = False  # an equality on a unique column: one row, nothing to order
    folded: bool = False  # the key is ASCII lower case; the query is folded to match

    def statement(self, conn: Connection, *, limit: int, bounded: bool = True) -> str:
        """The SELECT; ``bounded``: a prefix range has its upper end ($2). Both ends are index
        conditions (an ``$2 IS NULL OR`` would make the upper one a filter, read to the index's end)."""
        key = conn.dialect.pick(sqlite=self.sqlite_key, postgresql=self.postgres_key)
        if self.exact:
            where = f"{key} = $1"
        else:
            where = f"{key} >= $1" + (f" AND {key} < $2" if bounded else "")
        order = "" if self.unique else " ORDER BY " + ("id" if self.exact else f"{key}, id")
        return f"SELECT {self.columns} FROM {self.table} WHERE {where}{order} LIMIT {int(limit)}"


_ITEM = ("'item' AS kind, id, scout_id AS parent_id, source_msg_ref AS ref, raw_subject AS subject, sender,"
         " user_id AS recipient, status, created_at")
_MAIL = ("'mail' AS kind, id, recipient_user_id AS parent_id, message_id AS ref, subject, NULL AS sender,"
         " to_addr AS recipient, status, created_at")
_HANDOFF = ("'handoff' AS kind, id, account_id AS parent_id, subject_ref AS ref, intent AS subject,"
            " created_by AS sender, claimed_by AS recipient, status, created_at")
_DISPATCH = ("'dispatch' AS kind, id, batch_id AS parent_id, NULL AS ref, NULL AS subject, device_id AS sender,"
             " to_handle AS recipient, status, created_at")


def _c(column: str) -> str:
    return f'({column} COLLATE "C")'


def _lc(column: str) -> tuple[str, str]:
    return f"lower({column})", f'lower({column} COLLATE "C")'


SOURCES: tuple[Source, ...] = (
    Source("item", "id", "scout_items", _ITEM, "id", "id", exact=True, unique=True),
    Source("mail", "id", "outbox", _MAIL, "id", "id", exact=True, unique=True),
    Source("handoff", "id", "handoffs", _HANDOFF, "id", "id", exact=True, unique=True),
    Source("dispatch", "id", "outreach_items", _DISPATCH, "id", "id", exact=True, unique=True),
    Source("item", "ref", "scout_items", _ITEM, "source_msg_ref", _c("source_msg_ref")),
    Source("mail", "ref", "outbox", _MAIL, "message_id", "message_id", exact=True, unique=True),
    Source("handoff", "ref", "handoffs", _HANDOFF, "subject_ref", _c("subject_ref")),
    Source("item", "subject", "scout_items", _ITEM, *_lc("raw_subject"), folded=True),
    Source("mail", "subject", "outbox", _MAIL, *_lc("subject"), folded=True),
    Source("item", "sender", "scout_items", _ITEM, *_lc("sender"), folded=True),
    Source("mail", "recipient", "outbox", _MAIL, *_lc("to_addr"), folded=True),
    Source("mail", "recipient", "outbox", _MAIL, "recipient_user_id", "recipient_user_id", exact=True),
    Source("dispatch", "recipient", "outreach_items", _DISPATCH, *_lc("to_handle"), folded=True),
)

# Which table an id's prefix names: an id is looked up only where it can be.
ID_PREFIXES = {"prp": "item", "msg": "mail", "hnd": "handoff", "oit": "dispatch"}


def sources_for(query: str, *, kind: str | None, field: str) -> list[Source]:
    """The sources a query is matched against (each an index range), in a fixed order."""
    shape = ID_SHAPE.match(query)
    chosen = []
    for source in SOURCES:
        if kind is not None and source.kind != kind:
            continue
        if field != "any" and source.field != field:
            continue
        if source.field == "id" and (shape is None or ID_PREFIXES.get(shape[1]) != source.kind):
            continue
        if source.field == "recipient" and source.exact and not query.startswith("usr_"):
            continue  # a user id; a name or address matches the prefix sources
        chosen.append(source)
    return chosen


async def search(conn: Connection, query: str, *, kind: str | None, field: str, offset: int,
                 limit: int) -> tuple[list[Row], bool]:
    """Rows ``offset .. offset + limit`` of the matches (each source's in its index order, the
    sources one after another), and whether there are more. The caller bounds offset and limit."""
    if not query:
        return [], False
    want = offset + limit + 1
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    for source in sources_for(query, kind=kind, field=field):
        value = fold(query) if source.folded else query
        end = None if source.exact else prefix_end(value)
        statement = source.statement(conn, limit=want, bounded=end is not None)
        found = await conn.fetch(statement, value, *([end] if end is not None else []))
        for row in found:
            key = (row["kind"], row["id"])
            if key not in seen:  # an item whose ref and subject both match is listed once
                seen.add(key)
                rows.append(row)
        if len(rows) >= want:
            break
    return rows[offset:offset + limit], len(rows) > offset + limit


# -- bulk targets ---------------------------------------------------------------------------------

BULK_KINDS = {
    # kind: (table, the column of its parent, scope columns by id prefix)
    "item": ("scout_items", "scout_id", {"sct": "scout_id", "usr": "user_id"}),
    "mail": ("outbox", "recipient_user_id", {"usr": "recipient_user_id"}),
    "batch": ("outreach_batches", "account_id", {"acc": "account_id", "obt": "id"}),  # an account's, or one
}


def bulk_statement(kind: str, *, status: str, scope: str | None, cap: int) -> tuple[str, list[str]]:
    """The SELECT of ``bulk_targets`` and its arguments (apart, so a test can read its plan)."""
    table, parent, scopes = BULK_KINDS[kind]
    where, args = ["status = $1"], [status]
    if scope:
        column = scopes[scope.split("_", 1)[0]]
        args.append(scope)
        where.append(f"{column} = ${len(args)}")
    # Each filter has an index ending in id, so the order costs nothing; items of every scout have
    # none (their status index ends in expiry), so they come in that index's order instead.
    order = "" if kind == "item" and not scope else " ORDER BY id"
    return (f"SELECT id, {parent} AS parent_id FROM {table} WHERE {' AND '.join(where)}{order} LIMIT {int(cap) + 1}",
            args)


async def bulk_targets(conn: Connection, kind: str, *, status: str, scope: str | None, cap: int) -> list[Row]:
    """The ``kind`` rows in ``status`` (within ``scope``: a scout, user or account id) as ``id`` and
    ``parent_id``, in id order, at most ``cap + 1`` (one more than the cap says there are more).
    ``kind`` and the scope's prefix are checked by the caller (``scope_ok``); only values are bound.
    """
    sql, args = bulk_statement(kind, status=status, scope=scope, cap=cap)
    return await conn.fetch(sql, *args)


def scope_ok(kind: str, scope: str | None) -> bool:
    """Whether ``scope`` (None, or an id) may narrow a bulk filter of ``kind``."""
    if not scope:
        return True
    shape = ID_SHAPE.match(scope)
    return shape is not None and shape[1] in BULK_KINDS[kind][2]
