"""One-file build bench: build time, file size and cold start to ``/readyz`` 200, binary against the venv.

Builds the executable with each packager into a temp dir (``packaging/build.py``), then starts
each candidate N times (fresh SQLite file in a fresh empty directory each time, so migrations run
too; clean environment: only PATH=/usr/bin:/bin, HOME and ROOST_* vars) and prints the median
time from spawn to the first ``/readyz`` 200. The reference is ``.venv/bin/roost serve``.

The candidates take turns (round r starts the venv, then each build, once each), so a change in
the machine's load hits all of them alike and the ratio to the venv stays meaningful on a shared
machine; the ratio printed is of the medians.

shiv unpacks its zip into ``~/.shiv`` on the first start on a machine and reuses it afterwards:
its "first" figure is that one-time cost (measured with an empty ``HOME``), "warm" the starts after.
PyInstaller one-file unpacks into ``$TMPDIR`` at every start: every start is the same.

    python bench/dist_startup.py [--runs 5] [--formats pyinstaller,shiv] [--binary dist/roost ...]

``--binary PATH`` (repeatable) skips building and measures those PyInstaller binaries only.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))

import build as packaging_build  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(root: int) -> float:
    """CPU (user + system) used so far by ``root`` and its descendants, reaped children included.

    Less sensitive to other jobs on the machine than wall time: the one-file build is two
    processes (the bootloader that unpacks, and the Python it starts), both are counted.
    """
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based.
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [child for child, (ppid, _) in stats.items() if ppid == pid]
    return total


def cold_start(argv: list[str], home: Path, timeout_s: float = 60) -> tuple[float, float]:
    """Seconds from spawn to the first /readyz 200, and the CPU seconds used by then (then SIGTERM, expect exit 0)."""
    with tempfile.TemporaryDirectory(prefix="roost-start-") as tmp:
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "ROOST_DATABASE_URL": f"sqlite:///{tmp}/roost.db",
               "ROOST_PORT": str(port), "ROOST_SERVICE_TOKEN": "bench-service-token-for-roost-benchmarks",
               "ROOST_LOG_FORMAT": "json"}
        log = open(Path(tmp) / "log", "wb")
        start = time.monotonic()
        proc = subprocess.Popen([*argv, "serve"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(timeout=1) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {(Path(tmp) / 'log').read_text()}")
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            elapsed = time.monotonic() - start
                            cpu = tree_cpu_seconds(proc.pid)
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() - start > timeout_s:
                        raise RuntimeError(f"{argv[0]} not ready in {timeout_s}s")
                    time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            if code != 0:
                raise RuntimeError(f"{argv[0]} exited {code} after SIGTERM")
            return elapsed, cpu
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


class Candidate:
    """One thing to start: its argv, whether each start gets an empty ``HOME``, and its times."""

    def __init__(self, label: str, argv: list[str], *, fresh_home: bool = False) -> None:
        self.label, self.argv, self.fresh_home = label, argv, fresh_home
        self.times: list[float] = []
        self.cpu: list[float] = []

    def start_once(self, home: Path) -> None:
        if self.fresh_home:
            with tempfile.TemporaryDirectory(prefix="roost-home-") as h:
                wall, cpu = cold_start(self.argv, Path(h))
        else:
            wall, cpu = cold_start(self.argv, home)
        self.times.append(wall)
        self.cpu.append(cpu)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def report(self) -> None:
        runs = ", ".join(f"{t:.2f}" for t in self.times)
        cpu = statistics.median(self.cpu)
        print(f"{self.label:<32} median {self.median:5.2f} s (cpu {cpu:4.2f} s)   runs: {runs}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--formats", default="pyinstaller,shiv")
    parser.add_argument("--binary", type=Path, action="append",
                        help="measure this PyInstaller binary instead of building (repeatable)")
    args = parser.parse_args()

    venv_roost = ROOT / ".venv" / "bin" / "roost"
    with tempfile.TemporaryDirectory(prefix="roost-dist-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        builds: list[tuple[str, Path]] = []
        if args.binary:
            builds = [(f"pyinstaller {path}", path.resolve()) for path in args.binary]
        else:
            for fmt in args.formats.split(","):
                out = work / fmt / "roost"
                seconds = packaging_build.build(fmt, out)
                builds.append((fmt, out))
                print(f"{fmt:<12} build {seconds:5.1f} s   size {out.stat().st_size / 2**20:5.1f} MiB", flush=True)
        venv = Candidate("venv (.venv/bin/roost)", [str(venv_roost)])
        candidates = [venv]
        shiv_pairs = []
        for label, path in builds:
            if label == "shiv":
                # "first" runs before "warm" in each round, so warm always finds ~/.shiv filled.
                first = Candidate("shiv, first (unpacks)", [str(path)], fresh_home=True)
                warm = Candidate("shiv, warm", [str(path)])
                candidates += [first, warm]
                shiv_pairs.append((first, warm))
            else:
                candidates.append(Candidate(f"{label} one-file" if label == "pyinstaller" else label, [str(path)]))
        for _ in range(args.runs):
            for candidate in candidates:
                candidate.start_once(home)
        print(f"\ncold start to /readyz 200, median of {args.runs} (fresh SQLite each run, migrations included;"
              " candidates take turns):")
        for candidate in candidates:
            candidate.report()
            if candidate is venv or any(candidate in pair for pair in shiv_pairs):
                continue
            ratio = candidate.median / venv.median
            cpu_ratio = statistics.median(candidate.cpu) / statistics.median(venv.cpu)
            verdict = "meets" if ratio <= 2 and candidate.median < 3 else "MISSES"
            print(f"{'':<32} {ratio:.2f}x venv, cpu {cpu_ratio:.2f}x"
                  f" ({verdict} the bar: within 2x of venv and under 3 s)")
        for first, warm in shiv_pairs:
            print(f"{'':<32} shiv warm {warm.median / venv.median:.2f}x venv;"
                  f" first start {first.median / venv.median:.2f}x venv")


if __name__ == "__main__":
    main()
