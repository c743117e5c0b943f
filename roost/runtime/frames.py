"""Device WebSocket frames: parsing, and the table of handlers for client frame types.

Jobs add a handler for the frame types they own (``scout_proposal_ack``, ``send_result``, ...)
with ``FrameRouter.add``; a frame of an unknown type gets an ``error`` frame, never a close.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from roost.errors import InvalidInput
from roost.runtime import jsonlimits
from roost.runtime.sockets import DeviceSocket

Handler = Callable[[DeviceSocket, dict[str, Any]], Awaitable[None]]
RegisterHook = Callable[[DeviceSocket, int | None], Awaitable[None]]


def parse(text: str | bytes | None) -> dict[str, Any]:
    """One frame → a dict with a string ``type``.

    Raises:
        InvalidInput: with code ``bad_json`` or ``bad_frame``.
    """
    if not isinstance(text, str):
        # Quart hands an empty binary frame over as None (``event.get("bytes") or event["text"]``).
        raise InvalidInput("frames are JSON text, not binary", code="bad_frame")
    try:
        frame = jsonlimits.loads(text)  # never RecursionError: deep nesting is bad_json like any bad JSON
    except jsonlimits.TooDeep as exc:
        raise InvalidInput(f"frame {exc}", code="bad_json") from None
    except ValueError as exc:
        raise InvalidInput(f"frame is not valid JSON: {exc}", code="bad_json") from None
    if "\\u" in text and not _storable(frame):
        # Only a \u escape can put these in a frame (a text frame is valid UTF-8, and JSON refuses raw
        # control characters in strings); PostgreSQL refuses both, so a frame carrying one would
        # otherwise fail deep inside whichever job stores its fields.
        raise InvalidInput("frame text may not contain NUL (\\u0000) or an unpaired surrogate", code="bad_frame")
    if not isinstance(frame, dict):
        raise InvalidInput("a frame is a JSON object", code="bad_frame")
    if not isinstance(frame.get("type"), str):
        raise InvalidInput("a frame needs a string 'type'", code="bad_frame")
    return frame


def _storable(value: Any) -> bool:
    """No string in ``value`` (keys included) holds NUL or a lone surrogate."""
    return not any("\x00" in text or not text.isascii() and _has_surrogate(text)
                   for text in jsonlimits.strings(value))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def error_frame(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}


async def _pong(sock: DeviceSocket, frame: dict[str, Any]) -> None:
    """The client's answer to our ping; hearing it at all is what counts."""


async def _ping(sock: DeviceSocket, frame: dict[str, Any]) -> None:
    sock.send_nowait({"type": "pong"})


class FrameRouter:
    """Handlers by frame type, and hooks run when a socket registers.

    Actors add theirs in ``run``; adding the same handler or hook again (the actor restarted) is
    a no-op, so they stay in place across a restart.
    """

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {"pong": _pong, "ping": _ping}
        self.on_register: list[RegisterHook] = []

    def add(self, frame_type: str, handler: Handler) -> None:
        """Handle ``frame_type`` with ``handler``; ValueError if another handler has it."""
        if self.handlers.setdefault(frame_type, handler) != handler:
            raise ValueError(f"frame type {frame_type!r} already has a handler")

    def add_register_hook(self, hook: RegisterHook) -> None:
        """Run ``hook`` in each socket's task once it has registered (after ``hello_ok``)."""
        if hook not in self.on_register:
            self.on_register.append(hook)

    async def dispatch(self, sock: DeviceSocket, frame: dict[str, Any]) -> None:
        handler = self.handlers.get(frame["type"])
        if handler is None:
            sock.send_nowait(error_frame("unknown_type", f"unknown frame type {frame['type']!r}"))
            return
        try:
            await handler(sock, frame)
        except InvalidInput as exc:
            sock.send_nowait(error_frame(exc.code, exc.message))
