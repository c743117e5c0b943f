"""Mail transports: how a composed message (``roost.plugins.transports.message.Mail``: its SMTP
envelope and its bytes) leaves the process.

A transport has one blocking method, ``send(mail)``, which the mailer runs in a worker
thread. It returns when the message was accepted, raises ``TransientError`` when a later try
may work (a 4xx reply, a refused or dropped connection, a timeout) and ``PermanentError`` when
it will not (a 5xx reply, a malformed address).

Built in: ``smtp`` (``ROOST_SMTP_URL``), ``file`` (one .eml per message in ``ROOST_MAIL_DIR``)
and ``console`` (logged, not sent; the default without an SMTP URL). Others are loaded from the
``roost.transports`` entry-point group by name.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol

from roost.errors import NotConfigured, PermanentError, TransientError, TransportError  # noqa: F401 (transports raise these)
from roost.plugins.transports.message import Mail
from roost.runtime.config import Settings


class Transport(Protocol):
    name: str

    def send(self, mail: Mail) -> None: ...


BUILTIN = ("smtp", "file", "console")
ENTRY_POINT_GROUP = "roost.transports"


def sources() -> dict[str, str]:
    """Each mail transport's name and where it comes from (``built-in``, or its entry point)."""
    from roost.plugins.registry import entry_point_source

    found = dict.fromkeys(BUILTIN, "built-in")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, entry_point_source(ep))
    return dict(sorted(found.items()))


def load_transport(settings: Settings) -> Transport:
    """The transport ``ROOST_MAIL_TRANSPORT`` names (``auto``: smtp with an SMTP URL, else console).

    Raises:
        NotConfigured: an unknown name, or smtp without ``ROOST_SMTP_URL``.
    """
    name = settings.mail_transport
    if name == "auto":
        name = "smtp" if settings.smtp_url else "console"
    if name == "smtp":
        from roost.plugins.transports.smtp import SmtpTransport

        if not settings.smtp_url:
            raise NotConfigured("ROOST_MAIL_TRANSPORT=smtp needs ROOST_SMTP_URL (smtp://user:pass@host:587)")
        return SmtpTransport.from_url(settings.smtp_url, timeout_s=settings.smtp_timeout_s)
    if name == "file":
        from roost.plugins.transports.file import FileTransport

        return FileTransport(settings.mail_dir)
    if name == "console":
        from roost.plugins.transports.console import ConsoleTransport

        return ConsoleTransport()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()(settings)
    raise NotConfigured(f"unknown mail transport {name!r}: use smtp, file, console or an installed plugin")
