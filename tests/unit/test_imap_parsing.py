"""How the imap connector reads a message it fetched: bounded headers, the body part it picks, HTML to text."""

from __future__ import annotations

from roost.plugins.connectors import MAX_BODY_CHARS, MAX_SENDER_CHARS
from roost.plugins.connectors.imap import _HEADER_CHARS, _header, _parse, _text_of


def test_header_values_are_cut_before_mime_parameters_are_parsed():
    # email's parameter parser is quadratic: this header alone took 17.8 s to parse uncut.
    raw = b"From: a@example.com\r\nContent-Type: multipart/mixed" + b";a" * 500_000 + b"\r\n\r\nbody\r\n"
    msg = _parse(raw)
    assert len(msg.get("Content-Type")) == _HEADER_CHARS
    assert _text_of(msg) == ""


def test_a_hostile_sender_and_html_body_are_bounded():
    raw = (b"From: " + b"<" * 100_000 + b"\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/html\r\n\r\n"
           + b"<" * 1_000_000)
    msg = _parse(raw)
    assert len(_header(msg, "From", MAX_SENDER_CHARS)) == MAX_SENDER_CHARS
    assert _header(msg, "Subject", 1000) == "café"
    assert len(_text_of(msg)) == MAX_BODY_CHARS


def test_plain_text_wins_over_html_and_attachments_are_skipped():
    raw = (b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
           b'--m\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="a.txt"\r\n\r\nnot me\r\n'
           b'--m\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
           b'--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n'
           b'--b\r\nContent-Type: text/plain; charset="iso-8859-1"\r\n'
           b'Content-Transfer-Encoding: quoted-printable\r\n\r\n'
           b'caf=E9\r\n--b--\r\n--m--\r\n')
    assert _text_of(_parse(raw)).strip() == "café"


def test_the_size_is_read_from_the_fetch_response():
    from roost.plugins.connectors.imap import _size_of

    assert _size_of(b"1 (UID 5 RFC822.SIZE 1100123 BODY[]<0> {1048576}") == 1100123
    assert _size_of(b"1 (UID 5 BODY[]<0> {10}") is None
