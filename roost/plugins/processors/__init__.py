"""Processors: plugins that turn the new lines of Claude Code transcripts into stored items.

The contract is small. A processor has a ``name`` (lower-case letters, digits, ``_``), a
``default_interval_s``, and

* ``extract(username, lines) -> list`` — called in a worker thread with a block of *complete*
  new lines of one transcript (``bytes`` ending in ``\\n``; use ``iter_lines`` to split it), returns
  the items found. It must not touch the database; raising fails that file only.
* ``store(conn, username, items)`` — awaited inside the transaction that also records the
  transcript's new state, so items and state commit together. Because a transcript rewritten or truncated
  is processed again from the start, ``store`` must be idempotent (upsert, never blind insert).

Built-in processors (``usage`` and ``tools``) are returned by ``builtin()``; others are loaded from the
``roost.session_processors`` entry point group (each entry names a class or an instance; the
group keeps its published name). ``SessionProcessor`` is the name the README gave plugins before
this class was called ``Processor``; both name the same class.
"""

from __future__ import annotations

import abc
import re
from importlib.metadata import entry_points
from typing import Any, Iterator

from roost.runtime.logging import get_logger
from roost.storage.database import Connection

ENTRY_POINT_GROUP = "roost.session_processors"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
log = get_logger()


class Processor(abc.ABC):
    name: str = ""
    default_interval_s: float = 600.0
    # Worker threads reading files at once for this processor (None: the runner's default). One suits
    # an ``extract`` that holds the GIL most of its time: a second thread only contends for it.
    readers: int | None = None

    @abc.abstractmethod
    def extract(self, username: str, lines: bytes) -> list[Any]:
        """The items in ``lines`` (complete lines, newline-terminated). Runs in a worker thread."""

    async def store(self, conn: Connection, username: str, items: list[Any]) -> None:  # noqa: B027
        """Persist ``items`` (idempotently) on ``conn``, inside the run's transaction. Default: nothing."""


SessionProcessor = Processor


def iter_lines(block: bytes) -> Iterator[bytes]:
    """The non-empty lines of a block of complete lines, without their newlines."""
    for line in block.split(b"\n"):
        if line.strip():
            yield line


def builtin() -> list[Processor]:
    from roost.plugins.processors.tools import ToolsProcessor
    from roost.plugins.processors.usage import UsageProcessor

    return [UsageProcessor(), ToolsProcessor()]


def load_processors(*, with_entry_points: bool = True) -> dict[str, Processor]:
    """Every available processor by name: built-ins first, then entry points (a clashing name is skipped)."""
    return {name: proc for name, (proc, _) in _discover(with_entry_points).items()}


def sources() -> dict[str, str]:
    """Each available processor's name and where it comes from (``built-in``, or its entry point)."""
    return {name: source for name, (_, source) in sorted(_discover(True).items())}


def _discover(with_entry_points: bool) -> dict[str, tuple[Processor, str]]:
    from roost.plugins.registry import entry_point_source

    found: dict[str, tuple[Processor, str]] = {}
    for proc in builtin():
        found[proc.name] = (proc, "built-in")
    if with_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                proc = obj() if isinstance(obj, type) else obj
            except Exception as exc:  # one broken plugin must not take the others down
                log.error("processor plugin failed to load", entry_point=ep.name, error=str(exc))
                continue
            if not isinstance(proc, Processor) or not _NAME.match(getattr(proc, "name", "") or ""):
                log.error("processor plugin is not a Processor with a valid name", entry_point=ep.name)
                continue
            if proc.name in found:
                log.warning("processor name already taken; plugin skipped", name=proc.name)
                continue
            found[proc.name] = (proc, entry_point_source(ep))
    return found
