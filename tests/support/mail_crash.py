"""Run as a subprocess: claim and send one outbox row over SMTP, then die (SIGKILL) before recording it.

Usage: python -m tests.support.mail_crash DATABASE_URL SMTP_PORT
"""

from __future__ import annotations

import os
import signal
import sys

import trio

from roost.actors.mailer import Mailer
from roost.plugins.transports.message import Mail
from roost.plugins.transports.smtp import SmtpTransport
from roost.storage.database import open_database
from tests.support.digest import make_services


class DieAfterAcceptance(SmtpTransport):
    def send(self, mail: Mail) -> None:
        super().send(mail)
        os.kill(os.getpid(), signal.SIGKILL)  # the server has it; "sent" is never committed


async def main(url: str, port: int) -> None:
    async with open_database(url) as db:
        services = make_services(db)
        await Mailer().drain(services, DieAfterAcceptance("127.0.0.1", port))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
