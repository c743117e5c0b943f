"""Property-based frames against the device WebSocket of a live ``roost serve`` (issue 17 item 7).

Schemathesis covers the HTTP API; this covers what it cannot reach. Hypothesis builds frames of every
client type (``device_hello``, ``register``, ``ping``, ``pong``, ``scout_proposal_ack``,
``send_result``): valid shapes with wrong values, unknown types, non-objects, random bytes, text
that is not JSON, nesting far past the depth limit, and strings past the frame limit. Each goes to
a real server process, on SQLite and on PostgreSQL, before authentication and after registration.

Every frame must be answered with an ``error`` frame or a defined close code (1008 policy, 1009 too
big) when it is invalid by construction; a well-formed one may be answered or not, but the socket
must still answer a ping afterwards (or have closed with a defined code). After the run the server's
log holds no traceback and no error line. Bounded: a modest ``max_examples`` and a per-example
deadline keep the file to seconds.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from tests.support.server import SERVICE_TOKEN, ServerProcess

pytestmark = pytest.mark.e2e

DEFINED_CLOSES = {1000, 1001, 1008, 1009, 1013}
FRAME_LIMIT = 64 * 1024  # the server's default ws_max_frame_bytes
# Per category of frames (below), so each category gets its examples rather than a share of one draw.
FUZZ = settings(max_examples=20, deadline=5000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


# -- a small blocking client (wsproto over a socket): Hypothesis drives plain functions -------------


class Closed(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Client:
    def __init__(self, port: int, token: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [("Authorization", f"Bearer {token}")] if token else []
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/ws/device", extra_headers=headers)))
        self.pending: list[Any] = []
        self._text: list[str] = []
        while not any(isinstance(e, AcceptConnection) for e in self._read_events()):
            pass
        self.pending = [e for e in self.pending if not isinstance(e, AcceptConnection)]

    def _read_events(self) -> list[Any]:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, RejectConnection):
                raise AssertionError(f"upgrade refused: {event.status_code}")
            if isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
        self.pending.extend(events)
        if not data and not events:
            raise Closed(1006)
        return events

    def send(self, payload: str | bytes) -> None:
        from wsproto.events import Message

        try:
            self.sock.sendall(self.ws.send(Message(data=payload)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first (e.g. 1009 on an earlier part); the read says how

    def receive(self) -> dict[str, Any]:
        """The next whole text frame; raises Closed with the server's close code."""
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, CloseConnection):
                    raise Closed(event.code)
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        text, self._text = "".join(self._text), []
                        return json.loads(text)
                if isinstance(event, BytesMessage):
                    raise AssertionError("the server sent a binary frame")
            try:
                self._read_events()
            except (TimeoutError, ConnectionResetError) as exc:
                raise Closed(1006) from exc

    def graceful(self) -> None:
        """Close with 1000 and wait for the server's close (or its end of the stream) before the socket."""
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
            while True:
                self.receive()
        except (Closed, OSError, LocalProtocolError):
            pass
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


# -- frames ------------------------------------------------------------------------------------------


@dataclass
class Case:
    payload: str | bytes
    invalid: bool  # must be answered with an error frame or a defined close
    why: str
    later: bool = False  # answered by a job's writer, so maybe after the ping that follows it


def _json(value: Any) -> str:
    return json.dumps(value)


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=80))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                             inner, max_size=4),
                      max_leaves=12)
not_a_string = values.filter(lambda v: not isinstance(v, str))
bad_id = st.one_of(not_a_string, st.just(""), st.text(min_size=65, max_size=300))
good_id = st.text(min_size=1, max_size=64).filter(lambda t: "\x00" not in t)
# NUL and lone surrogates: valid in JSON (as \u escapes), refused by PostgreSQL in text.
unstorable = st.builds(lambda a, odd, b: a + odd + b, st.text(max_size=10),
                       st.text(alphabet=st.characters(categories=["Cs"]) | st.just("\x00"), min_size=1, max_size=3),
                       st.text(max_size=10))

