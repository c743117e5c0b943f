"""A TCP proxy in front of PostgreSQL that can stop answering, like a server sent SIGSTOP.

While frozen it still accepts connections (the kernel of a stopped server does too) but forwards
nothing either way, so every query, reset and cancel request waits. ``thaw`` forwards again.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import trio


class FreezableProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self._flowing = trio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing = trio.Event()

    def thaw(self) -> None:
        self._flowing.set()

    def url_for(self, url: str) -> str:
        """``url`` pointed at this proxy."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await source.receive_some(65536)
                if not data:
                    break
                await self._flowing.wait()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)


@asynccontextmanager
async def freezable_proxy(url: str) -> AsyncIterator[FreezableProxy]:
    """A proxy to the server of ``url`` on a free local port, for as long as the block runs."""
    parts = urlsplit(url)
    proxy = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        proxy.thaw()
        nursery.cancel_scope.cancel()
