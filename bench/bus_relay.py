"""Cross-process wake-up latency through the bus relay (LISTEN/NOTIFY on PostgreSQL).

Two processes on one PostgreSQL database, each with its own pool and ``BusRelay``: this one
publishes ids carrying their send time on a shared topic at ``--rate`` messages/s for
``--seconds``; a child process subscribes and records, per id, publish-to-delivery latency (the
moment its local subscriber has the message; the deliverer's read and the socket write come
after). Prints p50/p90/p99/max and how many arrived. Bar: p99 < ``--max-p99-ms`` (100).

    createdb -h 127.0.0.1 -U postgres issue9_bench
    flock /tmp/roost-bench.lock .venv/bin/python bench/bus_relay.py \\
        --database-url postgresql://postgres@127.0.0.1:5432/issue9_bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, percentile, verdict  # noqa: E402
from roost.actors.busrelay import BusRelay  # noqa: E402
from roost.runtime.actor import ActorContext  # noqa: E402
from roost.runtime.config import Settings  # noqa: E402
from roost.runtime.services import Services  # noqa: E402
from roost.storage.database import open_database  # noqa: E402

TOPIC = "proposal.queued"


async def with_relay(url: str, body) -> None:
    async with open_database(url, pool_size=2) as db:
        services = Services.build(Settings(database_url=url), db)
        services.bus.share(TOPIC)
        services.health.add(BusRelay.name)
        async with trio.open_nursery() as nursery:
            await nursery.start(BusRelay(services).run, ActorContext(BusRelay.name, services))
            await body(services)
            nursery.cancel_scope.cancel()


async def subscriber(url: str, expected: int) -> None:
    async def body(services: Services) -> None:
        latencies: list[float] = []
        with services.bus.subscribe(TOPIC) as sub:
            print("ready", flush=True)
            while len(latencies) < expected:
                with trio.move_on_after(10):
                    message = await sub.receive()
                    now = time.time()
                    latencies.extend(now - float(i.split("@")[1]) for i in message.ids)
                    continue
                break  # nothing for 10 s: the rest is lost
        print(json.dumps(latencies), flush=True)

    await with_relay(url, body)


async def publisher(url: str, rate: float, total: int, child: subprocess.Popen) -> list[float]:
    assert child.stdout is not None
    result: list[float] = []

    async def body(services: Services) -> None:
        line = await trio.to_thread.run_sync(child.stdout.readline)
        assert line.strip() == "ready", line
        start = trio.current_time()
        for k in range(total):
            await trio.sleep_until(start + k / rate)
            services.bus.publish(TOPIC, f"usr_{k}@{time.time():.6f}")
        out = await trio.to_thread.run_sync(child.stdout.readline)
        result.extend(json.loads(out))

    await with_relay(url, body)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-p99-ms", type=float, default=100.0)
    parser.add_argument("--subscribe", type=int, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args()
    if args.subscribe is not None:
        trio.run(subscriber, args.database_url, args.subscribe)
        return 0
    total = int(args.rate * args.seconds)
    child = subprocess.Popen([sys.executable, __file__, "--database-url", args.database_url,
                              "--subscribe", str(total)], stdout=subprocess.PIPE, text=True)
    try:
        latencies = [x * 1000 for x in trio.run(publisher, args.database_url, args.rate, total, child)]
    finally:
        child.wait(30)
    print(f"bus relay: {len(latencies)}/{total} delivered across processes at {args.rate:.0f}/s; {machine()}")
    if not latencies:
        return 1
    p50, p90, p99 = (percentile(latencies, p) for p in (50, 90, 99))
    print(f"publish -> subscriber in the other process: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(latencies):.1f} ms")
    ok = verdict("all delivered", len(latencies) == total, f"{len(latencies)}/{total}")
    ok &= verdict(f"p99 < {args.max_p99_ms:.0f} ms", p99 < args.max_p99_ms, f"{p99:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
