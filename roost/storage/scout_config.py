"""Connector and classifier secrets in a scout's config: redacted on the way out, sealed at rest.

A config key whose name says it holds a secret (``password``, ``api_key``, ``token``, ...) is
never returned by the API: it reads ``"***"``. When ``ROOST_SECRET_KEY`` is set, such values
are stored as ``{"$sealed": "<Fernet token>"}`` (AES-128-CBC + HMAC-SHA256 from the
``cryptography`` package, key derived from the setting with SHA-256), so a copy of the database
alone does not reveal them. Without the key they are stored as given, and the status says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from roost.errors import NotConfigured

REDACTED = "***"
SEALED = "$sealed"
_SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|credentials?)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


class SecretBox:
    """Seals and opens secret config values; a box without a key passes them through."""

    def __init__(self, key: str | None):
        self._fernet = None
        if key:
            from cryptography.fernet import Fernet

            self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))

    @property
    def sealing(self) -> bool:
        return self._fernet is not None

    def seal(self, config: Any) -> Any:
        """``config`` with every secret value sealed (when a key is set)."""
        return _walk(config, self._seal_value)

    def open(self, config: Any) -> Any:
        """``config`` with every sealed value opened, for a connector to use.

        Raises:
            NotConfigured: a value is sealed and no key (or another key) is set.
        """
        return _walk(config, self._open_value)

    def _seal_value(self, value: Any) -> Any:
        if self._fernet is None or _is_sealed(value) or value is None:
            return value
        return {SEALED: self._fernet.encrypt(json.dumps(value).encode()).decode()}

    def _open_value(self, value: Any) -> Any:
        if not _is_sealed(value):
            return value
        if self._fernet is None:
            raise NotConfigured("a scout secret is sealed but ROOST_SECRET_KEY is not set")
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(value[SEALED].encode()))
        except InvalidToken as exc:
            raise NotConfigured("a scout secret was sealed with another ROOST_SECRET_KEY") from exc


def _is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}


def _walk(config: Any, fn: Any) -> Any:
    """Apply ``fn`` to the value of every secret-named key, at any depth."""
    if isinstance(config, dict):
        return {k: (fn(v) if is_secret_name(k) else _walk(v, fn)) for k, v in config.items()}
    if isinstance(config, list):
        return [_walk(v, fn) for v in config]
    return config


def redact(config: Any) -> Any:
    """``config`` as the API shows it: every secret value replaced by ``"***"``."""
    if isinstance(config, dict):
        return {k: (REDACTED if is_secret_name(k) and v is not None else redact(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


def merge_redacted(new: Any, old: Any) -> Any:
    """A PATCHed config: a secret sent back as ``"***"`` keeps the stored (sealed) value."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = {}
        for k, v in new.items():
            if is_secret_name(k) and v == REDACTED and k in old:
                out[k] = old[k]
            else:
                out[k] = merge_redacted(v, old.get(k))
        return out
    return new
