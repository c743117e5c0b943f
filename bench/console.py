"""The operator console's three bars (issue 20).

    python bench/console.py                       # SQLite, 2,000 devices, 100 scouts, 1,000,000 items
    python bench/console.py --pg-url postgresql://postgres@127.0.0.1:5432/console_bench
    python bench/console.py --items 100000 --reuse /tmp/console-bench   # keep the generated data

(a) Render time: ``bench/console_data.py`` writes one account, ``--devices`` devices (two a user),
    ``--scouts`` push scouts and ``--items`` items into a fresh SQLite file; ``roost serve`` starts on
    it and ``--devices`` real device WebSockets connect from ``--client-processes`` processes (the
    ``Holder`` of ``bench/ws_connections.py``). Signed in as an operator, each console page is fetched
    ``--renders`` times in a row (after 3 uncounted): the overview, a scout's items page (all, failed),
    the scouts list, search and a bulk confirmation. Each time is the client's, from request to the
    end of the body over a kept-alive local connection: the server's time plus a loopback round trip.
    Bar: p95 of the overview and of a scout's items page under ``--max-render-ms`` (200 ms).
(b) Live: an open ``/console/live`` stream; a pushed item (``POST /api/v1/scouts/{id}/items``) and a
    handoff claim (``POST /api/v1/handoffs/{id}/claim``), each timed from just before its request
    is sent (so before its commit) to the matching ``change`` event. On SQLite (one process), and with
    ``--pg-url`` on PostgreSQL across two processes: the stream on one, the writes on the other.
    Bar: the slowest of ``--live-rounds`` under ``--max-live-ms`` (250 ms).
(c) 100 consoles: RSS of the server (the SQLite one, its devices still connected) before and after
    ``--consoles`` live streams open (each a kept-open ``/console/live`` of four topics), and
    ``/healthz`` p99 from ``bench/http_latency.py`` in a separate process while they are open.
    Bars: RSS growth under 50 MiB; p99 under 20 ms.

Prints each figure, its limit and PASS/FAIL; exit 1 if a bar is missed. This process is a client
only (trio, httpx, trio-websocket): the data generator runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, machine, percentile, raise_nofile, run_json, verdict  # noqa: E402

HERE = Path(__file__).resolve().parent
CONSOLE_TOKEN = "bench-console-" + "x" * 24


# -- device sockets, from other processes ---------------------------------------------------------

def _client_main(ws_url: str, tokens: list[str], conn: Any) -> None:
    """A client process: ``bench/ws_connections.py``'s raw epoll client holding one socket per token
    (answering pings) until told to stop."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from ws_connections import client_main  # noqa: PLC0415  (imported in the child only)

    client_main(urlsplit(ws_url).port, tokens, conn, 50, False)


class Devices:
    """``len(tokens)`` device sockets spread over ``processes`` client processes."""

    def __init__(self, ws_url: str, tokens: list[str], processes: int):
        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        for i in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(ws_url, tokens[i::processes], child), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(parent)

    def wait_open(self, timeout_s: float = 300) -> dict[str, Any]:
        opened, failed = 0, {}
        for conn in self.conns:
            if not conn.poll(timeout_s):
                raise RuntimeError("a client process did not report its sockets in time")
            _, live, failures, _retries, _compressed = conn.recv()  # ("ready", ...)
            opened += live
            for k, v in failures.items():
                failed[k] = failed.get(k, 0) + v
        return {"open": opened, "failed": failed}

    def stop(self) -> int:
        still = 0
        for conn in self.conns:
            try:
                conn.send("stop")
                if conn.poll(30):
                    still += conn.recv()[1]  # ("result", open, closed codes, arrivals)
            except (OSError, EOFError):
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        return still


# -- console clients -----------------------------------------------------------------------------

def sign_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/console/login", data={"token": CONSOLE_TOKEN, "next": "/console"})
    if r.status_code != 303:
        raise RuntimeError(f"console sign-in answered {r.status_code}: {r.text[:300]}")
    return client


