"""A real HTTP receiver for webhook tests: Hypercorn (trio worker) on 127.0.0.1, scripted answers.

Each request is recorded (headers, raw body, when). Answers come from ``script`` in order
(``Answer(status, delay_s)``; ``hold`` answers only when ``release`` is set), then ``default``.
The signature is checked by the test with an independent implementation (the ``standardwebhooks``
package), never by roost's own code.
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay_s: float = 0.0
    hold: bool = False  # wait for Receiver.release before answering


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    url: str = ""
    script: deque[Answer] = field(default_factory=deque)
    default: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    release: trio.Event = field(default_factory=trio.Event)
    _changed: trio.Event = field(default_factory=trio.Event)

    def answer(self, *answers: Answer | int) -> None:
        self.script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def for_path(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, n: int, *, path: str | None = None, timeout_s: float = 10) -> list[Received]:
        """Wait until ``n`` requests (to ``path``) arrived; returns them."""
        with trio.fail_after(timeout_s):
            while True:
                got = self.received if path is None else self.for_path(path)
                if len(got) >= n:
                    return list(got)
                self._changed = trio.Event()
                await self._changed.wait()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body, trio.current_time()))
        self._changed.set()
        answer = self.script.popleft() if self.script else self.default
        if answer.hold:
            await self.release.wait()
        if answer.delay_s:
            await trio.sleep(answer.delay_s)
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1:<free port> for the length of the block."""
    receiver = Receiver()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(receiver.app, config, shutdown_trigger=stop.wait,
                                                              task_status=task_status))
        receiver.url = binds[0]
        try:
            yield receiver
        finally:
            receiver.release.set()
            stop.set()
