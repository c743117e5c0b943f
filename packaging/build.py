"""Build the one-file ``roost`` executable: ``python packaging/build.py [--format pyinstaller|shiv] [--out PATH]``.

``make dist`` runs this with the default format (PyInstaller one-file: no Python needed on the
target; see README "Deploy as one file" and BENCHMARKS.md for why). ``--format shiv`` builds a
zipapp instead (needs Python 3.11 on the target); the startup bench builds both to compare.

Before building it writes ``roost/_build.py`` with the commit (``git rev-parse --short HEAD``,
``+dirty`` when the worktree has changes) so ``roost --version`` names the build. The packager is
installed into the running interpreter's environment if missing (local wheels via pip).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "roost.spec"
BUILD_INFO = ROOT / "roost" / "_build.py"
PACKAGERS = {"pyinstaller": ("PyInstaller", "pyinstaller>=6.10,<7"), "shiv": ("shiv", "shiv>=1.0,<2")}


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def write_build_info() -> str:
    sha = commit()
    BUILD_INFO.write_text(f'"""Written by packaging/build.py (`make dist`); not in git."""\n\nCOMMIT = "{sha}"\n')
    return sha


def ensure_packager(fmt: str) -> None:
    module, requirement = PACKAGERS[fmt]
    if importlib.util.find_spec(module) is None:
        print(f"installing {requirement} into {sys.prefix}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)


def build_pyinstaller(out: Path, work: Path) -> None:
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(work / "dist"), "--workpath", str(work / "build"), str(SPEC)],
                   cwd=ROOT, check=True)
    shutil.move(work / "dist" / "roost", out)


def build_shiv(out: Path, work: Path) -> None:
    shiv = [sys.executable, "-c", "import sys; from shiv.cli import main; sys.exit(main())"]
    result = subprocess.run([*shiv, "--console-script", "roost", "--output-file", str(out), "--python",
                             "/usr/bin/env python3.11", "--reproducible", "--compressed", "--quiet", str(ROOT)],
                            cwd=work, capture_output=True, text=True)
    if result.returncode != 0:  # pip's output only when it failed (it warns a lot about local indexes)
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"shiv failed with exit code {result.returncode}")


def build(fmt: str, out: Path) -> float:
    """Build ``out``; returns the seconds it took."""
    ensure_packager(fmt)
    sha = write_build_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="roost-build-") as tmp:
        tmp_out = Path(tmp) / "roost.out"
        (build_pyinstaller if fmt == "pyinstaller" else build_shiv)(tmp_out, Path(tmp))
        shutil.move(tmp_out, out)
    elapsed = time.monotonic() - start
    size = out.stat().st_size / 2**20
    print(f"built {out} ({fmt}, commit {sha}): {size:.1f} MiB in {elapsed:.1f} s", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(PACKAGERS), default="pyinstaller")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "roost")
    args = parser.parse_args()
    build(args.format, args.out.resolve())


if __name__ == "__main__":
    main()
