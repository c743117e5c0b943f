"""Operations: liveness, readiness, Prometheus metrics and the status of the process."""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_response, hide, operation_id, security_scheme

from roost import __version__
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.errors import ErrorBody
from roost.runtime.health import iso
from roost.storage import processes

bp = Blueprint("ops", __name__)


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    actors: dict[str, str]
    late: list[str] = []  # actors whose cadence job has not succeeded within interval + grace


class ActorStatus(BaseModel):
    name: str
    state: str
    restarts: int
    last_error: str | None
    last_error_at: str | None
    last_tick_at: str | None
    started_at: str | None
    ticks: int
    late: bool = False


class ProcessInfo(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    database: str


class ProcessRow(BaseModel):
    """A row of the process table (every ``roost serve`` on this database)."""

    id: str
    host: str
    pid: int
    port: int | None
    started_at: str
    last_heartbeat: str
    sockets: int
    leads: list[str]
    alive: bool  # last heartbeat within 3 heartbeats (ROOST_HEARTBEAT_S) of now


class SecretsState(BaseModel):
    """Whether scout secrets are sealed at rest, and with how many keys (never the keys)."""

    sealed: bool
    keys: int
    service_tokens: list[str]  # the names of the configured service tokens
    message: str


class Status(BaseModel):
    ready: bool
    process: ProcessInfo
    process_id: str  # this process, as in ``processes``
    processes: list[ProcessRow]
    actors: list[ActorStatus]
    queues: dict[str, int]
    connected_devices: int
    secrets: SecretsState


def secrets_state(settings: Any) -> dict[str, Any]:
    """What ``/api/admin/status`` and the start-up log say about secrets at rest."""
    keys = len(settings.sealing_keys)
    message = (f"scout secrets are sealed at rest ({keys} key{'s' if keys > 1 else ''}; the first seals)" if keys
               else "scout secrets are stored UNSEALED (plain text in the database): set ROOST_SECRET_KEYS "
                    "(or ROOST_SECRET_KEY) and run `roost reseal`")
    return {"sealed": bool(keys), "keys": keys, "service_tokens": sorted(settings.service_tokens_by_name),
            "message": message}


@bp.get("/healthz")
@security_scheme([])  # public: no token
@document_response(Health)
async def healthz() -> tuple[dict[str, str], int]:
    """Liveness: the process answers."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
@security_scheme([])  # public: no token
@document_response(Ready, 200)
@document_response(Ready, 503)
async def readyz() -> tuple[dict[str, Any], int]:
    """Readiness: 200 only when every actor is running."""
    health = services().health
    body = {"ready": health.ready, "actors": {a["name"]: a["state"] for a in health.snapshot()},
            "late": health.late()}
    return body, 200 if health.ready else 503


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(services().metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")


def process_info() -> dict[str, Any]:
    s = services()
    return {
        "id": s.process_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": __version__,
        "database": s.db.backend,
    }


async def process_table() -> list[dict[str, Any]]:
    s = services()
    now, beat = s.clock.now(), s.settings.heartbeat_s
    return [{**row, "started_at": iso(row["started_at"]), "last_heartbeat": iso(row["last_heartbeat"]),
             "leads": list(row["leads"] or []), "alive": processes.alive(row["last_heartbeat"], now, beat)}
            for row in await processes.list_all(s.db)]


@bp.get("/api/admin/status")
@operation_id("getStatus")
@service_auth
@document_response(Status)
@document_response(ErrorBody, 401)
@document_response(ErrorBody, 503)
async def status() -> dict[str, Any]:
    """The state of this process and of every process on the database.

    Actors (state, restarts, last error, last tick), queue depths, connected devices, and every
    process on the database (heartbeat, sockets, singletons it leads; dead after 3 silent beats)."""
    s = services()
    queues = {"socket_outgoing_frames": s.sockets.pending_frames()}
    for name, probe in s.queue_probes.items():
        queues[name] = await probe()
    return {
        "ready": s.health.ready,
        "process": process_info(),
        "process_id": s.process_id,
        "processes": await process_table(),
        "actors": s.health.snapshot(),
        "queues": queues,
        "connected_devices": s.sockets.count,
        "secrets": secrets_state(s.settings),
    }
