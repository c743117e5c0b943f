"""Settings, loaded from the environment in one place.

Every knob has a unit in its name and a default that works on a laptop; ``Settings.from_env``
is the only function that reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Mapping

from roost.errors import InvalidInput

SECONDS = 1.0
KIB = 1024


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./roost.db"
    service_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    grace_period_s: float = 25 * SECONDS
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    migrate_on_start: bool = True

    max_body_bytes: int = 1024 * KIB
    ws_max_frame_bytes: int = 64 * KIB
    ws_hello_timeout_s: float = 5 * SECONDS
    ws_ping_interval_s: float = 20 * SECONDS
    ws_outgoing_buffer: int = 256

    restart_initial_backoff_s: float = 0.5 * SECONDS
    restart_max_backoff_s: float = 60 * SECONDS
    restart_budget: int = 10
    restart_window_s: float = 600 * SECONDS

    pg_pool_size: int = 10
    sqlite_readers: int = 4
    audit_retention_days: int = 365
    prune_interval_s: float = 3600 * SECONDS

    stall_monitor: bool = False
    stall_warn_s: float = 0.05

    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``ROOST_*`` variables (and ``PORT``, as a PaaS sets it).

        Raises:
            InvalidInput: a variable is set to something its type cannot hold.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"ROOST_{f.name.upper()}")
            if f.name == "port" and raw is None:
                raw = env.get("PORT")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))


def _parse(name: str, raw: str, type_name: object) -> object:
    kind = str(type_name)
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise InvalidInput(f"ROOST_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
