"""The device WebSocket ``/ws/device``: handshake, bad frames, closes, slow consumers, keepalive, drain.

Each test runs a real server in this process (on a free port) on SQLite and on PostgreSQL, and
talks to it with trio-websocket, the client the devices use.
"""

from __future__ import annotations

import inspect
import json
import re
import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from roost.serve import Running
from tests.support.server import admin_client, make_device, running_server
from tests.support.ws import close_code

# trio-websocket leaks its TCP socket when the server closes first (STACK-NOTES pitfall 6); the
# ``connect`` helper closes it, and these marks make a leak anywhere in these tests an error.
pytestmark = [
    pytest.mark.filterwarnings("error::ResourceWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]

CLOSE_TIMEOUT_S = 3  # how long a test waits for a close it expects (they take milliseconds)


# -- helpers --------------------------------------------------------------------------------------


def ws_url(running: Running) -> str:
    return running.url.replace("http://", "ws://") + "/ws/device"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@asynccontextmanager
async def connect(running: Running, headers: list[tuple[str, str]] | None = None,
                  **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """A client socket whose TCP stream is closed on exit, even when the server closed first."""
    ws: WebSocketConnection | None = None
    try:
        async with open_websocket_url(ws_url(running), extra_headers=headers or [], **kwargs) as ws:
            yield ws
    finally:
        if ws is not None:
            await ws._stream.aclose()


@asynccontextmanager
async def registered(running: Running, token: str, **kwargs: Any) -> AsyncIterator[WebSocketConnection]:
    """A socket authenticated by header and registered (its ``hello_ok`` read)."""
    async with connect(running, bearer(token), **kwargs) as ws:
        await send(ws, {"type": "register"})
        assert (await receive(ws))["type"] == "hello_ok"
        yield ws


async def send(ws: WebSocketConnection, frame: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(frame))


async def receive(ws: WebSocketConnection, timeout_s: float = CLOSE_TIMEOUT_S) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        return json.loads(await ws.get_message())


async def nothing_within(ws: WebSocketConnection, seconds: float) -> bool:
    """True when no frame arrives for ``seconds``."""
    with trio.move_on_after(seconds):
        await ws.get_message()
        return False
    return True


async def still_open(ws: WebSocketConnection) -> None:
    """The socket answers a ping with a pong (frames before it are skipped)."""
    await send(ws, {"type": "ping"})
    while (await receive(ws))["type"] != "pong":
        pass


async def wait_until(predicate: Callable[[], bool], timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Poll server state the test cannot wait on directly (e.g. a socket leaving the registry)."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on: the state belongs to the server
            await trio.sleep(0.01)


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}\s+(\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture
async def device(client: httpx.AsyncClient) -> dict[str, Any]:
    return await make_device(client)


# -- handshake ------------------------------------------------------------------------------------


async def test_header_auth_and_register_get_hello_ok(server: Running, device: dict) -> None:
    async with connect(server, bearer(device["token"])) as ws:
        await send(ws, {"type": "register"})
        hello = await receive(ws)

    assert hello["type"] == "hello_ok"
    assert hello["device_id"] == device["device"]["id"]
    assert hello["user_id"] == device["user"]["id"]
    assert hello["server_time"].endswith("Z")


async def test_device_hello_then_register_gets_hello_ok_only_after_register(server: Running, device: dict) -> None:
    async with connect(server) as ws:
        await send(ws, {"type": "device_hello", "token": device["token"]})
        silent_before_register = await nothing_within(ws, 0.2)
        await send(ws, {"type": "register"})
        hello = await receive(ws)

    assert silent_before_register
    assert hello["type"] == "hello_ok" and hello["device_id"] == device["device"]["id"]


async def test_register_with_since_gets_hello_ok(server: Running, device: dict) -> None:
    async with connect(server, bearer(device["token"])) as ws:
        await send(ws, {"type": "register", "since": 0})
        hello = await receive(ws)
        await still_open(ws)

    assert hello["type"] == "hello_ok"


@pytest.mark.parametrize("since", [-1, "5", 1.5, True, {"seq": 1}])
async def test_bad_since_gets_an_error_frame_and_a_good_register_still_works(
    server: Running, device: dict, since: Any
) -> None:
    async with connect(server, bearer(device["token"])) as ws:
        await send(ws, {"type": "register", "since": since})
        error = await receive(ws)
        await send(ws, {"type": "register", "since": 3})
        hello = await receive(ws)

    assert error["type"] == "error" and error["code"] == "bad_frame" and error["message"]
    assert hello["type"] == "hello_ok"


async def test_frames_before_authentication_get_an_error_and_the_handshake_continues(
    server: Running, device: dict
) -> None:
    async with connect(server) as ws:
        await send(ws, {"type": "register"})
        before_hello = await receive(ws)
        await send(ws, {"type": "device_hello", "token": device["token"]})
        await send(ws, {"type": "scout_proposal_ack", "proposal_id": "x"})
        before_register = await receive(ws)
        await send(ws, {"type": "register"})
        hello = await receive(ws)

    assert (before_hello["type"], before_hello["code"]) == ("error", "expected_device_hello")
    assert (before_register["type"], before_register["code"]) == ("error", "expected_register")
    assert hello["type"] == "hello_ok"


async def test_no_hello_within_the_timeout_closes_1008(database_url: str) -> None:
    async with running_server(database_url, ws_hello_timeout_s=0.3) as running:
        async with connect(running) as ws:
            started = trio.current_time()
            code = await close_code(ws)
            took = trio.current_time() - started

    assert code == 1008
    assert 0.2 < took < 2


async def test_hello_without_register_within_the_timeout_closes_1008(database_url: str) -> None:
    async with running_server(database_url, ws_hello_timeout_s=0.3) as running, admin_client(running.url) as c:
        token = (await make_device(c))["token"]
        async with connect(running) as ws:
            await send(ws, {"type": "device_hello", "token": token})
            code = await close_code(ws)

    assert code == 1008


@pytest.mark.parametrize("how", ["header", "device_hello"])
async def test_bad_token_closes_1008(server: Running, device: dict, how: str) -> None:
    wrong = device["token"] + "x"
    async with connect(server, bearer(wrong) if how == "header" else None) as ws:
        if how == "device_hello":
            await send(ws, {"type": "device_hello", "token": wrong})
        code = await close_code(ws)

    assert code == 1008


async def test_device_hello_with_a_non_string_token_closes_1008(server: Running) -> None:
    async with connect(server) as ws:
        await send(ws, {"type": "device_hello", "token": 12345})
        code = await close_code(ws)

    assert code == 1008


async def test_revoked_device_cannot_connect(server: Running, client: httpx.AsyncClient, device: dict) -> None:
    r = await client.delete(f"/api/admin/devices/{device['device']['id']}")
    assert r.status_code == 200, r.text
    async with connect(server, bearer(device["token"])) as ws:
        code = await close_code(ws)

    assert code == 1008


# -- live revocation ------------------------------------------------------------------------------


async def test_revoking_the_device_closes_its_live_socket_1008_within_a_second(
    server: Running, client: httpx.AsyncClient, device: dict
) -> None:
    async with registered(server, device["token"]) as ws:
        r = await client.delete(f"/api/admin/devices/{device['device']['id']}")
        assert r.status_code == 200, r.text
        code = await close_code(ws, timeout_s=1)

    assert code == 1008


async def test_deactivating_the_user_closes_the_live_socket_1008(
    server: Running, client: httpx.AsyncClient, device: dict
) -> None:
    async with registered(server, device["token"]) as ws:
        r = await client.patch(f"/api/admin/users/{device['user']['id']}", json={"active": False})
        assert r.status_code == 200, r.text
        code = await close_code(ws, timeout_s=1)

    assert code == 1008


async def test_other_users_sockets_stay_open_when_one_user_is_deactivated(
    server: Running, client: httpx.AsyncClient, device: dict
) -> None:
    other = await make_device(client, account=device["account"], email="bob@example.com")
    async with registered(server, device["token"]) as ws, registered(server, other["token"]) as other_ws:
        r = await client.patch(f"/api/admin/users/{device['user']['id']}", json={"active": False})
        assert r.status_code == 200, r.text
        code = await close_code(ws, timeout_s=1)
        await still_open(other_ws)

    assert code == 1008


# -- bad frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        ("", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"hello"', "bad_frame"),
        ("null", "bad_frame"),
        ('{"token": "x"}', "bad_frame"),
        ('{"type": 7}', "bad_frame"),
        (b"\x00\x01binary", "bad_frame"),
        ('{"type": "no_such_type"}', "unknown_type"),
        ('{"type": "register"}', "already_registered"),
        ('{"type": "device_hello", "token": "x"}', "already_registered"),
    ],
    ids=["malformed", "empty", "array", "string", "null", "no-type", "non-string-type", "binary", "unknown-type",
         "register-again", "hello-again"],
)
async def test_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    server: Running, device: dict, raw: str | bytes, code: str
) -> None:
    async with registered(server, device["token"]) as ws:
        await ws.send_message(raw)
        error = await receive(ws)
        await still_open(ws)

    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize("raw", ["{not json", b"binary", "[]"])
async def test_bad_frames_during_the_handshake_get_an_error_frame(server: Running, device: dict, raw: Any) -> None:
    async with connect(server) as ws:
        await ws.send_message(raw)
        error = await receive(ws)
        await send(ws, {"type": "device_hello", "token": device["token"]})
        await send(ws, {"type": "register"})
        hello = await receive(ws)

    assert error["type"] == "error" and error["code"] in {"bad_json", "bad_frame"}
    assert hello["type"] == "hello_ok"


async def test_frame_over_the_size_limit_closes_1009(database_url: str) -> None:
    async with running_server(database_url, ws_max_frame_bytes=1024) as running, admin_client(running.url) as c:
        token = (await make_device(c))["token"]
        async with registered(running, token) as ws:
            await send(ws, {"type": "ping", "pad": "x" * 900})  # under the limit: fine
            assert (await receive(ws))["type"] == "pong"
            await send(ws, {"type": "ping", "pad": "x" * 2000})
            code = await close_code(ws)

    assert code == 1009


# -- slow consumers -------------------------------------------------------------------------------


async def test_slow_consumer_is_closed_1013_and_the_sender_never_blocks(database_url: str) -> None:
    """A socket whose client stops reading fills its buffer and is closed; its sibling is unharmed."""
    async with running_server(database_url, ws_outgoing_buffer=4) as running, admin_client(running.url) as c:
        made = await make_device(c)
        sockets = running.services.sockets
        async with registered(running, made["token"]) as stalled, registered(running, made["token"]) as reader:
            got: list[dict[str, Any]] = []
            progressed = trio.Event()

            async def read_all() -> None:
                nonlocal progressed
                try:
                    while True:
                        got.append(json.loads(await reader.get_message()))
                        progressed.set()
                        progressed = trio.Event()
                except ConnectionClosed:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                assert sockets.count == 2
                pad = "x" * 65536
                pushed = 0
                slowest_send_s = 0.0
                with trio.fail_after(20):
                    # The stalled client never reads: once the kernel's buffers are full its writer
                    # blocks, its outbox fills, and the next send closes it instead of waiting.
                    # The reader is never more than two frames behind, so its outbox never fills.
                    while not any(s.close_code == 1013 for s in sockets.all()):
                        while len(got) < pushed - 2:
                            await progressed.wait()
                        started = trio.current_time()
                        taken = sockets.send_to_device(made["device"]["id"], {"type": "test", "n": pushed, "pad": pad})
                        slowest_send_s = max(slowest_send_s, trio.current_time() - started)
                        assert taken >= 1
                        pushed += 1
                        await trio.lowlevel.checkpoint()
                closed = [s for s in sockets.all() if s.close_code == 1013]
                stalled_code = await close_code(stalled, timeout_s=10)
                # the reader stays open and still gets frames
                assert sockets.send_to_device(made["device"]["id"], {"type": "test", "n": -1}) == 1
                await wait_until(lambda: bool(got) and got[-1].get("n") == -1)
                nursery.cancel_scope.cancel()
            await still_open(reader)
            metrics = (await c.get("/metrics")).text

    assert stalled_code == 1013
    assert len(closed) == 1
    assert pushed > 4  # the kernel's buffers took some before the outbox filled
    # Sending is synchronous (it cannot wait for the client) and stays quick while the buffer fills.
    assert not inspect.iscoroutinefunction(sockets.send_to_device)
    assert slowest_send_s < 0.05
    assert [f["n"] for f in got if f["type"] == "test"] == [*range(pushed), -1]  # in order, none lost
    assert metric(metrics, "roost_ws_slow_consumers_closed_total") == 1


# -- keepalive ------------------------------------------------------------------------------------


async def test_server_pings_and_drops_a_silent_peer_1001_but_keeps_one_that_answers(database_url: str) -> None:
    # A peer is dropped after 2.5 silent intervals: 0.5 s here, roomy enough for a loaded test machine.
    async with running_server(database_url, ws_ping_interval_s=0.2) as running, admin_client(running.url) as c:
        made = await make_device(c)
        async with registered(running, made["token"]) as silent, registered(running, made["token"]) as lively:
            pings_to_lively = 0

            async def answer_pings() -> None:
                nonlocal pings_to_lively
                while True:
                    frame = json.loads(await lively.get_message())
                    if frame["type"] == "ping":
                        pings_to_lively += 1
                        await send(lively, {"type": "pong"})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_pings)
                seen_by_silent = []
                code = None
                with trio.fail_after(CLOSE_TIMEOUT_S):
                    try:
                        while True:
                            seen_by_silent.append(json.loads(await silent.get_message())["type"])
                    except ConnectionClosed as closed:
                        code = closed.reason.code
                await trio.sleep(1.0)  # five more ping intervals: the answering peer is kept
                nursery.cancel_scope.cancel()
            await still_open(lively)

    assert code == 1001
    assert "ping" in seen_by_silent
    assert pings_to_lively >= 5


