"""``AppQueue``: the bounded FIFO from roost's Hypercorn WebSocket stream to its ASGI app."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from roost.http.socket.stream import AppQueue

pytestmark = pytest.mark.timeout(10)


async def test_messages_come_out_in_order_and_a_full_queue_makes_the_sender_wait() -> None:
    queue = AppQueue(2)
    await queue.send({"n": 1})
    await queue.send({"n": 2})
    sent = trio.Event()

    async def third() -> None:
        await queue.send({"n": 3})
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert await queue.receive() == {"n": 1}
        await sent.wait()
    assert [await queue.receive(), await queue.receive()] == [{"n": 2}, {"n": 3}]


async def test_a_receiver_waits_for_a_message_and_a_cancelled_one_takes_nothing() -> None:
    queue = AppQueue(10)
    got = []

    async def receiver() -> None:
        got.append(await queue.receive())

    with trio.move_on_after(0.01):
        await queue.receive()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        await queue.send("x")
    assert got == ["x"]
    await queue.send("y")
    assert queue.take_nowait() == ["y"]
    assert queue.take_nowait() == []
