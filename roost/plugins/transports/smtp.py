"""SMTP transport: ``smtp://`` (STARTTLS when the server offers it), ``smtps://`` (TLS from the start).

``smtp://user:password@host:587``; user and password are URL-decoded. With credentials the
connection must be encrypted: when an ``smtp://`` server offers no STARTTLS (or someone on the
way strips it), the send fails with ``TransientError`` before any login, and the password is
never sent in clear. Without credentials plain SMTP is still allowed (a local relay). Blocking smtplib, so the
mailer calls ``send`` from a worker thread. One connection per message: simple, and a broken
connection never poisons the next send.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from roost.errors import InvalidInput
from roost.plugins.transports import PermanentError, TransientError
from roost.plugins.transports.message import Mail


@dataclass
class SmtpTransport:
    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    name: str = "smtp"
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)  # None: the system's CAs

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 30.0) -> SmtpTransport:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise InvalidInput("ROOST_SMTP_URL must look like smtp://user:pass@host:587 or smtps://host:465")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            implicit_tls=implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout_s=timeout_s,
        )

    def _connect(self) -> tuple[smtplib.SMTP, bool]:
        """A connected client and whether the connection is encrypted."""
        context = self.ssl_context or ssl.create_default_context()
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context), True
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
            return client, True
        return client, False

    def send(self, mail: Mail) -> None:
        try:
            client, encrypted = self._connect()
        except (OSError, smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected) as exc:
            raise TransientError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            if self.username and not encrypted:
                raise TransientError(
                    f"{self.host}:{self.port} offers no STARTTLS, so roost will not send the SMTP password in "
                    "clear; use a server with STARTTLS, smtps:// (TLS from the start), or no credentials")
            if self.username:
                client.login(self.username, self.password or "")
            refused = client.sendmail(mail.sender, list(mail.recipients), mail.data,
                                      mail_options=["SMTPUTF8"] if mail.smtputf8 else [])
            if refused:
                codes = {code for code, _ in refused.values()}
                error = f"some recipients refused: {refused}"
                raise TransientError(error) if all(400 <= c < 500 for c in codes) else PermanentError(error)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            error = f"recipients refused: {exc.recipients}"
            raise TransientError(error) if all(400 <= c < 500 for c in codes) else PermanentError(error) from exc
        except smtplib.SMTPResponseException as exc:
            error = f"{exc.smtp_code} {exc.smtp_error!r}"
            if 400 <= exc.smtp_code < 500:
                raise TransientError(error) from exc
            raise PermanentError(error) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TransientError(f"connection lost: {exc}") from exc
        except smtplib.SMTPException as exc:
            raise PermanentError(str(exc)) from exc
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
