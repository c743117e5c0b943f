"""Build the QuartTrio app: blueprints, validation and OpenAPI, error bodies, request metrics."""

from __future__ import annotations

import time
import uuid

from quart import Response, g, request
from quart_schema import Info, QuartSchema
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest
from structlog.contextvars import bind_contextvars

from roost import __version__
from roost.errors import InvalidInput
from roost.http import admin, device, errors, ops, scouts, ws
from roost.http.context import CONFIG_KEY
from roost.runtime.services import Services

BLUEPRINTS = [ops.bp, admin.bp, device.bp, ws.bp, scouts.bp]


class RoostRequest(TrioRequest):
    def on_json_loading_failed(self, error: Exception) -> None:
        raise InvalidInput(f"the body is not valid JSON: {error}", code="malformed_json")


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("roost")
    app.request_class = RoostRequest  # type: ignore[assignment]
    app.config[CONFIG_KEY] = services
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(
        app,
        info=Info(title="roost", version=__version__),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    errors.install(app)

    @app.before_request
    async def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex
        bind_contextvars(request_id=g.request_id)

    @app.after_request
    async def finish_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        services.metrics.requests.labels(request.method, rule, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            services.metrics.request_latency.labels(request.method, rule).observe(time.perf_counter() - started)
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        return response

    return app
