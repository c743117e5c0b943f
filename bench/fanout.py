# ruff: noqa: ASYNC110  (a load tool polls counters it does not own; no event to wait on)
"""Fan-out bench: N sockets across U users of one account; K handoffs created through the API.

Starts ``roost serve`` as a subprocess (SQLite in a temp dir, or PostgreSQL with ``--pg URL``);
this process is the client: N trio-websocket sockets (U users, each with one device holding
N/U sockets, like browser tabs). Prints:

* latency: K handoffs created one at a time (``--interval`` apart); for each, the time from just
  before the POST is sent (so it includes the request and the commit: an upper bound on
  commit-to-frame) to the frame's arrival on each socket; p50/p99 over every frame, and p50/p99
  of the last socket's frame per handoff (the bar: p99 < 250 ms with 2,000 sockets);
* throughput: ``--burst`` handoffs created back to back by 8 concurrent posters; frames/s from
  the first POST to the last frame on the last socket;
* checks: every socket got every event exactly once, in seq order.

    python bench/fanout.py [--sockets 2000] [--users 100] [--handoffs 50] [--burst 200] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

TOKEN = "bench-service-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(database_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ROOST_DATABASE_URL": database_url, "ROOST_SERVICE_TOKEN": TOKEN,
           "ROOST_PORT": str(port), "ROOST_LOG_FORMAT": "json", "ROOST_LOG_LEVEL": "warning"}
    log = open(workdir / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Sock:
    __slots__ = ("arrivals", "seqs")

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # handoff id -> arrival time
        self.seqs: list[int] = []


async def run_socket(ws_url: str, token: str, sock: Sock, connected: list[int],
                     limiter: trio.CapacityLimiter) -> None:
    await limiter.acquire_on_behalf_of(sock)  # at most so many handshakes at once
    try:
        async with open_websocket_url(ws_url, max_message_size=1 << 20) as ws:
            await ws.send_message(json.dumps({"type": "device_hello", "token": token}))
            await ws.send_message('{"type":"register"}')
            while json.loads(await ws.get_message())["type"] != "hello_ok":
                pass
            limiter.release_on_behalf_of(sock)
            connected[0] += 1
            try:
                while True:
                    raw = await ws.get_message()
                    now = time.perf_counter()
                    frame = json.loads(raw)
                    if frame["type"] == "handoff_created":
                        sock.arrivals[frame["handoff"]["id"]] = now
                        sock.seqs.append(frame["seq"])
                    elif frame["type"] == "ping":
                        await ws.send_message('{"type":"pong"}')
            except ConnectionClosed:
                pass
    finally:
        if sock in limiter._borrowers:
            limiter.release_on_behalf_of(sock)


async def bench(url: str, args: argparse.Namespace) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        acc = (await c.post("/api/admin/accounts", json={"name": "bench"})).json()
        tokens, users = [], []
        for i in range(args.users):
            user = (await c.post("/api/admin/users", json={"account_id": acc["id"], "email": f"u{i}@example.com",
                                                            "display_name": f"U{i}", "role": "member"})).json()
            users.append(user)
            device = await c.post("/api/admin/devices", json={"user_id": user["id"], "name": "b"})
            tokens.append(device.json()["token"])
        ws_url = url.replace("http://", "ws://") + "/ws/device"
        socks = [Sock() for _ in range(args.sockets)]
        connected = [0]
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(100)
            for i, sock in enumerate(socks):
                nursery.start_soon(run_socket, ws_url, tokens[i % len(tokens)], sock, connected, limiter)
            t = time.perf_counter()
            while connected[0] < args.sockets:
                await trio.sleep(0.05)
            connect_s = time.perf_counter() - t
            await trio.sleep(1.0)  # let every register hook finish

            body = {"account_id": acc["id"], "subject_ref": "t", "intent": "park", "notes": "bench",
                    "priority": "normal", "snapshot": {"k": "v" * 200}, "created_by": users[0]["id"]}

            async def wait_all(ids: list[str]) -> None:
                with trio.fail_after(60):
                    while any(len(s.arrivals) < len(ids) for s in socks):
                        await trio.sleep(0.01)

            # Latency: one at a time.
            sent: dict[str, float] = {}
            for _ in range(args.handoffs):
                t0 = time.perf_counter()
                r = await c.post("/api/v1/handoffs", json=body)
                assert r.status_code == 201, r.text
                sent[r.json()["id"]] = t0
                await trio.sleep(args.interval)
            await wait_all(list(sent))
            per_frame = [(s.arrivals[h] - t0) * 1000 for s in socks for h, t0 in sent.items()]
            last = [(max(s.arrivals[h] for s in socks) - t0) * 1000 for h, t0 in sent.items()]

            # Throughput: a burst.
            before = {id(s): len(s.arrivals) for s in socks}
            burst_ids: list[str] = []
            t_burst = time.perf_counter()

            async def poster(n: int) -> None:
                for _ in range(n):
                    r = await c.post("/api/v1/handoffs", json=body)
                    burst_ids.append(r.json()["id"])

            async with trio.open_nursery() as posters:
                for _ in range(8):
                    posters.start_soon(poster, args.burst // 8)
            with trio.fail_after(120):
                while any(len(s.arrivals) - before[id(s)] < len(burst_ids) for s in socks):
                    await trio.sleep(0.01)
            t_end = max(s.arrivals[h] for s in socks for h in burst_ids)
            frames = len(burst_ids) * len(socks)
            ok = all(s.seqs == list(range(1, len(s.seqs) + 1)) and len(s.seqs) == len(sent) + len(burst_ids)
                     for s in socks)
            nursery.cancel_scope.cancel()
    return {
        "sockets": args.sockets, "users": args.users, "connect_s": round(connect_s, 2),
        "handoffs": args.handoffs,
        "frame_ms_p50": round(pct(per_frame, 0.5), 1), "frame_ms_p99": round(pct(per_frame, 0.99), 1),
        "last_frame_ms_p50": round(statistics.median(last), 1), "last_frame_ms_p99": round(pct(last, 0.99), 1),
        "last_frame_ms_max": round(max(last), 1),
        "burst_handoffs": len(burst_ids), "burst_frames": frames,
        "frames_per_s": round(frames / (t_end - t_burst)),
        "every_socket_every_event_once_in_order": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--handoffs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--pg", help="PostgreSQL URL (a fresh database); default SQLite in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.pg or f"sqlite:///{tmp}/bench.db"
        proc, url = start_server(db_url, Path(tmp))
        try:
            result = trio.run(bench, url, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(json.dumps({"backend": "postgresql" if args.pg else "sqlite", **result}, indent=2))


if __name__ == "__main__":
    main()
