# ruff: noqa: ASYNC110  (a load tool polls counters it does not own; no event to wait on)
"""Fan-out bench: N sockets across U users of one account; K handoffs created through the API.

Starts ``roost serve`` as a subprocess (SQLite in a temp dir, or PostgreSQL with ``--pg URL``).
The sockets are held by ``--procs`` client processes (default 4), each a small epoll loop over raw
sockets speaking just enough WebSocket (RFC 6455: unmasked server frames in, masked frames out),
so that reading 2,000 sockets costs the client little next to the server on a shared 2-core
machine. A socket is one device's connection (U users, each with one device holding N/U sockets,
like browser tabs). ``--client trio`` instead holds them all in this process with trio-websocket
(the original client: its own cost then dominates at 2,000 sockets). Prints:

* latency: K handoffs created one at a time (``--interval`` apart); for each, the time from just
  before the POST is sent (so it includes the request and the commit: an upper bound on
  commit-to-frame) to the frame's arrival on each socket (wall clock, ``time.time()``, which every
  process reads alike); p50/p99 over every frame, and p50/p99 of the last socket's frame per
  handoff (the bar: p99 < 250 ms with 2,000 sockets);
* throughput: ``--burst`` handoffs created back to back by 8 concurrent posters; frames/s from
  the first POST to the last frame on the last socket;
* checks: every socket got every event exactly once, in seq order.

    python bench/fanout.py [--sockets 2000] [--users 100] [--handoffs 50] [--burst 200] [--procs 4] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PONG,
    RawDevice,
    SocketPoll,
    free_port,
    open_upgrade,
    raise_nofile,
    roost_command,
    ws_frame,
)

TOKEN = "bench-service-token-for-roost-benchmarks"


def start_server(database_url: str, workdir: Path):
    import subprocess

    port = free_port()
    env = {**os.environ, "ROOST_DATABASE_URL": database_url, "ROOST_SERVICE_TOKEN": TOKEN,
           "ROOST_PORT": str(port), "ROOST_LOG_FORMAT": "json", "ROOST_LOG_LEVEL": "warning"}
    log = open(workdir / "server.log", "ab")
    proc = subprocess.Popen(roost_command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=raise_nofile)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, port
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# -- the raw client (one per child process) ------------------------------------------------------


CREATED = b'{"type":"handoff_created","seq":'


class RawSock(RawDevice):
    __slots__ = ("index", "arrivals", "seqs", "closed")

    def __init__(self, index: int, token: str):
        super().__init__(token, "connecting")  # -> upgrading -> registering -> live
        self.index = index
        self.arrivals: dict[str, float] = {}
        self.seqs: list[int] = []
        self.closed = False


def client_main(port: int, work: list[tuple[int, str]], conn, received, handshakes: int) -> None:
    """Hold ``work``'s sockets; count handoff frames in ``received``; report arrivals when told to stop."""
    raise_nofile()
    waiting = [RawSock(i, t) for i, t in work]
    all_socks = list(waiting)
    waiting.reverse()
    in_flight = 0
    live = 0
    ready_sent = False
    counted = retries = 0
    sockets = SocketPoll(conn.fileno())
    while True:
        while waiting and in_flight < handshakes:
            rs = waiting.pop()
            rs.sock, rs.state = open_upgrade(port), "upgrading"
            sockets.add(rs)
            in_flight += 1
        if not ready_sent and live == len(all_socks):
            conn.send(("ready", retries))
            ready_sent = True
        for rs, data, now in sockets.poll(0.05, 1 << 18):
            if rs is None:
                conn.recv()  # "stop"
                conn.send(("result", [(rs.index, rs.arrivals, rs.seqs, rs.closed) for rs in all_socks]))
                sockets.close_all()
                return
            if not data:
                sockets.remove(rs)
                if rs.state == "live":
                    rs.closed = True
                else:  # refused or timed out in its handshake (a loaded server): try again
                    retries += 1
                    rs.buf.clear()
                    rs.state = "connecting"
                    in_flight -= 1
                    waiting.append(rs)
                continue
            frames = rs.take(data)
            if rs.state == "refused":
                raise RuntimeError(f"upgrade refused: {rs.answer[:200]!r}")
            for opcode, payload in frames:
                if opcode == 0x1 and payload.startswith(CREATED):
                    # The hot path, without a JSON parse: seq, then the handoff's id.
                    comma = payload.index(b",", len(CREATED))
                    start = payload.index(b'"id":"', comma) + 6
                    rs.arrivals[payload[start: payload.index(b'"', start)].decode()] = now
                    rs.seqs.append(int(payload[len(CREATED): comma]))
                    counted += 1
                elif opcode == 0x1:
                    frame = json.loads(payload)
                    kind = frame["type"]
                    if kind == "handoff_created":
                        rs.arrivals[frame["handoff"]["id"]] = now
                        rs.seqs.append(frame["seq"])
                        counted += 1
                    elif kind == "ping":
                        rs.sock.sendall(PONG)
                    elif kind == "hello_ok" and rs.state == "registering":
                        rs.state = "live"
                        live += 1
                        in_flight -= 1
                elif opcode == 0x9:
                    rs.sock.sendall(ws_frame(payload, 0xA))
                elif opcode == 0x8 and rs.state == "live":
                    rs.closed = True
        if counted:
            with received.get_lock():
                received.value += counted
            counted = 0


