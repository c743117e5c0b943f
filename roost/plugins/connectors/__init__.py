"""Connectors: where a scout's items come from.

A connector checks its config and opens a session for one scout run; the session lists new
refs after a cursor, fetches an item's content (for triage, never stored) and metadata
(subject and snippet, cached for delivery), and archives spam. Blocking client libraries run
in worker threads. ``pull = False`` marks a connector whose items are pushed through the API
(``push``): the scout never lists, it triages what was stored.

Built in: ``push`` and ``imap``; more come from the ``roost.connectors`` entry points.
"""

from __future__ import annotations

import abc
import re
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from roost.plugins.registry import Registry
from roost.storage.scouts import NewItem

SNIPPET_CHARS = 200


@dataclass(frozen=True)
class Ref:
    """An item as the database holds it before triage."""

    source_msg_ref: str
    sender: str | None = None
    subject: str | None = None
    snippet: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class Content:
    """What a classifier reads; lives only in memory for the length of a triage."""

    source_msg_ref: str
    sender: str
    subject: str
    body: str
    snippet: str


@dataclass(frozen=True)
class Metadata:
    subject: str
    snippet: str


def make_snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = re.sub(r"\s+", " ", text or "").strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class ConnectorSession(abc.ABC):
    """One scout run's access to its source (one IMAP connection, say)."""

    async def list_new(self, cursor: str | None) -> tuple[list[NewItem], str | None]:
        """Refs after ``cursor`` (at most a page) and the cursor that covers them."""
        return [], cursor

    @abc.abstractmethod
    async def fetch_content(self, ref: Ref) -> Content: ...

    @abc.abstractmethod
    async def fetch_metadata(self, ref: Ref) -> Metadata: ...

    async def archive(self, ref: Ref) -> None:
        """Move the item out of the way (spam with ``auto_trash_spam``); default: nothing to do."""
        return None


class Connector(abc.ABC):
    name: str = "connector"
    pull: bool = True

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise InvalidInput for a config this connector cannot use."""
        return None

    @abc.abstractmethod
    def open(self, config: dict[str, Any]) -> AbstractAsyncContextManager[ConnectorSession]:
        """A session for one run; ``config`` has its secrets opened."""


connectors: Registry[Connector] = Registry("roost.connectors", "connector")


def _register_builtins() -> None:
    from roost.plugins.connectors.imap import ImapConnector
    from roost.plugins.connectors.push import PushConnector

    connectors.register("push", PushConnector)
    connectors.register("imap", ImapConnector)


_register_builtins()
