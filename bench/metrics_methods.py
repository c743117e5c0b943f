"""Unauthenticated label growth: 1,000 requests with random HTTP method names against `/metrics`.

    python bench/metrics_methods.py                 # bar: /metrics grows by less than 1 %

Any token is a method to h11, so a server that labels requests by the raw method adds a counter and
a latency histogram (14 series) for every new name: memory and `/metrics` grow without bound, and no
token is needed to do it. roost labels a method outside GET HEAD POST PUT PATCH DELETE OPTIONS as
``OTHER``. This spawns `roost serve` on a fresh SQLite file, takes `/metrics` after a warm-up (one
request of each ordinary kind, and one with an unknown method to a route and to no route, and a first scrape, so the
``OTHER`` and ``/metrics`` series exist), sends
``--requests`` requests with random method names (half to a route, half to no route), and compares
the page's size and series count. Prints the figures and PASS/FAIL; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import re
import secrets
import string
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, machine, verdict  # noqa: E402

METHOD_CHARS = string.ascii_uppercase + string.digits + "-_!#$%&'*+.^`|~"  # RFC 9110 token characters


def random_method() -> str:
    return "".join(secrets.choice(METHOD_CHARS) for _ in range(secrets.choice(range(3, 24))))


def scrape(client: httpx.Client) -> tuple[int, set[str], set[str]]:
    """(bytes, series names with their labels, method labels) of /metrics."""
    text = client.get("/metrics").text
    series = {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    return len(text.encode()), series, set(re.findall(r'method="([^"]*)"', text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-growth-pct", type=float, default=1.0)
    args = parser.parse_args()

    print(f"roost /metrics growth under {args.requests} requests with random method names")
    print(f"  machine: {machine()}")
    server = Server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for method, path in [("GET", "/healthz"), ("HEAD", "/healthz"), ("POST", "/healthz"),
                                 ("GET", "/nowhere"), ("OPTIONS", "/healthz"), (random_method(), "/healthz"),
                                 (random_method(), "/nowhere"), ("GET", "/metrics")]:
                client.request(method, path)
            before_bytes, before_series, _ = scrape(client)
            statuses: dict[int, int] = {}
            for i in range(args.requests):
                r = client.request(random_method(), "/healthz" if i % 2 else f"/x{i}")
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            after_bytes, after_series, labels = scrape(client)
    finally:
        server.stop()

    growth = 100.0 * (after_bytes - before_bytes) / before_bytes
    print(f"  answers: {dict(sorted(statuses.items()))}")
    print(f"  /metrics before: {before_bytes} bytes, {len(before_series)} series; after: {after_bytes} bytes, "
          f"{len(after_series)} series")
    for name in sorted(after_series - before_series):
        print(f"    new series: {name}")
    shown = sorted(labels)
    print(f"  method labels after: {len(labels)}: {shown[:10]}{' ...' if len(shown) > 10 else ''}")
    ok = verdict("size growth", growth < args.max_growth_pct, f"{growth:+.3f} % (limit < {args.max_growth_pct} %)")
    # Only request series can grow with method names; an actor's first tick during the run adds its own.
    requests_before = {x for x in before_series if "method=" in x}
    requests_after = {x for x in after_series if "method=" in x}
    ok &= verdict("request series count", requests_after == requests_before,
                  f"{len(requests_before)} -> {len(requests_after)} (limit: the same series)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
