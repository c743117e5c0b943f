"""The ``imap`` connector: new mail by UID, fetched with BODY.PEEK, spam archived by MOVE.

Config::

    {"host": "imap.example.com", "port": 993, "tls": true, "starttls": false,
     "user": "ann@example.com", "password": "...", "folder": "INBOX",
     "archive_folder": "Archive", "page_size": 100, "timeout_s": 30}

The cursor is ``"<UIDVALIDITY>:<last UID>"`` and a ref is ``"<UIDVALIDITY>:<UID>"``: when the
server's UIDVALIDITY changes, old UIDs mean nothing, so listing starts again from the top of the
folder (the new refs differ from the old ones) and a ref from the old validity fails instead of
fetching some other message. Scouting never marks mail read (``BODY.PEEK``). Archiving uses
``UID MOVE`` where the server has it, else ``UID COPY`` + ``\\Deleted`` + expunge. imaplib blocks,
so every call runs in a worker thread on the session's one connection.
"""

from __future__ import annotations

import email
import email.policy
import html
import imaplib
import re
import ssl
from contextlib import asynccontextmanager
from email.message import EmailMessage
from typing import Any, AsyncIterator, Callable, TypeVar

import trio

from roost.errors import InvalidInput
from roost.plugins.connectors import Connector, ConnectorSession, Content, Metadata, Ref, make_snippet
from roost.storage.scouts import NewItem

T = TypeVar("T")
_KEYS = {"host", "port", "tls", "starttls", "user", "password", "folder", "archive_folder", "page_size",
         "timeout_s"}


class ImapError(Exception):
    """The server refused a command (the scout records it and retries the item later)."""


def _check(typ: str, data: Any, what: str) -> Any:
    if typ != "OK":
        raise ImapError(f"IMAP {what} failed: {typ} {data!r}")
    return data


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError):
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return text


def _parse_ref(ref: str) -> tuple[int, int]:
    validity, _, uid = ref.partition(":")
    return int(validity), int(uid)


class _ImapSession(ConnectorSession):
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.folder = config.get("folder", "INBOX")
        self.archive_folder = config.get("archive_folder", "Archive")
        self.page_size = int(config.get("page_size", 100))
        self.imap: imaplib.IMAP4 | None = None
        self.uidvalidity: int | None = None
        self.archive_ready = False

    async def _call(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    def _connect(self) -> None:
        c = self.config
        tls = c.get("tls", True)
        port = int(c.get("port", 993 if tls else 143))
        timeout = float(c.get("timeout_s", 30))
        if tls:
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(c["host"], port, ssl_context=ssl.create_default_context(),
                                                    timeout=timeout)
        else:
            imap = imaplib.IMAP4(c["host"], port, timeout=timeout)
            if c.get("starttls"):
                imap.starttls(ssl.create_default_context())
        try:
            imap.login(c["user"], c["password"])
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
        raw = self._fetch(ref, "(BODY.PEEK[])")[0]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = _text_of(msg)  # type: ignore[arg-type]
        return Content(ref.source_msg_ref, str(msg.get("From", "")), str(msg.get("Subject", "")), body,
                       make_snippet(body))

    def _metadata(self, ref: Ref) -> Metadata:
        parts = self._fetch(ref, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.2048>)")
        header = email.message_from_bytes(parts[0], policy=email.policy.default)
        text = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
        return Metadata(str(header.get("Subject", "")), make_snippet(text))

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
        for key in ("tls", "starttls"):
            if key in config and not isinstance(config[key], bool):
                raise InvalidInput(f"imap connector: {key} must be true or false")
        port = config.get("port", 993)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidInput("imap connector: port must be a TCP port number")
        size = config.get("page_size", 100)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 10000:
            raise InvalidInput("imap connector: page_size must be an integer in 1..10000")

    @asynccontextmanager
    async def open(self, config: dict[str, Any]) -> AsyncIterator[ConnectorSession]:
        session = _ImapSession(config)
        try:
            await trio.to_thread.run_sync(session._connect)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise ImapError(f"cannot open {config.get('host')}:{config.get('port')}: {exc}") from exc
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(session._close)
