"""Service tokens and secret keys, parsed from their settings and checked for strength.

Kept apart from ``roost.runtime.config`` (which calls these) because they are the one part of the
settings with security rules of their own: named tokens for rotation, a minimum length, and keys
that must be strong enough to seal secrets and sign links.
"""

from __future__ import annotations

import re

from roost.errors import InvalidInput

MIN_SERVICE_TOKEN_CHARS = 32
MAKE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
MAKE_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def parse_service_tokens(single: str | None, named: str | None) -> dict[str, str]:
    """``{name: token}`` from ROOST_SERVICE_TOKEN (named ``default``) and ROOST_SERVICE_TOKENS (``name:token,...``).

    Raises:
        InvalidInput: naming the variable and what to fix, never echoing a token.
    """
    found: dict[str, str] = {}
    entries: list[tuple[str, str, str]] = []
    if single:
        entries.append(("ROOST_SERVICE_TOKEN", "default", single.strip()))
    for raw in (named or "").split(","):
        if not raw.strip():
            continue
        name, sep, token = raw.strip().partition(":")
        if not sep or not _TOKEN_NAME.match(name):
            raise InvalidInput("ROOST_SERVICE_TOKENS: each entry is name:token, the name of letters, digits, "
                               f"'_', '-' or '.' (up to 40); got an entry named {name[:40]!r}" if sep else
                               "ROOST_SERVICE_TOKENS: each entry is name:token (comma-separated)")
        entries.append(("ROOST_SERVICE_TOKENS", name, token.strip()))
    for variable, name, token in entries:
        if name in found:
            raise InvalidInput(f"{variable}: the token name {name!r} is used twice"
                               + (" (ROOST_SERVICE_TOKEN is named 'default')" if name == "default" else ""))
        if len(token) < MIN_SERVICE_TOKEN_CHARS:
            raise InvalidInput(f"{variable}: the token named {name!r} is {len(token)} characters; a service token "
                               f"needs at least {MIN_SERVICE_TOKEN_CHARS}. Make one with: {MAKE_TOKEN}")
        if token in found.values():
            raise InvalidInput(f"{variable}: the token named {name!r} is the same as another one; give each its own")
        found[name] = token
    return found


CONSOLE_ROLES = ("read", "operate")


def parse_console_tokens(raw: str | None) -> dict[str, tuple[str, str]]:
    """``{name: (role, token)}`` from ROOST_CONSOLE_TOKENS (``name:role:token,...``; role ``read`` or ``operate``).

    Raises:
        InvalidInput: naming the entry and what to fix, never echoing a token.
    """
    found: dict[str, tuple[str, str]] = {}
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        name, _, rest = entry.strip().partition(":")
        role, sep, token = rest.partition(":")
        token = token.strip()
        if not sep or not _TOKEN_NAME.match(name):
            raise InvalidInput("ROOST_CONSOLE_TOKENS: each entry is name:role:token (comma-separated), the name of "
                               f"letters, digits, '_', '-' or '.' (up to 40); got an entry named {name[:40]!r}")
        if role not in CONSOLE_ROLES:
            raise InvalidInput(f"ROOST_CONSOLE_TOKENS: the token named {name!r} has role {role[:20]!r}; "
                               "a role is read or operate")
        if name in found:
            raise InvalidInput(f"ROOST_CONSOLE_TOKENS: the token name {name!r} is used twice")
        if len(token) < MIN_SERVICE_TOKEN_CHARS:
            raise InvalidInput(f"ROOST_CONSOLE_TOKENS: the token named {name!r} is {len(token)} characters; a console "
                               f"token needs at least {MIN_SERVICE_TOKEN_CHARS}. Make one with: {MAKE_TOKEN}")
        if any(token == other for _, other in found.values()):
            raise InvalidInput(f"ROOST_CONSOLE_TOKENS: the token named {name!r} is the same as another one")
        found[name] = (role, token)
    return found


def parse_secret_keys(single: str | None, many: str | None) -> tuple[str, ...]:
    """The secret keys, in order (the first seals), from ROOST_SECRET_KEYS or ROOST_SECRET_KEY.

    Raises:
        InvalidInput: both set, or a key that is not strong enough (see ``check_key_strength``).
    """
    if single and many:
        raise InvalidInput("ROOST_SECRET_KEY and ROOST_SECRET_KEYS are both set; set one (to rotate, put the new "
                           "key first in ROOST_SECRET_KEYS and the old one after it)")
    variable = "ROOST_SECRET_KEYS" if many else "ROOST_SECRET_KEY"
    keys = tuple(k.strip() for k in (many.split(",") if many else [single] if single else []))
    for i, key in enumerate(keys):
        why = key_weakness(key)
        if why:
            where = f"key {i + 1} of {variable}" if many else variable
            raise InvalidInput(f"{where} {why}. Make a key with: {MAKE_KEY}")
    if len(set(keys)) != len(keys):
        raise InvalidInput(f"{variable} lists the same key twice")
    return keys


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak to seal secrets, or None.

    A key is accepted when it is a Fernet key (url-safe base64 of 32 random bytes), or at least 32
    characters of which at least 16 differ. The second is a floor against typing ``changeme`` or a
    repeated letter, not a measure of entropy: a generated key is what the message asks for.
    """
    if not key:
        return "is empty"
    if len(key) == 44:
        import base64
        import binascii

        try:
            if len(base64.urlsafe_b64decode(key.encode("ascii"))) == 32:
                return None
        except (binascii.Error, ValueError, UnicodeEncodeError):
            pass
    if len(key) < 32:
        return f"is {len(key)} characters; a secret key needs at least 32 (or a Fernet key)"
    if len(set(key)) < 16:
        return f"has only {len(set(key))} distinct characters; it looks typed, not generated"
    return None


# Knobs where zero makes no sense: a zero interval is a busy loop, a zero buffer or pool is no buffer or pool.