# -- several sockets, bookkeeping -----------------------------------------------------------------


async def test_several_sockets_of_one_device_are_served_independently(
    server: Running, client: httpx.AsyncClient, device: dict
) -> None:
    async with registered(server, device["token"]) as first, registered(server, device["token"]) as second:
        assert server.services.sockets.send_to_device(device["device"]["id"], {"type": "test"}) == 2
        assert (await receive(first))["type"] == "test"
        assert (await receive(second))["type"] == "test"
        await send(first, {"type": "ping"})
        assert (await receive(first))["type"] == "pong"
        assert await nothing_within(second, 0.1)  # the answer went to the socket that asked only
        await first.send_message("{broken")
        assert (await receive(first))["code"] == "bad_json"
        assert await nothing_within(second, 0.1)
        await first.aclose()
        await wait_until(lambda: server.services.sockets.count == 1)
        await still_open(second)


async def test_frames_go_beneath_asgi_whole_and_in_order_at_every_length_encoding(
    server: Running, device: dict
) -> None:
    """Under Hypercorn each socket writes directly; 7-bit, 16-bit and 64-bit lengths all arrive intact."""
    sizes = [0, 95, 96, 1000, 65_505, 65_506, 200_000, 3]  # frames of 30 + size bytes: 125/126, 65535/65536
    async with registered(server, device["token"], max_message_size=1 << 20) as ws:
        [sock] = server.services.sockets.all()
        assert sock.writes_directly  # a Hypercorn upgrade that moves its internals fails here
        for n, size in enumerate(sizes):
            server.services.sockets.send_to_device(device["device"]["id"], {"type": "test", "n": n, "pad": "x" * size})
        for n, size in enumerate(sizes):
            frame = await receive(ws)
            assert (frame["n"], frame["pad"]) == (n, "x" * size)
        await still_open(ws)


