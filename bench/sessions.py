"""Bench the session pipeline: first run vs plain hashlib, a no-change rescan, a one-line append to 100 MB.

    .venv/bin/python bench/sessions.py --users 100 --files 1000          # 100,000 files, SQLite
    .venv/bin/python bench/sessions.py --database-url postgresql://...   # the same on PostgreSQL
    .venv/bin/python bench/sessions.py --dir /tmp/tree --keep            # build once, keep the tree
    .venv/bin/python bench/sessions.py --dir /tmp/tree --keep --reuse    # ...and run again on it
    .venv/bin/python bench/sessions.py --users 10 --files 3000           # issue 21's 30,000 files
    .venv/bin/python bench/sessions.py --users 10 --files 3000 --tool-output 12000   # 80 % tool-result bytes

Builds ``users × files`` transcripts whose sizes follow a log-normal spread (median ~6 KB, a long
tail to several MB, like real session folders: many short sessions, a few huge ones) plus one
100 MB transcript, cut from generated realistic Claude Code sessions at line boundaries.
Bytes read are the runner's own count of file content read.

The limits, measured in the same run: one thread reading every file and ``json.loads``-ing every
line (measured twice: before the in-process runs and again right before the CLI one), against
which ``roost process usage`` on a fresh SQLite database (the whole process) must stay within
1.5x; the same command again, nothing changed, under 1 s; one appended line read in under 1 MB.
Prints PASS/FAIL for each (SQLite only for the CLI first pass) and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.domain.processors import run_processor  # noqa: E402
from roost.plugins.processors import Processor  # noqa: E402
from roost.plugins.processors.usage import UsageProcessor  # noqa: E402
from roost.runtime.config import Settings  # noqa: E402
from roost.runtime.services import Services  # noqa: E402
from roost.storage.database import open_database  # noqa: E402
from roost.storage.migrator import migrate  # noqa: E402
from tests.support.transcripts import generate_session  # noqa: E402

MB = 1_000_000


class HashOnly(Processor):
    """Extracts nothing: the runner's own cost (scan, read, hash, state) with no parsing."""

    name = "hashonly"

    def extract(self, username: str, lines: bytes) -> list:
        return []


def build_tree(root: Path, users: int, files: int, seed: int, big_mb: int, tool_output: int) -> tuple[int, int]:
    rng = random.Random(seed)
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    pool = [generate_session(rng, start=start + dt.timedelta(hours=i), turns=rng.randint(20, 60),
                             big_tool_output=tool_output).text().encode()
            for i in range(24)]
    fat = sum(len(line) + 1 for blob in pool for line in blob.split(b"\n") if b'"tool_result"' in line)
    print(f"tree lines: {100 * fat / sum(map(len, pool)):.0f}% of the bytes are tool-result lines")
    count = total = 0
    for u in range(users):
        folder = root / f"user{u:04d}"
        folder.mkdir(parents=True)
        for f in range(files):
            want = int(min(20 * MB, max(600, rng.lognormvariate(8.7, 1.4))))
            blob = pool[rng.randrange(len(pool))]
            reps = want // len(blob) + 1
            data = blob * reps if reps > 1 else blob
            cut = data.rfind(b"\n", 0, want) + 1 or len(data)
            (folder / f"{f:05d}.jsonl").write_bytes(data[:cut])
            count += 1
            total += cut
    big = root / "big" / "huge.jsonl"
    big.parent.mkdir()
    with open(big, "wb") as out:
        written = 0
        i = 0
        while written < big_mb * MB:
            out.write(pool[i % len(pool)])
            written += len(pool[i % len(pool)])
            i += 1
    return count + 1, total + written


def tree_size(root: Path) -> tuple[int, int]:
    count = total = 0
    for folder in root.iterdir():
        for path in folder.iterdir():
            count += 1
            total += path.stat().st_size
    return count, total


def append_last_line_again(big: Path) -> bytes:
    with open(big, "rb") as f:
        f.seek(-200_000, os.SEEK_END)
        tail = f.read()
    last_line = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1:]
    with open(big, "ab") as f:
        f.write(last_line)
    return last_line


def plain_hashlib(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    total = 0
    for folder in sorted(root.iterdir()):
        for path in sorted(folder.iterdir()):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    total += len(chunk)
            h.hexdigest()
    return time.perf_counter() - started, total


def plain_json(root: Path) -> tuple[float, int]:
    """The limit: one thread reads every file and ``json.loads`` every line."""
    started = time.perf_counter()
    lines = 0
    for folder in sorted(root.iterdir()):
        for path in sorted(folder.iterdir()):
            with open(path, "rb") as f:
                for line in f.read().splitlines():
                    if line:
                        json.loads(line)
                        lines += 1
    return time.perf_counter() - started, lines


def cli_run(root: Path, url: str) -> float:
    """One ``roost process usage`` process, start included."""
    env = {**os.environ, "ROOST_SESSION_DIR": str(root), "ROOST_DATABASE_URL": url}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("roost")), "process", "usage"], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    return time.perf_counter() - started


