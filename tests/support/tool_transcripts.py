"""A generator of Claude Code transcript trees with tool calls, and the true tool counts it built in.

The truth is kept as the tree is made, not by reading it back: each call is recorded (user, id ->
day, tool) when its ``tool_use`` block is first written, each failure when its ``tool_result`` with
``is_error: true`` is written for a call that exists. Like real transcripts (and the ideas of
``tests.support.transcripts``): an API message is streamed as several lines with the same message id,
either one block a line or as growing snapshots that repeat the earlier blocks (a call then appears on
several lines, possibly on both sides of midnight); resumed sessions copy earlier sessions' lines into
new files, and may carry the result of the earlier session's last call; timestamps carry offsets, so the
UTC day differs from the local one. Among them, lines that count nothing: ``<synthetic>`` API errors,
summaries, lines that are not JSON or not objects, ``tool_use`` blocks without an id, lines without a
timestamp, results with ``is_error`` false or the string "true", and failures of calls never made.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = ["Bash", "Read", "Edit", "Grep", "Glob", "Write", "Task", "TodoWrite", "WebFetch",
         "mcp__github__create_pull_request_review_comment_for_a_very_long_tool_name", "Ünïcode-tööl"]


@dataclass
class Truth:
    """What the tree holds: calls by (user, id) -> (day, tool), failed calls by (user, id)."""

    calls: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    failed: set[tuple[str, str]] = field(default_factory=set)
    across_midnight: int = 0  # calls whose lines fall on two UTC days (the first line's day counts)

    def totals(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(day, user, tool) -> (calls, failed)."""
        calls: Counter[tuple[str, str, str]] = Counter()
        failed: Counter[tuple[str, str, str]] = Counter()
        for (user, call_id), (day, tool) in self.calls.items():
            calls[(day, user, tool)] += 1
            if (user, call_id) in self.failed:
                failed[(day, user, tool)] += 1
        return {key: (n, failed[key]) for key, n in calls.items()}


def _stamp(at: dt.datetime, rng: random.Random) -> str:
    """``at`` written as Claude Code does (UTC, ``Z``), or now and then with a local offset."""
    if rng.random() < 0.2:
        zone = dt.timezone(dt.timedelta(hours=rng.choice([-8, 2, 5, 9])))
        return at.astimezone(zone).isoformat(timespec="milliseconds")
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@dataclass
class _Writer:
    rng: random.Random
    user: str
    truth: Truth
    session_id: str
    at: dt.datetime
    lines: list[str] = field(default_factory=list)
    parent: str | None = None

    def dump(self, entry: object) -> str:
        """A line as Claude Code writes it (JSON.stringify: no spaces) or, now and then, as Python does."""
        return json.dumps(entry, separators=(",", ":") if self.rng.random() < 0.5 else None)

    def entry(self, kind: str, **extra: object) -> dict:
        me = str(uuid.UUID(int=self.rng.getrandbits(128)))
        out = {"parentUuid": self.parent, "isSidechain": False, "userType": "external", "cwd": "/home/dev/p",
               "sessionId": self.session_id, "version": "1.0.83", "type": kind, "uuid": me,
               "timestamp": _stamp(self.at, self.rng), **extra}
        self.parent = me
        return out

    def tick(self, low: int = 1, high: int = 30) -> None:
        self.at += dt.timedelta(seconds=self.rng.randint(low, high))

    def result(self, call_id: str, *, error: object) -> None:
        """A user line answering ``call_id``; a failure when ``error`` is True (recorded if the call exists)."""
        self.tick()
        block: dict = {"tool_use_id": call_id, "type": "tool_result", "content": "out " * self.rng.randint(5, 400)}
        if error is not None:
            block["is_error"] = error
        self.lines.append(self.dump(self.entry("user", message={"role": "user", "content": [block]})))
        if error is True and (self.user, call_id) in self.truth.calls:
            self.truth.failed.add((self.user, call_id))

    def message(self, snapshots: bool) -> list[str]:
        """One API message as several lines; returns the ids of its calls (results not yet written)."""
        msg_id, req_id = f"msg_{self.rng.getrandbits(96):024x}", f"req_{self.rng.getrandbits(96):024x}"
        kinds = [self.rng.choice(["text", "thinking", "tool_use", "tool_use"]) for _ in range(self.rng.randint(1, 5))]
        blocks: list[dict] = []
        calls: list[str] = []
        if snapshots and self.rng.random() < 0.3:  # streamed across midnight (UTC)
            self.at = dt.datetime.combine(self.at.astimezone(dt.UTC).date() + dt.timedelta(days=1), dt.time(),
                                          dt.UTC) - dt.timedelta(seconds=self.rng.randint(1, 600))
            kinds = ["tool_use", *kinds]
        for kind in kinds:
            self.tick(0, 2000)  # now and then across midnight between two lines of one message
            if kind == "tool_use":
                call_id = f"toolu_{self.rng.getrandbits(64):016x}"
                tool = self.rng.choice(TOOLS)
                blocks.append({"type": "tool_use", "id": call_id, "name": tool, "input": {"command": "ls"}})
                self.truth.calls[(self.user, call_id)] = (self.at.astimezone(dt.UTC).date().isoformat(), tool)
                calls.append(call_id)
            else:
                blocks.append({"type": kind, kind: "words " * self.rng.randint(1, 50)})
            day = self.at.astimezone(dt.UTC).date().isoformat()
            if snapshots:
                self.truth.across_midnight += sum(1 for c in calls if self.truth.calls[(self.user, c)][0] != day)
            content = blocks if snapshots else blocks[-1:]
            self.lines.append(self.dump(self.entry(
                "assistant", requestId=req_id,
                message={"id": msg_id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
                         "content": list(content), "usage": {"input_tokens": 3, "output_tokens": len(blocks)}})))
        return calls

    def noise(self) -> None:
        """A line that counts nothing."""
        kind = self.rng.randrange(7)
        if kind == 0:
            self.lines.append(self.dump(self.entry("assistant", isApiErrorMessage=True, message={
                "id": str(uuid.uuid4()), "model": "<synthetic>", "role": "assistant",
                "content": [{"type": "text", "text": "API Error: 529 overloaded"}]})))
        elif kind == 1:
            self.lines.append('{"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "toolu_cut')
        elif kind == 2:
            self.lines.append('["tool_use", "is_error"]')
        elif kind == 3:  # a call with no id, and one with no timestamp
            self.lines.append(self.dump(self.entry("assistant", message={
                "id": "msg_noid", "role": "assistant", "content": [{"type": "tool_use", "name": "Bash"}]})))
            line = self.entry("assistant", message={"id": "msg_nots", "role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_nots{self.rng.getrandbits(32):08x}", "name": "Bash"}]})
            del line["timestamp"]
            self.lines.append(self.dump(line))
        elif kind == 4:  # the failure of a call that was never made
            self.result(f"toolu_orphan{self.rng.getrandbits(32):08x}", error=True)
        elif kind == 5:
            self.lines.append(self.dump({"type": "summary", "summary": "tool_use is_error", "leafUuid": self.parent}))
        else:  # a user's text that talks about "tool_use" and "is_error"
            self.lines.append(self.dump(self.entry("user", message={
                "role": "user", "content": 'why is "is_error" true on my "tool_use"?'})))


