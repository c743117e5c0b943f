"""Job locks: "one run of this at a time", in this process and (on PostgreSQL) in the cluster.

``hold(name)`` never waits: it raises ``AlreadyRunning`` (409 over HTTP) when a run holds the
lock here or in another process, and releases however the block ends.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, AsyncIterator

from roost.errors import AlreadyRunning

if TYPE_CHECKING:
    from roost.storage.database import Database


class JobLocks:
    def __init__(self, db: Database):
        self._db = db
        self._held: set[str] = set()

    def is_held(self, name: str) -> bool:
        """Held by this process (another process's hold is only seen by trying)."""
        return name in self._held

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Raises:
            AlreadyRunning: a run holding ``name`` is going on here or in another process.
        """
        if name in self._held:
            raise AlreadyRunning(f"{name} is already running", details={"lock": name})
        self._held.add(name)
        try:
            async with self._db.advisory_lock(name) as taken:
                if not taken:
                    raise AlreadyRunning(f"{name} is already running in another process", details={"lock": name})
                yield
        finally:
            self._held.discard(name)