# -- the original in-process trio-websocket client (--client trio) ------------------------------


class TrioSock:
    __slots__ = ("arrivals", "seqs")

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.seqs: list[int] = []


async def run_trio_socket(ws_url: str, token: str, sock: TrioSock, connected: list[int],
                          received, limiter: trio.CapacityLimiter) -> None:
    from trio_websocket import ConnectionClosed, open_websocket_url

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
                    now = time.time()
                    frame = json.loads(raw)
                    if frame["type"] == "handoff_created":
                        sock.arrivals[frame["handoff"]["id"]] = now
                        sock.seqs.append(frame["seq"])
                        received.value += 1
                    elif frame["type"] == "ping":
                        await ws.send_message('{"type":"pong"}')
            except ConnectionClosed:
                pass
    finally:
        if sock in limiter._borrowers:
            limiter.release_on_behalf_of(sock)


class _Counter:
    def __init__(self) -> None:
        self.value = 0


# -- the driver ---------------------------------------------------------------------------------


async def setup(url: str, args: argparse.Namespace) -> tuple[dict, list[dict], list[str]]:
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
    return acc, users, tokens


async def drive(url: str, args: argparse.Namespace, acc: dict, users: list[dict], received) -> dict:
    """Create the handoffs; returns when every socket has every frame (counted in ``received``)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    n = args.sockets
    body = {"account_id": acc["id"], "subject_ref": "t", "intent": "park", "notes": "bench",
            "priority": "normal", "snapshot": {"k": "v" * 200}, "created_by": users[0]["id"]}

    async def wait_for(total: int, limit_s: float) -> None:
        with trio.fail_after(limit_s):
            while received.value < total:
                await trio.sleep(0.01)

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        sent: dict[str, float] = {}
        for _ in range(args.handoffs):  # latency: one at a time
            t0 = time.time()
            r = await c.post("/api/v1/handoffs", json=body)
            assert r.status_code == 201, r.text
            sent[r.json()["id"]] = t0
            await trio.sleep(args.interval)
        await wait_for(n * len(sent), 60)

        burst_ids: list[str] = []
        t_burst = time.time()

        async def poster(k: int) -> None:
            for _ in range(k):
                r = await c.post("/api/v1/handoffs", json=body)
                assert r.status_code == 201, r.text
                burst_ids.append(r.json()["id"])

        async with trio.open_nursery() as posters:
            for _ in range(8):
                posters.start_soon(poster, args.burst // 8)
        await wait_for(n * (len(sent) + len(burst_ids)), 120)
    return {"sent": sent, "burst_ids": burst_ids, "t_burst": t_burst}


def summarise(args: argparse.Namespace, connect_s: float, run: dict,
              socks: list[tuple[dict[str, float], list[int]]], cpu: dict[str, float]) -> dict:
    sent, burst_ids = run["sent"], run["burst_ids"]
    per_frame = [(arr[h] - t0) * 1000 for arr, _ in socks for h, t0 in sent.items()]
    last = [(max(arr[h] for arr, _ in socks) - t0) * 1000 for h, t0 in sent.items()]
    first = [(min(arr[h] for arr, _ in socks) - t0) * 1000 for h, t0 in sent.items()]
    t_end = max(arr[h] for arr, _ in socks for h in burst_ids)
    frames = len(burst_ids) * len(socks)
    total = len(sent) + len(burst_ids)
    ok = all(seqs == list(range(1, len(seqs) + 1)) and len(seqs) == total for _, seqs in socks)
    return {
        "sockets": args.sockets, "users": args.users, "client": args.client,
        "client_procs": args.procs if args.client == "raw" else 1, "connect_s": round(connect_s, 2),
        "handoffs": args.handoffs, "interval_s": args.interval,
        "first_frame_ms_p50": round(statistics.median(first), 1), "first_frame_ms_p99": round(pct(first, 0.99), 1),
        "frame_ms_p50": round(pct(per_frame, 0.5), 1), "frame_ms_p99": round(pct(per_frame, 0.99), 1),
        "last_frame_ms_p50": round(statistics.median(last), 1), "last_frame_ms_p99": round(pct(last, 0.99), 1),
        "last_frame_ms_max": round(max(last), 1),
        "burst_handoffs": len(burst_ids), "burst_frames": frames,
        "frames_per_s": round(frames / (t_end - run["t_burst"])),
        "every_socket_every_event_once_in_order": ok,
        # CPU time spent while the handoffs were created and pushed, per frame pushed.
        "server_cpu_us_per_frame": round(cpu["server"] / (total * len(socks)) * 1e6, 1),
        "client_cpu_us_per_frame": round(cpu["client"] / (total * len(socks)) * 1e6, 1),
    }


def run_raw(url: str, port: int, args: argparse.Namespace, server_pid: int) -> dict:
    acc, users, tokens = trio.run(setup, url, args)
    ctx = mp.get_context("spawn")
    received = ctx.Value("q", 0)
    children = []
    t = time.monotonic()
    for k in range(args.procs):
        work = [(i, tokens[i % len(tokens)]) for i in range(k, args.sockets, args.procs)]
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(port, work, child, received, 25), daemon=True)
        proc.start()
        children.append((proc, parent))
    try:
        for _proc, parent in children:
            if not parent.poll(120):
                raise RuntimeError("a client process did not connect its sockets in time")
            kind, retries = parent.recv()
            assert kind == "ready"
            if retries:
                print(f"note: {retries} handshakes were closed by the server and retried", file=sys.stderr)
        connect_s = time.monotonic() - t
        time.sleep(1.0)  # let every register hook finish
        pids = [proc.pid for proc, _ in children]
        before = cpu_seconds(server_pid), sum(cpu_seconds(p) for p in pids)
        try:
            run = trio.run(drive, url, args, acc, users, received)
        except trio.TooSlowError:
            for _proc, parent in children:
                parent.send("stop")
                got = parent.recv()[1]
                print(f"client: {sum(1 for s in got if s[3])} of {len(got)} sockets closed by the server; "
                      f"frames per socket: {sorted({len(s[2]) for s in got})}", file=sys.stderr)
            print(f"received {received.value} frames", file=sys.stderr)
            raise
        cpu = {"server": cpu_seconds(server_pid) - before[0],
               "client": sum(cpu_seconds(p) for p in pids) - before[1]}
        socks: list[tuple[int, dict, list, bool]] = []
        for _proc, parent in children:
            parent.send("stop")
            socks.extend(parent.recv()[1])
    finally:
        for proc, _ in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    socks.sort()
    closed = sum(1 for s in socks if s[3])
    if closed:
        print(f"warning: {closed} sockets were closed by the server", file=sys.stderr)
    return summarise(args, connect_s, run, [(a, s) for _, a, s, _ in socks], cpu)


def run_trio(url: str, args: argparse.Namespace, server_pid: int) -> dict:
    async def main() -> dict:
        acc, users, tokens = await setup(url, args)
        ws_url = url.replace("http://", "ws://") + "/ws/device"
        socks = [TrioSock() for _ in range(args.sockets)]
        connected, received = [0], _Counter()
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(100)
            for i, sock in enumerate(socks):
                nursery.start_soon(run_trio_socket, ws_url, tokens[i % len(tokens)], sock, connected, received,
                                   limiter)
            t = time.monotonic()
            while connected[0] < args.sockets:
                await trio.sleep(0.05)
            connect_s = time.monotonic() - t
            await trio.sleep(1.0)
            before = cpu_seconds(server_pid), cpu_seconds(os.getpid())
            run = await drive(url, args, acc, users, received)
            cpu = {"server": cpu_seconds(server_pid) - before[0], "client": cpu_seconds(os.getpid()) - before[1]}
            nursery.cancel_scope.cancel()
        return summarise(args, connect_s, run, [(s.arrivals, s.seqs) for s in socks], cpu)

    return trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--handoffs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--client", choices=["raw", "trio"], default="raw",
                        help="raw: --procs processes of epoll loops (default); trio: trio-websocket in this process")
    parser.add_argument("--procs", type=int, default=4, help="client processes for --client raw")
    parser.add_argument("--pg", help="PostgreSQL URL (a fresh database); default SQLite in a temp dir")
    parser.add_argument("--server-pid-file", help="write the server's pid here (to attach a profiler)")
    args = parser.parse_args()
    raise_nofile()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = args.pg or f"sqlite:///{tmp}/bench.db"
        proc, url, port = start_server(db_url, Path(tmp))
        if args.server_pid_file:
            Path(args.server_pid_file).write_text(str(proc.pid))
        try:
            result = (run_raw(url, port, args, proc.pid) if args.client == "raw"
                      else run_trio(url, args, proc.pid))
        except BaseException:
            kept = Path(tempfile.gettempdir()) / f"fanout-server-{proc.pid}.log"
            kept.write_bytes((Path(tmp) / "server.log").read_bytes())
            print(f"server log kept in {kept}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps({"backend": "postgresql" if args.pg else "sqlite", **result}, indent=2))


if __name__ == "__main__":
    main()
