"""Dispatch bench: a real ``roost serve`` on SQLite and one WebSocket device that answers every
``send_request`` at once.

    python bench/dispatch.py                 # limits off, 10,000 items: items/s end to end
    python bench/dispatch.py --limited       # max_per_minute=100, min_gap 0.1 s, real time (~65 s)
    python bench/dispatch.py --limited --kill-at 30
                                             # the same, kill -9 at 30 s and restart at once

End to end = from ``POST .../send`` until the last result is persisted (the batch is ``done``).
The limited runs read the dispatch times back (items' ``dispatched_at``) and print how many
fell in the first minute after the first one and the smallest gap between two.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.client import handshake, ws_url_from_http  # noqa: E402
from tests.support.server import SERVICE_TOKEN, ServerProcess  # noqa: E402

HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


async def setup(url: str, n: int, settings: dict) -> dict:
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as c:
        account = (await c.post("/api/admin/accounts", json={"name": "Bench", "timezone": "UTC"})).json()
        user = (await c.post("/api/admin/users", json={"account_id": account["id"], "email": "b@example.com",
                                                        "display_name": "B"})).json()
        device = (await c.post("/api/admin/devices", json={"user_id": user["id"], "name": "mac"})).json()
        r = await c.put(f"/api/admin/accounts/{account['id']}/outreach-settings", json=settings)
        r.raise_for_status()
        items = [{"to_handle": f"+1555{i:07d}", "body": f"message {i}", "device_id": device["id"]} for i in range(n)]
        r = await c.post("/api/v1/outreach/batches", json={"account_id": account["id"], "items": items,
                                                            "created_by": user["id"]})
        r.raise_for_status()
        return {"account": account, "user": user, "device": device, "batch": r.json()}


async def run_device(urls: list[str], token: str, done: trio.Event, counter: list[int]) -> None:
    """Answer every send_request at once (reconnecting, to ``urls[-1]``, if the server goes away)
    until batch_done."""
    while not done.is_set():
        try:
            async with open_websocket_url(ws_url_from_http(urls[-1])) as ws:
                await handshake(ws, token)
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "send_request":
                        counter[0] += 1
                        await ws.send_message(json.dumps({"type": "send_result", "id": frame["id"],
                                                          "status": "sent"}))
                    elif frame["type"] == "ping":
                        await ws.send_message('{"type":"pong"}')
                    elif frame["type"] == "batch_done":
                        done.set()
                        return
        except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
            await trio.sleep(0.05)


async def dispatch_times(url: str, batch_id: str) -> list[dt.datetime]:
    times, cursor = [], None
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as c:
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = (await c.get(f"/api/v1/outreach/batches/{batch_id}/items", params=params)).json()
            times += [dt.datetime.fromisoformat(i["dispatched_at"].replace("Z", "+00:00"))
                      for i in page["items"] if i["dispatched_at"]]
            cursor = page["next_cursor"]
            if not cursor:
                return sorted(times)


async def throughput(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess.start(f"sqlite:///{tmp}/bench.db", Path(tmp), env={"ROOST_LOG_LEVEL": "warning"})
        try:
            env = await setup(server.url, n, {})
            done, counter = trio.Event(), [0]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_device, [server.url], env["device"]["token"], done, counter)
                await trio.sleep(0.5)  # registered
                async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as c:
                    start = time.perf_counter()
                    (await c.post(f"/api/v1/outreach/batches/{env['batch']['id']}/send")).raise_for_status()
                    await done.wait()
                    elapsed = time.perf_counter() - start
                    batch = (await c.get(f"/api/v1/outreach/batches/{env['batch']['id']}")).json()
            print(f"limits off, {n} items to one WebSocket device: {elapsed:.2f} s, {n / elapsed:,.0f} items/s "
                  f"end to end (send → every result persisted); batch {batch['status']}, sent "
                  f"{batch['counts']['sent']}, send_requests seen {counter[0]}")
        finally:
            server.terminate()


async def limited(kill_at: float | None, duration: float) -> None:
    settings = {"max_per_minute": 100, "min_gap_seconds": 0.1}
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        env_vars = {"ROOST_LOG_LEVEL": "warning"}
        server = ServerProcess.start(db_url, Path(tmp), env=env_vars)
        urls = [server.url]
        try:
            env = await setup(server.url, 1000, settings)
            done, counter = trio.Event(), [0]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_device, urls, env["device"]["token"], done, counter)
                await trio.sleep(0.5)
                async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as c:
                    (await c.post(f"/api/v1/outreach/batches/{env['batch']['id']}/send")).raise_for_status()
                start = time.monotonic()
                if kill_at is not None:
                    await trio.sleep(kill_at)
                    server.kill()  # SIGKILL
                    print(f"killed -9 at {time.monotonic() - start:.1f} s; restarting")
                    server = await trio.to_thread.run_sync(lambda: ServerProcess.start(db_url, Path(tmp), env=env_vars))
                    urls.append(server.url)
                    print(f"ready again at {time.monotonic() - start:.1f} s")
                await trio.sleep(max(0.0, duration - (time.monotonic() - start)))
                nursery.cancel_scope.cancel()
            times = await dispatch_times(server.url, env["batch"]["id"])
        finally:
            server.terminate()
    first = times[0]
    in_first_minute = sum(1 for t in times if t < first + dt.timedelta(seconds=60))
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    worst = 0
    j = 0
    for i in range(len(times)):  # the most dispatches in any sliding 60 s window
        while times[i] - times[j] >= dt.timedelta(seconds=60):
            j += 1
        worst = max(worst, i - j + 1)
    print(f"max_per_minute=100, min_gap 0.1 s{', kill -9 + restart' if kill_at is not None else ''}: "
          f"{len(times)} dispatched in {duration:.0f} s; {in_first_minute} in the first minute; "
          f"most in any sliding 60 s window: {worst}; smallest gap {min(gaps):.4f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--limited", action="store_true", help="the real-time limit run (about a minute)")
    parser.add_argument("--kill-at", type=float, default=None, help="with --limited: kill -9 after this many s")
    parser.add_argument("--duration", type=float, default=65.0)
    args = parser.parse_args()
    if args.limited:
        trio.run(limited, args.kill_at, args.duration)
    else:
        trio.run(throughput, args.items)


if __name__ == "__main__":
    main()
