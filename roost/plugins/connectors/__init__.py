"""Connectors: where a scout's items come from.

A connector checks its config and opens a connection to its source for one scout run; the
connection lists new refs after a cursor, fetches an item's content (for triage, never stored)
and metadata (subject and snippet, cached for delivery), and archives spam. Blocking client
libraries run in worker threads. ``pull = False`` marks a connector whose items are pushed
through the API (``push``): the scout never lists, it triages what was stored.

Built in: ``push`` and ``imap``; more come from the ``roost.connectors`` entry points.

Outside text is bounded before anything reads it (``bounded``): a sender of at most
``MAX_SENDER_CHARS``, a subject of ``MAX_SUBJECT_CHARS``, a body of ``MAX_BODY_CHARS``; a
connector fetches at most ``MAX_MESSAGE_BYTES`` of a message. HTML becomes text with a linear
parser (lexbor, through selectolax), never a regex.
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from roost.plugins.registry import Registry
from roost.storage.scouts import NewItem

SNIPPET_CHARS = 200
# Caps on outside text (README "Scouts: limits on outside text"). A message over MAX_MESSAGE_BYTES is
# fetched in part (its first MAX_MESSAGE_BYTES), so what a classifier reads is its beginning.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_SENDER_CHARS = 320
MAX_SUBJECT_CHARS = 1000
MAX_BODY_CHARS = 100_000


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
    """The first ``limit`` characters of ``text`` with its whitespace runs made one space."""
    # Only a prefix is flattened: a snippet never needs more, and the body may be a megabyte.
    flat = " ".join((text or "")[: limit * 20].split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def bounded(content: Content) -> Content:
    """``content`` cut to the caps on sender, subject and body (pushed or fetched alike)."""
    if (len(content.sender) <= MAX_SENDER_CHARS and len(content.subject) <= MAX_SUBJECT_CHARS
            and len(content.body) <= MAX_BODY_CHARS):
        return content
    return Content(content.source_msg_ref, content.sender[:MAX_SENDER_CHARS], content.subject[:MAX_SUBJECT_CHARS],
                   content.body[:MAX_BODY_CHARS], content.snippet[:SNIPPET_CHARS * 2])


def html_to_text(markup: str) -> str:
    """The text of an HTML document, by lexbor's parser (linear in the input; no regex over markup).

    Script and style elements are dropped; entities come back decoded.
    """
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    for node in tree.css("script, style, head"):
        node.decompose()
    root = tree.body or tree.root
    return root.text(separator=" ") if root is not None else ""


class SourceConnection(abc.ABC):
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

    def destinations(self, config: dict[str, Any]) -> list[tuple[str, int]]:
        """The (host, port) pairs this config makes roost connect to (checked when the scout is saved)."""
        return []

    @abc.abstractmethod
    def open(self, config: dict[str, Any]) -> AbstractAsyncContextManager[SourceConnection]:
        """A connection for one run; ``config`` has its secrets opened."""


connectors: Registry[Connector] = Registry("roost.connectors", "connector")


def _register_builtins() -> None:
    from roost.plugins.connectors.imap import ImapConnector
    from roost.plugins.connectors.push import PushConnector

    connectors.register("push", PushConnector)
    connectors.register("imap", ImapConnector)


_register_builtins()
