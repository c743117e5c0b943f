"""The ``imap`` connector: new mail by UID, fetched with BODY.PEEK, spam archived by MOVE.

Config::

    {"host": "imap.example.com", "port": 993, "tls": true, "starttls": false,
     "user": "ann@example.com", "password": "...", "folder": "INBOX",
     "archive_folder": "Archive", "page_size": 100, "timeout_s": 30, "insecure": false}

With both ``tls`` and ``starttls`` off the password would cross the network in clear: refused
unless ``insecure`` is true. The connection goes only to a vetted address of ``host``
(``roost.runtime.destinations``); TLS still checks the certificate against ``host``. A message
is fetched up to ``MAX_MESSAGE_BYTES`` (``RFC822.SIZE`` and a partial ``BODY.PEEK[]<0.N>``),
its headers are read raw and cut before they are decoded, and HTML becomes text through lexbor.
Failures are reported by kind (refused, timeout, tls, auth, bad_answer, ...), never with the
server's text.

The cursor is ``"<UIDVALIDITY>:<last UID>"`` and a ref is ``"<UIDVALIDITY>:<UID>"``: when the
server's UIDVALIDITY changes, old UIDs mean nothing, so listing starts again from the top of the
folder (the new refs differ from the old ones) and a ref from the old validity fails instead of
fetching some other message. Scouting never marks mail read (``BODY.PEEK``). Archiving uses
``UID MOVE`` where the server has it, else ``UID COPY`` + ``\\Deleted`` + expunge. imaplib blocks,
so every call runs in a worker thread on the run's one IMAP connection.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import imaplib
import socket
import ssl
from contextlib import asynccontextmanager
from email.message import Message
from typing import Any, AsyncIterator, Callable, TypeVar

import trio

from roost.errors import InvalidInput
from roost.plugins.connectors import (
    MAX_BODY_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_SENDER_CHARS,
    MAX_SUBJECT_CHARS,
    Connector,
    Content,
    Metadata,
    Ref,
    SourceConnection,
    html_to_text,
    make_snippet,
)
from roost.runtime.destinations import RemoteError, classify_error, connect_vetted
from roost.runtime.logging import get_logger
from roost.storage.scouts import NewItem

T = TypeVar("T")
log = get_logger()
_KEYS = {"host", "port", "tls", "starttls", "user", "password", "folder", "archive_folder", "page_size",
         "timeout_s", "insecure"}
_HTML_BYTES = MAX_MESSAGE_BYTES  # an HTML part is cut to this before lexbor reads it


class ImapError(RemoteError):
    """The server refused a command (the scout records it and retries the item later)."""

    def __init__(self, message: str, kind: str = "bad_answer"):
        super().__init__(kind, message)


def _check(typ: str, data: Any, what: str) -> Any:
    if typ != "OK":
        raise ImapError(f"IMAP {what} failed ({typ})")  # the server's words stay out of last_error
    return data


_MAX_LITERAL = MAX_MESSAGE_BYTES + 64 * 1024  # a server sending more than the partial fetch asked for


class _Bounded:
    """imaplib reads a literal of whatever size the server announces: refuse one over ``_MAX_LITERAL``."""

    def read(self, size: int) -> bytes:
        if size > _MAX_LITERAL:
            raise ImapError(f"the server sent {size} bytes where at most {MAX_MESSAGE_BYTES} were asked for")
        return super().read(size)  # type: ignore[misc]


class _VettedIMAP4(_Bounded, imaplib.IMAP4):
    """IMAP4 that connects only to an address of the host the destinations policy allows."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return connect_vetted(self.host, self.port, timeout)


class _VettedIMAP4_SSL(_Bounded, imaplib.IMAP4_SSL):
    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = connect_vetted(self.host, self.port, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)  # SNI and cert check by name


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER_CHARS = 2048  # a header value is cut to this before anything parses it


class _BoundedMessage(Message):
    """A compat32 message whose header values are cut to ``_HEADER_CHARS`` whenever they are read.

    The parser and ``get_content_type``/``get_boundary`` read headers through ``get``; MIME
    parameters are then split by ``email.message._parseparam``, which is quadratic: a
    ``Content-Type: multipart/mixed`` followed by 1 MB of ``;a`` took 17.8 s to parse.
    """

    def get(self, name: str, failobj: Any = None) -> Any:
        value = super().get(name, failobj)
        if isinstance(value, str) and len(value) > _HEADER_CHARS:
            return value[:_HEADER_CHARS]
        return value


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, _class=_BoundedMessage, policy=email.policy.compat32)


