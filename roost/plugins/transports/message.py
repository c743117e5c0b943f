"""The bytes of an outgoing message (RFC 5322 with MIME), composed from an outbox row's fields.

Why not ``email.message.EmailMessage``: building and serialising one digest with it costs about
1.2 ms of CPU (every header parsed into objects and folded again, quoted-printable in pure
Python), 25 s for 20,000 digests; and its default policy wraps a long ``List-Unsubscribe`` URL in
RFC 2047 encoded-words, which no mail client reads as the ``<url>`` RFC 2369 asks for. roost sends
one shape of message (plain text, optionally with an HTML alternative, and a few headers), so it is
written here directly: ASCII header values as they are (folded at spaces), non-ASCII ones through
the email package's own encoder, bodies as 7bit or quoted-printable (``binascii``, in C). The
tests parse every shape back with the email package.
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import hashlib
import itertools
import re
from dataclasses import dataclass
from email import policy
from email.utils import format_datetime, parseaddr
from typing import Mapping

CRLF = "\r\n"
FOLD_AT = 78  # RFC 5322's "SHOULD" line length; 998 is the hard limit
MAX_LINE = 998
_SPACE = re.compile(r"\s+")
_BARE = re.compile(r"[^\s<>(),;:\"]+@[^\s<>(),;:\"]+")
_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "reply-to", "sender"})


@dataclass(frozen=True)
class Mail:
    """One message ready for a transport: the SMTP envelope and the message's bytes (CRLF line ends)."""

    sender: str  # envelope sender: the bare address of From
    recipients: tuple[str, ...]
    message_id: str
    subject: str
    data: bytes
    smtputf8: bool = False  # an address is not ASCII: the server must accept SMTPUTF8


def compose(*, sender: str, to: str, subject: str, date: dt.datetime, message_id: str, text: str,
            html: str | None = None, headers: Mapping[str, str] | None = None) -> Mail:
    """The message: text/plain, or multipart/alternative with an HTML part when ``html`` is given.

    Raises:
        ValueError: a header cannot be written (an ASCII word longer than a line may be).
    """
    envelope_from, envelope_to = envelope_address(sender), envelope_address(to)
    smtputf8 = not (envelope_from.isascii() and envelope_to.isascii())
    lines = [
        header("From", sender, utf8=smtputf8), header("To", to, utf8=smtputf8), header("Subject", subject),
        header("Date", _date(date)), header("Message-ID", message_id),
    ]
    lines.extend(header(name, value) for name, value in (headers or {}).items())
    lines.append("MIME-Version: 1.0" + CRLF)
    if html is None:
        cte, body = encode_body(text)
        lines.append(f'Content-Type: text/plain; charset="utf-8"{CRLF}Content-Transfer-Encoding: {cte}{CRLF}')
        data = "".join(lines).encode("utf-8") + CRLF.encode() + body
    else:
        parts = [("plain", *encode_body(text)), ("html", *encode_body(html))]
        boundary = _boundary(message_id, parts)
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}')
        chunks = ["".join(lines).encode("utf-8")]
        for subtype, cte, body in parts:
            chunks.append(f'{CRLF}--{boundary}{CRLF}Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
                          f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}".encode("ascii"))
            chunks.append(body)
        chunks.append(f"{CRLF}--{boundary}--{CRLF}".encode("ascii"))
        data = b"".join(chunks)
    return Mail(sender=envelope_from, recipients=(envelope_to,), message_id=message_id, subject=subject, data=data,
                smtputf8=smtputf8)


def envelope_address(value: str) -> str:
    """The bare address of a header's address (``roost <r@x.example>`` -> ``r@x.example``)."""
    if _BARE.fullmatch(value):
        return value  # already bare: the usual case, and 20x cheaper than parsing it
    return _parsed_address(value)


@functools.lru_cache(maxsize=64)
def _parsed_address(value: str) -> str:
    return parseaddr(value)[1] or value


@functools.lru_cache(maxsize=256)
def _date(value: dt.datetime) -> str:
    return format_datetime(value)  # a tick's digests share one created_at


def header(name: str, value: str, *, utf8: bool = False) -> str:
    """One header line (CRLF included). Runs of whitespace, line breaks included, become one space,
    so no value can end the header block or add a header of its own.

    ASCII values are written as they are, folded at spaces; others are encoded by the email package
    in RFC 2047 words, except addresses in an SMTPUTF8 message (``utf8``), which stay UTF-8.
    """
    value = _SPACE.sub(" ", value).strip()
    if value.isascii():
        return _fold(name, value)
    if utf8 and name.lower() in _ADDRESS_HEADERS:
        return _fold(name, value)  # RFC 6532: an SMTPUTF8 message carries UTF-8 headers as they are
    # A header object, not the string: the policy writes a short string as it is, unencoded.
    return policy.SMTP.header_factory(name, value).fold(policy=policy.SMTP)


def _fold(name: str, value: str) -> str:
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line + CRLF
    first, *rest = value.split(" ")
    out, current = [], f"{name}: {first}"
    for word in rest:
        if len(current) + 1 + len(word) > FOLD_AT:
            out.append(current)
            current = " " + word  # the continuation line starts with the space it was folded at
        else:
            current = f"{current} {word}"
    out.append(current)
    if any(len(part) > MAX_LINE for part in out):
        raise ValueError(f"the {name} header has a word longer than a line may be ({MAX_LINE} characters)")
    return CRLF.join(out) + CRLF


def encode_body(text: str) -> tuple[str, bytes]:
    """A text part's Content-Transfer-Encoding and its encoded bytes with CRLF line ends: 7bit when
    the text is ASCII with no line over 998 characters, quoted-printable otherwise."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and (len(text) <= MAX_LINE or max(map(len, text.split("\n"))) <= MAX_LINE):
        return "7bit", text.replace("\n", CRLF).encode("ascii")
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _boundary(message_id: str, parts: list[tuple[str, str, bytes]]) -> str:
    """Derived from the Message-ID, so a resend is the same bytes; "=_" cannot occur in
    quoted-printable text, and 7bit text is checked."""
    digest = hashlib.blake2b(message_id.encode("utf-8"), digest_size=12).hexdigest()
    for n in itertools.count():
        boundary = f"=_roost_{digest}" + (f"_{n}" if n else "")
        marker = boundary.encode("ascii")
        if not any(marker in body for _, _, body in parts):
            return boundary
    raise AssertionError("unreachable")
