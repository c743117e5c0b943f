"""The socket registry: who is connected where, and sending that never waits on a slow peer."""

from __future__ import annotations

import datetime as dt
import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing
import trio
from trio.testing import MockClock

import roost.runtime.sockets as sockets_module
from roost.runtime.metrics import Metrics
from roost.runtime.sockets import CLOSE_POLICY, CLOSE_TRY_AGAIN, DeviceSocket, SocketRegistry, encode


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    with structlog.testing.capture_logs():
        yield


def sample(registry: SocketRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    return registry.metrics.registry.get_sample_value(name, labels or {})


def drain(sock: DeviceSocket) -> list[str]:
    return sock.outbox.take_all()  # type: ignore[return-value]  # no partial frames without a transport


async def test_open_indexes_a_socket_by_device_user_and_account(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    a1 = reg.open("dev-a", "user-1", "acct-1")
    a2 = reg.open("dev-a", "user-1", "acct-1")  # a second tab of the same device
    b = reg.open("dev-b", "user-2", "acct-1")
    c = reg.open("dev-c", "user-3", "acct-2")

    assert set(reg.for_device("dev-a")) == {a1, a2}
    assert set(reg.for_user("user-1")) == {a1, a2}
    assert set(reg.for_account("acct-1")) == {a1, a2, b}
    assert reg.for_account("acct-2") == [c]
    assert reg.for_device("nobody") == [] and reg.for_user("nobody") == [] and reg.for_account("nobody") == []
    assert reg.count == 4 and set(reg.all()) == {a1, a2, b, c}
    assert len({s.id for s in reg.all()}) == 4
    assert sample(reg, "roost_connected_sockets") == 4


async def test_broadcast_encodes_a_frame_once_for_every_socket(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    socks = [reg.open(f"dev-{i}", "user-1", "acct-1") for i in range(5)]
    calls: list[dict[str, object]] = []
    real_encode = sockets_module.encode

    def counting_encode(frame: dict[str, object]) -> str:
        calls.append(frame)
        return real_encode(frame)

    monkeypatch.setattr(sockets_module, "encode", counting_encode)
    frame = {"type": "handoff_created", "seq": 7, "handoff": {"id": "h1"}}

    assert reg.send_to_account("acct-1", frame) == 5
    assert len(calls) == 1
    texts = [drain(s) for s in socks]
    assert all(t == texts[0] for t in texts) and len(texts[0]) == 1
    assert json.loads(texts[0][0]) == frame
    assert sample(reg, "roost_ws_frames_sent_total", {"type": "handoff_created"}) == 5


async def test_sends_reach_only_the_addressed_device_user_or_account(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    a = reg.open("dev-a", "user-1", "acct-1")
    b = reg.open("dev-b", "user-1", "acct-1")
    c = reg.open("dev-c", "user-2", "acct-1")
    d = reg.open("dev-d", "user-3", "acct-2")

    assert reg.send_to_device("dev-a", {"type": "send_request", "id": "1"}) == 1
    assert reg.send_to_user("user-1", {"type": "scout_proposal", "id": "2"}) == 2
    assert reg.send_to_account("acct-1", {"type": "handoff_claimed", "id": "3"}) == 3
    assert reg.send_to_user("nobody", {"type": "x"}) == 0

    def ids(sock: DeviceSocket) -> list[str]:
        return [json.loads(t)["id"] for t in drain(sock)]

    assert ids(a) == ["1", "2", "3"]
    assert ids(b) == ["2", "3"]
    assert ids(c) == ["3"]
    assert ids(d) == []


async def test_full_buffer_closes_that_socket_1013_slow_consumer_without_blocking_the_sender(
    autojump_clock: MockClock,
):
    reg = SocketRegistry(buffer=3, metrics=Metrics())
    slow = reg.open("dev-slow", "user-1", "acct-1")
    fast = reg.open("dev-fast", "user-2", "acct-1")
    t0 = trio.current_time()

    delivered = []
    for i in range(10):
        delivered.append(reg.send_to_account("acct-1", {"type": "tick", "n": i}))
        drain(fast)  # the fast peer keeps up; the slow one never reads
    # The sender never waited (offer is synchronous and time did not move) ...
    assert trio.current_time() == t0
    # ... the slow socket took what fit, then was closed once and got nothing more.
    assert delivered == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    assert slow.close_code == CLOSE_TRY_AGAIN and slow.close_reason == "slow consumer"
    assert slow.scope.cancel_called  # its handler is told to close it
    assert [json.loads(t)["n"] for t in drain(slow)] == [0, 1, 2]
    assert fast.close_code is None and not fast.scope.cancel_called
    assert sample(reg, "roost_ws_slow_consumers_closed_total") == 1
    assert not slow.send_nowait({"type": "tick"}) and drain(slow) == []


async def test_offer_and_broadcast_are_synchronous_so_a_sender_can_never_wait(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=1, metrics=Metrics())
    sock = reg.open("dev", "user", "acct")
    # Plain functions, not coroutines: there is no way for them to wait on a peer.
    for fn in (sock.send_nowait, reg.broadcast, reg.send_to_device, reg.send_to_user, reg.send_to_account):
        assert not inspect.iscoroutinefunction(fn)
    assert sock.send_nowait(encode({"type": "a"}), "a") is True
    assert sock.send_nowait(encode({"type": "b"}), "b") is False
    assert sock.close_code == CLOSE_TRY_AGAIN


async def test_first_close_reason_wins(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    sock = reg.open("dev", "user", "acct")
    sock.close(CLOSE_POLICY, "device revoked")
    sock.close(CLOSE_TRY_AGAIN, "slow consumer")
    assert (sock.close_code, sock.close_reason) == (CLOSE_POLICY, "device revoked")
    assert sock.send_nowait({"type": "x"}) is False  # nothing is queued to a closing socket
    assert drain(sock) == []


async def test_close_device_closes_every_socket_of_that_device_only(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    tabs = [reg.open("dev-a", "user-1", "acct-1") for _ in range(3)]
    other_device = reg.open("dev-b", "user-1", "acct-1")

    assert reg.close_device("dev-a", CLOSE_POLICY, "device revoked") == 3
    for tab in tabs:
        assert (tab.close_code, tab.close_reason) == (CLOSE_POLICY, "device revoked")
        assert tab.scope.cancel_called
    assert other_device.close_code is None and not other_device.scope.cancel_called
    assert reg.close_device("dev-unknown", CLOSE_POLICY, "x") == 0


async def test_a_socket_handler_ends_when_its_socket_is_closed(autojump_clock: MockClock):
    """close() cancels the socket's scope: how a revoked device's live handler gets stopped."""
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    sock = reg.open("dev-a", "user-1", "acct-1")
    ended_at: list[float] = []

    async def handler() -> None:
        with sock.scope:
            await trio.sleep_forever()
        ended_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handler)
        await trio.sleep(5)
        reg.close_device("dev-a", CLOSE_POLICY, "device revoked")
    assert ended_at == [5.0]


async def test_remove_cleans_every_index_and_the_connected_gauge(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    a1 = reg.open("dev-a", "user-1", "acct-1")
    a2 = reg.open("dev-a", "user-1", "acct-1")
    b = reg.open("dev-b", "user-2", "acct-1")

    reg.remove(a1)
    assert reg.for_device("dev-a") == [a2] and reg.for_user("user-1") == [a2]
    assert set(reg.for_account("acct-1")) == {a2, b}
    assert reg.count == 2 and sample(reg, "roost_connected_sockets") == 2

    reg.remove(a2)
    reg.remove(b)
    assert reg.count == 0 and reg.all() == []
    assert reg.for_device("dev-a") == [] and reg.for_user("user-1") == [] and reg.for_account("acct-1") == []
    assert sample(reg, "roost_connected_sockets") == 0
    # No empty groups are left behind to grow without bound as devices come and go.
    assert not reg._by_device and not reg._by_user and not reg._by_account

    reg.remove(a1)  # removing twice is harmless
    assert reg.count == 0 and sample(reg, "roost_connected_sockets") == 0
    assert a1.send_nowait({"type": "late"}) is False  # a removed socket takes nothing
    assert reg.send_to_account("acct-1", {"type": "late"}) == 0


async def test_remove_ends_the_writer_after_what_was_already_queued(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    sock = reg.open("dev", "user", "acct")
    sock.send_nowait({"type": "a"})
    sock.send_nowait({"type": "b"})
    reg.remove(sock)
    received = [json.loads(t)["type"] async for t in sock.outbox]
    assert received == ["a", "b"]  # the writer loop sees EndOfChannel after the backlog


async def test_pending_frames_counts_queued_frames_across_sockets(autojump_clock: MockClock):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    a = reg.open("dev-a", "user-1", "acct-1")
    reg.open("dev-b", "user-2", "acct-1")
    reg.send_to_account("acct-1", {"type": "x"})
    reg.send_to_device("dev-a", {"type": "y"})
    assert reg.pending_frames() == 3
    drain(a)
    assert reg.pending_frames() == 1


def test_encode_is_compact_json_with_iso_utc_times():
    when = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    text = encode({"type": "batch_done", "at": when, "n": 1, "ref": Path("a/b")})
    assert text == '{"type":"batch_done","at":"2026-03-02T08:00:00Z","n":1,"ref":"a/b"}'


class FakeTransport:
    """A transport whose socket takes ``room`` bytes at once, then nothing until ``write``."""

    writes_directly = True

    def __init__(self, room: int, sent: list[str]):
        self.room = room
        self.wire = bytearray()
        self.sent = sent  # the text frames that took the queued path
        self.busy = False  # as if the server itself were mid-write: nothing goes direct

    def write_nowait(self, text: str) -> bytes | None:
        if self.busy:
            return None
        data = text.encode()
        n = min(self.room, len(data))
        self.room -= n
        self.wire += data[:n]
        return data[n:]

    async def write(self, items: list[str | bytes]) -> None:
        for item in items:
            if isinstance(item, bytes):  # the rest of a frame begun directly
                await trio.sleep(1)  # waiting for the peer to read
                self.wire += item
            else:
                self.sent.append(item)
                self.wire += item.encode()


async def test_a_direct_socket_writes_at_once_and_a_partial_frame_finishes_before_the_next(
    autojump_clock: MockClock,
):
    reg = SocketRegistry(buffer=8, metrics=Metrics())
    sock = reg.open("dev", "user", "acct")
    sent: list[str] = []
    direct = FakeTransport(room=30, sent=sent)

    async with trio.open_nursery() as nursery:
        sock.attach(nursery, direct)
        assert sock.writes_directly
        assert sock.send_nowait({"type": "a"}) and len(sock.outbox) == 0  # written by the sender, no task
        assert sock.send_nowait({"type": "bbbbbbbbbbbbbbbbbbbb"})  # only part of it fits
        assert sock.send_nowait({"type": "c"})  # queued behind the rest of b, not written ahead of it
        assert len(sock.outbox) == 2
        await trio.sleep(2)
        assert len(sock.outbox) == 0
        direct.room = 100
        assert sock.send_nowait({"type": "d"}) and len(sock.outbox) == 0  # direct again once drained
        direct.busy = True
        assert sock.send_nowait({"type": "e"})  # the server was busy: the ASGI path, in order
        await trio.sleep(1)
        sock.detach()
        nursery.cancel_scope.cancel()
    assert direct.wire.decode() == "".join(encode({"type": t}) for t in
                                           ["a", "bbbbbbbbbbbbbbbbbbbb", "c", "d", "e"])
    assert sent == [encode({"type": "c"}), encode({"type": "e"})]
    assert sample(reg, "roost_ws_frames_sent_total", {"type": "a"}) == 1