async def test_a_client_offering_compression_is_declined_and_still_written_directly(
    server: Running, device: dict
) -> None:
    """Browsers offer permessage-deflate: the offer is declined, and the shared frames reach it in order."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.http.port)
    conn = WSConnection(ConnectionType.CLIENT)
    events: list[Any] = []

    async def next_event() -> Any:
        with trio.fail_after(CLOSE_TIMEOUT_S):
            while not events:
                conn.receive_data(await stream.receive_some(1 << 16))
                events.extend(conn.events())
        return events.pop(0)

    async with stream:
        await stream.send_all(conn.send(Request(
            host="127.0.0.1", target="/ws/device", extensions=[PerMessageDeflate()],
            extra_headers=[(b"authorization", f"Bearer {device['token']}".encode())])))
        accepted = await next_event()
        assert isinstance(accepted, AcceptConnection) and accepted.extensions == []
        await stream.send_all(conn.send(TextMessage(data='{"type":"register"}')))
        assert json.loads((await next_event()).data)["type"] == "hello_ok"
        [sock] = server.services.sockets.all()
        assert sock.writes_directly
        frames = [{"type": "test", "n": n, "pad": "ab" * n * 500} for n in range(20)]
        for frame in frames:
            server.services.sockets.send_to_device(device["device"]["id"], frame)
        for frame in frames:
            text = ""
            while True:  # wsproto hands over a message in pieces as its bytes arrive
                message = await next_event()
                assert isinstance(message, TextMessage)
                text += message.data
                if message.message_finished:
                    break
            assert json.loads(text) == frame
        await stream.send_all(conn.send(CloseConnection(code=1000)))


async def test_connecting_sets_last_seen_at(server: Running, client: httpx.AsyncClient, device: dict) -> None:
    before = (await client.get(f"/api/admin/devices/{device['device']['id']}")).json()
    async with registered(server, device["token"]):
        after = (await client.get(f"/api/admin/devices/{device['device']['id']}")).json()

    assert before["last_seen_at"] is None
    assert after["last_seen_at"] is not None and after["last_seen_at"].endswith("Z")


async def test_connected_count_in_status_and_metrics_goes_up_and_down(
    server: Running, client: httpx.AsyncClient, device: dict
) -> None:
    async def counts() -> tuple[int, float]:
        status = (await client.get("/api/admin/status")).json()
        metrics = (await client.get("/metrics")).text
        return status["connected_devices"], metric(metrics, "roost_connected_sockets")

    seen = [await counts()]
    async with registered(server, device["token"]):
        seen.append(await counts())
        async with registered(server, device["token"]):
            seen.append(await counts())
        await wait_until(lambda: server.services.sockets.count == 1)
        seen.append(await counts())
    await wait_until(lambda: server.services.sockets.count == 0)
    seen.append(await counts())

    assert seen == [(0, 0), (1, 1), (2, 2), (1, 1), (0, 0)]


async def test_an_unregistered_socket_is_not_counted(server: Running, device: dict) -> None:
    async with connect(server) as ws:
        await send(ws, {"type": "device_hello", "token": device["token"]})
        await trio.sleep(0.1)
        assert server.services.sockets.count == 0


# -- drain ----------------------------------------------------------------------------------------


async def test_drain_closes_open_sockets_1001(database_url: str) -> None:
    async with running_server(database_url) as running, admin_client(running.url) as c:
        made = await make_device(c)
        async with registered(running, made["token"]) as first, registered(running, made["token"]) as second:
            running.supervisor.request_stop()
            codes = [await close_code(first), await close_code(second)]

    assert codes == [1001, 1001]


async def test_drain_closes_sockets_still_in_their_handshake_1001(database_url: str) -> None:
    """A socket that has not registered yet is not in the registry, but a drain closes it too."""
    async with running_server(database_url) as running, admin_client(running.url) as c:
        token = (await make_device(c))["token"]
        async with connect(running) as silent, connect(running) as hello_only:
            await send(hello_only, {"type": "device_hello", "token": token})
            assert await nothing_within(hello_only, 0.1)
            running.supervisor.request_stop()
            codes = [await close_code(silent, timeout_s=1), await close_code(hello_only, timeout_s=1)]

    assert codes == [1001, 1001]


@asynccontextmanager
async def slow_reader(server: Running, token: str) -> AsyncIterator[Callable[[], Any]]:
    """A registered raw wsproto client with a small receive buffer that reads only when asked;
    yields ``next_event()`` (one wsproto event, reading as needed, 10 s at most)."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.http.port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = WSConnection(ConnectionType.CLIENT)
    events: list[Any] = []

    async def next_event() -> Any:
        with trio.fail_after(10):
            while not events:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise EOFError("the server closed the connection")
                conn.receive_data(data)
                events.extend(conn.events())
        return events.pop(0)

    async with stream:
        await stream.send_all(conn.send(Request(host="127.0.0.1", target="/ws/device",
                                                extra_headers=[(b"authorization", f"Bearer {token}".encode())])))
        assert isinstance(await next_event(), AcceptConnection)
        await stream.send_all(conn.send(TextMessage(data='{"type":"register"}')))
        assert json.loads((await next_event()).data)["type"] == "hello_ok"
        yield next_event


