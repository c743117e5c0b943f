"""Access to the process's services from inside a request or WebSocket handler."""

from __future__ import annotations

from quart import current_app

from roost.runtime.services import Services

CONFIG_KEY = "ROOST_SERVICES"


def services() -> Services:
    return current_app.config[CONFIG_KEY]
