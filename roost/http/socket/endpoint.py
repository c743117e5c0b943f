"""The device WebSocket endpoint ``/ws/device``.

Handshake, all within ``ws_hello_timeout_s``: the device authenticates with an
``Authorization: Bearer`` header or a first ``device_hello {token}`` frame, then sends
``register`` (optionally ``{since: seq}``); the server answers ``hello_ok`` and only then adds
the socket to the registry. Afterwards the handler's own task reads frames and dispatches them,
and a writer task, started only while the socket's outbox holds frames, writes them out (so an
idle socket costs one task less: see ``roost.runtime.sockets``); frames go through the socket's
transport (``roost.http.socket.transport``). The keepalive actor pings; a
peer that stays silent is dropped. When the socket ends, whichever side ends it, the frames the
server had already read are still handled (``_handle_the_rest``), so an ack that was read is
persisted. Oversize frames (1009), invalid UTF-8 (1007) and bad framing (1002) fail the
connection beneath the app (``roost.http.socket.stream``); bad or revoked tokens close 1008. The socket
is accepted before any close, so the close code reaches the client.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, websocket
from werkzeug.datastructures import Headers

from roost.errors import InvalidInput
from roost.http.auth import bearer_token
from roost.http.context import services
from roost.http.socket.transport import SocketIO, open_socket_io
from roost.runtime.deadlines import shielded_deadline
from roost.runtime.frames import error_frame, parse
from roost.runtime.logging import bind, get_logger
from roost.runtime.sockets import CLOSE_POLICY, DeviceSocket, encode
from roost.storage import tenancy

bp = Blueprint("ws", __name__)
log = get_logger()
YIELD_EVERY = 32  # frames handled from one read between checkpoints
FINAL_FRAMES_S = 5.0  # at most this long handling the frames read before a socket ended


class _Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def _receive_frame(io: SocketIO) -> dict[str, Any] | None:
    """The next well-formed frame; malformed ones are answered with an error frame and skipped."""
    while True:
        raw = await io.receive()
        try:
            return parse(raw)
        except InvalidInput as exc:
            await websocket.send(encode(error_frame(exc.code, exc.message)))


async def _handshake(io: SocketIO) -> tuple[dict[str, Any], int | None]:
    """Authenticate and wait for ``register``; returns (device identity, since)."""
    db = services().db
    token = bearer_token(websocket.headers)
    device = await tenancy.authenticate_device(db, token) if token else None
    if token and device is None:
        raise _Refused("invalid or revoked device token")
    while True:
        frame = await _receive_frame(io)
        kind = frame["type"]
        if device is None:
            if kind != "device_hello":
                await websocket.send(encode(error_frame("expected_device_hello", "send device_hello {token} first")))
                continue
            hello_token = frame.get("token")
            if not isinstance(hello_token, str):
                raise _Refused("device_hello needs a string token")
            device = await tenancy.authenticate_device(db, hello_token)
            if device is None:
                raise _Refused("invalid or revoked device token")
            continue
        if kind != "register":
            await websocket.send(encode(error_frame("expected_register", "send register {since?} next")))
            continue
        since = frame.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            await websocket.send(encode(error_frame("bad_frame", "register.since must be a non-negative integer")))
            continue
        return device, since


async def _read_loop(sock: DeviceSocket, io: SocketIO, pending: list[str | bytes]) -> None:
    while True:
        pending.extend(await io.receive_some())  # all the frames of one read: one wake-up for them
        sock.last_heard = trio.current_time()
        await _handle(sock, pending)


async def _handle(sock: DeviceSocket, pending: list[str | bytes]) -> None:
    """Handle the frames in ``pending``, oldest first.

    A frame leaves ``pending`` only once its handler has returned, so if this is cancelled (the
    socket closed) the frames not yet handled, including one whose handler was cut short, are
    still there for ``_handle_the_rest``. Handlers queue their work for a writer task and are
    cancelled only before queueing it (a trio channel's send), so a frame is never done twice.
    """
    router = services().frames
    n = 0
    while pending:
        if n and not n % YIELD_EVERY:
            # Let the writer drain what the frames so far were answered with (pongs, errors)
            # before a long burst overflows the outbox.
            await trio.lowlevel.checkpoint()
        n += 1
        try:
            frame = parse(pending[0])
        except InvalidInput as exc:
            sock.send_nowait(error_frame(exc.code, exc.message))
        else:
            if frame["type"] in ("device_hello", "register"):
                sock.send_nowait(error_frame("already_registered", "this socket has already registered"))
            else:
                await router.dispatch(sock, frame)
        del pending[0]  # a list, not a deque: an idle socket keeps this (56 bytes, not 600)


async def _handle_the_rest(sock: DeviceSocket, io: SocketIO, pending: list[str | bytes]) -> None:
    """After the socket ended (peer gone, or closed by the server): handle the frames already read.

    An ack the server has read must reach the database even when the device closes right after
    sending it, or a drain closes the socket (issue 16): without this pass, the frames of the
    last read still waiting in ``pending`` or the inbox were dropped with the cancelled handler
    (1,000 acks and an immediate close left 640-672 of them acked in
    ``tests/integration/test_ws_acks_persisted.py``, the issue saw 846). Shielded, since it runs while the
    handler is being cancelled, and bounded by ``FINAL_FRAMES_S``: a peer that keeps sending
    after a server-side close cannot hold the handler.
    """
    # At most FINAL_FRAMES_S, and at most 1 s past a cancel (the end of a drain's grace period).
    with trio.CancelScope(shield=True, deadline=shielded_deadline(FINAL_FRAMES_S, 1.0)) as scope:
        while True:
            await _handle(sock, pending)
            more = await io.receive_rest()
            if not more:
                break
            pending.extend(more)
    if scope.cancelled_caught:
        log.warning("frames left unhandled after the socket ended", socket=sock.id, count=len(pending))


async def _after_register(sock: DeviceSocket, since: int | None) -> None:
    """Run the jobs' register hooks (replays) while the writer drains, so they can wait for room."""
    s = services()
    # A revocation that landed between authenticating and registering the socket is not missed.
    if not await tenancy.device_is_live(s.db, sock.device_id):
        sock.close(CLOSE_POLICY, "device revoked")
        return
    for hook in tuple(s.frames.on_register):  # an actor may remove its hook meanwhile
        await hook(sock, since)


def _drop_request_headers() -> None:
    """Free the upgrade request's headers once the socket is authenticated and registered.

    Quart (a werkzeug ``Headers``) and Hypercorn (the ASGI scope's header list) each keep a copy
    for the life of the socket: about 2 KiB per idle socket with a minimal client and 5 KiB with a
    browser's headers (2,000 idle sockets: 40.0 -> 38.2 KiB of RSS each with the reference
    client, 44.0 -> 38.6 KiB with browser-like ones; ``bench/ws_connections.py [--browser]``).
    Nothing reads them afterwards: the token has been checked, and Hypercorn's access log, the
    one reader left, is off (``roost.http.server``).
    """
    ws = websocket._get_current_object()
    ws.headers = Headers()
    ws.scope["headers"] = []


@bp.websocket("/ws/device")
async def device_socket() -> None:
    s = services()
    ws = websocket._get_current_object()
    # Before accept, so every frame comes this way. One object per socket, and no extra
    # coroutine frame or context manager: an idle socket should stay small.
    io = open_socket_io(ws)
    try:
        await websocket.accept()
        if s.stopping.is_set():
            await websocket.close(1001, "server shutting down")
            return
        device = None
        try:
            with trio.fail_after(s.settings.ws_hello_timeout_s), s.sockets.handshaking():
                device, since = await _handshake(io)
        except trio.TooSlowError:
            await websocket.close(CLOSE_POLICY, "no device_hello/register in time")
            return
        except _Refused as exc:
            await websocket.close(CLOSE_POLICY, exc.reason)
            return
        if device is not None:
            bind(device_id=device["device_id"])
            # Touched before the socket is registered: nothing else (a keepalive ping, a proposal) may
            # be queued to it between registration and hello_ok, which must be its first frame.
            await tenancy.touch_device(s.db, device["device_id"], s.clock.now())
        if device is None or s.stopping.is_set():
            # A drain cut the handshake short (``close_all`` cancels it), or began before the socket
            # was registered (its ``close_all`` could not see it): checked after the last await.
            await websocket.close(1001, "server shutting down")
            return
        sock = s.sockets.open(device["device_id"], device["user_id"], device["account_id"])
        del device  # the socket keeps the ids; an idle socket should not also keep the row
        _drop_request_headers()
        pending: list[str | bytes] = []  # frames read and not yet handled
        try:
            sock.send_nowait({"type": "hello_ok", "device_id": sock.device_id, "user_id": sock.user_id,
                       "server_time": s.clock.now().isoformat().replace("+00:00", "Z")})
            async with trio.open_nursery() as nursery:
                # close() cancels this nursery; queued frames start a writer task in it. That may
                # happen from any task (whoever queues a frame), so the writer goes through ``io``
                # (the websocket object's own send, not the context-local proxy's, on the portable
                # path; beneath ASGI on roost's Hypercorn: ``roost.http.socket.transport``).
                sock.attach(nursery, io)
                nursery.start_soon(_after_register, sock, since)
                await _read_loop(sock, io, pending)
        finally:
            sock.detach()
            # Still registered meanwhile, so a drain's ack writer waits for these (see Deliverer).
            await _handle_the_rest(sock, io, pending)
            s.sockets.remove(sock)
        if sock.close_code is not None:
            with trio.move_on_after(2):
                await websocket.close(sock.close_code, sock.close_reason)
    finally:
        io.close()
