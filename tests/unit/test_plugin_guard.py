"""The plugin boundary: what a plugin raises becomes a PluginError; roost's own errors pass unchanged."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio
from structlog.testing import capture_logs

from roost.errors import InvalidInput, PluginError
from roost.plugins.guard import declared_errors, plugin_call, plugin_context


class Declared(Exception):
    pass


class Plugin:
    errors = (Declared,)


def test_a_declared_or_transport_error_is_an_expected_plugin_error_logged_by_nobody() -> None:
    for raised in (Declared("quota"), OSError("reset")):
        with capture_logs() as logs, pytest.raises(PluginError) as caught:
            with plugin_call("connector", "box", declared_errors(Plugin())):
                raise raised
        assert caught.value.unexpected is False and caught.value.error is raised
        assert caught.value.message == f"{type(raised).__name__}: {raised}" and logs == []


def test_anything_else_is_a_plugin_bug_logged_with_its_traceback() -> None:
    with capture_logs() as logs, pytest.raises(PluginError) as caught:
        with plugin_call("classifier", "smart", declared_errors(Plugin())):
            {}["missing"]
    assert caught.value.unexpected is True and isinstance(caught.value.__cause__, KeyError)
    assert caught.value.details == {"plugin_kind": "classifier", "plugin": "smart"}
    [entry] = logs
    assert entry["event"] == "plugin raised an unexpected error" and isinstance(entry["exc_info"], KeyError)


def test_a_roost_error_raised_on_purpose_and_cancellation_pass_unchanged() -> None:
    with pytest.raises(InvalidInput):
        with plugin_call("connector", "box"):
            raise InvalidInput("bad config")
    with pytest.raises(KeyboardInterrupt):
        with plugin_call("connector", "box"):
            raise KeyboardInterrupt


async def test_cancellation_inside_a_plugin_call_is_never_swallowed() -> None:
    with trio.move_on_after(0.01) as scope:
        with plugin_call("connector", "box"):
            await trio.sleep(10)
    assert scope.cancelled_caught


@asynccontextmanager
async def session(fail_on: str) -> AsyncIterator[str]:
    if fail_on == "enter":
        raise ZeroDivisionError("enter")
    yield "session"
    if fail_on == "exit":
        raise ZeroDivisionError("exit")


async def test_plugin_context_guards_enter_and_exit_but_not_the_body() -> None:
    with pytest.raises(PluginError, match="enter"):
        async with plugin_context("connector", "box", lambda: session("enter")):
            pass
    with pytest.raises(PluginError, match="exit"):
        async with plugin_context("connector", "box", lambda: session("exit")) as value:
            assert value == "session"
    with pytest.raises(KeyError):  # roost's own bug in the body stays what it is
        async with plugin_context("connector", "box", lambda: session("none")):
            raise KeyError("roost bug")