wrong_values = st.one_of(
    st.builds(lambda v: Case(_json({"type": "scout_proposal_ack", "proposal_id": v}), True, "ack: bad id"), bad_id),
    st.builds(lambda i, s, e: Case(_json({"type": "send_result", "id": i, "status": s, "error": e}), True,
                                   "send_result: bad field"),
              st.one_of(bad_id, good_id), st.one_of(values, st.sampled_from(["sent", "failed"])), values)
    .filter(lambda c: not (isinstance(json.loads(c.payload)["id"], str) and 0 < len(json.loads(c.payload)["id"]) <= 64
                           and json.loads(c.payload)["status"] in ("sent", "failed")
                           and (json.loads(c.payload)["error"] is None or (isinstance(json.loads(c.payload)["error"],
                                                                                      str)
                                                                             and len(json.loads(c.payload)["error"])
                                                                             <= 500)))),
    st.builds(lambda extra: Case(_json({"type": "send_result", "id": "x", "status": "sent", **extra}), True,
                                 "send_result: unknown field"),
              st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("type", "id", "status",
                                                                                        "error")),
                              values, min_size=1, max_size=3)),
    st.builds(lambda t: Case(_json({"type": t}), True, "unknown type"),
              st.text(max_size=200).filter(lambda t: t not in ("ping", "pong", "scout_proposal_ack", "send_result"))),
    st.builds(lambda t: Case(_json({"type": t}), True, "type not a string"), not_a_string),
    st.builds(lambda v: Case(_json(v), True, "not an object"), values.filter(lambda v: not isinstance(v, dict))),
    st.builds(lambda d: Case(_json(d), True, "no type"),
              st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), values, max_size=4)),
    st.builds(lambda t: Case(_json({"type": t}), True, "handshake frame after registering"),
              st.sampled_from(["device_hello", "register"])),
    st.builds(lambda t, v: Case(_json({"type": t, "proposal_id": v, "id": v, "status": "sent"}), True,
                                "NUL or lone surrogate"),
              st.sampled_from(["scout_proposal_ack", "send_result", "ping", "device_hello"]), unstorable),
)
well_formed = st.one_of(
    st.builds(lambda v: Case(_json({"type": "scout_proposal_ack", "proposal_id": v}), False, "ack: unknown id"),
              good_id),
    st.builds(lambda i, s: Case(_json({"type": "send_result", "id": i, "status": s}), True, "send_result: no such id",
                                later=True),
              good_id, st.sampled_from(["sent", "failed"])),
    st.builds(lambda v: Case(_json({"type": "ping", "extra": v}), False, "ping with extra fields"), values),
    st.just(Case(_json({"type": "pong"}), False, "pong")),
)
raw = st.one_of(
    st.builds(lambda b: Case(b, True, "binary frame"), st.binary(max_size=2000)),
    st.builds(lambda t: Case(t, True, "not JSON"), st.text(max_size=300).filter(lambda t: not _parses(t))),
    st.builds(lambda n, o: Case(o * n, True, "deep nesting"), st.integers(33, 60_000),
              st.sampled_from(["[", "{\"a\":"])),
    st.builds(lambda n: Case("[" * n + "]" * n, True, "deep but complete"), st.integers(34, 20_000)),
)
huge = st.builds(lambda n, where: Case(_json({"type": "ping", "pad": "x" * n}) if where == "pad"
                                        else _json({"type": "y" * n}), n > FRAME_LIMIT or where == "type",
                                        "huge string"),
                 st.integers(1_000, 200_000), st.sampled_from(["pad", "type"]))

deep = st.builds(lambda n, o: Case(o * n, True, "deep nesting"), st.integers(33, 60_000),
                 st.sampled_from(["[", "{\"a\":", "{\"type\": \"ping\", \"x\":"]))
handshake = st.one_of(
    st.builds(lambda t: Case(_json({"type": "device_hello", "token": t}), True, "bad hello token"),
              st.one_of(st.text(max_size=100), not_a_string)),
    st.just(Case(_json({"type": "register"}), True, "register before hello")),
)
AFTER_REGISTER = {"wrong_values": wrong_values, "well_formed": well_formed, "raw": raw, "deep": deep, "huge": huge}
BEFORE_AUTH = {**AFTER_REGISTER, "handshake": handshake}


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


