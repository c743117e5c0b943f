"""A generator of realistic Claude Code transcripts (``<user>/<session>.jsonl``) and their true usage.

Like real transcripts: one API message is written as several lines (thinking, text, tool_use
blocks), each repeating ``message.id`` and ``requestId`` with a running usage snapshot whose
``output_tokens`` grows line by line; user turns and tool results sit between them (often much
longer than the assistant lines); there are summary lines, ``<synthetic>`` API-error messages and
lines without usage; a resumed session copies the earlier session's lines into a new file with
the same ids. ``Session.expected`` is the exact answer: per (day, model), each message counted
once with the largest value of each counter.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

MODELS = ["claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-5-haiku-20241022"]
COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass
class Message:
    message_id: str
    request_id: str
    model: str
    day: str
    final: dict[str, int]


@dataclass
class Session:
    session_id: str
    lines: list[str] = field(default_factory=list)
    messages: dict[tuple[str, str], Message] = field(default_factory=dict)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def expected(self) -> dict[tuple[str, str], dict[str, int]]:
        return expected_totals([self])


def expected_totals(sessions: list[Session]) -> dict[tuple[str, str], dict[str, int]]:
    """(day, model) → counter totals, each message once (sessions may share messages)."""
    messages: dict[tuple[str, str], Message] = {}
    for s in sessions:
        messages.update(s.messages)
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for m in messages.values():
        row = totals[(m.day, m.model)]
        for c in COUNTERS:
            row[c] += m.final[c]
    return dict(totals)


def _stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def generate_session(rng: random.Random, *, start: dt.datetime, turns: int = 6, cwd: str = "/home/dev/project",
                     big_tool_output: int = 4000) -> Session:
    """A session of ``turns`` user turns, each answered by one to four API messages."""
    session = Session(str(uuid.UUID(int=rng.getrandbits(128))))
    at = start
    parent: str | None = None

    def base(kind: str) -> dict:
        nonlocal parent
        me = str(uuid.UUID(int=rng.getrandbits(128)))
        entry = {"parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": cwd,
                 "sessionId": session.session_id, "version": "1.0.83", "gitBranch": "main", "type": kind,
                 "uuid": me, "timestamp": _stamp(at)}
        parent = me
        return entry

    for _ in range(turns):
        at += dt.timedelta(seconds=rng.randint(5, 600))
        user = base("user")
        user["message"] = {"role": "user", "content": "please " + " ".join(rng.choice(
            ["fix", "the", "test", "refactor", "module", "add", "docs", "why", "fails"]) for _ in range(30))}
        session.lines.append(json.dumps(user))
        model = rng.choice(MODELS)
        for _call in range(rng.randint(1, 4)):
            at += dt.timedelta(seconds=rng.randint(1, 30))
            msg_id = f"msg_{rng.getrandbits(96):024x}"
            req_id = f"req_{rng.getrandbits(96):024x}"
            usage = {"input_tokens": rng.randint(1, 50), "cache_creation_input_tokens": rng.randint(0, 20000),
                     "cache_read_input_tokens": rng.randint(0, 150000), "output_tokens": rng.randint(1, 5)}
            blocks = rng.sample(["thinking", "text", "tool_use", "tool_use"], rng.randint(1, 4))
            for i, block in enumerate(blocks):
                if i:
                    usage = {**usage, "output_tokens": usage["output_tokens"] + rng.randint(1, 400)}
                if block == "thinking":
                    content = {"type": "thinking", "thinking": "Let me think. " * rng.randint(5, 60),
                               "signature": "sig" + "x" * 200}
                elif block == "text":
                    content = {"type": "text", "text": "Here is the change. " * rng.randint(2, 40)}
                else:
                    content = {"type": "tool_use", "id": f"toolu_{rng.getrandbits(64):016x}", "name": "Bash",
                               "input": {"command": "pytest -q tests/unit", "description": "run tests"}}
                line = base("assistant")
                line["requestId"] = req_id
                line["message"] = {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                   "content": [content], "stop_reason": None, "stop_sequence": None,
                                   "usage": {**usage, "service_tier": "standard"}}
                session.lines.append(json.dumps(line))
                if block == "tool_use":
                    result = base("user")
                    result["message"] = {"role": "user", "content": [{
                        "tool_use_id": content["id"], "type": "tool_result",
                        "content": "ok " * rng.randint(big_tool_output // 6, big_tool_output // 3)}]}
                    result["toolUseResult"] = {"stdout": "passed", "stderr": "", "interrupted": False}
                    session.lines.append(json.dumps(result))
            day = dt.datetime.fromisoformat(json.loads(session.lines[-1])["timestamp"].replace("Z", "+00:00"))
            first_line_day = _first_day(session, msg_id) or day.date().isoformat()
            session.messages[(msg_id, req_id)] = Message(msg_id, req_id, model, first_line_day,
                                                         {c: usage[c] for c in COUNTERS})
        if rng.random() < 0.2:  # an API error: counts nothing
            err = base("assistant")
            err["message"] = {"id": str(uuid.UUID(int=rng.getrandbits(128))), "model": "<synthetic>",
                              "role": "assistant", "type": "message",
                              "content": [{"type": "text", "text": "API Error: 529 overloaded"}],
                              "usage": dict.fromkeys(COUNTERS, 0)}
            err["isApiErrorMessage"] = True
            session.lines.append(json.dumps(err))
    session.lines.append(json.dumps({"type": "summary", "summary": "Fixing the tests", "leafUuid": parent}))
    return session


def _first_day(session: Session, msg_id: str) -> str | None:
    for line in session.lines:
        entry = json.loads(line)
        if entry.get("message", {}).get("id") == msg_id:
            return entry["timestamp"][:10]
    return None


def resumed(rng: random.Random, earlier: Session, *, start: dt.datetime, turns: int = 3) -> Session:
    """A resumed session: the earlier session's lines copied in first (same ids), then new turns."""
    new = generate_session(rng, start=start, turns=turns)
    copied = Session(new.session_id, [*earlier.lines, *new.lines], {**earlier.messages, **new.messages})
    return copied
