"""The ``push`` connector: the app posts items to ``POST /api/v1/scouts/{id}/items``.

Nothing to list or fetch: the pushed body is stored until triage, and content and metadata
come from the stored row.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from roost.errors import InvalidInput
from roost.plugins.connectors import Connector, Content, Metadata, Ref, SourceConnection, make_snippet


class _PushConnection(SourceConnection):
    async def fetch_content(self, ref: Ref) -> Content:
        body = ref.body or ""
        return Content(ref.source_msg_ref, ref.sender or "", ref.subject or "", body,
                       ref.snippet if ref.snippet is not None else make_snippet(body))

    async def fetch_metadata(self, ref: Ref) -> Metadata:
        return Metadata(ref.subject or "", ref.snippet if ref.snippet is not None else make_snippet(ref.body or ""))


class PushConnector(Connector):
    name = "push"
    pull = False

    def check_config(self, config: dict[str, Any]) -> None:
        if config:
            raise InvalidInput("the push connector takes no config (send {})")

    @asynccontextmanager
    async def open(self, config: dict[str, Any]) -> AsyncIterator[SourceConnection]:
        yield _PushConnection()
