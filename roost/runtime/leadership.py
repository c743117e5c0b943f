"""Leadership: which singletons (digest tick, pruner, scheduled jobs) this process runs.

A singleton actor asks ``leads(name)`` before each run and skips the run when the answer is no,
keeping its own cadence, so a process that takes over runs it within one of its ticks.

Alone (SQLite, or a process whose heartbeat actor does not run), the process leads everything.
On PostgreSQL the heartbeat actor ``engage``s the cluster mode: then a name is led only while
this process holds its session-level advisory lock on the heartbeat actor's dedicated
connection (see ``roost.actors.heartbeat``); when that process dies, its session ends, the lock
is released and another process's next attempt takes it.
"""

from __future__ import annotations


class Leadership:
    def __init__(self) -> None:
        self._wanted: set[str] = set()
        self._held: set[str] = set()
        self._clustered = False

    def want(self, *names: str) -> None:
        """Declare singletons this process would run (the heartbeat actor tries to lead them)."""
        self._wanted.update(names)

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    @property
    def clustered(self) -> bool:
        return self._clustered

    def leads(self, name: str) -> bool:
        """Whether this process runs the singleton ``name`` now."""
        return name in self._held if self._clustered else True

    def led(self) -> list[str]:
        """The singletons this process leads, sorted (for the process table and status)."""
        return sorted(self._held if self._clustered else self._wanted)

    # -- for the heartbeat actor -----------------------------------------------------------------

    def engage(self) -> None:
        """Lead only what ``took`` grants from now on (cluster mode)."""
        self._clustered = True
        self._held.clear()

    def took(self, name: str) -> None:
        self._held.add(name)

    def lose_all(self) -> None:
        """The session holding the locks is gone (or going): lead nothing until re-taken."""
        self._held.clear()
