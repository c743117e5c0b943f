"""The services every actor and request handler shares, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from roost.runtime.clock import Clock
from roost.runtime.config import Settings
from roost.runtime.health import HealthRegistry
from roost.runtime.metrics import Metrics
from roost.runtime.sockets import SocketRegistry

if TYPE_CHECKING:
    from roost.storage.database import Database


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: "Database"
    metrics: Metrics
    health: HealthRegistry
    sockets: SocketRegistry
    stopping: trio.Event = field(default_factory=trio.Event)

    @classmethod
    def build(cls, settings: Settings, db: "Database", clock: Clock | None = None) -> "Services":
        clock = clock or Clock()
        metrics = Metrics()
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            metrics=metrics,
            health=HealthRegistry(clock, metrics),
            sockets=SocketRegistry(settings.ws_outgoing_buffer, metrics),
        )