def _header(msg: Message, name: str, limit: int) -> str:
    """A header's decoded text, cut to ``limit`` characters *before* decoding (outside text, bounded)."""
    raw = str(msg.get(name, "") or "")[: limit * 4]
    try:
        text = str(email.header.make_header(email.header.decode_header(raw)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        text = raw
    return " ".join(text.split())[:limit]


def _charset(part: Message) -> str:
    # Not part.get_content_charset(): its parameter parser is quadratic in the number of ';'.
    value = str(part.get("Content-Type", "") or "")[:1000].lower()
    at = value.find("charset=")
    if at < 0:
        return "utf-8"
    name = value[at + 8:].split(";", 1)[0].strip().strip('"').strip("'")
    return name or "utf-8"


def _body_part(msg: Message) -> Message | None:
    """The first inline text/plain part, else the first text/html one."""
    html_part = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        if str(part.get("Content-Disposition", "") or "")[:100].lower().startswith("attachment"):
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            return part
        if kind == "text/html" and html_part is None:
            html_part = part
    return html_part


def _text_of(msg: Message) -> str:
    part = _body_part(msg)
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(_charset(part), "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    if part.get_content_type() == "text/html":
        text = html_to_text(text[:_HTML_BYTES])
    return text[:MAX_BODY_CHARS]


def _size_of(envelope: bytes) -> int | None:
    """RFC822.SIZE in a FETCH response's first line (``1 (UID 5 RFC822.SIZE 1234 BODY[]<0> {1234}``)."""
    text = envelope[:500].decode("ascii", "replace").upper()
    at = text.find("RFC822.SIZE ")
    if at < 0:
        return None
    digits = text[at + 12:].split(" ", 1)[0].rstrip(")")
    return int(digits) if digits.isdigit() else None


def _parse_ref(ref: str) -> tuple[int, int]:
    validity, _, uid = ref.partition(":")
    return int(validity), int(uid)


class _ImapConnection(SourceConnection):
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.folder = config.get("folder", "INBOX")
        self.archive_folder = config.get("archive_folder", "Archive")
        self.page_size = int(config.get("page_size", 100))
        self.imap: imaplib.IMAP4 | None = None
        self.uidvalidity: int | None = None
        self.archive_ready = False

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(fn)
        except RemoteError:
            raise
        except (imaplib.IMAP4.error, OSError) as exc:  # by kind: the server's words stay in the log
            raise classify_error(exc, f"{self.config.get('host')}:{_port(self.config)}") from exc

    def _connect(self) -> None:
        c = self.config
        tls = c.get("tls", True)
        port = int(c.get("port", 993 if tls else 143))
        timeout = float(c.get("timeout_s", 30))
        if not tls and not c.get("starttls") and not c.get("insecure"):
            raise RemoteError("insecure", _PLAINTEXT)
        if tls:
            imap: imaplib.IMAP4 = _VettedIMAP4_SSL(c["host"], port, ssl_context=ssl.create_default_context(),
                                                   timeout=timeout)
        else:
            imap = _VettedIMAP4(c["host"], port, timeout=timeout)
            if c.get("starttls"):
                try:
                    imap.starttls(ssl.create_default_context())
                except imaplib.IMAP4.error as exc:
                    imap.shutdown()
                    raise RemoteError("tls", "the server did not start TLS (STARTTLS)") from exc
                except BaseException:
                    imap.shutdown()
                    raise
        try:
            try:
                imap.login(c["user"], c["password"])
            except imaplib.IMAP4.error as exc:
                raise RemoteError("auth", f"{c['host']}:{port} refused the login") from exc
            # imaplib keeps the capabilities it saw before login; servers add MOVE, UIDPLUS, ... after.
            caps = _check(*imap.capability(), "CAPABILITY")
            imap.capabilities = tuple((caps[0] or b"").decode("ascii", "replace").upper().split())
            _check(*imap.select(_quote(self.folder)), f"SELECT {self.folder}")
            validity = imap.response("UIDVALIDITY")[1]
            self.uidvalidity = int(validity[0]) if validity and validity[0] else None
        except Exception:
            imap.shutdown()
            raise
        self.imap = imap

    def _close(self) -> None:
        if self.imap is not None:
            try:
                self.imap.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
            self.imap = None

    def _list(self, cursor: str | None) -> tuple[list[NewItem], str | None]:
        assert self.imap is not None and self.uidvalidity is not None
        last = 0
        if cursor:
            validity, last = _parse_ref(cursor)
            if validity != self.uidvalidity:
                last = 0  # a new UIDVALIDITY: every UID is new
        data = _check(*self.imap.uid("SEARCH", f"UID {last + 1}:*"), "UID SEARCH")
        uids = sorted(u for u in (int(x) for x in (data[0] or b"").split()) if u > last)[: self.page_size]
        if not uids:
            return [], f"{self.uidvalidity}:{last}"
        return [NewItem(f"{self.uidvalidity}:{u}") for u in uids], f"{self.uidvalidity}:{uids[-1]}"

    def _uid(self, ref: Ref) -> int:
        validity, uid = _parse_ref(ref.source_msg_ref)
        if validity != self.uidvalidity:
            raise ImapError(f"UIDVALIDITY of {self.folder} changed ({validity} -> {self.uidvalidity}); "
                            "this message can no longer be addressed")
        return uid

    def _fetch(self, ref: Ref, what: str) -> list[bytes]:
        assert self.imap is not None
        uid = self._uid(ref)
        data = _check(*self.imap.uid("FETCH", str(uid), what), "UID FETCH")
        parts = [item[1] for item in data if isinstance(item, tuple)]
        if not parts:
            raise ImapError(f"message UID {uid} is not in {self.folder} any more")
        return parts

    def _content(self, ref: Ref) -> Content:
        # One command: the message's size and at most MAX_MESSAGE_BYTES of it (a partial fetch).
        assert self.imap is not None
        uid = self._uid(ref)
        data = _check(*self.imap.uid("FETCH", str(uid), f"(RFC822.SIZE BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>)"),
                      "UID FETCH")
        item = next((x for x in data if isinstance(x, tuple)), None)
        if item is None:
            raise ImapError(f"message UID {uid} is not in {self.folder} any more")
        size = _size_of(item[0])
        if size is not None and size > MAX_MESSAGE_BYTES:
            log.info("imap message read in part", uid=uid, size=size, read=MAX_MESSAGE_BYTES)
        raw = item[1][:MAX_MESSAGE_BYTES]
        # compat32: headers stay raw strings until _header cuts them (the default policy's address
        # parser takes 0.3 s on a From: of 100 KB of '<').
        msg = _parse(raw)
        body = _text_of(msg)
        return Content(ref.source_msg_ref, _header(msg, "From", MAX_SENDER_CHARS),
                       _header(msg, "Subject", MAX_SUBJECT_CHARS), body, make_snippet(body))

    def _metadata(self, ref: Ref) -> Metadata:
        parts = self._fetch(ref, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.8192> BODY.PEEK[TEXT]<0.2048>)")
        header = _parse(parts[0])
        text = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
        return Metadata(_header(header, "Subject", MAX_SUBJECT_CHARS), make_snippet(text))

    def _archive(self, ref: Ref) -> None:
        assert self.imap is not None
        uid = str(self._uid(ref))
        if not self.archive_ready:
            self.imap.create(_quote(self.archive_folder))  # fails harmlessly when it exists
            self.archive_ready = True
        caps = {c.upper() for c in self.imap.capabilities}
        if "MOVE" in caps:
            _check(*self.imap.uid("MOVE", uid, _quote(self.archive_folder)), "UID MOVE")
            return
        _check(*self.imap.uid("COPY", uid, _quote(self.archive_folder)), "UID COPY")
        _check(*self.imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
        if "UIDPLUS" in caps:
            _check(*self.imap.uid("EXPUNGE", uid), "UID EXPUNGE")
        else:
            _check(*self.imap.expunge(), "EXPUNGE")

    async def list_new(self, cursor: str | None) -> tuple[list[NewItem], str | None]:
        return await self._call(lambda: self._list(cursor))

    async def fetch_content(self, ref: Ref) -> Content:
        return await self._call(lambda: self._content(ref))

    async def fetch_metadata(self, ref: Ref) -> Metadata:
        return await self._call(lambda: self._metadata(ref))

    async def archive(self, ref: Ref) -> None:
        await self._call(lambda: self._archive(ref))


_PLAINTEXT = ("tls and starttls are both off, so the password would cross the network in clear; "
              "turn one on, or set \"insecure\": true to allow a plaintext login")


def _port(config: dict[str, Any]) -> int:
    return int(config.get("port", 993 if config.get("tls", True) else 143))


class ImapConnector(Connector):
    name = "imap"
    pull = True

    def check_config(self, config: dict[str, Any]) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise InvalidInput(f"imap connector: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
        for key in ("host", "user", "password"):
            if not isinstance(config.get(key), str) or not config[key]:
                raise InvalidInput(f"imap connector: {key} is required (a string)")
        for key in ("folder", "archive_folder"):
            if key in config and (not isinstance(config[key], str) or not config[key]):
                raise InvalidInput(f"imap connector: {key} must be a non-empty string")
        for key in ("tls", "starttls", "insecure"):
            if key in config and not isinstance(config[key], bool):
                raise InvalidInput(f"imap connector: {key} must be true or false")
        if not config.get("tls", True) and not config.get("starttls") and not config.get("insecure"):
            raise InvalidInput(f"imap connector: {_PLAINTEXT}")
        port = config.get("port", 993)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput("imap connector: port must be a TCP port number")
        size = config.get("page_size", 100)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 10000:
            raise InvalidInput("imap connector: page_size must be an integer in 1..10000")

    def destinations(self, config: dict[str, Any]) -> list[tuple[str, int]]:
        return [(config["host"], _port(config))]

    @asynccontextmanager
    async def open(self, config: dict[str, Any]) -> AsyncIterator[SourceConnection]:
        connection = _ImapConnection(config)
        try:
            await trio.to_thread.run_sync(connection._connect)
        except Exception as exc:  # noqa: BLE001 - reported by kind; the detail goes to the log only
            raise classify_error(exc, f"{config.get('host')}:{_port(config)}") from exc
        try:
            yield connection
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(connection._close)
