"""Limits on JSON from outside: nesting depth, checked without recursion.

``json.loads`` answers deep nesting with ``RecursionError`` (not a ``ValueError``), so a body or a
WebSocket frame of 200,000 ``[`` escaped the usual "bad JSON" handling and logged a traceback. Both
entry points (``roost.http.app.RoostRequest.get_json`` and ``roost.runtime.frames.parse``) call
``loads`` here. A document that does parse is then held to ``MAX_DEPTH`` levels under each of its
top-level fields: the free-form fields (``payload``, ``snapshot``, ``config``, ...) are stored and sent
on, and a deeply nested one would make every later reader (the JSON encoders of the database drivers,
the API's own responses, a device) recurse as deep.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from roost.errors import TooDeep

MAX_DEPTH = 32  # levels inside one top-level field; the body or frame itself is one more


def loads(text: str | bytes, *, limit: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``TooDeep`` for nesting) and never ``RecursionError``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep("body", limit) from None
    check_depth(value, limit=limit, raw=text)
    return value


def check_depth(value: Any, *, limit: int = MAX_DEPTH, raw: str | bytes | None = None) -> None:
    """Raise ``TooDeep`` when a top-level field of ``value`` (or ``value`` itself, if not an object) nests
    deeper than ``limit``.

    ``raw``, the text ``value`` was parsed from, lets small documents skip the walk: a document cannot
    nest deeper than it has ``[`` and ``{``, and counting those is a fast C loop.
    """
    if raw is not None:
        opens = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
        if opens <= limit:
            return
    if isinstance(value, dict):
        for key, item in value.items():
            if _deeper_than(item, limit):
                raise TooDeep(str(key)[:64], limit)
    elif _deeper_than(value, limit + 1):
        raise TooDeep("body", limit)


def _deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` holds containers more than ``limit`` levels deep (a loop, not recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON ``value``, object keys included (a loop, not recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
