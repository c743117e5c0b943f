"""Latency of one HTTP endpoint under concurrency: p50/p99 of ``/api/admin/status`` by default.

    python bench/http_latency.py                      # starts its own `roost serve` (temp SQLite)
    python bench/http_latency.py --url http://127.0.0.1:8000 --token $ROOST_SERVICE_TOKEN
    python bench/http_latency.py --path /healthz --max-p99-ms 20

``--concurrency`` workers, each on its own keep-alive connection, issue ``--requests`` requests
in total after ``--warmup`` uncounted ones; each latency is measured from just before the
request is sent to the end of the response body. The default client is a minimal HTTP/1.1
reader over trio sockets, so the client costs little of the machine's CPU; ``--client httpx``
uses httpx instead (and shows the client's own cost in the figures). With ``--max-p99-ms`` it
exits 1 when p99 is above the bar (or any request failed). ``--json`` prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, machine, percentile, raise_nofile, verdict  # noqa: E402


class _RawConnection:
    """One keep-alive HTTP/1.1 connection with just enough parsing for JSON responses.

    A load generator written in Python must cost the server's machine as little CPU as possible,
    or the figures measure the client: httpx on trio spends about as much CPU per request as the
    server does, which doubles the latency seen on a 2-core machine (``--client httpx`` shows it).
    """

    def __init__(self, stream: trio.SocketStream, host: str):
        self.stream = stream
        self.host = host
        self.buffer = b""

    async def get(self, path: str, headers: dict[str, str]) -> int:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", *(f"{k}: {v}" for k, v in headers.items())]
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        length = None
        for line in header_lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise ConnectionError("response without Content-Length")
        while len(self.buffer) < length:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        self.buffer = self.buffer[length:]
        return int(status_line.split()[1])


async def measure(url: str, token: str | None, path: str, requests: int, concurrency: int,
                  warmup: int, client_kind: str = "raw") -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    failures: dict[str, int] = {}
    hostport = url.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")

    async def raw_worker(budget: list[int], record: bool) -> None:
        conn: _RawConnection | None = None
        try:
            while budget[0] > 0:
                budget[0] -= 1
                if conn is None:
                    conn = _RawConnection(await trio.open_tcp_stream(host, int(port)), hostport)
                start = time.perf_counter()
                try:
                    status = await conn.get(path, headers)
                    outcome = None if status == 200 else str(status)
                except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                    outcome = type(exc).__name__
                    await conn.stream.aclose()
                    conn = None
                elapsed = time.perf_counter() - start
                if record:
                    if outcome is None:
                        latencies.append(elapsed)
                    else:
                        failures[outcome] = failures.get(outcome, 0) + 1
        finally:
            if conn is not None:
                await conn.stream.aclose()

    async def httpx_worker(client: httpx.AsyncClient, budget: list[int], record: bool) -> None:
        while budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            try:
                r = await client.get(path)
                await r.aread()
                outcome = None if r.status_code == 200 else str(r.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            elapsed = time.perf_counter() - start
            if record:
                if outcome is None:
                    latencies.append(elapsed)
                else:
                    failures[outcome] = failures.get(outcome, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        wall = 0.0
        for budget, record in (([warmup], False), ([requests], True)):
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    if client_kind == "httpx":
                        nursery.start_soon(httpx_worker, client, budget, record)
                    else:
                        nursery.start_soon(raw_worker, budget, record)
            wall = time.perf_counter() - started

    ms = [x * 1000 for x in latencies]
    return {
        "path": path,
        "client": client_kind,
        "requests": requests,
        "concurrency": concurrency,
        "ok": len(latencies),
        "failures": failures,
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p90_ms": round(percentile(ms, 90), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
        "throughput_rps": round(len(latencies) / wall, 1) if wall else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on a temp SQLite database)")
    parser.add_argument("--token", help="service token for the running server")
    parser.add_argument("--path", default="/api/admin/status")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: minimal keep-alive HTTP/1.1 over trio sockets (default); httpx: httpx.AsyncClient")
    parser.add_argument("--max-p99-ms", type=float, help="exit 1 if p99 is above this")
    parser.add_argument("--json", action="store_true", help="print one JSON line with the figures last")
    args = parser.parse_args()
    raise_nofile()

    server = Server.attach(args.url, args.token or "") if args.url else Server.start()
    try:
        result = trio.run(measure, server.url, server.token or None, args.path, args.requests,
                          args.concurrency, args.warmup, args.client)
    finally:
        if args.url is None:
            server.stop()

    ok = not result["failures"] and result["ok"] > 0
    if args.max_p99_ms is not None:
        ok = ok and result["p99_ms"] < args.max_p99_ms
    result["pass"] = ok
    if args.json:
        print(json.dumps(result))
        return 0 if ok else 1
    where = f"at {args.url}" if args.url else "started here (SQLite)"
    print(f"roost HTTP latency: GET {args.path}, {args.requests} requests at concurrency {args.concurrency} "
          f"(+{args.warmup} warm-up, {args.client} client), server {where}")
    print(f"  machine: {machine()}")
    print(f"  ok {result['ok']}, failed {sum(result['failures'].values())} {result['failures'] or ''}")
    print(f"  p50 {result['p50_ms']} ms   p90 {result['p90_ms']} ms   p99 {result['p99_ms']} ms   "
          f"max {result['max_ms']} ms   {result['throughput_rps']} req/s")
    if args.max_p99_ms is not None:
        verdict(f"{args.path} p99 < {args.max_p99_ms:g} ms", ok, f"p99 {result['p99_ms']} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
