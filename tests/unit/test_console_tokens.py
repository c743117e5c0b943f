"""ROOST_CONSOLE_TOKENS: name:role:token entries, checked at start-up without echoing a token."""

from __future__ import annotations

import pytest

from roost.errors import InvalidInput
from roost.runtime.config import Settings
from roost.runtime.secrets import parse_console_tokens

A = "a" * 32
B = "b" * 40


def test_console_tokens_parse_names_roles_and_tokens():
    assert parse_console_tokens(f" ops:operate:{A} , viewer:read:{B},") == {"ops": ("operate", A),
                                                                           "viewer": ("read", B)}
    assert parse_console_tokens(None) == {} and parse_console_tokens("") == {}


@pytest.mark.parametrize("raw, why", [
    (f"ops:admin:{A}", "role"),
    (f"ops:{A}", "role"),
    ("ops:read:short", "at least 32"),
    (f"ops:read:{A},ops:operate:{B}", "used twice"),
    (f"ops:read:{A},two:operate:{A}", "same as another"),
    (f"bad name:read:{A}", "name:role:token"),
    ("no-colons-at-all", "name:role:token"),
])
def test_bad_console_tokens_are_refused_naming_the_fault_not_the_token(raw, why):
    with pytest.raises(InvalidInput) as caught:
        parse_console_tokens(raw)
    assert why in caught.value.message and A not in caught.value.message


def test_settings_check_console_tokens_from_the_environment():
    settings = Settings.from_env({"ROOST_CONSOLE_TOKENS": f"ops:operate:{A}", "ROOST_CONSOLE_SESSION_S": "60"})
    assert settings.console_tokens_by_name == {"ops": ("operate", A)} and settings.console_session_s == 60
    assert A not in repr(settings)
    with pytest.raises(InvalidInput):
        Settings.from_env({"ROOST_CONSOLE_TOKENS": "ops:read:short"})
    with pytest.raises(InvalidInput):
        Settings.from_env({"ROOST_CONSOLE_LOGIN_FAILURES": "0"})
