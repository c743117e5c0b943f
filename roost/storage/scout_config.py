"""Connector and classifier secrets in a scout's config: redacted on the way out, sealed at rest.

A config key whose name says it holds a secret (``password``, ``api_key``, ``token``, ...) is
never returned by the API: it reads ``"***"``. When a secret key is set (``ROOST_SECRET_KEYS`` or
``ROOST_SECRET_KEY``), such values are stored as ``{"$sealed": "<Fernet token>"}`` (AES-128-CBC +
HMAC-SHA256 from the ``cryptography`` package), so a copy of the database alone does not reveal
them. Without a key they are stored as given; the start-up log and ``/api/admin/status`` say so.

Keys: each configured key is input keying material, never used raw. HKDF-SHA256 derives one
sub-key per purpose from it (``subkey``: sealing here, unsubscribe links in roost.domain.digest), so a
key that leaks from one use says nothing about another. The first key seals; every key opens
(``MultiFernet``), so a key is rotated by putting the new one first, running ``roost reseal``
(which re-encrypts every stored secret under the first key, and seals plaintext ones), then
dropping the old one. Values sealed before sub-keys existed (Fernet keyed with SHA-256 of the
key) still open, and ``roost reseal`` moves them to the derived key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from roost.errors import NotConfigured

REDACTED = "***"
SEALED = "$sealed"
_SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|credentials?)$", re.IGNORECASE)

# HKDF "info" per purpose: changing one invalidates what that purpose made (sealed values, links).
PURPOSE_SEALING = b"roost/scout-secrets/fernet/v1"
PURPOSE_UNSUBSCRIBE = b"roost/unsubscribe-links/hmac-sha256/v1"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def subkey(key: str | bytes, purpose: bytes, length: int = 32) -> bytes:
    """A sub-key of ``key`` for one purpose (HKDF-SHA256, no salt: the key is already uniform or long)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    material = key.encode() if isinstance(key, str) else key
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(material)


def _keys(keys: str | Sequence[str] | None) -> list[str]:
    if not keys:
        return []
    return [keys] if isinstance(keys, str) else [k for k in keys if k]


class SecretBox:
    """Seals and opens secret config values; a box without a key passes them through.

    ``keys`` is the settings' ``sealing_keys`` (first seals, all open), or one key.
    """

    def __init__(self, keys: str | Sequence[str] | None):
        self._fernet = None
        self._first = None
        found = _keys(keys)
        if found:
            from cryptography.fernet import Fernet, MultiFernet

            derived = [Fernet(base64.urlsafe_b64encode(subkey(k, PURPOSE_SEALING))) for k in found]
            # Before sub-keys, the key was used as SHA-256(key): those still open (roost reseal moves them).
            legacy = [Fernet(base64.urlsafe_b64encode(hashlib.sha256(k.encode()).digest())) for k in found]
            self._first = derived[0]
            self._fernet = MultiFernet(derived + legacy)

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

    def reseal(self, config: Any) -> Any:
        """``config`` with every secret sealed under the first key: sealed ones re-encrypted, plain ones sealed.

        Raises:
            NotConfigured: no key is set, or a value was sealed with a key no longer configured.
        """
        if self._fernet is None:
            raise NotConfigured("nothing to seal with: set ROOST_SECRET_KEYS (or ROOST_SECRET_KEY) first")
        return _walk(config, self._reseal_value)

    def _seal_value(self, value: Any) -> Any:
        if self._first is None or _is_sealed(value) or value is None:
            return value
        return {SEALED: self._first.encrypt(json.dumps(value).encode()).decode()}

    def _open_value(self, value: Any) -> Any:
        if not _is_sealed(value):
            return value
        if self._fernet is None:
            raise NotConfigured("a scout secret is sealed but neither ROOST_SECRET_KEYS nor ROOST_SECRET_KEY is set")
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(value[SEALED].encode()))
        except InvalidToken as exc:
            raise NotConfigured("a scout secret was sealed with a key that is not in ROOST_SECRET_KEYS") from exc

    def _reseal_value(self, value: Any) -> Any:
        if value is None:
            return value
        return self._seal_value(self._open_value(value))


@dataclass
class ResealReport:
    scouts: int = 0  # scouts looked at
    changed: int = 0  # scouts whose stored config was rewritten
    failed: list[str] | None = None  # scouts with a value no configured key opens (left as they were)


async def reseal_all(db: Any, box: SecretBox) -> ResealReport:
    """Re-encrypt every scout's secrets under the first key (and seal plaintext ones), one scout per transaction.

    A scout whose secret no configured key opens is reported and left unchanged, so one bad row does
    not stop the rest; running it again is harmless (it re-encrypts under the same first key).
    """
    report = ResealReport(failed=[])
    ids = [r["id"] for r in await db.fetch("SELECT id FROM scouts ORDER BY id")]
    for scout_id in ids:
        async with db.transaction() as tx:
            row = await tx.fetchrow("SELECT config, classifier_config FROM scouts WHERE id = $1", scout_id)
            if row is None:  # deleted meanwhile
                continue
            report.scouts += 1
            try:
                config, cconfig = box.reseal(row["config"]), box.reseal(row["classifier_config"])
            except NotConfigured:
                report.failed.append(scout_id)
                continue
            if (config, cconfig) == (row["config"], row["classifier_config"]):
                continue  # no secret in it
            await tx.execute("UPDATE scouts SET config = $2, classifier_config = $3 WHERE id = $1",
                             scout_id, config, cconfig)
            report.changed += 1
    return report


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
