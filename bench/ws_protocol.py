"""Oversize frames from a standard client: a ``websockets`` (asyncio) client sends one text frame of
200 KB, 1 MiB and 4 MiB (and 16 MiB, the most Hypercorn would have buffered) to ``/ws/device`` and
times from the start of the send to the connection closed with the server's close code.

Bar (issue 16): close 1009 within 1 s for each of 200 KB, 1 MiB and 4 MiB, every try. The client
is ``websockets``' own: it waits for the closing handshake, so a server that waits for the
client's close (which cannot come before the whole frame is written) shows here as a timeout.

    .venv/bin/python bench/ws_protocol.py [--tries 5] [--url http://... --token ...]

Starts ``roost serve`` on a scratch SQLite file unless ``--url`` is given. Prints one line per size
(close code and times), then PASS/FAIL; exit 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, machine, make_devices, verdict  # noqa: E402

BAR_S = 1.0
SIZES = [("200 KB", 200_000, True), ("1 MiB", 1 << 20, True), ("4 MiB", 4 << 20, True), ("16 MiB", 16 << 20, False)]
GIVE_UP_S = 15.0  # a try that has seen no close by then counts as a timeout


async def one_try(ws_url: str, token: str, size: int) -> tuple[int | None, float]:
    """(close code received or None, seconds from the start of the send to the close)."""
    ws = await websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=None, close_timeout=GIVE_UP_S)
    try:
        await ws.send('{"type":"register"}')
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "hello_ok", hello
        text = "x" * size
        start = time.perf_counter()
        try:
            async with asyncio.timeout(GIVE_UP_S):
                await ws.send(text)
                while True:
                    await ws.recv()
        except ConnectionClosed as closed:
            return (closed.rcvd.code if closed.rcvd is not None else None), time.perf_counter() - start
        except TimeoutError:
            return None, time.perf_counter() - start
    finally:
        # Not ``async with``: websockets 17.4's close() on a connection the server has already
        # closed aborts a transport that is gone (AttributeError); only a live one is closed.
        if ws.state is not State.CLOSED:
            ws.transport.abort()


async def run(ws_url: str, token: str, tries: int) -> dict[str, list[tuple[int | None, float]]]:
    results: dict[str, list[tuple[int | None, float]]] = {}
    for label, size, _ in SIZES:
        results[label] = [await one_try(ws_url, token, size) for _ in range(tries)]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=5, help="frames sent per size (default 5)")
    parser.add_argument("--url", help="a running roost (else one is started on SQLite)")
    parser.add_argument("--token", help="the service token of --url")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    server = Server.attach(args.url, args.token) if args.url else Server.start()
    try:
        token = make_devices(server, 1, prefix="wsproto")[0]
        rss_before = server.rss_kib()
        results = asyncio.run(run(server.ws_url, token, args.tries))
        rss_after = server.rss_kib()
    finally:
        if server.proc is not None:
            server.stop()

    ok = True
    print(f"websockets {websockets.__version__} client, one text frame per try, {args.tries} tries per size; "
          f"bar: close 1009 within {BAR_S:.0f} s")
    for label, _, barred in SIZES:
        rows = results[label]
        codes = sorted({str(code) for code, _ in rows})
        times = [t for _, t in rows]
        good = all(code == 1009 and t <= BAR_S for code, t in rows)
        median = sorted(times)[len(times) // 2]
        detail = (f"close codes {', '.join(codes)}; send-to-close median {median * 1000:.1f} ms,"
                  f" max {max(times) * 1000:.1f} ms")
        if barred:
            ok &= verdict(f"{label} frame", good, detail)
        else:
            print(f"  [info] {label} frame: {detail}")
    # The rest of an oversize frame is never read into memory: the server's RSS stays put although
    # every try sent megabytes (a server that buffered the 16 MiB frames would grow by tens of MiB).
    print(f"  [info] server RSS {rss_before / 1024:.1f} MiB before the tries, {rss_after / 1024:.1f} MiB after")
    if args.json:
        print(json.dumps({label: [[c, t] for c, t in rows] for label, rows in results.items()}))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
