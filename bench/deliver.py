# ruff: noqa: ASYNC110  (a load tool polls counters it does not own; no event to wait on)
"""Delivery bench: items pushed through the HTTP API → triaged (rules) → framed → acked.

Starts ``roost serve`` as a subprocess (SQLite in a temp dir, or PostgreSQL with ``--pg URL``),
one device client in this process (wsproto, writing the acks for each read in one write; or
trio-websocket, one write per ack, with ``--client trio-websocket``), and prints:

* throughput: N items pushed as fast as the API takes them; proposals/s from the first push to
  the last ack persisted; checks every item delivered and acked, none sent again after its ack;
* latency: items pushed at a fixed offered rate; push-to-frame p50/p99 (push sent → frame read);
* ``--kill``: ``kill -9`` of the server in the middle of the stream, restart, and the client ends
  with every item acked; the only repeats it saw are items whose ack the server had not persisted.

    python bench/deliver.py [--items 10000] [--rate 500] [--seconds 5] [--pg URL] [--kill]
                            [--only throughput|latency] [--client wsproto|trio-websocket]

The throughput result also gives the CPU seconds the server (and its event-loop thread) and the
client used during the run: on a shared machine those move less than the wall-clock figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

TOKEN = "bench-service-token-for-roost-benchmarks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, database_url: str, workdir: Path):
        self.database_url = database_url
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "ROOST_DATABASE_URL": self.database_url, "ROOST_SERVICE_TOKEN": TOKEN,
               "ROOST_PORT": str(self.port), "ROOST_LOG_FORMAT": "json", "ROOST_LOG_LEVEL": "warning"}
        log = open(self.workdir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def cpu_s(self, main_thread: bool = False) -> float:
        """CPU time (user + system) the server process (or only its main thread, the event
        loop's, which holds the GIL for nearly all of its work) has used so far."""
        assert self.proc is not None
        pid = self.proc.pid
        stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def setup(url: str) -> tuple[str, str]:
    """Account, user, device and a push scout; returns (device token, scout id)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        acc = c.post("/api/admin/accounts", json={"name": "bench"}).json()
        user = c.post("/api/admin/users", json={"account_id": acc["id"], "email": "b@example.com",
                                                 "display_name": "B"}).json()
        dev = c.post("/api/admin/devices", json={"user_id": user["id"], "name": "bench"}).json()
        scout = c.post("/api/admin/scouts", json={
            "user_id": user["id"], "provider": "push", "poll_interval_s": 3600,
            "classifier_config": {"spam_patterns": ["(?i)lottery"]}}).json()
        return dev["token"], scout["id"]


class Client:
    """One device: acks every proposal; records first-seen times and repeats.

    The frames are the contract's (one ``scout_proposal_ack`` per proposal); how they reach the
    wire is the client's business. This one (wsproto over a trio TCP stream, the library under
    trio-websocket) reads what has arrived and writes the acks for all of it in one write, as
    a device that cares about its battery would. ``TrioWebsocketClient`` sends each ack in a
    write of its own (``--client trio-websocket``).
    """

    def __init__(self, ws_url: str, token: str):
        self.ws_url = ws_url
        self.token = token
        self.seen: dict[str, float] = {}       # source_msg_ref -> first frame time
        self.acked: set[str] = set()           # proposal ids this client has acked
        self.repeats: list[str] = []           # proposal ids received again after being acked (by us)
        self.ref_of: dict[str, str] = {}
        self.connections = 0

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            async def stopper() -> None:
                await stop.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stopper)
            while True:
                try:
                    await self._connection()
                except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError, Disconnected):
                    await trio.sleep(0.1)

    def _proposal(self, p: dict) -> str:
        """Record a proposal frame; returns the ack frame to send."""
        now = time.time()
        if p["id"] in self.acked:
            self.repeats.append(p["id"])
        self.seen.setdefault(p["source_msg_ref"], now)
        self.ref_of[p["id"]] = p["source_msg_ref"]
        return json.dumps({"type": "scout_proposal_ack", "proposal_id": p["id"]})

    async def _connection(self) -> None:
        url = urlsplit(self.ws_url)
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host=url.netloc, target=url.path)))
            self.connections += 1
            hello = [json.dumps({"type": "device_hello", "token": self.token}), '{"type":"register"}']
            accepted = False
            parts: list[str] = []
            while True:
                data = await stream.receive_some(1 << 18)
                if not data:
                    raise Disconnected
                ws.receive_data(data)
                out: list[bytes] = []
                acked: list[str] = []
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                        out += [ws.send(TextMessage(data=text)) for text in hello]
                    elif isinstance(event, RejectConnection):
                        raise Disconnected
                    elif isinstance(event, TextMessage):
                        parts.append(event.data)
                        if not event.message_finished:
                            continue
                        frame = json.loads("".join(parts))
                        parts.clear()
                        if frame["type"] == "ping":
                            out.append(ws.send(TextMessage(data='{"type":"pong"}')))
                        elif frame["type"] == "scout_proposal":
                            out.append(ws.send(TextMessage(data=self._proposal(frame["proposal"]))))
                            acked.append(frame["proposal"]["id"])
                    elif isinstance(event, Ping):
                        out.append(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            await stream.send_all(ws.send(event.response()))
                        raise Disconnected
                if out and accepted:
                    await stream.send_all(b"".join(out))  # every ack of this read in one write
                    self.acked.update(acked)


class Disconnected(Exception):
    pass


class TrioWebsocketClient(Client):
    """The same device on trio-websocket: one write per ack."""

    async def _connection(self) -> None:
        async with open_websocket_url(self.ws_url, max_message_size=1 << 22) as ws:
            self.connections += 1
            await ws.send_message(json.dumps({"type": "device_hello", "token": self.token}))
            await ws.send_message('{"type":"register"}')
            while True:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "ping":
                    await ws.send_message('{"type":"pong"}')
                elif frame["type"] == "scout_proposal":
                    await ws.send_message(self._proposal(frame["proposal"]))
                    self.acked.add(frame["proposal"]["id"])


async def push_batch(http: httpx.AsyncClient, scout_id: str, refs: list[str]) -> None:
    items = [{"source_msg_ref": r, "subject": f"s {r}", "body": f"t={time.time()}", "sender": "x@example.com"}
             for r in refs]
    while True:
        try:
            r = await http.post(f"/api/v1/scouts/{scout_id}/items", json={"items": items})
            if r.status_code == 202:
                return
        except httpx.HTTPError:
            pass
        await trio.sleep(0.2)  # server down (kill test): try again; refs dedupe on the server


async def acked_count(http: httpx.AsyncClient, scout_id: str) -> int:
    try:
        r = await http.get(f"/api/admin/scouts/{scout_id}")
        return r.json()["counts"]["acked"] if r.status_code == 200 else -1
    except httpx.HTTPError:
        return -1


async def throughput(server: Server, n: int, kill: bool, client_cls: type[Client]) -> dict:
    token, scout_id = setup(server.url)
    client = client_cls(server.url.replace("http", "ws") + "/ws/device", token)
    stop = trio.Event()
    acked_at_kill: set[str] = set()
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30) as http, trio.open_nursery() as nursery:
        nursery.start_soon(client.run, stop)
        while not client.connections:
            await trio.sleep(0.01)
        refs = [f"r{i}" for i in range(n)]
        cpu_server, cpu_main, cpu_client = server.cpu_s(), server.cpu_s(True), time.process_time()
        start, wall_start = time.perf_counter(), time.time()
        batch = 500
        limiter = trio.CapacityLimiter(4)

        async def one(chunk: list[str]) -> None:
            async with limiter:
                await push_batch(http, scout_id, chunk)

        marks: dict[str, float] = {}

        async def pushes() -> None:
            async with trio.open_nursery() as pn:
                for i in range(0, n, batch):
                    pn.start_soon(one, refs[i:i + batch])
            marks["pushes_accepted_s"] = time.perf_counter() - start

        nursery.start_soon(pushes)
        if kill:
            while len(client.seen) < n // 3:
                await trio.sleep(0.005)
            server.kill9()
            path = server.database_url[len("sqlite:///"):]
            con = sqlite3.connect(path)
            acked_at_kill = {r[0] for r in con.execute("SELECT id FROM scout_items WHERE status = 'acked'")}
            con.close()
            killed_seen = len(client.seen)
            await trio.to_thread.run_sync(server.start)
        # Ask the server only once this client has sent an ack for every item: polling the
        # counts while the stream runs would load the server under test. The clock stops when
        # the server answers that every ack is persisted.
        while len(client.acked) < n:
            await trio.sleep(0.002)
        marks["client_acked_all_s"] = time.perf_counter() - start
        while await acked_count(http, scout_id) < n:
            await trio.sleep(0.005)
        elapsed = time.perf_counter() - start
        cpu = {} if kill else {"server_cpu_s": round(server.cpu_s() - cpu_server, 2),
                               "server_main_thread_cpu_s": round(server.cpu_s(True) - cpu_main, 2),
                               "client_cpu_s": round(time.process_time() - cpu_client, 2)}
        stop.set()
    lost = n - len(client.seen)
    out = {"items": n, "seconds": round(elapsed, 3), "proposals_per_s": round(n / elapsed),
           "lost": lost, "repeats_after_own_ack": len(client.repeats), "connections": client.connections,
           "first_frame_s": round(min(client.seen.values(), default=start) - wall_start, 3),
           **{k: round(v, 3) for k, v in marks.items()}, **cpu}
    if kill:
        bad = [pid for pid in client.repeats if pid in acked_at_kill]
        out.update({"seen_before_kill": killed_seen, "acked_persisted_at_kill": len(acked_at_kill),
                    "repeats_of_items_acked_in_db": len(bad)})
    return out


async def latency(server: Server, rate: float, seconds: float, batch: int, client_cls: type[Client]) -> dict:
    token, scout_id = setup(server.url)
    client = client_cls(server.url.replace("http", "ws") + "/ws/device", token)
    stop = trio.Event()
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30, limits=httpx.Limits(max_connections=64)) as http, \
            trio.open_nursery() as nursery:
        nursery.start_soon(client.run, stop)
        while not client.connections:
            await trio.sleep(0.01)
        await trio.sleep(0.3)
        total = int(rate * seconds)
        t0 = trio.current_time()

        async def one(refs: list[str]) -> None:
            now = time.time()
            sent.update(dict.fromkeys(refs, now))
            await push_batch(http, scout_id, refs)

        async with trio.open_nursery() as pn:
            for i in range(0, total, batch):
                await trio.sleep_until(t0 + i / rate)
                pn.start_soon(one, [f"L{j}" for j in range(i, min(total, i + batch))])
        with trio.move_on_after(10):
            while len(client.seen) < total:
                await trio.sleep(0.01)
        stop.set()
    lat = sorted((client.seen[r] - sent[r]) * 1000 for r in sent if r in client.seen)
    return {"offered_per_s": rate, "items_per_request": batch, "items": total, "received": len(lat),
            "p50_ms": round(statistics.median(lat), 1), "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1),
            "max_ms": round(lat[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--batch", type=int, default=10, help="items per push request in the latency run")
    ap.add_argument("--pg", metavar="URL", help="serve on this (empty) PostgreSQL database instead of SQLite")
    ap.add_argument("--kill", action="store_true", help="kill -9 the server mid-stream (SQLite)")
    ap.add_argument("--only", choices=["throughput", "latency"], help="run only this part")
    ap.add_argument("--client", choices=["wsproto", "trio-websocket"], default="wsproto",
                    help="device client: acks of one read in one write (wsproto) or one write per ack")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = args.pg or f"sqlite:///{workdir / 'bench.db'}"
        server = Server(url, workdir)
        server.start()
        try:
            result = {"database": "postgresql" if args.pg else "sqlite", "client": args.client}
            client_cls = Client if args.client == "wsproto" else TrioWebsocketClient
            if args.only != "latency":
                result["throughput"] = trio.run(throughput, server, args.items, args.kill, client_cls)
            if not args.kill and args.only != "throughput":
                result["latency"] = trio.run(latency, server, args.rate, args.seconds, args.batch, client_cls)
            print(json.dumps(result, indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
