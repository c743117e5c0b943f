"""The ``tools`` processor: tool calls and failed tool results of Claude Code transcripts, per user,
UTC day and tool name.

A call is a ``tool_use`` block in an assistant message (its ``id`` and ``name``); a failure is a
``tool_result`` block with ``is_error: true`` in a user message, which names its call by
``tool_use_id``. A transcript writes one API message as several lines (snapshots repeating the
message id), and resumed sessions copy earlier lines into other files, so each call and failure is
keyed by its ``tool_use`` id and stored once (``roost.storage.tools``): split lines, copies, rescans
and appended lines count each call once. A call's day is its line's ``timestamp`` (UTC); lines
without a valid timestamp, blocks without an id, and lines that are not JSON objects count nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterator

from roost.plugins.processors import Processor
from roost.storage import tools as tools_store
from roost.storage.database import Connection

# Only lines holding one of these can count: a call's block type, or a failure's flag as JSON.stringify
# (Claude Code) or Python's json.dumps writes it. Results without an error (most of a transcript's bytes)
# are never parsed.
_MARKS = (b'"tool_use"', b'"is_error":true', b'"is_error": true')
_MAX = 200  # longest id or tool name kept


def _text(value: Any) -> str | None:
    """A non-empty string fit to store (at most _MAX characters, no NUL, no lone surrogate), else None."""
    if not isinstance(value, str) or not value:
        return None
    value = value[:_MAX].replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def _when(entry: dict[str, Any]) -> dt.datetime | None:
    stamp = entry.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        at = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def parse_line(line: bytes) -> list[tools_store.ToolItem]:
    """The calls and failures one transcript line reports (none for anything else)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return []
    if not isinstance(entry, dict):
        return []
    message = entry.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return []
    at = _when(entry)
    if at is None:
        return []
    role = message.get("role")
    found: list[tools_store.ToolItem] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if role == "assistant" and kind == "tool_use":
            call_id, name = _text(block.get("id")), _text(block.get("name"))
            if call_id and name:
                found.append(tools_store.ToolCall(call_id, name, at.date().isoformat(), at))
        elif role == "user" and kind == "tool_result" and block.get("is_error") is True:
            call_id = _text(block.get("tool_use_id"))
            if call_id:
                found.append(tools_store.ToolFailure(call_id, at))
    return found


def candidate_lines(block: bytes) -> Iterator[bytes]:
    """The lines of ``block`` that hold one of the marks, each once, in order (the rest is never split)."""
    nxt = [block.find(m) for m in _MARKS]
    pos = 0
    while True:
        for i, mark in enumerate(_MARKS):
            if 0 <= nxt[i] < pos:
                nxt[i] = block.find(mark, pos)
        hits = [h for h in nxt if h >= 0]
        if not hits:
            return
        hit = min(hits)
        start = block.rfind(b"\n", 0, hit) + 1
        end = block.find(b"\n", hit)
        if end < 0:
            end = len(block)
        yield block[start:end]
        pos = end + 1


class ToolsProcessor(Processor):
    name = "tools"
    default_interval_s = 600.0

    def extract(self, username: str, lines: bytes) -> list[tools_store.ToolItem]:
        """Parse only the lines that mention ``"tool_use"`` or ``"is_error": true``."""
        found: list[tools_store.ToolItem] = []
        for line in candidate_lines(lines):
            found.extend(parse_line(line))
        return found

    async def store(self, conn: Connection, username: str, items: list[tools_store.ToolItem]) -> None:
        await tools_store.record(conn, username, items)
