"""Shared pieces of the benchmark scripts: start a ``roost serve`` subprocess, read its RSS, summarise,
and the raw WebSocket client pieces the socket benches' epoll loops share.

Nothing here imports the server side of roost (``roost.storage``, ``roost.http``): the bench
process is only a client, so it never pulls in trio-asyncio (STACK-NOTES pitfall 2).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx

REPO = Path(__file__).resolve().parent.parent


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _raise_nofile_in_child() -> None:  # preexec_fn: runs in the server process before exec
    raise_nofile()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roost_command() -> list[str]:
    """``roost serve`` as installed next to this interpreter (the console script), else ``-m roost``."""
    script = Path(sys.executable).parent / "roost"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "roost", "serve"]


# `roost serve` with tracemalloc on, for ``ws_connections.py --profile``: SIGUSR1 makes the server
# collect garbage and dump a snapshot to $ROOST_BENCH_TRACEMALLOC_DIR/snap<n>.pickle (then an
# empty snap<n>.done). Only the bench uses this; roost itself knows nothing about it.
TRACED_SERVE = """
import gc, os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ.get("ROOST_BENCH_TRACEMALLOC_FRAMES", "12")))
out, count = os.environ["ROOST_BENCH_TRACEMALLOC_DIR"], [0]
def dump(signum, frame):
    gc.collect()
    count[0] += 1
    tracemalloc.take_snapshot().dump(f"{out}/snap{count[0]}.pickle")
    open(f"{out}/snap{count[0]}.done", "w").close()
signal.signal(signal.SIGUSR1, dump)
from roost.cli import main
sys.argv = ["roost", "serve"]
main()
"""


def traced_command() -> list[str]:
    return [sys.executable, "-c", TRACED_SERVE]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def schedstat_ms(pid: int) -> tuple[float, float]:
    """(ms on a CPU, ms runnable but waiting for a CPU) so far, of ``pid``'s main thread."""
    with open(f"/proc/{pid}/schedstat") as f:
        on_cpu, waiting, _ = f.read().split()
    return int(on_cpu) / 1e6, int(waiting) / 1e6


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {sys.version.split()[0]}, "
            f"{os.uname().sysname} {os.uname().release}; load average {load} at start")


def verdict(name: str, ok: bool, detail: str) -> bool:
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    return ok


