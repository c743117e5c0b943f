"""A real Dovecot IMAP server for the connector tests, configured in a temp dir on a free port.

``start_dovecot()`` writes a minimal ``dovecot.conf`` (plaintext IMAP on 127.0.0.1, a
passwd-file user with a plain password, maildir storage, logs to a file), runs
``dovecot -F -c <conf>`` as a subprocess and waits for the greeting. As root, Dovecot's own
unprivileged users run its internal and login processes and the mail belongs to ``nobody``; as
anyone else, everything runs as that user. ``Dovecot.stop()`` ends it and removes the dir.

Seeding goes through IMAP itself (``APPEND`` with imaplib), so the tests see what a real
mailbox holds.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "scout"
PASSWORD = "scout-secret"
ALLOW = "127.0.0.1"  # Settings(allowed_destinations=ALLOW): the server listens on loopback


class DovecotUnavailable(Exception):
    pass


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dovecot:
    proc: subprocess.Popen
    root: Path
    port: int
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD

    def config(self, **extra: object) -> dict[str, object]:
        """An ``imap`` connector config for this server (plaintext on loopback: ``insecure`` opts in;
        the caller allows 127.0.0.1 as a destination, see ``ALLOW``)."""
        return {"host": self.host, "port": self.port, "tls": False, "insecure": True, "user": self.user,
                "password": self.password, "timeout_s": 10, **extra}

    def connect(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_dovecot() -> Dovecot:
    binary = find_dovecot()
    if binary is None:
        raise DovecotUnavailable("dovecot is not installed (Debian package dovecot-imapd)")
    # Not under pytest's tmp dirs: Dovecot's unprivileged processes must be able to walk the path.
    root = Path(tempfile.mkdtemp(prefix="roost-dovecot-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        internal, login = "dovecot", "dovenull"
        mail_owner = pwd.getpwnam("nobody")
    else:
        internal = login = pwd.getpwuid(os.geteuid()).pw_name
        mail_owner = pwd.getpwuid(os.geteuid())
    for name in ("run", "state", "mail"):
        (root / name).mkdir(mode=0o755)
    home = root / "mail" / USER
    home.mkdir(mode=0o700)
    os.chown(home, mail_owner.pw_uid, mail_owner.pw_gid)
    (root / "passwd").write_text(
        f"{USER}:{{PLAIN}}{PASSWORD}:{mail_owner.pw_uid}:{mail_owner.pw_gid}::{home}::\n"
    )
    port = _free_port()
    conf = root / "dovecot.conf"
    conf.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {min(mail_owner.pw_uid, 500) or 1}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
""")
    proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "stderr.log", "wb"))
    server = Dovecot(proc, root, port)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            text = (root / "stderr.log").read_text(errors="replace") + server.log()
            shutil.rmtree(root, ignore_errors=True)
            raise DovecotUnavailable(f"dovecot exited with {proc.returncode}: {text[-2000:]}")
        try:
            server.connect().logout()
            return server
        except (OSError, imaplib.IMAP4.error):
            if time.monotonic() > deadline:
                log = server.log()
                server.stop()
                raise DovecotUnavailable(f"dovecot did not answer on port {port}: {log[-2000:]}") from None
            time.sleep(0.05)


def message(subject: str, body: str, sender: str = "someone@example.com") -> bytes:
    return (f"From: {sender}\r\nTo: {USER}@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((subject, body)))}@example.com>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def append(imap: imaplib.IMAP4, folder: str, raw: bytes) -> None:
    typ, data = imap.append(f'"{folder}"', None, None, raw)
    if typ != "OK":
        raise RuntimeError(f"APPEND failed: {data!r}")