async def bench(args: argparse.Namespace) -> None:
    root = Path(args.dir or tempfile.mkdtemp(prefix="roost-bench-"))
    tmp_db = None
    if args.database_url:
        url = args.database_url
    else:
        tmp_db = tempfile.mkdtemp(prefix="roost-bench-db-")
        url = f"sqlite:///{tmp_db}/bench.db"
    try:
        t = time.perf_counter()
        if args.reuse and (root / "big" / "huge.jsonl").exists():
            files, size = await trio.to_thread.run_sync(tree_size, root)
            print(f"tree: {files:,} files, {size / MB:,.0f} MB (reused) at {root}")
        else:
            files, size = await trio.to_thread.run_sync(build_tree, root, args.users, args.files, args.seed,
                                                        args.big_mb, args.tool_output)
            print(f"tree: {files:,} files, {size / MB:,.0f} MB (built in {time.perf_counter() - t:.1f} s) at {root}")
        base_s, base_bytes = await trio.to_thread.run_sync(plain_hashlib, root)  # also warms the page cache
        base_s, base_bytes = await trio.to_thread.run_sync(plain_hashlib, root)
        print(f"plain hashlib (read + sha256, one thread): {base_bytes / MB / base_s:,.0f} MB/s, "
              f"{files / base_s:,.0f} files/s, {base_s:.2f} s")
        json_s, lines = await trio.to_thread.run_sync(plain_json, root)
        print(f"plain json.loads (read + parse every line, one thread): {lines:,} lines, {json_s:.2f} s")
        print(f"load average: {os.getloadavg()[0]:.2f}")
        verdicts = []
        async with open_database(url) as db:
            await migrate(db)
            services = Services.build(Settings(session_dir=str(root), database_url=url), db)
            for proc in (HashOnly(), UsageProcessor()):
                t = time.perf_counter()
                first = await run_processor(services, proc)
                s = first_s = time.perf_counter() - t
                print(f"[{proc.name}] first run: {s:.2f} s, {first.scanned / s:,.0f} files/s, "
                      f"{first.bytes_read / MB / s:,.0f} MB/s = {100 * base_s / s:.0f}% of plain hashlib "
                      f"(processed {first.processed:,}, failed {first.failed}, items {first.items:,})")
                t = time.perf_counter()
                again = await run_processor(services, proc)
                s = time.perf_counter() - t
                print(f"[{proc.name}] rescan, nothing changed: {s:.3f} s, bytes read {again.bytes_read}, "
                      f"skipped {again.skipped:,}/{again.scanned:,}")
                if proc.name == "usage":
                    print(f"[usage] in-process first run / json.loads = {first_s / json_s:.2f}x")
            big = root / "big" / "huge.jsonl"
            last_line = await trio.to_thread.run_sync(append_last_line_again, big)
            t = time.perf_counter()
            grown = await run_processor(services, UsageProcessor())
            s = time.perf_counter() - t
            print(f"[usage] one line ({len(last_line):,} B) appended to a {big.stat().st_size / MB:,.0f} MB file: "
                  f"{s:.3f} s, bytes read {grown.bytes_read:,} (processed {grown.processed}, "
                  f"skipped {grown.skipped:,})")
            verdicts.append(("append read < 1 MB", grown.bytes_read < MB))
        cli_url = url
        if tmp_db:  # the figure: the whole CLI process on a fresh SQLite database
            cli_url = f"sqlite:///{tmp_db}/cli.db"
            async with open_database(cli_url) as db:
                await migrate(db)
            json_s, _ = await trio.to_thread.run_sync(plain_json, root)  # measured side by side
            cli_first = await trio.to_thread.run_sync(cli_run, root, cli_url)
            ratio = cli_first / json_s
            print(f"[usage] `roost process usage` first pass, fresh SQLite: {cli_first:.2f} s; json.loads "
                  f"again: {json_s:.2f} s; ratio {ratio:.2f}x (bar 1.5x)")
            verdicts.append(("CLI first pass <= 1.5x json.loads", ratio <= 1.5))
        cli_s = await trio.to_thread.run_sync(cli_run, root, cli_url)
        print(f"[usage] rescan as `roost process usage` (process start included): {cli_s:.2f} s")
        verdicts.append(("CLI rescan < 1 s", cli_s < 1.0))
        print(f"load average: {os.getloadavg()[0]:.2f}")
        for name, ok in verdicts:
            print(f"{'PASS' if ok else 'FAIL'}: {name}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        if tmp_db:
            shutil.rmtree(tmp_db, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--files", type=int, default=1000, help="files per user")
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--tool-output", type=int, default=4000,
                        help="size of tool-result lines; 40000 gives the variant where ~80%% of bytes are such lines")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="build the tree here (default: a temporary directory)")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--keep", action="store_true", help="keep the tree")
    parser.add_argument("--reuse", action="store_true",
                        help="use the tree already in --dir (from an earlier --keep run) instead of building one")
    trio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
