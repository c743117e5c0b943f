"""The plugin boundary: whatever a plugin raises reaches roost as a ``PluginError``.

Plugins (connectors, classifiers, transports, assessors, session processors) are code roost does
not control, so a call into one may raise anything. Every such call is made inside
``plugin_call(kind, name)``:

* a ``RoostError`` the plugin raised on purpose (``InvalidInput`` for a config it cannot use,
  say) passes as it is;
* an error the caller expects (``TriageUnavailable`` from a classifier), one the plugin
  declares (its ``errors`` attribute), or a transport error (``OSError``, ``trio.TooSlowError``,
  a ``RemoteError`` such as ``ImapError``) becomes a ``PluginError``: expected, recorded by the
  caller in one line;
* anything else is a bug in the plugin: it is logged here with its traceback and becomes a
  ``PluginError`` with ``unexpected=True``.

So a caller (an actor, a domain operation) catches ``PluginError`` (with ``StorageError``) by
type and goes on with the next item or scout: one bad plugin never stops the others. A bug in
roost's own code is not inside this boundary and goes to the supervisor. ``trio.Cancelled`` (a
BaseException) always passes.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import AsyncIterator, Callable, Iterator, TypeVar

import trio

from roost.errors import PluginError, RoostError
from roost.runtime.destinations import DestinationNotAllowed, RemoteError
from roost.runtime.logging import get_logger

log = get_logger()
T = TypeVar("T")

# The address rules' refusals and the by-kind remote errors are transport errors too: expected.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, trio.TooSlowError, DestinationNotAllowed, RemoteError)


def declared_errors(plugin: object) -> tuple[type[BaseException], ...]:
    """The exception types ``plugin`` says it raises (its ``errors`` attribute), plus transport errors."""
    declared = getattr(plugin, "errors", ())
    if not isinstance(declared, tuple):
        declared = ()
    return (*TRANSPORT_ERRORS, *(t for t in declared if isinstance(t, type) and issubclass(t, BaseException)))


@contextmanager
def plugin_call(kind: str, name: str, expected: tuple[type[BaseException], ...] = TRANSPORT_ERRORS
                ) -> Iterator[None]:
    """Run the body as a call into plugin ``name`` of ``kind``; see the module docstring.

    Raises:
        PluginError: the plugin raised something other than a RoostError.
        RoostError: the plugin raised one on purpose.
    """
    try:
        yield
    except RoostError:
        raise
    except Exception as exc:
        raise plugin_error(kind, name, exc, expected) from exc


def plugin_error(kind: str, name: str, exc: Exception,
                 expected: tuple[type[BaseException], ...] = TRANSPORT_ERRORS) -> PluginError:
    """The ``PluginError`` for what plugin ``name`` raised (not a RoostError); an unexpected one is
    logged here with its traceback. For hot paths that use a bare ``try``/``except`` instead of
    ``plugin_call``."""
    if isinstance(exc, expected):
        return PluginError(kind, name, exc)
    log.error("plugin raised an unexpected error", plugin_kind=kind, plugin=name,
              error=f"{type(exc).__name__}: {exc}"[:500], exc_info=exc)
    return PluginError(kind, name, exc, unexpected=True)


@asynccontextmanager
async def plugin_context(kind: str, name: str, open_: Callable[[], AbstractAsyncContextManager[T]],
                         expected: tuple[type[BaseException], ...] = TRANSPORT_ERRORS) -> AsyncIterator[T]:
    """Enter and leave a plugin's async context (a connector's connection, say) inside the boundary,
    while the body, roost's own code, stays outside it: an error of the body passes unchanged.

    Raises:
        PluginError: opening or closing the plugin's context raised.
    """
    with plugin_call(kind, name, expected):
        cm = open_()
        value = await cm.__aenter__()
    try:
        yield value
    except BaseException as exc:
        try:
            suppressed = await cm.__aexit__(type(exc), exc, exc.__traceback__)
        except BaseException as exit_exc:
            if exit_exc is exc:
                raise
            with plugin_call(kind, name, expected):
                raise exit_exc from exc
            raise  # unreachable: plugin_call raised
        if not suppressed:
            raise
    else:
        with plugin_call(kind, name, expected):
            await cm.__aexit__(None, None, None)
