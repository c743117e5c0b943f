# ruff: noqa: ASYNC110  (tests poll state that other processes own; there is no event to wait on)
"""Several real ``roost serve`` processes on one PostgreSQL database: the scale-out tier.

``Cluster.start`` starts the first process alone (so it is the one that takes the singletons'
leadership) and the others side by side; each gets its own port, log and mail directory, and
everything else from the shared environment. ``AckingDevice`` is a device that reconnects to the
next process when its socket drops and acks every proposal, recording what came more than once.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from roost.client import handshake, ws_url_from_http
from tests.support.server import ServerProcess, admin_client


@dataclass
class Cluster:
    """N ``roost serve`` processes on ``database_url``; ``servers[i]`` is "process i+1"."""

    database_url: str
    workdir: Path
    servers: list[ServerProcess]

    @classmethod
    def start(cls, database_url: str, workdir: Path, n: int, *, env: dict[str, str] | None = None) -> Cluster:
        """Start ``n`` processes; process 1 is ready before the others start."""

        def one(i: int) -> ServerProcess:
            mail_dir = workdir / f"mail-{i + 1}"
            return ServerProcess.start(database_url, workdir, env={"ROOST_MAIL_DIR": str(mail_dir), **(env or {})},
                                       ready_timeout_s=60)

        servers = [one(0)]
        try:
            with concurrent.futures.ThreadPoolExecutor(max(1, n - 1)) as pool:
                futures = [pool.submit(one, i) for i in range(1, n)]
                for f in futures:
                    servers.append(f.result())
        except BaseException:
            cls(database_url, workdir, servers).stop()
            raise
        return cls(database_url, workdir, servers)

    def __getitem__(self, i: int) -> ServerProcess:
        return self.servers[i]

    def mail_dirs(self) -> list[Path]:
        return [self.workdir / f"mail-{i + 1}" for i in range(len(self.servers))]

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM every live process at once, then wait (SIGKILL what does not exit in time)."""
        live = [s for s in self.servers if s.proc.poll() is None]
        for s in live:
            s.proc.terminate()
        for s in live:
            try:
                s.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                s.kill()


async def status(url: str) -> dict[str, Any]:
    async with admin_client(url) as client:
        r = await client.get("/api/admin/status")
        assert r.status_code == 200, r.text
        return r.json()


async def wait_for(check: Callable[[], Any], *, timeout_s: float = 15, every_s: float = 0.05,
                   what: str = "condition") -> Any:
    """Poll ``check`` (a function, sync or async) until it returns something truthy, and return that;
    fail after ``timeout_s``."""
    last: Any = None
    with trio.move_on_after(timeout_s):
        while True:
            try:
                last = check()
                if inspect.isawaitable(last):
                    last = await last
            except (httpx.HTTPError, OSError) as exc:  # a process being killed or restarted
                last = exc
            else:
                if last:
                    return last
            await trio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


@dataclass
class AckingDevice:
    """One device socket that acks every proposal and, when dropped, reconnects to the next URL.

    ``frames`` counts how often each proposal id arrived; ``acked`` is what this client sent an
    ack for. A proposal that arrives again after its ack was persisted would break "nothing acked
    is sent again"; the test decides which repeats are allowed.
    """

    token: str
    urls: Sequence[str]
    frames: dict[str, int] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    refs: dict[str, str] = field(default_factory=dict)  # proposal id -> source_msg_ref
    connections: list[str] = field(default_factory=list)  # the URL of each successful registration
    connected: trio.Event = field(default_factory=trio.Event)

    @property
    def seen_refs(self) -> set[str]:
        return set(self.refs.values())

    async def run(self) -> None:
        """Connect to ``urls[0]``; after each drop or failed attempt, the next URL, round-robin (until cancelled)."""
        failures = 0
        while True:
            url = self.urls[failures % len(self.urls)]
            try:
                async with open_websocket_url(ws_url_from_http(url)) as ws:
                    await handshake(ws, self.token)
                    self.connections.append(url)
                    self.connected.set()
                    while True:
                        frame = json.loads(await ws.get_message())
                        if frame["type"] == "ping":
                            await ws.send_message('{"type":"pong"}')
                        elif frame["type"] == "scout_proposal":
                            p = frame["proposal"]
                            self.frames[p["id"]] = self.frames.get(p["id"], 0) + 1
                            self.refs[p["id"]] = p["source_msg_ref"]
                            await ws.send_message(json.dumps({"type": "scout_proposal_ack", "proposal_id": p["id"]}))
                            self.acked.add(p["id"])
            except (ConnectionClosed, HandshakeError, OSError):
                failures += 1
                await trio.sleep(0.1)
