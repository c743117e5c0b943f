"""The HTTP server as a supervised actor: Hypercorn's trio worker serving the app.

On drain it stops accepting, closes device sockets with 1001 so devices reconnect elsewhere,
and lets in-flight requests finish within the grace period.

WebSocket compression (permessage-deflate) is declined: see ``decline_websocket_compression``.
A WebSocket protocol error (oversize frame, invalid UTF-8, bad framing) fails the connection at
once, close frame then FIN: see ``roost.http.wsfail``.
"""

from __future__ import annotations

from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.protocol import ws_stream
from hypercorn.trio import serve
from wsproto.extensions import PerMessageDeflate

from roost.http import wsfail
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.sockets import CLOSE_GOING_AWAY


class _DeclinedDeflate(PerMessageDeflate):
    """permessage-deflate as offered by no one: declines every client's offer."""

    def accept(self, offer: str) -> bool:
        return False


def decline_websocket_compression() -> None:
    """Serve WebSockets uncompressed even when the client offers permessage-deflate.

    Browsers always offer it and Hypercorn always accepts; wsproto then keeps a zlib compressor
    and decompressor for the life of each socket (context takeover), about 100 KiB of RSS per
    idle socket: 500 idle device sockets measured 145 KiB each with the offer, 43 KiB without,
    against a bar of 40 KiB. Device frames are small JSON, so compression buys little. Hypercorn
    has no setting for this; the extension its handshake builds is replaced by one that declines
    (a declined offer is ordinary negotiation: the client goes on without compression).
    """
    ws_stream.PerMessageDeflate = _DeclinedDeflate  # type: ignore[misc]


class HttpServer(Actor):
    name = "http"

    def __init__(self, app, bind: str):
        self.app = app
        self.bind = bind
        self.binds: list[str] = []
        self.bound = trio.Event()

    def config(self, ctx: ActorContext) -> Config:
        settings = ctx.services.settings
        config = Config()
        config.bind = [self.bind]
        config.graceful_timeout = settings.grace_period_s
        config.websocket_max_message_size = settings.ws_max_frame_bytes
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 30
        decline_websocket_compression()
        wsfail.install()  # protocol errors close at once (RFC 6455 7.1.7): see roost.http.wsfail
        return config

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def shutdown_trigger() -> None:
            await ctx.stopping.wait()
            ctx.services.sockets.close_all(CLOSE_GOING_AWAY, "server shutting down")

        async with trio.open_nursery() as nursery:
            run_server = partial(serve, self.app, self.config(ctx), shutdown_trigger=shutdown_trigger)
            self.binds = await nursery.start(run_server)
            ctx.log.info("listening", binds=self.binds)
            self.bound.set()
            task_status.started()

    @property
    def port(self) -> int:
        return int(self.binds[0].rsplit(":", 1)[1])
