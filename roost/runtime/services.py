"""The services every actor and request handler shares, built once per process."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

from roost.runtime import destinations
from roost.runtime.activity import DeviceActivity
from roost.runtime.actor import Stopping
from roost.runtime.bus import Bus
from roost.runtime.clock import Clock
from roost.runtime.config import Settings, destination_policy
from roost.runtime.frames import FrameRouter
from roost.runtime.health import HealthRegistry
from roost.runtime.leadership import Leadership
from roost.runtime.locks import JobLocks
from roost.runtime.metrics import Metrics
from roost.runtime.sockets import SocketRegistry

if TYPE_CHECKING:
    from roost.runtime.jobs import JobBoard
    from roost.storage.database import Database


def new_process_id() -> str:
    """``host:pid:random``: unique per start, readable in the process table."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    metrics: Metrics
    health: HealthRegistry
    sockets: SocketRegistry
    locks: JobLocks
    bus: Bus
    stopping: Stopping = field(default_factory=Stopping)
    frames: FrameRouter = field(default_factory=FrameRouter)
    leadership: Leadership = field(default_factory=Leadership)
    activity: DeviceActivity = field(default_factory=DeviceActivity)  # devices.last_seen_at, written by heartbeat
    process_id: str = field(default_factory=lambda: new_process_id())
    job_board: JobBoard | None = None  # made on first use by roost.runtime.jobs.job_board
    # Named queue depths for /api/admin/status; each job adds its own probe.
    queue_probes: dict[str, Callable[[], Awaitable[int]]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, db: Database, clock: Clock | None = None) -> Services:
        clock = clock or Clock()
        metrics = Metrics()
        # Process-wide, like the settings it comes from: plugins connect through it without a handle.
        destinations.install(destination_policy(settings))
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            metrics=metrics,
            health=HealthRegistry(clock, metrics),
            sockets=SocketRegistry(settings.ws_outgoing_buffer, metrics),
            locks=JobLocks(db),
            bus=Bus(),
        )
