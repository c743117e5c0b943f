"""The HTTP server as a supervised actor: Hypercorn's trio worker serving the app.

On drain it stops accepting, closes device sockets with 1001 so devices reconnect elsewhere,
and lets in-flight requests finish within the grace period.

While it serves, WebSockets use roost's own Hypercorn stream (``roost.http.socket.stream``):
compression declined, and a protocol error (oversize frame, invalid UTF-8, bad framing) fails
the connection at once, close frame then FIN. Hypercorn's own stream is back once it stops.
"""

from __future__ import annotations

from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from roost.http.socket import stream
from roost.http.socket.transport import FrameCache
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.sockets import CLOSE_GOING_AWAY


class SocketConfig(Config):
    """The Hypercorn config of roost's server, and what its sockets share while it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.frame_cache = FrameCache()  # see ``roost.http.socket.transport``


class HttpServer(Actor):
    name = "http"

    def __init__(self, app, bind: str):
        self.app = app
        self.bind = bind
        self.binds: list[str] = []
        self.bound = trio.Event()

    def config(self, ctx: ActorContext) -> SocketConfig:
        settings = ctx.services.settings
        config = SocketConfig()
        config.bind = [self.bind]
        config.graceful_timeout = settings.grace_period_s
        config.websocket_max_message_size = settings.ws_max_frame_bytes
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 30
        return config

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def shutdown_trigger() -> None:
            await ctx.stopping.wait()
            ctx.services.sockets.close_all(CLOSE_GOING_AWAY, "server shutting down")

        with stream.serving():  # roost's WebSocket stream, for as long as this server runs
            async with trio.open_nursery() as nursery:
                run_server = partial(serve, self.app, self.config(ctx), shutdown_trigger=shutdown_trigger)
                self.binds = await nursery.start(run_server)
                ctx.log.info("listening", binds=self.binds)
                self.bound.set()
                task_status.started()

    @property
    def port(self) -> int:
        return int(self.binds[0].rsplit(":", 1)[1])