@dataclass
class Server:
    """A ``roost serve`` to benchmark: one this script started (``start``) or one given by URL."""

    url: str
    token: str
    pid: int | None = None
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    started_at: float = 0.0
    _own_dir: bool = field(default=False, repr=False)

    @classmethod
    def attach(cls, url: str, token: str, pid: int | None = None) -> Server:
        """A running server; its pid (for RSS) is read from /api/admin/status when not given."""
        server = cls(url=url.rstrip("/"), token=token, pid=pid)
        if server.pid is None:
            status = server.admin().get("/api/admin/status")
            status.raise_for_status()
            server.pid = int(status.json()["process"]["pid"])
        return server

    @classmethod
    def start(cls, env: dict[str, str] | None = None, *, ready_timeout_s: float = 30,
              workdir: Path | None = None, command: list[str] | None = None) -> Server:
        """``roost serve`` on a fresh SQLite file in a temp dir and a free port; waits for /readyz 200."""
        server = cls.spawn(env, workdir=workdir, command=command)
        server.wait_ready(ready_timeout_s)
        return server

    @classmethod
    def spawn(cls, env: dict[str, str] | None = None, *, workdir: Path | None = None,
              command: list[str] | None = None) -> Server:
        own = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="roost-bench-")) if workdir is None else workdir
        port = free_port()
        token = secrets.token_urlsafe(24)
        full_env = {
            **os.environ,
            "ROOST_DATABASE_URL": f"sqlite:///{workdir / 'roost.db'}",
            "ROOST_SERVICE_TOKEN": token,
            "ROOST_HOST": "127.0.0.1",
            "ROOST_PORT": str(port),
            "ROOST_LOG_FORMAT": "json",
            **(env or {}),
        }
        log_path = workdir / f"roost-{port}.log"
        with open(log_path, "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(command or roost_command(), cwd=workdir, env=full_env, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=_raise_nofile_in_child)
        return cls(url=f"http://127.0.0.1:{port}", token=token, pid=proc.pid, proc=proc, workdir=workdir,
                   log_path=log_path, started_at=started, _own_dir=own)

    def wait_ready(self, timeout_s: float, poll_s: float = 0.01) -> float:
        """Poll /readyz until 200; returns seconds since the process was spawned."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"roost serve exited {self.proc.returncode}:\n{self.log()}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return time.monotonic() - self.started_at
                except httpx.HTTPError:
                    pass
                time.sleep(poll_s)
        self.stop()
        raise RuntimeError(f"roost serve not ready within {timeout_s}s:\n{self.log()}")

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    @property
    def ws_url(self) -> str:
        return "ws://" + self.url.split("://", 1)[1] + "/ws/device"

    def rss_kib(self) -> int:
        if self.pid is None:
            raise RuntimeError("server pid unknown: pass --pid")
        return rss_kib(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""

    def stop_process(self, timeout_s: float = 30) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it does not exit; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop(self, timeout_s: float = 30) -> int | None:
        """Stop the process we started (``stop_process``) and remove the temp dir we made."""
        code = self.stop_process(timeout_s)
        if self._own_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code


def make_devices(server: Server, count: int, *, devices_per_user: int = 1, prefix: str = "bench") -> list[str]:
    """Create one account, ``count / devices_per_user`` users and ``count`` devices; returns the tokens."""
    tokens: list[str] = []
    with server.admin() as client:
        r = client.post("/api/admin/accounts", json={"name": f"{prefix}-account", "timezone": "UTC"})
        r.raise_for_status()
        account_id = r.json()["id"]
        user_id = None
        run = secrets.token_hex(4)
        for i in range(count):
            if i % devices_per_user == 0:
                r = client.post("/api/admin/users", json={
                    "account_id": account_id, "email": f"{prefix}-{run}-{i}@example.com",
                    "display_name": f"Bench {i}"})
                r.raise_for_status()
                user_id = r.json()["id"]
            r = client.post("/api/admin/devices", json={"user_id": user_id, "name": f"{prefix}-{i}"})
            r.raise_for_status()
            tokens.append(r.json()["token"])
    return tokens


def run_json(cmd: list[str], timeout_s: float = 600) -> dict[str, Any]:
    """Run a bench script with ``--json`` in a separate process and parse its last output line."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- a raw WebSocket client: just enough RFC 6455 (unmasked server frames in, masked frames out) for an
# epoll loop holding thousands of device sockets cheaply (fanout.py, ws_connections.py) -----------------

UPGRADE_REQUEST = ("GET /ws/device HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n")


def ws_frame(data: str | bytes, opcode: int = 0x1) -> bytes:
    """A client frame: FIN, masked with the all-zero key (legal, and no XOR to do)."""
    data = data.encode() if isinstance(data, str) else data
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + data


PONG = ws_frame(b'{"type":"pong"}')


def open_upgrade(port: int, extra_headers: str = "", timeout: float | None = None) -> socket.socket:
    """A connection to ``/ws/device`` on 127.0.0.1:``port`` that has sent its upgrade request (with
    ``extra_headers``, "name: value\\r\\n" lines), left non-blocking for the epoll loop."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((UPGRADE_REQUEST % (port, key) + extra_headers + "\r\n").encode())
    s.setblocking(False)
    return s


def upgrade_answer(buf: bytearray) -> bytes | None:
    """The server's whole answer to the upgrade (its head, lower-cased), taken off the front of
    ``buf``; None while it has not all arrived. A 101 starts with ``b"http/1.1 101"``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    del buf[: end + 4]
    return head


def hello_frames(token: str) -> bytes:
    """What a device sends once upgraded: its hello with ``token``, then ``register``."""
    return ws_frame(json.dumps({"type": "device_hello", "token": token})) + ws_frame(b'{"type":"register"}')


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """The whole server frames at the front of ``buf`` as (opcode, payload), taken off it; a frame
    still arriving stays in ``buf`` for the next read."""
    frames: list[tuple[int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                break
            length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
        elif length == 127:
            if n - pos < 10:
                break
            length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        if n - pos < head + length:
            break
        frames.append((b0 & 0x0F, bytes(buf[pos + head: pos + head + length])))
        pos += head + length
    del buf[:pos]
    return frames


class SocketPoll:
    """The epoll set of a raw client process: its control pipe, and each open socket with its owner
    (an object with a ``sock``). ``poll`` reads what came; an empty read means the socket is gone."""

    def __init__(self, ctl_fd: int) -> None:
        self.ep = select.epoll()
        self.ctl = ctl_fd
        self.ep.register(ctl_fd, select.EPOLLIN)
        self.by_fd: dict[int, Any] = {}

    def add(self, owner: Any) -> None:
        self.by_fd[owner.sock.fileno()] = owner
        self.ep.register(owner.sock.fileno(), select.EPOLLIN)

    def remove(self, owner: Any) -> None:
        """Stop watching ``owner.sock`` and close it."""
        fd = owner.sock.fileno()
        self.ep.unregister(fd)
        del self.by_fd[fd]
        owner.sock.close()

    def poll(self, timeout_s: float, size: int) -> Iterator[tuple[Any, bytes, float]]:
        """(owner, bytes read, when) for each socket with something to read, (None, b"", 0.0) when
        the control pipe has a message; b"" also for a socket reset by the server."""
        for fd, _ in self.ep.poll(timeout_s):
            if fd == self.ctl:
                yield None, b"", 0.0
                continue
            owner = self.by_fd[fd]
            try:
                data = owner.sock.recv(size)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            yield owner, data, time.time()

    def close_all(self) -> None:
        for owner in self.by_fd.values():
            owner.sock.close()


class RawDevice:
    """One device socket of a raw client: its token, socket, unread bytes and handshake state.

    ``take`` reads what came: while "upgrading", the server's answer (kept in ``answer``, its head
    lower-cased); a 101 sends the device's hello and ``register`` ("registering"), anything else
    makes it "refused". From "registering" on, the bench runs the states (hello_ok, close, ...).
    """

    __slots__ = ("token", "sock", "buf", "state", "answer")

    def __init__(self, token: str, state: str = "waiting") -> None:
        self.token = token
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.state = state
        self.answer = b""

    def take(self, data: bytes) -> list[tuple[int, bytes]]:
        """The whole frames ``data`` completes (none while the upgrade's answer is still arriving)."""
        self.buf += data
        if self.state == "upgrading":
            head = upgrade_answer(self.buf)
            if head is None:
                return []
            self.answer = head
            if not head.startswith(b"http/1.1 101"):
                self.state = "refused"
                return []
            self.sock.sendall(hello_frames(self.token))
            self.state = "registering"
        return take_frames(self.buf)


# The websockets echo baseline of issue 21 (``deliver.py``, ``deliver_floor.py``): one proposal
# frame of the size roost sends, and the server side of the echo.
PROPOSAL_FRAME = json.dumps({"type": "scout_proposal", "proposal": {
    "id": "prp_01kbq0000000000000000000000", "scout_id": "sct_01kbq0000000000000000000000",
    "source_type": "push", "source_msg_ref": "r1234", "raw_subject": "s r1234",
    "raw_snippet": "t=1765000000.123456", "category": "inbox", "payload": None}})


async def echo_server_side(ws: Any, frames: int, *, parse_acks: bool = False) -> None:
    """Send ``frames`` proposal frames on a ``websockets`` connection as fast as it takes them
    while reading as many acks (parsed as a server must, with ``parse_acks``)."""
    import asyncio

    async def send() -> None:
        for _ in range(frames):
            await ws.send(PROPOSAL_FRAME)

    sender = asyncio.create_task(send())
    for _ in range(frames):
        ack = await ws.recv()
        if parse_acks:
            json.loads(ack)
    await sender