def time_renders(client: httpx.Client, path: str, n: int) -> dict[str, Any]:
    """``n`` GETs of ``path`` after 3 uncounted: ms each (client side), the status of the last."""
    status = 0
    for _ in range(3):
        status = client.get(path).status_code
    if status != 200:
        return {"path": path, "status": status}
    ms = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(path)
        ms.append((time.perf_counter() - started) * 1000)
        status = r.status_code
    return {"path": path, "status": status, "bytes": len(r.content), "p50_ms": round(percentile(ms, 50), 1),
            "p95_ms": round(percentile(ms, 95), 1), "max_ms": round(max(ms), 1)}


async def read_events(response: httpx.Response, send: trio.MemorySendChannel) -> None:
    """Forward each SSE event of ``response`` as (arrival time, name, data) to ``send``."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            await send.send((time.perf_counter(), name, json.loads(data)))
            name, data = "message", ""


async def live_latency(stream_url: str, cookies: httpx.Cookies, api_url: str, token: str, data: dict[str, Any],
                       rounds: int) -> dict[str, Any]:
    """Time a pushed item and a handoff claim (written through ``api_url``) to their ``change`` event on
    a live stream of ``stream_url``. On two processes the pushed item's own topic (``scout.items``)
    is local to the writer; its triage's ``proposal.queued`` crosses processes, so either counts."""
    scout_id, user_id, account_id = data["scouts"][0], data["users"][0], data["account_id"]
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {"push_ms": [], "claim_ms": [], "push_topics": {}, "push_response_ms": [],
                           "claim_response_ms": []}

    async def timed_post(key: str, started: float, path: str, body: dict[str, Any]) -> None:
        r = await api.post(path, json=body)
        out[key].append((time.perf_counter() - started) * 1000)
        r.raise_for_status()

    async with httpx.AsyncClient(base_url=stream_url, cookies=cookies, timeout=None) as sse, \
            httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
        async with sse.stream("GET", "/console/live",
                              params={"topics": "scout.items proposal.queued handoff.events"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"/console/live answered {r.status_code}")
            send, receive = trio.open_memory_channel(1000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_events, r, send)
                await receive.receive()  # hello

                async def wait_for(topics: dict[str, str], limit_s: float = 5) -> tuple[float, str]:
                    with trio.fail_after(limit_s):
                        while True:
                            at, name, event = await receive.receive()
                            for topic, wanted in topics.items():
                                if name == "change" and wanted in event.get("ids", {}).get(topic, []):
                                    return at, topic

                def drain() -> None:
                    while True:
                        try:
                            receive.receive_nowait()
                        except trio.WouldBlock:
                            return

                for i in range(rounds):
                    ref = f"live-{secrets.token_hex(6)}"
                    await trio.sleep(0.05)
                    drain()
                    started = time.perf_counter()
                    async with trio.open_nursery() as writes:
                        writes.start_soon(timed_post, "push_response_ms", started, f"/api/v1/scouts/{scout_id}/items",
                                          {"items": [{"source_msg_ref": ref, "subject": "live",
                                                      "sender": "a@example.com", "body": "b"}]})
                        at, topic = await wait_for({"scout.items": scout_id, "proposal.queued": user_id})
                    out["push_ms"].append((at - started) * 1000)
                    out["push_topics"][topic] = out["push_topics"].get(topic, 0) + 1

                    created = await api.post("/api/v1/handoffs", json={
                        "account_id": account_id, "subject_ref": f"bench-{i}", "intent": "park", "notes": "n",
                        "priority": "normal", "snapshot": {}, "created_by": user_id})
                    created.raise_for_status()
                    await wait_for({"handoff.events": account_id})
                    await trio.sleep(0.05)
                    drain()
                    started = time.perf_counter()
                    async with trio.open_nursery() as writes:
                        writes.start_soon(timed_post, "claim_response_ms", started,
                                          f"/api/v1/handoffs/{created.json()['id']}/claim", {"user_id": user_id})
                        at, _ = await wait_for({"handoff.events": account_id})
                    out["claim_ms"].append((at - started) * 1000)
                nursery.cancel_scope.cancel()
    for key in ("push_ms", "claim_ms", "push_response_ms", "claim_response_ms"):
        values = out[key]
        out[key] = {"p50": round(percentile(values, 50), 1), "max": round(max(values), 1), "n": len(values)}
    return out


async def open_consoles(url: str, cookies: httpx.Cookies, n: int, opened: list[int],
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Hold ``n`` live streams open (each its own connection) until cancelled."""
    ready = trio.Event()

    async def one() -> None:
        async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=None) as client:
            async with client.stream("GET", "/console/live", params={
                    "topics": "console.tick scout.items device.registered handoff.events"}) as r:
                if r.status_code == 200:
                    opened[0] += 1
                if opened[0] >= n:
                    ready.set()
                async for _ in r.aiter_bytes():
                    pass

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
        with trio.move_on_after(60):
            await ready.wait()
        task_status.started()


# -- the runs ------------------------------------------------------------------------------------

def generate(url: str, out: Path, *, accounts: int, devices: int, scouts: int, items: int) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "console_data.py"), url, "--accounts", str(accounts), "--devices", str(devices),
           "--scouts",
           str(scouts), "--items", str(items), "--out", str(out)]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    data["generate_s"] = round(time.monotonic() - started, 1)
    return data


def server_env(url: str) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": url, "ROOST_CONSOLE_TOKENS": f"bench:operate:{CONSOLE_TOKEN}",
            "ROOST_WS_PING_INTERVAL_S": "300", "ROOST_CONSOLE_LIVE_CLIENTS": "1000"}


def run_sqlite(args: argparse.Namespace, result: dict[str, Any]) -> bool:
    workdir = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="roost-console-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_path, data_path = workdir / "roost.db", workdir / "data.json"
    url = f"sqlite:///{db_path}"
    if not (args.reuse and data_path.exists()):
        for p in workdir.glob("roost.db*"):
            p.unlink()
        data = generate(url, data_path, accounts=args.accounts, devices=args.devices, scouts=args.scouts,
                        items=args.items)
    else:
        data = json.loads(data_path.read_text())
    result["data"] = {k: data.get(k) for k in ("items", "generate_s", "setup_s", "items_s")}
    result["data"]["devices"] = len(data["tokens"])
    print(f"data: {len(data['tokens'])} devices, {len(data['scouts'])} scouts, {data['items']:,} items "
          f"(generated in {data.get('generate_s', 'earlier')} s) in {workdir}", flush=True)
    ok = True
    server = Server.start(server_env(url), workdir=workdir, ready_timeout_s=120)
    devices = None
    try:
        tokens = data["tokens"][:args.connect] if args.connect is not None else data["tokens"]
        devices = Devices(server.ws_url, tokens, args.client_processes)
        held = devices.wait_open()
        time.sleep(args.settle_s)
        with server.admin() as admin:
            result["devices_connected_server"] = admin.get("/api/admin/status").json()["connected_devices"]
        result["devices_open_client"], result["devices_failed"] = held["open"], held["failed"]
        print(f"devices: {held['open']} open (server counts {result['devices_connected_server']}), "
              f"failed {held['failed']}", flush=True)

        # (a) render times
        scout = data["scouts"][0]
        paths = [("overview", "/console", True), ("scout items", f"/console/scouts/{scout}", True),
                 ("scout items, failed", f"/console/scouts/{scout}?status=failed", False),
                 ("scouts", "/console/scouts", False),
                 ("search ref", "/console/search?q=ref-05", False),
                 ("search subject", "/console/search?q=invoice+5&field=subject", False),
                 ("bulk confirm", f"/console/search/bulk?bulk=item:retry&status=failed&scope={scout}", False),
                 ("bulk confirm, all scouts", "/console/search/bulk?bulk=item:retry&status=failed", False)]
        client = sign_in(server.url)
        try:
            renders = {}
            for name, path, bar in paths if "a" in args.parts else []:
                r = time_renders(client, path, args.renders)
                renders[name] = r
                if r["status"] != 200:
                    if bar:
                        ok = verdict(f"(a) {name} renders", False, f"{path} answered {r['status']}") and ok
                    else:
                        print(f"  [----] {name}: {path} answered {r['status']} (not measured)")
                    continue
                detail = (f"p95 {r['p95_ms']} ms (p50 {r['p50_ms']}, max {r['max_ms']}; {r['bytes']:,} bytes), "
                          f"limit {args.max_render_ms:g} ms")
                good = r["p95_ms"] < args.max_render_ms
                if bar:
                    ok = verdict(f"(a) {name}", good, detail) and ok
                else:
                    print(f"  [{'pass' if good else 'slow'}] {name} (not a bar): {detail}")
            result["renders"] = renders
            cookies = client.cookies

            # (b) live, one process
            live = {} if "b" not in args.parts else trio.run(
                live_latency, server.url, cookies, server.url, server.token, data, args.live_rounds)
            result["live_sqlite"] = live
            for key, label in (("push_ms", "pushed item"), ("claim_ms", "handoff claim")) if live else []:
                ok = verdict(f"(b) SQLite: a {label} reaches the console", live[key]["max"] < args.max_live_ms,
                             f"max {live[key]['max']} ms (p50 {live[key]['p50']}) over {live[key]['n']}, "
                             f"limit {args.max_live_ms:g} ms; the write's own response: p50 "
                             f"{live[key.replace('_ms', '_response_ms')]['p50']} ms") and ok

            # (c) 100 consoles
            if "c" in args.parts:
                ok = consoles(args, server, cookies, result) and ok
        finally:
            client.close()
    finally:
        if devices is not None:
            result["devices_open_at_end"] = devices.stop()
        server.stop()
        if not args.reuse:
            shutil.rmtree(workdir, ignore_errors=True)
    return ok


def consoles(args: argparse.Namespace, server: Server, cookies: httpx.Cookies, result: dict[str, Any]) -> bool:
    def latency(requests: int) -> dict[str, Any]:
        return run_json([sys.executable, str(HERE / "http_latency.py"), "--url", server.url, f"--token={server.token}",
                         "--path", "/healthz", "--requests", str(requests), "--concurrency", "10", "--warmup", "0",
                         "--json"])

    latency(500)  # settle: the collections the connect burst left due
    before = latency(args.healthz_requests)
    rss_before = server.rss_kib()
    opened = [0]

    async def hold() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            await nursery.start(open_consoles, server.url, cookies, args.consoles, opened)
            await trio.sleep(3)
            rss_after = server.rss_kib()
            during = await trio.to_thread.run_sync(latency, args.healthz_requests)
            rss_end = server.rss_kib()
            nursery.cancel_scope.cancel()
        return {"rss_after_kib": rss_after, "rss_end_kib": rss_end, "healthz": during}

    held = trio.run(hold)
    grew_mib = (max(held["rss_after_kib"], held["rss_end_kib"]) - rss_before) / 1024
    result["consoles"] = {"opened": opened[0], "rss_before_kib": rss_before, **held, "healthz_before": before,
                          "rss_growth_mib": round(grew_mib, 1)}
    ok = verdict(f"(c) {args.consoles} consoles open", opened[0] == args.consoles, f"{opened[0]} streams open")
    ok = verdict(f"(c) server RSS growth with {opened[0]} consoles", grew_mib < args.max_consoles_mib,
                 f"{grew_mib:.1f} MiB ({rss_before / 1024:.0f} -> {rss_before / 1024 + grew_mib:.0f} MiB), "
                 f"limit {args.max_consoles_mib:g} MiB") and ok
    p99 = held["healthz"]["p99_ms"]
    ok = verdict("(c) /healthz p99 with the consoles open", p99 is not None and p99 < args.max_healthz_p99_ms,
                 f"{p99} ms (before they opened: {before['p99_ms']} ms; p50 {held['healthz']['p50_ms']} ms), "
                 f"limit {args.max_healthz_p99_ms:g} ms") and ok
    return ok


def run_postgres(args: argparse.Namespace, result: dict[str, Any]) -> bool:
    """Two ``roost serve`` on one PostgreSQL database: the stream on one, the writes on the other."""
    admin_url, _, dbname = args.pg_url.rpartition("/")
    recreate = (f"import asyncio, asyncpg\nasync def m():\n c = await asyncpg.connect({admin_url + '/postgres'!r})\n"
                f" await c.execute('DROP DATABASE IF EXISTS {dbname} WITH (FORCE)')\n"
                f" await c.execute('CREATE DATABASE {dbname}')\n await c.close()\nasyncio.run(m())\n")
    subprocess.run([sys.executable, "-c", recreate], check=True)
    workdir = Path(tempfile.mkdtemp(prefix="roost-console-bench-pg-"))
    ok = True
    servers: list[Server] = []
    try:
        # Two scouts: with 8 or more due at once and the default pool of 10, roost serve on PostgreSQL
        # stops answering (each run holds a pooled connection for its advisory lock and needs a
        # second for its queries; the session processors' runs hold two more): see BENCHMARKS.md.
        data = generate(args.pg_url, workdir / "data.json", accounts=1, devices=4, scouts=2, items=10_000)
        for _ in range(2):
            servers.append(Server.start(server_env(args.pg_url), workdir=workdir, ready_timeout_s=120))
        reader, writer = servers
        client = sign_in(reader.url)
        try:
            live = trio.run(live_latency, reader.url, client.cookies, writer.url, writer.token, data,
                            args.live_rounds)
        finally:
            client.close()
        result["live_postgres"] = live
        for key, label in (("push_ms", "pushed item"), ("claim_ms", "handoff claim")):
            ok = verdict(f"(b) PostgreSQL, written on another process: a {label} reaches the console",
                         live[key]["max"] < args.max_live_ms,
                         f"max {live[key]['max']} ms (p50 {live[key]['p50']}) over {live[key]['n']}, "
                         f"limit {args.max_live_ms:g} ms" + (f"; topics seen {live['push_topics']}"
                                                            if key == "push_ms" else "")) and ok
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return ok


# What a run sizes and the bars it judges, each with a flag of its own (``items`` is ``--items``,
# ``max_render_ms`` is ``--max-render-ms``): whole numbers are counts, the bars are floats.
SIZES = {"accounts": 100, "devices": 2000, "scouts": 100, "items": 1_000_000, "client_processes": 4, "renders": 20,
         "live_rounds": 20, "consoles": 100, "healthz_requests": 2000}
BARS = {"max_render_ms": 200.0, "max_live_ms": 250.0, "max_consoles_mib": 50.0, "max_healthz_p99_ms": 20.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in {**SIZES, **BARS}.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                            help="the devices' users are dealt over these" if name == "accounts" else None)
    parser.add_argument("--pg-url", help="a scratch database to (re)create for the two-process live test")
    parser.add_argument("--reuse", help="a folder to keep the generated SQLite data in and reuse next time")
    parser.add_argument("--settle-s", type=float, default=10, help="wait after the devices connected")
    parser.add_argument("--connect", type=int, help="connect only this many of the devices (diagnosis)")
    parser.add_argument("--parts", default="abc", help="which bars to measure (a, b, c)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the figures last")
    args = parser.parse_args()
    raise_nofile()
    print(f"machine: {machine()}", flush=True)
    result: dict[str, Any] = {}
    ok = run_sqlite(args, result)
    if args.pg_url and "b" in args.parts:
        ok = run_postgres(args, result) and ok
    print(("PASS" if ok else "FAIL") + ": every bar" + ("" if ok else " (see FAIL lines)"))
    if args.json:
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
