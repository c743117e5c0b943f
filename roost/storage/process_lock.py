"""The one-process lock of a SQLite database: ``<db>.lock``, held by ``roost serve`` and ``roost process``.

Its own module so the CLI takes it without importing the server (the HTTP app, the actors).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

from roost.errors import Conflict
from roost.runtime.config import Settings
from roost.storage.database import sqlite_path


@contextmanager
def single_process_lock(settings: Settings) -> Iterator[None]:
    """On SQLite, hold an exclusive lock on ``<db>.lock`` for the life of the process."""
    if settings.is_postgres:
        yield
        return
    path = sqlite_path(settings.database_url) + ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise Conflict(
                f"another roost process (pid {holder}) is serving {sqlite_path(settings.database_url)}: "
                "SQLite supports one process; stop it, or use PostgreSQL to run several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
