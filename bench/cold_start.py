"""Cold start: seconds from spawning `roost serve` to the first `/readyz` 200, on SQLite.

    python bench/cold_start.py                 # median of 5 runs, bar: 3 s

Each run spawns the installed ``roost serve`` on a fresh SQLite file (so the time includes
creating the database and running every migration) and a free port, polls ``/readyz`` every
10 ms until it answers 200, then stops it with SIGTERM. Prints every run, the median, and
PASS/FAIL against ``--max-s``; exits 1 when the median is above it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, machine, raise_nofile, roost_command, verdict  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-s", type=float, default=3.0, help="bar for the median")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with the figures")
    args = parser.parse_args()
    raise_nofile()

    print(f"roost cold start: `{' '.join(roost_command())}` on a fresh SQLite file to /readyz 200, "
          f"{args.runs} runs")
    print(f"  machine: {machine()}")
    times: list[float] = []
    for i in range(args.runs):
        server = Server.spawn()
        try:
            seconds = server.wait_ready(timeout_s=60)
        finally:
            code = server.stop()
        times.append(seconds)
        print(f"  run {i + 1}: {seconds:.3f} s (exit {code} on SIGTERM)")
    median = statistics.median(times)
    print(f"  median {median:.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")
    ok = verdict(f"/readyz 200 within {args.max_s:g} s (median)", median <= args.max_s, f"{median:.3f} s")
    if args.json:
        print(json.dumps({"runs": [round(t, 3) for t in times], "median_s": round(median, 3), "pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
