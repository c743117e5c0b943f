"""Domain errors → HTTP: the one table, and the handlers that render every error the same way.

Every error body is ``{"error": {"code": "snake_case", "message": "for a person"}}``. A client's
mistake is a 4xx with a message that says what to fix; only our own bugs are 500, and those
carry no traceback.

No database driver's text reaches a client (it can name the database's host and port, or echo a
value): a ``StorageError``, and an error the storage layer mapped from a driver exception, answer a
generic message with the request's id (``request_id`` in the body, as in the ``X-Request-Id``
header); the log line with the driver's detail carries the same id.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Quart, g, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from roost import errors
from roost.runtime.logging import get_logger

log = get_logger()

# The one table of statuses; a class answers its nearest listed ancestor's (500 when none is).
# ``roost.errors`` draws them in its tree, and tests/unit/test_errors.py checks the two agree.
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
    request_id: str | None = None  # on 500 answers: quote it to the operator (the log line carries it)


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


# A driver's own exception types, by module: what the storage layer chains (``raise ... from exc``).
_DRIVER_MODULES = ("asyncpg", "sqlite3", "_sqlite3")

# What a client reads instead of the driver's text, per error class.
_GENERIC = {
    errors.StorageError: "the database failed; the server log has details under this request id",
    errors.InvalidInput: "the database refused a value in the request; the server log has details under this "
                         "request id",
}


def _request_id() -> str:
    return getattr(g, "request_id", "") or ""


def _from_driver(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return cause is not None and type(cause).__module__.split(".")[0] in _DRIVER_MODULES


def _public_message(exc: errors.RoostError) -> str | None:
    """The message to send instead of ``exc.message`` when that may hold driver text, else None."""
    if isinstance(exc, errors.StorageError):
        return _GENERIC[errors.StorageError]
    if type(exc) is errors.InvalidInput and _from_driver(exc):
        return _GENERIC[errors.InvalidInput]
    return None


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
        public = _public_message(exc)
        if public is not None:
            # The detail (driver text, host, value) goes to the log only; the client gets the id to quote.
            log.error("database error", error=str(exc), code=exc.code, status=status, request_id=_request_id(),
                      exc_info=exc if status == 500 else None)
            return error_response(status, exc.code, public, request_id=_request_id())
        if status == 500:
            log.error("request failed", error=str(exc), exc_info=exc)
        elif status > 500:  # the operator's to fix (e.g. no service token): no traceback per request
            log.warning("request refused", error=str(exc), code=exc.code)
        extra = {"request_id": _request_id()} if status == 500 else {}  # our failure: an id to quote
        return error_response(status, exc.code, exc.message, **{**exc.details, **extra})

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
        return error_response(500, "internal_error", "internal error; the server log has details under this "
                              "request id", request_id=_request_id())
