"""Console transport (development default): log the message instead of sending it."""

from __future__ import annotations

from dataclasses import dataclass

from roost.plugins.transports.message import Mail
from roost.runtime.logging import get_logger


@dataclass
class ConsoleTransport:
    name: str = "console"

    def send(self, mail: Mail) -> None:
        get_logger().info("mail (console transport, not sent)", to=list(mail.recipients), subject=mail.subject,
                          message_id=mail.message_id, size=len(mail.data))
