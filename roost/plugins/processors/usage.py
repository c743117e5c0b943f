"""The ``usage`` processor: token usage of Claude Code transcripts, per user, UTC day and model.

A transcript writes one API message as several lines (one per content block) that repeat the
same ``message.id`` and ``requestId``, each carrying a running snapshot of ``message.usage``
(``output_tokens`` grows from line to line); resumed sessions and sidechains copy earlier
messages into other files with the same ids. So a message is keyed by (user, message.id,
requestId) and stored once, each counter being the largest value seen on any of its lines, in
any file, run or order (the upsert in ``roost.storage.usage`` keeps the maximum). Lines of model
``<synthetic>`` and lines without usage count nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import orjson

from roost.plugins.processors import Processor
from roost.storage import usage as usage_store
from roost.storage.database import Connection

COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_MARK = b'"usage"'
# A letter of "usage" written as a \u escape (JSON escapes are lowercase ``\u``; these hex digits have no letters).
_ESCAPED = re.compile(rb"\\u00(?:6[157]|7[35])")
_NUL = b"\x00"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_line(line: bytes) -> usage_store.MessageUsage | None:
    """The usage a transcript line reports, or None when it reports none that counts."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson is stricter than the standard library (NaN, integers beyond 64 bits, lone surrogates):
        # what it refuses is decoded as before, so the totals are those ``json.loads`` gives.
        try:
            entry = json.loads(line)
        except ValueError:
            return None
    if not isinstance(entry, dict):
        return None
    message = entry.get("message")
    if not isinstance(message, dict):
        return None
    usage = message.get("usage")
    model = message.get("model")
    message_id = message.get("id")
    if not isinstance(usage, dict) or not isinstance(message_id, str) or not message_id:
        return None
    if not isinstance(model, str) or not model or model == "<synthetic>":
        return None
    stamp = entry.get("timestamp")
    try:
        at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None
    except ValueError:
        at = None
    if at is None:
        return None
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    request_id = entry.get("requestId")
    return usage_store.MessageUsage(
        message_id=message_id[:200],
        request_id=request_id[:200] if isinstance(request_id, str) else "",
        day=at.date().isoformat(),
        model=model[:200],
        seen_at=at,
        counts=tuple(_count(usage.get(name)) for name in COUNTERS),  # type: ignore[arg-type]
    )


class UsageProcessor(Processor):
    name = "usage"
    default_interval_s = 600.0
    readers = 1  # parsing holds the GIL: on the 2-core bench a first pass took 3.2 s with one reader, 3.5 with two

    def extract(self, username: str, lines: bytes) -> list[usage_store.MessageUsage]:
        """Parse only the lines that can carry usage (most of a transcript is user text and tool output).

        A line whose JSON has a ``usage`` key holds the bytes ``"usage"``, unless a letter of the key is
        written as a ``\\u`` escape (``\\u0075`` ...), or the line is not UTF-8 (``json.loads`` also
        reads UTF-16 and UTF-32, whose bytes hold NULs). A block with neither is searched for
        ``"usage"`` only; otherwise each of its lines holding any of the three is parsed. So no line
        that counts is ever skipped (``tests/unit/test_usage_lines.py`` compares with parsing every line).
        """
        if _NUL in lines or _ESCAPED.search(lines):
            candidates = (line for line in lines.split(b"\n")
                          if _MARK in line or _NUL in line or _ESCAPED.search(line))
            return [item for line in candidates if (item := parse_line(line)) is not None]
        found: list[usage_store.MessageUsage] = []
        pos = 0
        while True:
            hit = lines.find(_MARK, pos)
            if hit < 0:
                break
            start = lines.rfind(b"\n", 0, hit) + 1
            end = lines.find(b"\n", hit)
            if end < 0:
                end = len(lines)
            item = parse_line(lines[start:end])
            if item is not None:
                found.append(item)
            pos = end + 1
        return found

    async def store(self, conn: Connection, username: str, items: list[usage_store.MessageUsage]) -> None:
        await usage_store.record(conn, username, items)
