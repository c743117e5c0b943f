"""Shutdown bench (issue 16): SIGTERM to ``roost serve`` on PostgreSQL in the middle of a delivery stream.

1. Healthy database: ``--tries`` times (20), a fresh ``roost serve`` on a fresh database gets
   SIGTERM while a device socket receives proposals a pusher keeps queuing. Prints each try's exit
   code and time from the signal to the exit; PASS if every try exits 0 within the grace period.
2. Frozen database: a throwaway PostgreSQL server of the bench's own; mid-stream every process of
   it gets SIGSTOP, then ``roost serve`` gets SIGTERM. Prints the exit code and time against
   grace + 5 s; PASS if it exited within that (exit 0: everything stopped; 3: the hard stop).

    python bench/shutdown.py --pg postgresql://postgres@127.0.0.1:5432/postgres [--tries 20] [--grace 3]

The throwaway server needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin). Exit 1 on FAIL.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, verdict  # noqa: E402

from tests.support.pg import PgServer, start_throwaway_server  # noqa: E402
from tests.support.shutdown import (  # noqa: E402
    Outcome,
    cluster_pids,
    signal_all,
    sigterm_mid_stream,
    start_serve,
    thaw_and_stop,
)


def _one(server: PgServer, workdir: Path, grace_s: float, freeze_datadir: Path | None = None) -> Outcome:
    name = server.create_database()
    try:
        proc, url, log_path = start_serve(server.url_for(name), workdir, grace_s)
        frozen: list[int] = []

        def freeze() -> None:
            if freeze_datadir is not None:
                frozen.extend(cluster_pids(freeze_datadir))
                signal_all(frozen, signal.SIGSTOP)

        try:
            return trio.run(lambda: sigterm_mid_stream(proc, url, log_path, wait_s=grace_s + 30,
                                                       before_signal=freeze))
        finally:
            signal_all(frozen, signal.SIGCONT)
    finally:
        server.drop_database(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", required=True, help="a PostgreSQL server where the bench may CREATE DATABASE")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--grace", type=float, default=3.0, help="ROOST_GRACE_PERIOD_S of the served process")
    args = parser.parse_args()
    grace = args.grace
    print(f"machine: {machine()}")
    print(f"roost serve on PostgreSQL, ROOST_GRACE_PERIOD_S={grace:g}; SIGTERM once the device has had "
          "30 proposals, with more being pushed")
    ok = True

    # 1. healthy database, --tries in a row
    server = PgServer(admin_url=args.pg, throwaway=False, template=f"roost_bench_tpl_{uuid.uuid4().hex[:8]}")
    exits: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="roost-shutdown-") as tmp:
            for i in range(args.tries):
                workdir = Path(tmp) / f"try{i}"
                workdir.mkdir()
                outcome = _one(server, workdir, grace)
                exits.append(outcome)
                print(f"  try {i + 1:2d}: exit {outcome.exit_code}  {outcome.took_s:5.2f} s  "
                      f"({outcome.proposals} proposals received)", flush=True)
                if outcome.exit_code != 0:
                    print("    log tail:\n" + "\n".join("      " + ln for ln in outcome.log.splitlines()[-15:]))
    finally:
        server.close()
    good = sum(1 for o in exits if o.exit_code == 0 and o.took_s < grace)
    times = sorted(o.took_s for o in exits)
    ok &= verdict("SIGTERM mid-stream, healthy PostgreSQL", good == args.tries,
                  f"{good}/{args.tries} exited 0 within the grace period ({grace:g} s); "
                  f"exit times {times[0]:.2f}-{times[-1]:.2f} s, median {times[len(times) // 2]:.2f} s")

    # 2. frozen database (a server of our own: it gets SIGSTOP)
    pg, cluster = start_throwaway_server()
    try:
        with tempfile.TemporaryDirectory(prefix="roost-shutdown-") as tmp:
            outcome = _one(pg, Path(tmp), grace, freeze_datadir=cluster.datadir)
    finally:
        thaw_and_stop(cluster)
    bound = grace + 5
    print(f"  frozen: exit {outcome.exit_code}  {outcome.took_s:5.2f} s")
    if outcome.exit_code not in (0,):
        hard = [ln for ln in outcome.log.splitlines() if "still running after the grace period" in ln]
        print("    " + (hard[0][:2000] if hard else "\n    ".join(outcome.log.splitlines()[-15:])))
    ok &= verdict("SIGTERM with PostgreSQL frozen", outcome.exit_code is not None and outcome.took_s < bound,
                  f"exit {outcome.exit_code} after {outcome.took_s:.2f} s; limit grace + 5 s = {bound:g} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
