"""Composing a message's bytes: every shape parses back with the email package as it went in."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage

import pytest

from roost.plugins.transports.message import compose, encode_body, envelope_address, header

DATE = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
LONG_URL = "https://roost.example/unsubscribe?token=usr_000199.XrELAUBlcS6r9bO49IpZL6hgNZmUMy6RRBYkDPEOShs"


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def content(part: EmailMessage) -> str:
    return part.get_content().replace("\r\n", "\n")


def digest_like(**overrides) -> dict:
    values = {
        "sender": "roost <noreply@roost.example>", "to": "ann@example.com", "subject": "Your daily digest",
        "date": DATE, "message_id": "<msg_1@roost.mail>", "text": "Hello Ann,\n\n  * 2 x comment\n",
        "html": '<p class="x">Hello <b>Ann</b></p>\n',
        "headers": {"List-Unsubscribe": f"<{LONG_URL}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }
    values.update(overrides)
    return values


def test_a_digest_parses_back_with_its_headers_and_both_parts() -> None:
    mail = compose(**digest_like())
    msg = parse(mail.data)
    assert (msg["From"], msg["To"], msg["Subject"]) == ("roost <noreply@roost.example>", "ann@example.com",
                                                       "Your daily digest")
    assert msg["Date"].datetime == DATE and msg["Message-ID"] == "<msg_1@roost.mail>"
    assert msg["MIME-Version"] == "1.0" and msg.get_content_type() == "multipart/alternative"
    assert content(msg.get_body(("plain",))) == "Hello Ann,\n\n  * 2 x comment\n"
    assert content(msg.get_body(("html",))) == '<p class="x">Hello <b>Ann</b></p>\n'
    assert [p.get_content_charset() for p in msg.iter_parts()] == ["utf-8", "utf-8"]
    assert not msg.defects and not any(p.defects for p in msg.iter_parts())
    assert (mail.sender, mail.recipients, mail.smtputf8) == ("noreply@roost.example", ("ann@example.com",), False)


def test_every_line_ends_in_crlf_as_on_the_wire() -> None:
    data = compose(**digest_like(text="one\ntwo\r\nthree\rfour")).data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")


def test_a_long_list_unsubscribe_url_is_written_as_it_is_not_encoded() -> None:
    # RFC 2369/8058: clients look for "<https://...>"; encoded-words there hide the link.
    data = compose(**digest_like()).data
    assert f"\r\nList-Unsubscribe: <{LONG_URL}>\r\n".encode() in data
    assert b"=?utf-8?" not in data
    assert parse(data)["List-Unsubscribe"] == f"<{LONG_URL}>"


def test_a_long_ascii_header_is_folded_at_spaces() -> None:
    subject = " ".join(f"word{i}" for i in range(40))
    line = header("Subject", subject)
    assert all(len(part) <= 78 for part in line.split("\r\n")) and line.count("\r\n ") >= 2
    assert parse(compose(**digest_like(subject=subject)).data)["Subject"] == subject


def test_a_header_word_longer_than_998_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than a line"):
        compose(**digest_like(headers={"X-Long": "x" * 1000}))


def test_line_breaks_in_a_header_value_cannot_add_a_header() -> None:
    msg = parse(compose(**digest_like(subject="Hi\r\nBcc: victim@example.com\n\nbody?")).data)
    assert msg["Bcc"] is None and msg["Subject"] == "Hi Bcc: victim@example.com body?"


def test_non_ascii_subject_and_display_names_are_encoded_words() -> None:
    mail = compose(**digest_like(sender="Zoë Team <team@roost.example>", to="Ünal <unal@example.com>",
                                 subject="Grüße: 3 Änderungen " + "lang " * 20))
    head = mail.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and not mail.smtputf8
    msg = parse(mail.data)
    assert msg["Subject"] == "Grüße: 3 Änderungen " + ("lang " * 20).strip()
    assert msg["From"].addresses[0].display_name == "Zoë Team"
    assert msg["To"].addresses[0].addr_spec == "unal@example.com"
    assert mail.recipients == ("unal@example.com",)


def test_a_non_ascii_address_makes_an_smtputf8_message() -> None:
    mail = compose(**digest_like(to="jürgen@exämple.de"))
    assert mail.smtputf8 and mail.recipients == ("jürgen@exämple.de",)
    assert "To: jürgen@exämple.de\r\n".encode() in mail.data


def test_non_ascii_or_long_lines_are_quoted_printable_and_round_trip() -> None:
    text = "Grüße = gut\ntrailing space \n" + "y" * 1200 + "\n"
    cte, body = encode_body(text)
    assert cte == "quoted-printable" and max(len(line) for line in body.split(b"\r\n")) <= 76
    msg = parse(compose(**digest_like(text=text, html=None)).data)
    assert msg.get_content_type() == "text/plain" and msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(msg) == text


def test_plain_ascii_with_short_lines_is_7bit_as_written() -> None:
    assert encode_body("a\nb") == ("7bit", b"a\r\nb\r\n")
    assert encode_body("x" * 998)[0] == "7bit" and encode_body("x" * 999)[0] == "quoted-printable"


def test_the_same_row_composes_to_the_same_bytes_so_a_resend_is_identical() -> None:
    assert compose(**digest_like()).data == compose(**digest_like()).data
    assert compose(**digest_like()).data != compose(**digest_like(message_id="<msg_2@roost.mail>")).data


def test_a_body_containing_the_boundary_gets_another_one() -> None:
    first = compose(**digest_like()).data
    boundary = parse(first).get_boundary()
    msg = parse(compose(**digest_like(text=f"--{boundary}\nsneaky\n")).data)
    assert msg.get_boundary() != boundary
    assert content(msg.get_body(("plain",))) == f"--{boundary}\nsneaky\n"


@pytest.mark.parametrize(("value", "address"), [
    ("ann@example.com", "ann@example.com"),
    ("roost <roost@localhost>", "roost@localhost"),
    ('"Ann, B." <ann@example.com>', "ann@example.com"),
])
def test_the_envelope_takes_the_bare_address(value: str, address: str) -> None:
    assert envelope_address(value) == address
