"""Console transport (development default): log the message instead of sending it."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from roost.runtime.logging import get_logger


@dataclass
class ConsoleTransport:
    name: str = "console"

    def send(self, message: EmailMessage) -> None:
        get_logger().info("mail (console transport, not sent)", to=message["To"], subject=message["Subject"],
                          message_id=message["Message-ID"])