def _session(w: _Writer, turns: int, *, leave_last_open: bool) -> str | None:
    """Write ``turns`` turns; with ``leave_last_open``, the last call gets no result (returns its id)."""
    open_call = None
    for turn in range(turns):
        w.tick(5, 900)
        w.lines.append(w.dump(w.entry("user", message={"role": "user", "content": "please fix the tests"})))
        for _ in range(w.rng.randint(1, 3)):
            calls = w.message(snapshots=w.rng.random() < 0.4)
            for n, call_id in enumerate(calls):
                if leave_last_open and turn == turns - 1 and n == len(calls) - 1:
                    open_call = call_id
                    continue
                w.result(call_id, error=w.rng.choices([True, False, None, "true"], [3, 4, 4, 1])[0])
            if w.rng.random() < 0.3:
                w.noise()
    return open_call


def generate_tree(root: Path, rng: random.Random, *, users: int = 3, sessions: int = 4, turns: int = 5,
                  start: dt.datetime = dt.datetime(2025, 6, 1, 20, 0, tzinfo=dt.UTC)) -> Truth:
    """Write ``<root>/<user>/<session>.jsonl`` for a few users and return the truth of what it holds.

    About a third of the sessions resume an earlier one of the same user: its lines copied first
    (same ids), then, when the earlier one ended on a call without result, that call's result, then
    new turns.
    """
    truth = Truth()
    for u in range(users):
        user = f"user{u}"
        (root / user).mkdir(parents=True, exist_ok=True)
        written: list[tuple[list[str], str | None]] = []
        at = start + dt.timedelta(hours=u * 7)
        for s in range(sessions):
            w = _Writer(rng, user, truth, str(uuid.UUID(int=rng.getrandbits(128))), at)
            if written and rng.random() < 0.35:
                earlier, open_call = rng.choice(written)
                w.lines.extend(earlier)
                if open_call is not None:
                    w.result(open_call, error=rng.random() < 0.5)
            open_call = _session(w, turns, leave_last_open=rng.random() < 0.5)
            (root / user / f"s{s:02d}.jsonl").write_text("".join(line + "\n" for line in w.lines))
            written.append((w.lines, open_call))
            at = w.at + dt.timedelta(hours=rng.randint(1, 30))
    return truth


def append_turn(path: Path, rng: random.Random, user: str, truth: Truth, at: dt.datetime) -> None:
    """Append to a transcript one new turn with calls and results, plus an exact copy of one of its lines."""
    w = _Writer(rng, user, truth, "appended", at)
    for call_id in w.message(snapshots=True):
        w.result(call_id, error=True)
    w.lines.append(w.lines[0])  # the same line twice: still one call
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in w.lines))
