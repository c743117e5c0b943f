"""Domain errors → HTTP: the one table, and the handlers that render every error the same way.

Every error body is ``{"error": {"code": "snake_case", "message": "for a person"}}``. A client's
mistake is a 4xx with a message that says what to fix; only our own bugs are 500, and those
carry no traceback.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Quart, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from roost import errors
from roost.runtime.logging import get_logger

log = get_logger()

STATUS: dict[type[errors.RoostError], int] = {
    errors.InvalidInput: 400,
    errors.Unauthenticated: 401,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.NotConfigured: 503,
    errors.PluginError: 502,
    errors.StorageError: 500,
}


def status_for(exc: errors.RoostError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


def error_response(status: int, code: str, message: str, **extra: Any):
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="roost"'
    return response


def _describe_validation(exc: RequestSchemaValidationError) -> str:
    inner = exc.validation_error
    items = getattr(inner, "errors", None)
    if callable(items):
        parts = []
        for err in items()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            # pydantic's own text here names our model class; say what the client must send instead.
            what = "expected a JSON object" if err.get("type") == "model_type" else err.get("msg", "invalid")
            parts.append(f"{where}: {what}")
        return "; ".join(parts)
    return str(inner)


def install(app: Quart) -> None:
    """Register the handlers that turn every exception into the project's error body."""

    @app.errorhandler(errors.RoostError)
    async def roost_error(exc: errors.RoostError):
        status = status_for(exc)
        if status == 500:
            log.error("request failed", error=str(exc), exc_info=exc)
        elif status > 500:  # the operator's to fix (e.g. no service token): no traceback per request
            log.warning("request refused", error=str(exc), code=exc.code)
        return error_response(status, exc.code, exc.message, **exc.details)

    @app.errorhandler(RequestSchemaValidationError)
    async def validation_error(exc: RequestSchemaValidationError):
        return error_response(400, "validation_failed", _describe_validation(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException):
        status = exc.code or 500
        code = {
            400: "bad_request", 404: "not_found", 405: "method_not_allowed",
            413: "too_large", 415: "unsupported_media_type",
        }.get(status, "http_error")
        message = {
            404: "no such endpoint",
            405: "this endpoint does not take that method",
            413: "request body too large",
        }.get(status, exc.description or exc.name)
        response = error_response(status, code, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # a 405 must say what is allowed
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception):
        log.error("unhandled error", error=repr(exc), exc_info=exc)
        return error_response(500, "internal_error", "internal error; the server log has details")
