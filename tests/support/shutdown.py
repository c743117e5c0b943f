"""SIGTERM to a real ``roost serve`` in the middle of a delivery stream (the e2e tests and bench/shutdown.py).

A device socket receives proposals while a pusher keeps posting items to its push scout; once
the device has had some, the process gets SIGTERM (optionally after its PostgreSQL is frozen)
and the time to its exit is measured from the signal.

Nothing here imports trio-asyncio or uses asyncio: the bench process stays a plain trio client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

if TYPE_CHECKING:  # tests.support.pg imports trio-asyncio, which this module keeps out
    from tests.support.pg import ThrowawayCluster

SERVICE_TOKEN = "shutdown-test-token-meets-the-32-char-minimum"
PROPOSALS_BEFORE_SIGNAL = 30  # the stream is under way: the device has had this many


@dataclass
class Outcome:
    exit_code: int | None  # None: still running when the wait ended (then killed)
    took_s: float  # from SIGTERM to exit (or to the end of the wait)
    proposals: int  # proposals the device received in all
    log: str


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(database_url: str, workdir: Path, grace_s: float, *, ready_timeout_s: float = 60
                ) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``roost serve`` on ``database_url``; returns (process, base URL, log path) once /readyz is 200."""
    port = free_port()
    env = {**os.environ, "ROOST_DATABASE_URL": database_url, "ROOST_SERVICE_TOKEN": SERVICE_TOKEN,
           "ROOST_PORT": str(port), "ROOST_LOG_FORMAT": "json", "ROOST_GRACE_PERIOD_S": str(grace_s),
           "ROOST_MAIL_TRANSPORT": "file", "ROOST_MAIL_DIR": str(workdir / "mail"),
           "ROOST_SESSION_DIR": str(workdir / "sessions")}
    log_path = workdir / f"roost-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"roost serve exited {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"roost serve not ready within {ready_timeout_s}s:\n{log_path.read_text(errors='replace')}")


async def _setup(client: httpx.AsyncClient) -> tuple[str, str]:
    """An account, a user with a device and a push scout: (device token, scout id)."""
    r = await client.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"})
    assert r.status_code == 201, r.text
    r = await client.post("/api/admin/users", json={"account_id": r.json()["id"], "email": "ann@example.com",
                                                     "display_name": "Ann"})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = await client.post("/api/admin/devices", json={"user_id": user_id, "name": "phone"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    r = await client.post("/api/admin/scouts", json={"user_id": user_id, "provider": "push", "config": {},
                                                      "poll_interval_s": 3600})
    assert r.status_code == 201, r.text
    return token, r.json()["id"]


async def sigterm_mid_stream(proc: subprocess.Popen[bytes], url: str, log_path: Path, *,
                             wait_s: float, before_signal: Callable[[], None] | None = None) -> Outcome:
    """Stream proposals to a device, SIGTERM ``proc`` mid-stream, and wait up to ``wait_s`` for it to exit.

    ``before_signal`` runs right before the SIGTERM (freezing the database, say).
    """
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    received = 0
    streaming = trio.Event()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        token, scout_id = await _setup(client)

        async def pusher() -> None:
            n = 0
            while True:
                items = [{"source_msg_ref": f"m{n + i}", "subject": f"subject {n + i}", "body": "hello",
                          "sender": "a@example.com"} for i in range(10)]
                n += 10
                try:
                    await client.post(f"/api/v1/scouts/{scout_id}/items", json={"items": items})
                except httpx.HTTPError:
                    return  # the server is going away
                await trio.sleep(0.02)

        async def device() -> None:
            nonlocal received
            try:
                async with open_websocket_url(url.replace("http://", "ws://") + "/ws/device") as ws:
                    await ws.send_message(json.dumps({"type": "device_hello", "token": token}))
                    await ws.send_message('{"type":"register"}')
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame.get("type") == "ping":
                            await ws.send_message('{"type":"pong"}')
                        elif frame.get("type") == "scout_proposal":
                            received += 1
                            await ws.send_message(json.dumps({"type": "scout_proposal_ack",
                                                              "proposal_id": frame["proposal"]["id"]}))
                            if received >= PROPOSALS_BEFORE_SIGNAL:
                                streaming.set()
            except (ConnectionClosed, HandshakeError, OSError):
                pass  # closed by the drain (1001), or the process is gone

        async with trio.open_nursery() as nursery:
            nursery.start_soon(device)
            nursery.start_soon(pusher)
            with trio.fail_after(30):
                await streaming.wait()
            if before_signal is not None:
                before_signal()
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(_wait, proc, wait_s)
            took = time.monotonic() - signalled
            nursery.cancel_scope.cancel()
    if code is None:
        proc.kill()
        proc.wait()
    log = await trio.to_thread.run_sync(partial(log_path.read_text, errors="replace"))
    return Outcome(code, took, received, log)


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def cluster_pids(datadir: Path) -> list[int]:
    """The postmaster of the cluster in ``datadir`` and every process it started."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # the command may hold spaces or parentheses: the ppid follows the last ')'
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            pids.append(int(entry))
    return pids


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def thaw_and_stop(cluster: ThrowawayCluster) -> None:
    """SIGCONT every process of a (possibly frozen) throwaway cluster, then stop it."""
    try:
        signal_all(cluster_pids(cluster.datadir), signal.SIGCONT)
    except OSError:
        pass  # no postmaster.pid: the cluster is down already
    cluster.stop()
