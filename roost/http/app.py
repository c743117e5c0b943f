"""Build the QuartTrio app: blueprints, validation and OpenAPI, error bodies, request metrics."""

from __future__ import annotations

import time
import uuid
from typing import Any, Awaitable, Callable

import trio
from quart import Response, g, request
from quart_schema import Info, QuartSchema
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
from structlog.contextvars import bind_contextvars
from werkzeug.exceptions import UnsupportedMediaType

from roost import __version__
from roost.errors import InvalidInput, NotFound
from roost.http import (
    admin,
    device,
    dispatch,
    errors,
    handoffs,
    notifications,
    ops,
    processors,
    scouts,
    type_adapters,
    webhooks,
)
from roost.http.console import console_bp
from roost.http.context import CONFIG_KEY
from roost.http.openapi import RoostOpenAPIProvider
from roost.http.socket import endpoint
from roost.http.socket.asgi import DeviceWebsocketConnection
from roost.runtime import jsonlimits
from roost.runtime.services import Services

BLUEPRINTS = [ops.bp, admin.bp, device.bp, endpoint.bp, scouts.bp, notifications.bp, notifications.unsubscribe_bp,
              handoffs.bp, processors.bp, dispatch.bp, webhooks.bp,
              console_bp]  # the operator console (roost/http/console): HTML, not part of the API
FINAL_SEND_LIMIT_S = 5.0  # the last body chunk of a response, shielded from a drain's cancel


class RoostRequest(TrioRequest):
    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        # Quart answers None for a body not declared JSON, which validation then calls "not an object".
        if not (force or silent or self.is_json):
            raise UnsupportedMediaType("send the body as JSON, with Content-Type: application/json")
        try:
            value = await super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:  # the json module's answer to deep nesting; not a ValueError
            raise InvalidInput(f"the body's JSON is nested deeper than {jsonlimits.MAX_DEPTH} levels",
                               code="malformed_json") from None
        except UnicodeDecodeError as exc:  # Quart decodes the body before parsing, outside its own handler
            raise InvalidInput(f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}",
                               code="malformed_json") from None
        try:  # free-form fields (payload, snapshot, config) are stored and sent on: bound their depth
            jsonlimits.check_depth(value, raw=await self.get_data(as_text=False))
        except jsonlimits.TooDeep as exc:
            raise InvalidInput(str(exc), code="malformed_json") from None
        return value

    def on_json_loading_failed(self, error: Exception) -> None:
        raise InvalidInput(f"the body is not valid JSON: {error}", code="malformed_json")


class CompleteResponses:
    """ASGI middleware closing two gaps between Quart-Trio and Hypercorn when the app answers
    before it has read the request body (a 413, a 401 checked before the body, ...).

    * Hypercorn then closes the connection but does not tell the client, which may send its
      next request on it and never get an answer: such a response says ``Connection: close``.
    * The send that ends a response is where Hypercorn closes (or recycles) the connection. On
      the way it queues a disconnect for the app, and Quart-Trio cancels the handler as soon as
      it sees one, inside that close: the connection was then neither closed nor recycled, and
      hung. That send is shielded (Hypercorn shields its own socket writes too).
    """

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                 send: Callable[[dict[str, Any]], Awaitable[None]]) -> Awaitable[None]:
        if scope["type"] != "http":
            # The app's own coroutine, awaited by the caller: no frame of this one held for the
            # life of a WebSocket (an idle socket should stay small).
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        body_read = not _has_body(scope)

        async def tracked_receive() -> dict[str, Any]:
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read = True
            return message

        async def completing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not body_read:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Shielded so a drain's cancel does not cut a finished response short; bounded so a
                # client that stops reading cannot hold the drain.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_SEND_LIMIT_S):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, tracked_receive, completing_send)


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


# Any token is a method to h11: labelled raw, each new one would add a counter and a histogram for good.
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def metric_method(method: str) -> str:
    """The ``method`` label of a request: one of ``METRIC_METHODS``, else ``OTHER`` (a bounded label set)."""
    return method if method in METRIC_METHODS else "OTHER"


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("roost")
    app.request_class = RoostRequest  # type: ignore[assignment]
    app.asgi_websocket_class = DeviceWebsocketConnection  # no tasks of its own per socket on roost's server
    app.asgi_app = CompleteResponses(app.asgi_app)  # type: ignore[method-assign]
    app.config[CONFIG_KEY] = services
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    type_adapters.install()
    QuartSchema(
        app,
        info=Info(title="roost", version=__version__),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=RoostOpenAPIProvider,
    )
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    errors.install(app)

    @app.before_request
    async def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
        bind_contextvars(request_id=g.request_id)
        if "\x00" in request.path:  # no id holds NUL, and PostgreSQL refuses to even look one up
            raise NotFound("no such resource")

    @app.after_request
    async def finish_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = metric_method(request.method)
        services.metrics.requests.labels(method, rule, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            services.metrics.request_latency.labels(method, rule).observe(time.perf_counter() - started)
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        return response

    return app
