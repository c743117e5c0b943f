"""One-file build bench: build time, file size and cold start to ``/readyz`` 200, binary against the venv.

Builds the executable with each packager into a temp dir (``packaging/build.py``), then starts
each candidate N times (fresh SQLite file in a fresh empty directory each time, so migrations run
too; clean environment: only PATH=/usr/bin:/bin, HOME and ROOST_* vars) and prints the median
time from spawn to the first ``/readyz`` 200. The reference is ``.venv/bin/roost serve``.

shiv unpacks its zip into ``~/.shiv`` on the first start on a machine and reuses it afterwards:
its "first" figure is that one-time cost (measured with an empty ``HOME``), "warm" the starts after.
PyInstaller one-file unpacks into ``$TMPDIR`` at every start: every start is the same.

    python bench/dist_startup.py [--runs 5] [--formats pyinstaller,shiv] [--binary dist/roost]

``--binary PATH`` skips building and measures that PyInstaller binary only.
"""

from __future__ import annotations

import argparse
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


def cold_start(argv: list[str], home: Path, timeout_s: float = 60) -> float:
    """Seconds from spawn to the first /readyz 200 (then SIGTERM, expect exit 0)."""
    with tempfile.TemporaryDirectory(prefix="roost-start-") as tmp:
        port = free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "ROOST_DATABASE_URL": f"sqlite:///{tmp}/roost.db",
               "ROOST_PORT": str(port), "ROOST_SERVICE_TOKEN": "bench", "ROOST_LOG_FORMAT": "json"}
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
            return elapsed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def measure(label: str, argv: list[str], runs: int, home: Path, *, fresh_home: bool = False) -> float:
    times = []
    for _ in range(runs):
        if fresh_home:
            with tempfile.TemporaryDirectory(prefix="roost-home-") as h:
                times.append(cold_start(argv, Path(h)))
        else:
            times.append(cold_start(argv, home))
    median = statistics.median(times)
    print(f"{label:<28} median {median:6.2f} s   runs: {', '.join(f'{t:.2f}' for t in times)}", flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--formats", default="pyinstaller,shiv")
    parser.add_argument("--binary", type=Path, help="measure this PyInstaller binary instead of building")
    args = parser.parse_args()

    venv_roost = ROOT / ".venv" / "bin" / "roost"
    with tempfile.TemporaryDirectory(prefix="roost-dist-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        builds: dict[str, Path] = {}
        if args.binary:
            builds["pyinstaller"] = args.binary.resolve()
        else:
            for fmt in args.formats.split(","):
                out = work / fmt / "roost"
                seconds = packaging_build.build(fmt, out)
                builds[fmt] = out
                print(f"{fmt:<12} build {seconds:5.1f} s   size {out.stat().st_size / 2**20:5.1f} MiB", flush=True)
        print(f"\ncold start to /readyz 200, median of {args.runs} (fresh SQLite each run, migrations included):")
        venv = measure("venv (.venv/bin/roost)", [str(venv_roost)], args.runs, home)
        for fmt, path in builds.items():
            if fmt == "shiv":
                first = measure("shiv, first (unpacks)", [str(path)], args.runs, home, fresh_home=True)
                warm = measure("shiv, warm", [str(path)], args.runs, home)
                print(f"{'':<28} warm {warm / venv:.2f}x venv; first start {first / venv:.2f}x venv")
            else:
                median = measure(f"{fmt} one-file", [str(path)], args.runs, home)
                verdict = "meets" if median <= 2 * venv and median < 3 else "MISSES"
                print(f"{'':<28} {median / venv:.2f}x venv ({verdict} the bar: within 2x of venv and under 3 s)")


if __name__ == "__main__":
    main()
