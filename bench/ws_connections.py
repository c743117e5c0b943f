"""Idle device WebSockets held by one server process: connections held, server RSS, RSS per socket.

    python bench/ws_connections.py                    # starts its own `roost serve` (temp SQLite)
    python bench/ws_connections.py --connections 2000 --url http://127.0.0.1:8000 --token $ROOST_SERVICE_TOKEN

Steps: create one account, ``--devices`` devices (two per user) through the admin API; open
and close a few warm-up sockets so one-time costs (first-use imports, caches) are not counted
per socket; wait ``--settle-s`` and read the server's RSS (VmRSS in /proc/<pid>/status; the
pid comes from ``/api/admin/status`` when the server was not started here); open
``--connections`` authenticated sockets (device_hello + register, hello_ok) spread evenly over
the devices, from this process (a device may hold several sockets); wait ``--settle-s`` with
all of them idle and read the RSS again. While they are held, ``bench/http_latency.py`` runs in
a separate process against ``/healthz``: a settle window (``--settle-requests``, reported, not
judged: it takes the full garbage collection the connect burst left due) and then the measured
window (``--healthz-requests``). The client answers the server's ``ping`` frames; a
server started here pings every 300 s (``ROOST_WS_PING_INTERVAL_S``) so the sockets stay idle.

Bars (exit 1 if one is missed): every socket held; (RSS after - RSS before) / N at most
``--max-kib-per-socket`` (40 KiB); ``/healthz`` p99 under ``--max-healthz-p99-ms`` (20 ms).
This process imports only ``roost.client`` (trio-websocket) of roost, never the server side.

``--browser`` makes each client look like a browser tab (browser headers, a permessage-deflate
offer; wsproto directly, as trio-websocket cannot offer extensions).

``--profile`` runs the server under tracemalloc (a wrapper in ``_common.py``; roost has no hook
for it), snapshots it at the two RSS readings and prints the Python allocations per socket by
source line and by package.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Server,
    machine,
    make_devices,
    raise_nofile,
    run_json,
    schedstat_ms,
    traced_command,
    verdict,
)

from roost.client import answer, handshake  # noqa: E402

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
]


class Holder:
    """Opens device sockets and keeps them open, answering pings, until cancelled."""

    def __init__(self, ws_url: str, connect_concurrency: int):
        self.ws_url = ws_url
        self.connecting = trio.Semaphore(connect_concurrency)
        self.open = 0
        self.failed: dict[str, int] = {}
        self.closed_by_server: dict[int, int] = {}
        self.all_done = trio.Event()
        self.pending = 0
        self.compressed = 0  # --browser: sockets on which the server accepted permessage-deflate

    def _fail(self, what: str) -> None:
        self.failed[what] = self.failed.get(what, 0) + 1

    def _settled(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.all_done.set()

    async def hold(self, token: str) -> None:
        registered = False
        await self.connecting.acquire()  # at most --connect-concurrency handshakes in flight
        slot = True
        try:
            async with open_websocket_url(self.ws_url, connect_timeout=30, disconnect_timeout=5) as ws:
                with trio.fail_after(30):
                    await handshake(ws, token)
                self.connecting.release()
                slot = False
                registered = True
                self.open += 1
                self._settled()
                try:
                    while True:
                        await answer(ws, json.loads(await ws.get_message()))
                finally:
                    self.open -= 1
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason else 1006
            if registered:
                self.closed_by_server[code] = self.closed_by_server.get(code, 0) + 1
            else:
                self._fail(f"closed {code} before hello_ok")
        except (OSError, HandshakeError, RuntimeError, trio.TooSlowError) as exc:
            self._fail(type(exc).__name__)
        finally:
            if slot:
                self.connecting.release()
            if not registered:
                self._settled()


class BrowserHolder(Holder):
    """Like ``Holder``, but each socket looks like a browser tab's: wsproto directly (trio-websocket
    cannot offer extensions), browser headers, and a permessage-deflate offer it can honour."""

    async def hold(self, token: str) -> None:
        registered = False
        await self.connecting.acquire()
        slot = True
        hostport = self.ws_url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError as exc:
            self.connecting.release()
            self._fail(type(exc).__name__)
            self._settled()
            return
        ws = WSConnection(ConnectionType.CLIENT)
        parts: list[str] = []
        try:
            async with stream:
                with trio.fail_after(30):
                    await stream.send_all(ws.send(Request(host=hostport, target="/ws/device",
                                                          extensions=[PerMessageDeflate()],
                                                          extra_headers=BROWSER_HEADERS)))
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("server closed the connection")
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, AcceptConnection):
                            self.compressed += bool(event.extensions)
                            hello = json.dumps({"type": "device_hello", "token": token})
                            await stream.send_all(ws.send(Message(data=hello)) +
                                                  ws.send(Message(data='{"type":"register"}')))
                        elif isinstance(event, RejectConnection):
                            raise ConnectionError(f"upgrade rejected with {event.status_code}")
                        elif isinstance(event, Ping):
                            await stream.send_all(ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            if registered:
                                self.closed_by_server[event.code] = self.closed_by_server.get(event.code, 0) + 1
                            else:
                                self._fail(f"closed {event.code} before hello_ok")
                            return
                        elif isinstance(event, TextMessage):
                            parts.append(event.data)
                            if not event.message_finished:
                                continue
                            frame = json.loads("".join(parts))
                            parts.clear()
                            if frame.get("type") == "hello_ok" and not registered:
                                self.connecting.release()
                                slot = False
                                registered = True
                                self.open += 1
                                self._settled()
                            elif frame.get("type") == "ping":
                                await stream.send_all(ws.send(Message(data='{"type":"pong"}')))
        except (OSError, ConnectionError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            self._fail(type(exc).__name__)
        finally:
            if registered:
                self.open -= 1
            if slot:
                self.connecting.release()
            if not registered:
                self._settled()


async def snapshot(server: Server, profile_dir: Path | None, n: int) -> None:
    """With --profile: have the traced server dump tracemalloc snapshot ``n`` and wait for it."""
    if profile_dir is None:
        return
    os.kill(server.pid, signal.SIGUSR1)
    with trio.fail_after(120):
        while not (profile_dir / f"snap{n}.done").exists():  # noqa: ASYNC110 (another process writes it)
            await trio.sleep(0.1)


def print_profile(profile_dir: Path, n: int, top: int = 20) -> None:
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


async def run(args: argparse.Namespace, server: Server, tokens: list[str], profile_dir: Path | None) -> dict:
    result: dict = {"connections": args.connections, "devices": len(tokens)}

    # Warm-up: first-use costs belong to the baseline, not to the sockets.
    for token in tokens[: args.warmup]:
        await open_and_close(server.ws_url, token)
    await trio.sleep(args.settle_s)
    await snapshot(server, profile_dir, 1)
    result["rss_before_kib"] = server.rss_kib()

    holder = (BrowserHolder if args.browser else Holder)(server.ws_url, args.connect_concurrency)
    holder.pending = args.connections
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(args.connections):
            nursery.start_soon(holder.hold, tokens[i % len(tokens)])
        await holder.all_done.wait()
        result["connect_s"] = round(time.perf_counter() - started, 2)
        await trio.sleep(args.settle_s)
        result["held_client"] = holder.open
        result["rss_after_kib"] = server.rss_kib()
        await snapshot(server, profile_dir, 2)
        with server.admin() as client:
            status = await trio.to_thread.run_sync(client.get, "/api/admin/status")
        result["held_server"] = status.json()["connected_devices"]

        # /healthz latency from a separate process while the sockets are held: first a settle
        # window, then the measured one. The connect burst leaves the server's collector a full
        # (generation 2) pass due; it runs at the first activity afterwards and walks every
        # object the sockets hold, so the settle window takes that pause and is reported apart.
        def latency_cmd(requests: int) -> list[str]:
            return [sys.executable, str(HERE / "http_latency.py"), "--url", server.url, "--token", server.token,
                    "--path", "/healthz", "--requests", str(requests),
                    "--concurrency", str(args.healthz_concurrency), "--warmup", "0", "--json"]

        if args.settle_requests:
            result["healthz_settle"] = await trio.to_thread.run_sync(run_json, latency_cmd(args.settle_requests))
            await trio.sleep(1)
        cpu0, wait0 = schedstat_ms(server.pid)
        result["healthz"] = await trio.to_thread.run_sync(run_json, latency_cmd(args.healthz_requests))
        cpu1, wait1 = schedstat_ms(server.pid)
        # How long the server's event-loop thread was runnable but not running (the machine busy
        # with other processes) during the measured window: it tells contention from a slow server.
        result["server_cpu_ms"] = round(cpu1 - cpu0, 1)
        result["server_runqueue_wait_ms"] = round(wait1 - wait0, 1)
        result["load_after_latency"] = round(os.getloadavg()[0], 2)
        result["held_after_latency"] = holder.open
        result["rss_end_kib"] = server.rss_kib()
        result["client_rss_kib"] = rss_kib_self()
        if args.hold_s:
            print(f"holding {holder.open} sockets for {args.hold_s:g} s (server pid {server.pid})", flush=True)
            await trio.sleep(args.hold_s)
        nursery.cancel_scope.cancel()
    result["failed"] = holder.failed
    result["compressed"] = holder.compressed
    result["closed_by_server"] = {str(k): v for k, v in holder.closed_by_server.items()}
    return result


def rss_kib_self() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on a temp SQLite database)")
    parser.add_argument("--token", help="service token for the running server")
    parser.add_argument("--pid", type=int, help="server pid for RSS (default: from /api/admin/status)")
    parser.add_argument("--connections", "-n", type=int, default=2000)
    parser.add_argument("--devices", type=int, help="devices to spread the sockets over (default N/10)")
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20, help="sockets opened and closed before the baseline")
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--settle-requests", type=int, default=500,
                        help="/healthz requests sent first and not judged (they take the collector's pause)")
    parser.add_argument("--healthz-requests", type=int, default=2000, help="/healthz requests in the measured window")
    parser.add_argument("--healthz-concurrency", type=int, default=10)
    parser.add_argument("--max-kib-per-socket", type=float, default=40.0)
    parser.add_argument("--max-healthz-p99-ms", type=float, default=20.0)
    parser.add_argument("--hold-s", type=float, default=0, help="keep the sockets open this long at the end")
    parser.add_argument("--browser", action="store_true",
                        help="clients look like browser tabs: browser headers and a permessage-deflate offer")
    parser.add_argument("--profile", action="store_true",
                        help="run the server with tracemalloc and print where the per-socket memory goes "
                             "(RSS is then inflated by tracemalloc itself; the RSS bar is not judged)")
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
    if args.url:
        server = Server.attach(args.url, args.token or "", args.pid)
    elif profile_dir is not None:
        server = Server.start({"ROOST_WS_PING_INTERVAL_S": "300", "ROOST_BENCH_TRACEMALLOC_DIR": str(profile_dir)},
                              command=traced_command(), ready_timeout_s=120)
    else:
        server = Server.start({"ROOST_WS_PING_INTERVAL_S": "300"})
    try:
        t0 = time.perf_counter()
        tokens = make_devices(server, devices, devices_per_user=2, prefix="wsbench")
        setup_s = time.perf_counter() - t0
        result = trio.run(run, args, server, tokens, profile_dir)
    finally:
        if args.url is None:
            if args.server_log and server.log_path:
                server.stop_process()
                args.server_log.write_bytes(server.log_path.read_bytes())
            server.stop()

    n = args.connections
    grown = result["rss_after_kib"] - result["rss_before_kib"]
    per_socket = grown / n if n else 0.0
    result["kib_per_socket"] = round(per_socket, 2)
    hz = result["healthz"]

    print(f"roost idle WebSockets: {n} sockets over {devices} devices, server "
          f"{'at ' + args.url if args.url else 'started here (SQLite, ping interval 300 s)'}")
    print(f"  machine: {machine()}")
    print(f"  setup {setup_s:.1f} s (account, {(devices + 1) // 2} users, {devices} devices); "
          f"connected in {result['connect_s']} s ({args.connect_concurrency} at a time)")
    if args.browser:
        print("  clients: browser-like (wsproto, browser headers, permessage-deflate offered); server accepted "
              f"compression on {result['compressed']} sockets")
    else:
        print("  clients: roost.client handshake over trio-websocket")
    print(f"  connections held: {result['held_client']} (client), {result['held_server']} (server status); "
          f"still held after the latency run: {result['held_after_latency']}")
    if result["failed"]:
        print(f"  failed to connect: {result['failed']}")
    print(f"  server RSS before: {result['rss_before_kib'] / 1024:.1f} MiB   after: "
          f"{result['rss_after_kib'] / 1024:.1f} MiB   after the latency run: {result['rss_end_kib'] / 1024:.1f} MiB")
    print(f"  RSS per socket: {per_socket:.1f} KiB  ((after - before) / {n})")
    settle = result.get("healthz_settle")
    if settle:
        print(f"  /healthz settle window right after connecting ({settle['requests']} requests, not judged): "
              f"p50 {settle['p50_ms']} ms  p99 {settle['p99_ms']} ms  max {settle['max_ms']} ms  "
              f"failed {sum(settle['failures'].values())}")
    print(f"  /healthz while held ({hz['requests']} requests, concurrency {hz['concurrency']}, separate process): "
          f"p50 {hz['p50_ms']} ms  p90 {hz['p90_ms']} ms  p99 {hz['p99_ms']} ms  max {hz['max_ms']} ms  "
          f"failed {sum(hz['failures'].values())}")
    print(f"    during it the server's event loop ran {result['server_cpu_ms']} ms on a CPU and waited "
          f"{result['server_runqueue_wait_ms']} ms for one (other load); 1-min load average "
          f"{result['load_after_latency']}")
    print(f"  client process peak RSS: {result['client_rss_kib'] / 1024:.1f} MiB")
    if profile_dir is not None:
        print_profile(profile_dir, n)
        for f in profile_dir.iterdir():
            f.unlink()
        profile_dir.rmdir()
    ok = verdict(f"{n} idle sockets held", result["held_client"] == n and result["held_server"] >= n
                 and result["held_after_latency"] == n,
                 f"{result['held_client']} held, {result['held_after_latency']} after the latency run")
    if args.profile:
        print(f"  [----] RSS per socket <= {args.max_kib_per_socket:g} KiB: not judged under tracemalloc "
              f"({per_socket:.1f} KiB)")
    else:
        ok = verdict(f"RSS per socket <= {args.max_kib_per_socket:g} KiB", per_socket <= args.max_kib_per_socket,
                     f"{per_socket:.1f} KiB") and ok
    healthz_ok = not hz["failures"] and hz["p99_ms"] is not None and hz["p99_ms"] < args.max_healthz_p99_ms
    if args.profile:
        print(f"  [----] /healthz p99 < {args.max_healthz_p99_ms:g} ms while held: not judged under tracemalloc "
              f"(p99 {hz['p99_ms']} ms)")
    else:
        ok = verdict(f"/healthz p99 < {args.max_healthz_p99_ms:g} ms while held", healthz_ok,
                     f"p99 {hz['p99_ms']} ms") and ok
    result["pass"] = ok
    if args.json:
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
