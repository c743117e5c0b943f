"""SMTP with credentials needs TLS: against a real aiosmtpd server, with and without STARTTLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from roost.plugins.transports import TransientError
from roost.plugins.transports.message import compose
from roost.plugins.transports.smtp import SmtpTransport
from tests.support.smtp import smtp_server

MAIL = compose(sender="roost <noreply@example.com>", to="ann@example.com", subject="Hi",
               date=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), message_id="<m1@example.com>", text="hello\n")


class Handler:
    def __init__(self) -> None:
        self.logins: list[str] = []
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        with self.lock:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=auth_data.password == b"pw")

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        with self.lock:
            self.messages.append(envelope.content)
        return "250 OK"


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a cert for 127.0.0.1 and a client context that trusts exactly it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


def test_no_login_over_a_connection_without_tls():
    handler = Handler()
    # auth_require_tls=False: the server would take AUTH in clear
    with smtp_server(handler, authenticator=handler.authenticate, auth_require_tls=False) as port:
        with pytest.raises(TransientError, match="no STARTTLS.*in clear"):
            SmtpTransport("127.0.0.1", port, username="roost", password="pw", timeout_s=5).send(MAIL)
        assert handler.logins == [] and handler.messages == []
        SmtpTransport("127.0.0.1", port, timeout_s=5).send(MAIL)  # no credentials: a plain relay is fine
        assert len(handler.messages) == 1


def test_login_after_starttls(tmp_path):
    handler = Handler()
    server_ctx, client_ctx = _self_signed(tmp_path)
    with smtp_server(handler, authenticator=handler.authenticate, tls_context=server_ctx,
                     require_starttls=True) as port:
        SmtpTransport("127.0.0.1", port, username="roost", password="pw", timeout_s=5,
                      ssl_context=client_ctx).send(MAIL)
        assert handler.logins == ["roost"] and len(handler.messages) == 1