# -- the runs ---------------------------------------------------------------------------------------


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    process = ServerProcess.start(database_url, tmp_path)
    try:
        with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}) as c:
            account = c.post("/api/admin/accounts", json={"name": "Fuzz"}).json()
            user = c.post("/api/admin/users", json={"account_id": account["id"], "email": "f@example.com",
                                                     "display_name": "F"}).json()
            token = c.post("/api/admin/devices", json={"user_id": user["id"], "name": "fuzz"}).json()["token"]
        yield process, token
    finally:
        code = process.terminate()
        log = process.log()
        assert code == 0, log
        assert "Traceback" not in log, log[-5000:]
        errors = [line for line in log.splitlines() if '"level": "error"' in line or '"level": "critical"' in line]
        assert not errors, "\n".join(errors[:20])


_marks = iter(range(10**9))
HELLO_TIMEOUT_S = 5  # the server's default ws_hello_timeout_s: it closes a silent handshake 1008


def _answered(client: Client, case: Case, *, registered: bool) -> list[dict[str, Any]]:
    """Frames the server answered ``case`` with.

    After registration a frame of a made-up, numbered type follows ``case``: its ``unknown_type``
    error (naming that type) marks the end of the answers. Before authentication every frame gets
    exactly one answer (an error, or the close of a bad hello), which must come well before the
    hello timeout so that close cannot pass for an answer.
    """
    got: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        if not registered:
            got.append(client.receive())
            assert time.monotonic() - started < HELLO_TIMEOUT_S / 2, (case.why, got)
            return got
        mark = f"end-of-case-{next(_marks)}"
        client.send(_json({"type": mark}))
        while time.monotonic() - started < 5:
            frame = client.receive()
            if frame.get("code") == "unknown_type" and repr(mark) in frame.get("message", ""):
                if not (case.later and not any(f["type"] == "error" for f in got)):
                    return got
            else:
                got.append(frame)
        raise AssertionError(f"no end mark (or no later answer) within 5 s after {case.why}: {got}")
    except Closed as closed:
        assert closed.code in DEFINED_CLOSES, (case.why, closed.code, got)
        got.append({"type": "__closed__", "code": closed.code})
        return got


def _check(case: Case, got: list[dict[str, Any]]) -> None:
    for frame in got:
        assert isinstance(frame.get("type"), str), frame
        if frame["type"] == "error":
            assert isinstance(frame.get("code"), str) and isinstance(frame.get("message"), str), frame
    if case.invalid:
        assert any(f["type"] in ("error", "__closed__") for f in got), (case.why, str(case.payload)[:200], got)


def test_every_frame_after_registering_is_answered_without_a_traceback(server: tuple[ServerProcess, str]) -> None:
    process, token = server
    # One registered socket for as many frames as it survives (a new one after a close): fewer
    # connections, and each frame meets a socket that has already seen others.
    held: list[Client] = []

    def registered() -> Client:
        if not held:
            client = Client(process.port, token)
            client.send(_json({"type": "register"}))
            while client.receive()["type"] != "hello_ok":
                pass
            held.append(client)
        return held[0]

    def run(case: Case) -> None:
        client = registered()
        try:
            client.send(case.payload)
            got = _answered(client, case, registered=True)
            _check(case, got)
        except BaseException:
            held.clear()
            client.close()
            raise
        if got and got[-1]["type"] == "__closed__":
            held.clear()
            client.close()

    try:
        for strategy in AFTER_REGISTER.values():
            FUZZ(given(strategy)(run))()
    finally:
        for client in held:
            client.graceful()


def test_every_frame_before_authentication_is_answered_without_a_traceback(
    server: tuple[ServerProcess, str]
) -> None:
    process, _ = server

    def run(case: Case) -> None:
        client = Client(process.port)
        try:
            client.send(case.payload)
            got = _answered(client, case, registered=False)
            _check(case, got)
            assert got[0]["type"] in ("error", "__closed__"), (case.why, got)  # nothing else before auth
        finally:
            client.close()

    for strategy in BEFORE_AUTH.values():
        FUZZ(given(strategy)(run))()