async def frames_until_close(next_event: Callable[[], Any]) -> tuple[list[str], int]:
    """Whole text messages received until the close frame, and the close code (a protocol error raises)."""
    texts, part = [], ""
    while True:
        event = await next_event()
        if isinstance(event, CloseConnection):
            return texts, event.code
        if isinstance(event, TextMessage):
            part += event.data
            if event.message_finished:
                texts.append(part)
                part = ""


@pytest.mark.parametrize("frames,size", [(1, 4 << 20), (300, 12_000)])
async def test_a_close_after_frames_a_slow_reader_has_not_read_arrives_after_them_whole(
    server: Running, device: dict, frames: int, size: int
) -> None:
    # One frame far over the socket buffers, or many small ones that fill them: the close sent
    # in the same tick must not land inside a frame (a direct write's unwritten rest once let it).
    # Frames still queued at the close are dropped (the device gets them again on reconnect).
    async with slow_reader(server, device["token"]) as next_event:
        [sock] = server.services.sockets.all()
        assert sock.writes_directly
        await trio.sleep(0.1)
        for n in range(frames):
            sock.send_nowait({"type": "test", "n": n, "pad": "x" * size})
        sock.close(1013, "slow consumer")
        texts, code = await frames_until_close(next_event)
    assert code == 1013
    assert [json.loads(t)["n"] for t in texts] == list(range(len(texts)))  # whole, in order, none torn
    assert all(len(json.loads(t)["pad"]) == size for t in texts)
