"""The one exception hierarchy of roost.

Each type has one meaning; ``roost.http.errors`` maps each to an HTTP status in one table::

    RoostError
    ├── InvalidInput          the caller sent something malformed or out of range (400)
    ├── Unauthenticated       no credentials, or credentials that do not match (401)
    ├── NotConfigured         the operator has not configured what this needs (503)
    ├── NotFound              no such row, or not one the caller may see (404)
    │   └── MissingReference  a foreign key names a row that does not exist (400)
    ├── Conflict              the request clashes with current state (409)
    │   ├── AlreadyRunning    a run of this job is already going on (409)
    │   └── AlreadyExists     a uniqueness constraint refused the write (409)
    ├── TooLarge              a body or frame over its size limit (413)
    ├── PluginError           a plugin (connector, classifier, transport, assessor, processor) failed (502)
    └── StorageError          the database failed in a way the caller did not cause (500)
        └── SchemaError       migrations are missing, out of order or failed

Driver errors become these at the storage boundary only, chained with ``from exc``; whatever a
plugin raises becomes a ``PluginError`` at the plugin boundary (``roost.plugins.guard``).
Actors catch these by type and keep going; any other exception is a bug and goes to the
supervisor, which logs it with its traceback and counts it against the restart budget.
"""

from __future__ import annotations

from typing import Any


class RoostError(Exception):
    """Root of every error roost raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class InvalidInput(RoostError):
    code = "invalid_input"


class Unauthenticated(RoostError):
    code = "unauthenticated"


class NotConfigured(RoostError):
    code = "not_configured"


class NotFound(RoostError):
    code = "not_found"


class Conflict(RoostError):
    code = "conflict"


class AlreadyRunning(Conflict):
    code = "already_running"


class TooLarge(RoostError):
    code = "too_large"


class PluginError(RoostError):
    """A plugin raised: its own declared error or a transport error (``unexpected`` False), or
    anything else (``unexpected`` True: a bug in the plugin, logged with its traceback where it
    was caught). The message is the original's ``Type: text``; the original is the cause."""

    code = "plugin_error"

    def __init__(self, kind: str, name: str, error: BaseException, *, unexpected: bool = False):
        super().__init__(f"{type(error).__name__}: {error}"[:1000],
                         details={"plugin_kind": kind, "plugin": name})
        self.kind = kind
        self.name = name
        self.error = error
        self.unexpected = unexpected


class StorageError(RoostError):
    code = "storage_error"


class SchemaError(StorageError):
    code = "schema_error"


class AlreadyExists(Conflict):
    """A uniqueness constraint in the database refused the write."""

    code = "already_exists"


class MissingReference(InvalidInput):
    """A foreign key named a row that does not exist."""

    code = "missing_reference"


def describe(exc: BaseException) -> str:
    """``Type: text`` of an error as it is recorded on a row (a plugin's error as its original)."""
    if isinstance(exc, PluginError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def unwrap_group(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one each; ``exc`` itself otherwise.

    A nursery wraps what its tasks raise: where one task failed, callers want that error as itself.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
