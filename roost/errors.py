"""The exception hierarchy of roost, drawn here and tested against the classes (tests/unit/test_errors.py).

Each type has one meaning. ``RoostError`` is what roost raises on purpose; ``roost.http.errors``
maps each to an HTTP status in one table (shown in brackets)::

    RoostError              an error roost raises on purpose
    ├── InvalidInput        the caller sent something malformed or out of range (400)
    │   ├── MissingReference  a foreign key names a row that does not exist (400)
    │   └── TooDeep         JSON nested deeper than allowed; also a ValueError (400)
    ├── Unauthenticated     no credentials, or credentials that do not match (401)
    ├── NotConfigured       the operator has not configured what this needs (503)
    ├── NotFound            no such row, or not one the caller may see (404)
    ├── Conflict            the request clashes with current state (409)
    │   ├── AlreadyRunning  a run of this job is already going on (409)
    │   └── AlreadyExists   a uniqueness constraint refused the write (409)
    ├── TooLarge            a body or frame over its size limit (413)
    ├── PluginError         a plugin (connector, classifier, transport, assessor, processor) failed (502)
    ├── StorageError        the database failed in a way the caller did not cause (500)
    │   └── SchemaError     migrations are missing, out of order or failed (500)
    └── ActorReturned       an actor's run() returned though nobody asked it to stop: a bug (500)
    PluginFailure           a failure a plugin reports, inside a plugin call
    ├── RemoteError         a remote side failed in a known way ("<kind>: <our message>")
    ├── DestinationNotAllowed  the address rules refuse every address of a host
    ├── TriageUnavailable   a classifier cannot decide now; the item is retried later
    └── TransportError      a mail transport could not send
        ├── TransientError  worth retrying later
        └── PermanentError  retrying will not help

Driver errors become these at the storage boundary only, chained with ``from exc``. A
``PluginFailure`` (its own root: not a ``RoostError``) is raised by plugins and by the helpers
they call (``roost.runtime.destinations``); at the plugin boundary (``roost.plugins.guard``) it
becomes a ``PluginError``, and so does whatever else a plugin raises. Actors catch
``RoostError`` types and keep going; any other exception is a bug and goes to the supervisor,
which logs it with its traceback and counts it against the restart budget.
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


class TooDeep(InvalidInput, ValueError):
    """JSON nested deeper than allowed; ``where`` names the top-level field (or ``body``).

    Also a ``ValueError``, as ``json.loads`` raises for any JSON it refuses
    (``roost.runtime.jsonlimits.loads``).
    """

    code = "malformed_json"

    def __init__(self, where: str, limit: int):
        super().__init__(f"{where}: JSON nested deeper than {limit} levels")
        self.where = where


class ActorReturned(RoostError):
    """An actor's run() returned while the process was not stopping (a bug; recorded as its crash)."""


# -- failures a plugin reports (see the module docstring) -----------------------------------------


class PluginFailure(Exception):
    """A failure a plugin reports, expected by roost; the plugin boundary turns it into a ``PluginError``."""


REMOTE_ERROR_KINDS = ("blocked", "refused", "unreachable", "timeout", "tls", "auth", "bad_answer", "insecure")


class RemoteError(PluginFailure):
    """A remote side failed in a known way; ``str()`` is ``"<kind>: <our message>"``.

    What a server answered is not echoed into ``last_error`` (it reaches the API): the kind and
    our own words about it are (``roost.runtime.destinations.classify_error``).
    """

    def __init__(self, kind: str, message: str):
        assert kind in REMOTE_ERROR_KINDS, kind
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class DestinationNotAllowed(PluginFailure):
    """The host resolves only to addresses the policy refuses (the message says why and how to allow)."""


class TriageUnavailable(PluginFailure):
    """The classifier could not decide now; the item is retried later.

    Its message is shown in the item's ``last_error``: the classifier's own words, never text
    from the remote side (``roost.runtime.destinations.classify_error`` gives the kind).
    """

    safe_to_show = True


class TransportError(PluginFailure):
    """A mail transport's send failed; ``str(exc)`` says why."""


class TransientError(TransportError):
    """Worth retrying later."""


class PermanentError(TransportError):
    """Retrying will not help."""


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
