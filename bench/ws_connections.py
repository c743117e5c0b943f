"""Idle device WebSockets held by one server process: sockets held, RSS per socket, /healthz, a broadcast.

    python bench/ws_connections.py                      # 2,000 sockets, starts its own `roost serve` (SQLite)
    python bench/ws_connections.py --sockets 10000      # the issue-21 run: 10,000 held for 2 minutes
    python bench/ws_connections.py --sockets 10000 --hold 30   # a quicker run
    python bench/ws_connections.py --url http://127.0.0.1:8000 --token $ROOST_SERVICE_TOKEN

Steps: create one account, ``--devices`` devices (two per user; default N/10) through the admin
API; open and close a few warm-up sockets so one-time costs (first-use imports, caches) are not
counted per socket; wait ``--settle-s`` and read the server's RSS (VmRSS in /proc/<pid>/status;
the pid comes from ``/api/admin/status`` when the server was not started here). Then
``--client-procs`` client processes (default 4; each raises its open-file limit with
``setrlimit``) open ``--sockets`` authenticated sockets between them (device_hello + register,
hello_ok), spread evenly over the devices. Each client is a small epoll loop over raw sockets
speaking just enough WebSocket, so holding thousands costs the machine little next to the server;
it answers the server's ``ping`` frames (a server started here pings every ``--ping-interval``
seconds, the default 20 s, so pings flow during the hold) and notes every close.

With all connected: wait ``--settle-s``, read the RSS again (the figure "after connecting"), and
hold them for ``--hold`` seconds (120). During the hold ``bench/http_latency.py`` runs against
``/healthz`` in a separate process: a settle window (``--settle-requests``, reported, not judged:
it takes the full garbage collection the connect burst left due) and then, once a full ping
interval has gone by, the measured window (``--healthz-requests``). At the end of the hold: the
RSS again, the sockets each side still counts open, and then ``--broadcasts`` broadcasts (5), one at
a time: each one handoff created through the API for the account that holds every socket; each
client process notes when its ``handoff_created`` frame reached each socket (``time.time()``,
which every process reads alike), and the figure is the time from just before the POST to the
frame on the last socket (judged: the median of the broadcasts; each is printed).

Bars (exit 1 if one is missed): every socket still open at the end of the hold; (RSS at the end
of the hold - RSS before) / N at most ``--max-kib-per-socket`` (30 KiB); ``/healthz`` p99 under
``--max-healthz-p99-ms`` (20 ms); the broadcast on the last socket within ``--max-broadcast-ms``
(500 ms), the median over the broadcasts. This process imports only ``roost.client``
(trio-websocket) of roost, never the server side.

``--browser`` makes each client look like a browser tab (browser headers, a permessage-deflate
offer, which roost declines).

``--profile`` runs the server under tracemalloc (a wrapper in ``_common.py``; roost has no hook
for it), snapshots it at the two first RSS readings and prints the Python allocations per socket
by source line and by package (``--hold 0`` skips the hold there).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PONG,
    RawDevice,
    Server,
    SocketPoll,
    machine,
    open_upgrade,
    percentile,
    raise_nofile,
    run_json,
    schedstat_ms,
    traced_command,
    verdict,
    ws_frame,
)

from roost.client import handshake  # noqa: E402

HERE = Path(__file__).resolve().parent

# What a browser tab sends with its upgrade request (Chrome 120 on Linux, give or take), including
# the permessage-deflate offer every browser makes. ``--browser`` clients send these.
BROWSER_HEADERS = [
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    b"Chrome/120.0.0.0 Safari/537.36"),
    (b"origin", b"https://app.example.com"),
    (b"pragma", b"no-cache"),
    (b"cache-control", b"no-cache"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"accept-language", b"en-GB,en;q=0.9,de;q=0.8"),
    (b"cookie", b"session=" + b"x" * 180 + b"; theme=dark; _ga=GA1.1.123456789.1700000000"),
    (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
]
HANDSHAKE_RETRIES = 3  # a socket closed by a loaded server before hello_ok is opened again this often


# -- the client processes ---------------------------------------------------------------------------


HANDOFF = b'{"type":"handoff_created"'


class RawSock(RawDevice):
    __slots__ = ("tries", "arrivals")

    def __init__(self, token: str):
        super().__init__(token)  # waiting -> upgrading -> registering -> live -> closed | failed
        self.tries = 0
        self.arrivals: list[float] = []  # when each broadcast's handoff_created frame came


def client_main(port: int, tokens: list[str], conn, handshakes: int, browser: bool) -> None:
    """Hold one socket per token; answer pings; report over ``conn`` when asked.

    Messages from the parent: "count" -> ("count", open, closed codes, sockets that have the
    broadcasts, pongs sent); "stop" -> ("result", open, closed codes, arrival times) and exit.
    It sends ("ready", open, failures, retries, compressed) once every socket is open or failed.
    """
    raise_nofile()  # setrlimit(RLIMIT_NOFILE) up to the hard limit, in this process too
    socks = [RawSock(t) for t in tokens]
    waiting = list(reversed(socks))
    in_flight = live = settled = retries = compressed = pongs = 0
    failed: Counter[str] = Counter()
    closed: Counter[int] = Counter()
    extra = "".join(f"{k.decode()}: {v.decode()}\r\n" for k, v in BROWSER_HEADERS) if browser else ""
    ready_sent = False
    sockets = SocketPoll(conn.fileno())

    def drop(rs: RawSock, code: int) -> None:
        nonlocal live, in_flight, settled, retries
        sockets.remove(rs)
        rs.sock = None
        rs.buf.clear()
        if rs.state == "live":
            rs.state = "closed"
            live -= 1
            closed[code] += 1
            return
        in_flight -= 1
        rs.tries += 1
        if rs.tries <= HANDSHAKE_RETRIES:  # refused or timed out in its handshake (a loaded server)
            retries += 1
            rs.state = "waiting"
            waiting.append(rs)
        else:
            rs.state = "failed"
            failed[f"closed {code} before hello_ok"] += 1
            settled += 1

    while True:
        while waiting and in_flight < handshakes:
            rs = waiting.pop()
            try:
                rs.sock = open_upgrade(port, extra, timeout=30)
            except OSError as exc:
                rs.state = "failed"
                failed[type(exc).__name__] += 1
                settled += 1
                continue
            rs.state = "upgrading"
            sockets.add(rs)
            in_flight += 1
        if not ready_sent and settled == len(socks):
            conn.send(("ready", live, dict(failed), retries, compressed))
            ready_sent = True
        for rs, data, now in sockets.poll(0.05, 1 << 16):
            if rs is None:
                msg = conn.recv()
                if msg == "count":
                    conn.send(("count", live, dict(closed), sum(len(rs.arrivals) for rs in socks), pongs))
                    continue
                conn.send(("result", live, dict(closed), [rs.arrivals for rs in socks]))
                sockets.close_all()
                return
            if not data:
                drop(rs, 1006)
                continue
            upgrading = rs.state == "upgrading"
            frames = rs.take(data)
            if rs.state == "refused":
                rs.state = "failed"
                failed[f"upgrade answered {rs.answer[9:12].decode(errors='replace')}"] += 1
                settled += 1
                in_flight -= 1
                sockets.remove(rs)
                rs.sock = None
                continue
            if upgrading and rs.state == "registering":
                compressed += b"sec-websocket-extensions" in rs.answer
            gone = None
            for opcode, payload in frames:
                if opcode == 0x1:
                    if payload.startswith(HANDOFF):
                        rs.arrivals.append(now)
                    elif payload == b'{"type":"ping"}':
                        rs.sock.sendall(PONG)
                        pongs += 1
                    elif rs.state == "registering" and payload.startswith(b'{"type":"hello_ok"'):
                        rs.state = "live"
                        live += 1
                        in_flight -= 1
                        settled += 1
                elif opcode == 0x9:
                    rs.sock.sendall(ws_frame(payload, 0xA))
                elif opcode == 0x8:
                    gone = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    break
            if gone is not None:
                drop(rs, gone)


# -- the parent ---------------------------------------------------------------------------------------


def setup_devices(server: Server, count: int, prefix: str = "wsbench") -> tuple[str, str, list[str]]:
    """One account, ``count / 2`` users with two devices each; returns (account id, a user id, tokens)."""
    tokens: list[str] = []
    with server.admin() as client:
        r = client.post("/api/admin/accounts", json={"name": f"{prefix}-account", "timezone": "UTC"})
        r.raise_for_status()
        account_id = r.json()["id"]
        users: list[str] = []
        run = os.urandom(4).hex()
        for i in range(count):
            if i % 2 == 0:
                r = client.post("/api/admin/users", json={
                    "account_id": account_id, "email": f"{prefix}-{run}-{i}@example.com",
                    "display_name": f"Bench {i}"})
                r.raise_for_status()
                users.append(r.json()["id"])
            r = client.post("/api/admin/devices", json={"user_id": users[-1], "name": f"{prefix}-{i}"})
            r.raise_for_status()
            tokens.append(r.json()["token"])
    return account_id, users[0], tokens


def snapshot(server: Server, profile_dir: Path | None, n: int) -> None:
    """With --profile: have the traced server dump tracemalloc snapshot ``n`` and wait for it."""
    if profile_dir is None:
        return
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while not (profile_dir / f"snap{n}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot from the server")
        time.sleep(0.1)


def print_profile(profile_dir: Path, n: int, top: int = 25) -> None:
    """Python allocations that grew between the two snapshots, per socket: by line and by package."""
    before = tracemalloc.Snapshot.load(str(profile_dir / "snap1.pickle"))
    after = tracemalloc.Snapshot.load(str(profile_dir / "snap2.pickle"))
    by_line = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in by_line)
    print(f"  tracemalloc (server): {total / n / 1024:.1f} KiB of Python allocations per socket; top lines:")
    for d in by_line[:top]:
        frame = d.traceback[0]
        name = frame.filename.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")
        print(f"    {d.size_diff / n:7.0f} B {d.count_diff / n:5.1f} blocks  {name}:{frame.lineno}")
    packages: Counter[str] = Counter()
    for d in after.compare_to(before, "filename"):
        name = d.traceback[0].filename
        if "site-packages/" in name:
            key = name.split("site-packages/")[1].split("/")[0]
        elif "/roost/" in name:
            key = "roost"
        elif name.startswith("<attrs generated"):
            key = "trio (attrs classes)" if "trio." in name else "attrs classes"
        else:
            key = "stdlib/other"
        packages[key] += d.size_diff
    print("  by package: " + ", ".join(f"{k} {v / n / 1024:.1f} KiB" for k, v in packages.most_common(10)))


async def open_and_close(ws_url: str, token: str) -> None:
    async with open_websocket_url(ws_url) as ws:
        await handshake(ws, token)


def ask_all(children: list, msg: str) -> list[tuple]:
    for _proc, pipe in children:
        pipe.send(msg)
    return [pipe.recv() for _proc, pipe in children]


def run(args: argparse.Namespace, server: Server, account_id: str, user_id: str, tokens: list[str],
        profile_dir: Path | None) -> dict:
    n = args.connections
    result: dict = {"sockets": n, "devices": len(tokens), "client_procs": args.client_procs, "hold_s": args.hold}

    # Warm-up: first-use costs belong to the baseline, not to the sockets.
    async def warm() -> None:
        for token in tokens[: args.warmup]:
            await open_and_close(server.ws_url, token)
    trio.run(warm)
    time.sleep(args.settle_s)
    snapshot(server, profile_dir, 1)
    result["rss_before_kib"] = server.rss_kib()

    port = int(server.url.rsplit(":", 1)[1])
    ctx = mp.get_context("spawn")
    children = []
    started = time.perf_counter()
    try:
        for k in range(args.client_procs):
            mine = [tokens[i % len(tokens)] for i in range(k, n, args.client_procs)]
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, daemon=True,
                               args=(port, mine, child, max(1, args.connect_concurrency // args.client_procs),
                                     args.browser))
            proc.start()
            children.append((proc, parent))
        failed: Counter[str] = Counter()
        result["held_client"] = result["retries"] = result["compressed"] = 0
        for _proc, pipe in children:
            if not pipe.poll(600):
                raise RuntimeError("a client process did not open its sockets in time")
            _, live, fails, retries, compressed = pipe.recv()
            result["held_client"] += live
            result["retries"] += retries
            result["compressed"] += compressed
            failed.update(fails)
        result["failed"] = dict(failed)
        result["connect_s"] = round(time.perf_counter() - started, 2)
        time.sleep(args.settle_s)
        result["rss_after_kib"] = server.rss_kib()
        snapshot(server, profile_dir, 2)
        with server.admin() as client:
            result["held_server"] = client.get("/api/admin/status").json()["connected_devices"]

        # The hold. /healthz latency from a separate process: first a settle window (the connect
        # burst leaves the server's collector a full pass due; it walks every object the sockets
        # hold, so that pause is reported apart), then, once every socket has been pinged, the
        # measured window.
        def latency_cmd(requests: int) -> list[str]:
            return [sys.executable, str(HERE / "http_latency.py"), "--url", server.url, f"--token={server.token}",
                    "--path", "/healthz", "--requests", str(requests),
                    "--concurrency", str(args.healthz_concurrency), "--warmup", "0", "--json"]

        print(f"holding {result['held_client']} sockets for {args.hold:g} s (server pid {server.pid})", flush=True)
        t_hold = time.monotonic()
        if args.settle_requests:
            result["healthz_settle"] = run_json(latency_cmd(args.settle_requests))
        time.sleep(max(0.0, t_hold + min(args.ping_interval + 1, args.hold / 2) - time.monotonic()))
        cpu0, wait0 = schedstat_ms(server.pid)
        result["healthz_at_s"] = round(time.monotonic() - t_hold, 1)
        result["healthz"] = run_json(latency_cmd(args.healthz_requests))
        cpu1, wait1 = schedstat_ms(server.pid)
        # How long the server's event-loop thread was runnable but not running (the machine busy
        # with other processes) during the measured window: it tells contention from a slow server.
        result["server_cpu_ms"] = round(cpu1 - cpu0, 1)
        result["server_runqueue_wait_ms"] = round(wait1 - wait0, 1)
        result["load_after_latency"] = round(os.getloadavg()[0], 2)
        time.sleep(max(0.0, t_hold + args.hold - time.monotonic()))
        result["held_s"] = round(time.monotonic() - t_hold, 1)

        # The end of the hold: what is still open, and the memory.
        result["rss_end_kib"] = server.rss_kib()
        counts = ask_all(children, "count")
        result["held_end_client"] = sum(c[1] for c in counts)
        result["pongs"] = sum(c[4] for c in counts)
        closed: Counter[int] = Counter()
        for c in counts:
            closed.update(c[2])
        result["closed_by_server"] = {str(k): v for k, v in closed.items()}
        with server.admin() as client:
            result["held_end_server"] = client.get("/api/admin/status").json()["connected_devices"]

            # The broadcasts: one handoff event at a time to the account holding every socket.
            body = {"account_id": account_id, "subject_ref": "ws-bench", "intent": "park", "notes": "bench",
                    "priority": "normal", "snapshot": {"k": "v"}, "created_by": user_id}
            sent: list[float] = []
            for i in range(args.broadcasts):
                sent.append(time.time())
                client.post("/api/v1/handoffs", json=body).raise_for_status()
                deadline = time.monotonic() + args.broadcast_wait_s
                while time.monotonic() < deadline:
                    if sum(c[3] for c in ask_all(children, "count")) >= result["held_end_client"] * (i + 1):
                        break
                    time.sleep(0.05)
                time.sleep(args.broadcast_gap_s)
        got = [arr for res in ask_all(children, "stop") for arr in res[3]]
    finally:
        for proc, _ in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    # Each socket's frames come in order, so its i-th arrival is the i-th broadcast's.
    result["broadcasts"] = []
    for i, t0 in enumerate(sent):
        ms = [(arr[i] - t0) * 1000 for arr in got if len(arr) > i]
        result["broadcasts"].append({"got": len(ms), "first_ms": round(min(ms), 1) if ms else None,
                                     "p50_ms": round(percentile(ms, 50), 1) if ms else None,
                                     "last_ms": round(max(ms), 1) if ms else None})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on a temp SQLite database)")
    parser.add_argument("--token", help="service token for the running server")
    parser.add_argument("--pid", type=int, help="server pid for RSS (default: from /api/admin/status)")
    parser.add_argument("--sockets", "--connections", "-n", dest="connections", type=int, default=2000)
    parser.add_argument("--devices", type=int, help="devices to spread the sockets over (default N/10)")
    parser.add_argument("--client-procs", type=int, default=4, help="client processes holding the sockets")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in flight, in all")
    parser.add_argument("--warmup", type=int, default=20, help="sockets opened and closed before the baseline")
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=120.0, help="seconds to hold the sockets (default 120)")
    parser.add_argument("--ping-interval", type=float, default=20.0,
                        help="ROOST_WS_PING_INTERVAL_S of a server started here (the default, 20 s)")
    parser.add_argument("--settle-requests", type=int, default=500,
                        help="/healthz requests sent first and not judged (they take the collector's pause)")
    parser.add_argument("--healthz-requests", type=int, default=2000, help="/healthz requests in the measured window")
    parser.add_argument("--healthz-concurrency", type=int, default=10)
    parser.add_argument("--broadcasts", type=int, default=5, help="handoffs created one at a time at the end")
    parser.add_argument("--broadcast-gap-s", type=float, default=1.0, help="pause after each broadcast")
    parser.add_argument("--broadcast-wait-s", type=float, default=10.0)
    parser.add_argument("--max-kib-per-socket", type=float, default=30.0)
    parser.add_argument("--max-healthz-p99-ms", type=float, default=20.0)
    parser.add_argument("--max-broadcast-ms", type=float, default=500.0)
    parser.add_argument("--browser", action="store_true",
                        help="clients look like browser tabs: browser headers and a permessage-deflate offer")
    parser.add_argument("--profile", action="store_true",
                        help="run the server with tracemalloc and print where the per-socket memory goes "
                             "(RSS is then inflated by tracemalloc itself; RSS and latency are not judged)")
    parser.add_argument("--server-log", type=Path, help="copy the log of the server started here to this file")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with the figures")
    args = parser.parse_args()
    if args.profile and args.url:
        parser.error("--profile starts its own traced server; it cannot be used with --url")
    devices = args.devices or max(1, args.connections // 10)
    nofile = raise_nofile()
    if nofile < args.connections + 100:
        print(f"warning: open-file limit {nofile} is below {args.connections} sockets", file=sys.stderr)

    profile_dir = Path(tempfile.mkdtemp(prefix="roost-bench-profile-")) if args.profile else None
    env = {"ROOST_WS_PING_INTERVAL_S": f"{args.ping_interval:g}", "ROOST_LOG_LEVEL": "warning"}
    if args.url:
        server = Server.attach(args.url, args.token or "", args.pid)
    elif profile_dir is not None:
        server = Server.start({**env, "ROOST_BENCH_TRACEMALLOC_DIR": str(profile_dir)},
                              command=traced_command(), ready_timeout_s=120)
    else:
        server = Server.start(env)
    try:
        t0 = time.perf_counter()
        account_id, user_id, tokens = setup_devices(server, devices)
        setup_s = time.perf_counter() - t0
        result = run(args, server, account_id, user_id, tokens, profile_dir)
    finally:
        if args.url is None:
            if args.server_log and server.log_path:
                server.stop_process()
                args.server_log.write_bytes(server.log_path.read_bytes())
            server.stop()

    n = args.connections
    per_socket = (result["rss_after_kib"] - result["rss_before_kib"]) / n if n else 0.0
    per_socket_end = (result["rss_end_kib"] - result["rss_before_kib"]) / n if n else 0.0
    result["kib_per_socket"] = round(per_socket, 2)
    result["kib_per_socket_end"] = round(per_socket_end, 2)
    hz = result["healthz"]

    print(f"roost idle WebSockets: {n} sockets over {devices} devices, held {result['held_s']} s by "
          f"{args.client_procs} client processes; server "
          f"{'at ' + args.url if args.url else f'started here (SQLite, ping interval {args.ping_interval:g} s)'}")
    print(f"  machine: {machine()}")
    print(f"  setup {setup_s:.1f} s (account, {(devices + 1) // 2} users, {devices} devices); "
          f"connected in {result['connect_s']} s ({args.connect_concurrency} handshakes at a time); "
          f"{result['retries']} handshakes retried")
    if args.browser:
        print("  clients: browser-like (browser headers, permessage-deflate offered); server accepted "
              f"compression on {result['compressed']} sockets")
    if result["failed"]:
        print(f"  failed to connect: {result['failed']}")
    print(f"  sockets open after connecting: {result['held_client']} (clients), {result['held_server']} (server); "
          f"at the end of the hold: {result['held_end_client']} (clients), {result['held_end_server']} (server); "
          f"{result['pongs']} pings answered; closed by the server: {result['closed_by_server'] or 'none'}")
    print(f"  server RSS before: {result['rss_before_kib'] / 1024:.1f} MiB   after connecting: "
          f"{result['rss_after_kib'] / 1024:.1f} MiB   at the end of the hold: {result['rss_end_kib'] / 1024:.1f} MiB")
    print(f"  RSS per socket: {per_socket:.1f} KiB after connecting, {per_socket_end:.1f} KiB at the end of "
          f"the hold  ((RSS - before) / {n})")
    settle = result.get("healthz_settle")
    if settle:
        print(f"  /healthz settle window right after connecting ({settle['requests']} requests, not judged): "
              f"p50 {settle['p50_ms']} ms  p99 {settle['p99_ms']} ms  max {settle['max_ms']} ms  "
              f"failed {sum(settle['failures'].values())}")
    print(f"  /healthz while held ({hz['requests']} requests from {result['healthz_at_s']} s into the hold, "
          f"concurrency {hz['concurrency']}, separate process): p50 {hz['p50_ms']} ms  p90 {hz['p90_ms']} ms  "
          f"p99 {hz['p99_ms']} ms  max {hz['max_ms']} ms  failed {sum(hz['failures'].values())}")
    print(f"    during it the server's event loop ran {result['server_cpu_ms']} ms on a CPU and waited "
          f"{result['server_runqueue_wait_ms']} ms for one (other load); 1-min load average "
          f"{result['load_after_latency']}")
    for i, b in enumerate(result["broadcasts"]):
        print(f"  broadcast {i + 1} (one handoff to the account, POST to frame): {b['got']} sockets got it; "
              f"first {b['first_ms']} ms  p50 {b['p50_ms']} ms  last {b['last_ms']} ms")
    if profile_dir is not None:
        print_profile(profile_dir, n)
        for f in profile_dir.iterdir():
            f.unlink()
        profile_dir.rmdir()
    ok = verdict(f"all {n} sockets still open at the end", result["held_client"] == n
                 and result["held_end_client"] == n and result["held_end_server"] >= n,
                 f"{result['held_end_client']} open (clients), {result['held_end_server']} (server)")
    judged = not args.profile
    if judged:
        ok = verdict(f"RSS per socket <= {args.max_kib_per_socket:g} KiB", per_socket_end <= args.max_kib_per_socket,
                     f"{per_socket_end:.1f} KiB at the end of the hold") and ok
        ok = verdict(f"/healthz p99 < {args.max_healthz_p99_ms:g} ms while held",
                     not hz["failures"] and hz["p99_ms"] is not None and hz["p99_ms"] < args.max_healthz_p99_ms,
                     f"p99 {hz['p99_ms']} ms") and ok
    else:
        print(f"  [----] RSS per socket and /healthz p99: not judged under tracemalloc ({per_socket_end:.1f} KiB, "
              f"p99 {hz['p99_ms']} ms)")
    lasts = sorted(b["last_ms"] for b in result["broadcasts"] if b["got"] == n)
    last = lasts[len(lasts) // 2] if len(lasts) == len(result["broadcasts"]) and lasts else None
    result["broadcast_last_ms_median"] = last
    ok = verdict(f"broadcast on the last socket within {args.max_broadcast_ms:g} ms",
                 last is not None and (last <= args.max_broadcast_ms or not judged),
                 f"median over {len(result['broadcasts'])} broadcasts {last} ms, each reaching "
                 f"{min((b['got'] for b in result['broadcasts']), default=0)} of {n} sockets or more; "
                 f"last-socket times {lasts}") and ok
    result["pass"] = ok
    if args.json:
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
