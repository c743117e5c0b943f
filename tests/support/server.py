"""Start roost for a test: in this process (``running_server``) or as a real subprocess (``ServerProcess``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import trio

from roost.runtime.config import Settings
from roost.serve import Running, serve

SERVICE_TOKEN = "test-service-token-for-roost-tests-only"  # meets the 32-character minimum
# A Fernet key (url-safe base64 of 32 bytes): what `roost` asks operators to generate for ROOST_SECRET_KEY(S).
SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LWZvci1yb29zdC10ZXN0cy0="


@asynccontextmanager
async def running_server(database_url: str, **overrides: Any) -> AsyncIterator[Running]:
    """Serve on 127.0.0.1:<free port> inside the test's trio run; stops (drains) on exit."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "service_token": SERVICE_TOKEN,
        "port": 0,
        "grace_period_s": 2.0,
        "log_format": "json",
    }
    values.update(overrides)
    settings = Settings(**values)
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(lambda task_status: serve(settings, handle_signals=False,
                                                                         task_status=task_status))
        try:
            yield running
        finally:
            running.supervisor.request_stop()


def admin_client(base_url: str, token: str | None = SERVICE_TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10)


async def make_device(client: httpx.AsyncClient, *, account: dict | None = None, email: str = "ann@example.com",
                      **user_fields: Any) -> dict[str, Any]:
    """Create (account,) user and device through the admin API; returns ids and the token."""
    if account is None:
        r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "Europe/Berlin"})
        assert r.status_code == 201, r.text
        account = r.json()
    r = await client.post("/api/admin/users", json={"account_id": account["id"], "email": email,
                                                     "display_name": "Ann", **user_fields})
    assert r.status_code == 201, r.text
    user = r.json()
    r = await client.post("/api/admin/devices", json={"user_id": user["id"], "name": "phone"})
    assert r.status_code == 201, r.text
    device = r.json()
    return {"account": account, "user": user, "device": device, "token": device["token"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A real ``roost serve`` subprocess (the e2e tier)."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, database_url: str, workdir: Path, *, env: dict[str, str] | None = None,
              ready_timeout_s: float = 20) -> ServerProcess:
        port = free_port()
        full_env = {
            **os.environ,
            "ROOST_DATABASE_URL": database_url,
            "ROOST_SERVICE_TOKEN": SERVICE_TOKEN,
            "ROOST_PORT": str(port),
            "ROOST_LOG_FORMAT": "json",
            **(env or {}),
        }
        log_path = workdir / f"roost-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], cwd=workdir, env=full_env,
                                    stdout=log, stderr=subprocess.STDOUT)
        server = cls(proc, port, log_path)
        server.wait_ready(ready_timeout_s)
        return server

    def wait_ready(self, timeout_s: float) -> float:
        """Poll /readyz until 200; returns seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"roost serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"roost serve not ready within {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
