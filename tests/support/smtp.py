"""A real SMTP server for tests: aiosmtpd in its own thread and event loop, on a free local port."""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from aiosmtpd.controller import Controller

from tests.support.server import free_port


class SmtpRecorder:
    """An aiosmtpd handler that keeps every message it accepts and answers each DATA with the next
    reply queued in ``fail_next`` (250 when none is left), so a test can make the server refuse."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.fail_next: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        with self.lock:
            if self.fail_next:
                return self.fail_next.pop(0)
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@contextmanager
def smtp_server(handler: Any, **options: Any) -> Iterator[int]:
    """An SMTP server on 127.0.0.1 handing each message to ``handler`` while the block runs; its port.
    ``options`` go to aiosmtpd's ``Controller`` (an authenticator, a TLS context, ...)."""
    port = free_port()
    # A plain selector loop: trio-asyncio (imported for PostgreSQL) replaces the default loop policy.
    controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.SelectorEventLoop(), **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
