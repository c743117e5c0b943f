"""The device socket's batched I/O under Hypercorn (``roost.http.socket.transport``).

Frames a client writes in one TCP write arrive in one read and are handed to the handler as a
list; frames queued for a socket go out in one write. These tests pin that each frame is still
handled on its own and in order, that a burst larger than the inbox is all answered, and that
the server really takes the batched path (an upgrade of Hypercorn that changes the internals it
relies on falls back to the per-frame path, which would only show as lost throughput).

The client here is wsproto over a plain TCP stream, so the test decides what goes in one write.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import h11
import pytest
import trio
from hypercorn.trio import task_group as hypercorn_task_group
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from roost.http.socket.transport import INBOX_FRAMES, HypercornIO
from roost.serve import Running

TIMEOUT_S = 5


class RawClient:
    """A WebSocket client that writes exactly the bytes it is told to, in one ``send_all``."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection):
        self.stream = stream
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self._parts: list[str] = []

    async def write(self, *texts: str) -> None:
        await self.stream.send_all(b"".join(self.ws.send(TextMessage(data=t)) for t in texts))

    async def read_frames(self, count: int) -> list[dict[str, Any]]:
        """Read until ``count`` more frames have arrived (or the server closed)."""
        want = len(self.frames) + count
        with trio.fail_after(TIMEOUT_S):
            while len(self.frames) < want and self.closed_with is None:
                data = await self.stream.receive_some(1 << 16)
                assert data, "the server closed the TCP stream"
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            self.frames.append(json.loads("".join(self._parts)))
                            self._parts.clear()
                    elif isinstance(event, CloseConnection):
                        self.closed_with = event.code
        return self.frames[want - count:]


async def open_raw(running: Running) -> AsyncIterator[RawClient]:
    url = urlsplit(running.url)
    stream = await trio.open_tcp_stream(url.hostname, url.port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=url.netloc, target="/ws/device")))
        with trio.fail_after(TIMEOUT_S):
            accepted = False
            while not accepted:
                ws.receive_data(await stream.receive_some(1 << 16))
                accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        yield RawClient(stream, ws)


@pytest.fixture
async def raw(server: Running) -> AsyncIterator[RawClient]:
    async for client in open_raw(server):
        yield client


def hello(token: str) -> list[str]:
    return [json.dumps({"type": "device_hello", "token": token}), '{"type":"register"}']


async def test_frames_sent_in_one_write_are_each_handled_in_order(raw: RawClient, token: str) -> None:
    await raw.write(*hello(token), '{"type":"ping"}', "not json", '{"type":"mystery"}', '{"type":"register"}',
                    '{"type":"ping"}')

    frames = await raw.read_frames(6)

    assert [f["type"] for f in frames] == ["hello_ok", "pong", "error", "error", "error", "pong"]
    assert [f.get("code") for f in frames[2:5]] == ["bad_json", "unknown_type", "already_registered"]
    assert raw.closed_with is None


async def test_plain_frames_pings_and_fragments_in_one_write_or_cut_anywhere_are_handled_in_order(
        raw: RawClient, token: str) -> None:
    """Plain text frames are read without wsproto (``roost.http.socket.frames_in``); a ping, a
    fragmented message and frames cut across reads still come in order, each answered once."""
    await raw.write(*hello(token))
    assert (await raw.read_frames(1))[0]["type"] == "hello_ok"
    ws = raw.ws
    data = b"".join([
        ws.send(TextMessage(data='{"type":"ping"}')),
        ws.send(Ping(b"keepalive")),
        ws.send(TextMessage(data='{"type":"mys', message_finished=False)),
        ws.send(TextMessage(data='tery"}', message_finished=True)),
        ws.send(TextMessage(data='{"type":"ping","pad":"' + "é" * 200 + '"}')),
        ws.send(TextMessage(data="not json")),
        ws.send(TextMessage(data='{"type":"ping"}')),
    ])
    await raw.stream.send_all(data)
    for cut in (1, 3, 7, 40, 41, 200):  # the same frames again, in pieces
        await raw.stream.send_all(data[:cut])
        await trio.sleep(0.01)
        await raw.stream.send_all(data[cut:])
    frames = await raw.read_frames(7 * 5)
    assert [f["type"] for f in frames] == ["pong", "error", "pong", "error", "pong"] * 7
    assert [f["code"] for f in frames if f["type"] == "error"] == ["unknown_type", "bad_json"] * 7
    assert raw.closed_with is None


async def test_a_burst_larger_than_the_inbox_is_all_answered_and_the_socket_stays_open(
        raw: RawClient, token: str) -> None:
    burst = 4 * INBOX_FRAMES
    await raw.write(*hello(token))
    assert (await raw.read_frames(1))[0]["type"] == "hello_ok"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.write, *([json.dumps({"type": "ping"})] * burst))
        frames = await raw.read_frames(burst)

    assert [f["type"] for f in frames] == ["pong"] * burst
    assert raw.closed_with is None


async def test_the_server_writes_and_reads_through_hypercorns_stream(server: Running, raw: RawClient,
                                                                    token: str) -> None:
    await raw.write(*hello(token))
    await raw.read_frames(1)

    (sock,) = server.services.sockets.all()
    # The batched writer and the direct inbox, not the per-frame fallback (which a Hypercorn
    # upgrade that changed what they rely on would select).
    io = sock._io
    assert type(io) is HypercornIO
    assert io.writes_directly  # over plain TCP, a frame to an idle socket is written by its sender
    # The lean parts of an idle socket (``roost.http.socket.stream``): no h11 connection kept past the 101.
    assert not isinstance(io._stream.send.__self__.connection.h11_connection, h11.Connection)
    assert io._stream.app_put.__self__ is io
    # And a queued burst reaches the client whole, in order.
    for i in range(100):
        sock.send_nowait({"type": "test", "n": i})
    assert [f["n"] for f in await raw.read_frames(100)] == list(range(100))



def _all_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    return [task] + [t for nursery in task.child_nurseries for child in nursery.child_tasks for t in _all_tasks(child)]


def _socket_tasks() -> list[list[str]]:
    """For each connection Hypercorn serves a WebSocket app on: the functions its tasks run."""
    found = []
    for task in _all_tasks(trio.lowlevel.current_root_task()):
        if task.coro.cr_code.co_qualname == "_run_handler":  # trio.serve_listeners: one per connection
            below = _all_tasks(task)
            if any(t.coro.cr_code is hypercorn_task_group._handle.__code__ for t in below):
                found.append([t.coro.cr_code.co_qualname for t in below])
    return found


async def test_an_idle_device_socket_runs_two_tasks_in_the_server(server: Running, token: str) -> None:
    # Hypercorn's connection task and the ASGI app's task, in which the handler runs: quart-trio's
    # own two tasks (and their nursery and channel) are not made on roost's server
    # (``roost.http.socket.asgi``), and no writer runs while nothing is queued.
    async for raw in open_raw(server):
        await raw.write(*hello(token))
        assert (await raw.read_frames(1))[0]["type"] == "hello_ok"
        with trio.fail_after(TIMEOUT_S):
            while len(_socket_tasks()) != 1 or len(_socket_tasks()[0]) != 2:  # noqa: ASYNC110 (the register hook ends soon)
                await trio.sleep(0.01)
        await trio.sleep(0.05)
        assert _socket_tasks() == [["_run_handler", "_handle"]], _socket_tasks()
        # Still a working socket.
        await raw.write('{"type":"ping"}')
        assert (await raw.read_frames(1))[0]["type"] == "pong"
