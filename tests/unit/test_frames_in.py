"""Plain text frames read without wsproto: exactly the ones wsproto would take as plain, in order."""

from __future__ import annotations

import struct

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from roost.http.socket.frames_in import take_text_frames

LIMIT = 64 * 1024


def client() -> Connection:
    """A client side past its handshake: it masks every frame with a fresh random key."""
    return Connection(ConnectionType.CLIENT)


def test_masked_text_frames_are_read_in_order_up_to_the_first_other_frame() -> None:
    ws = client()
    texts = ['{"type":"scout_proposal_ack","proposal_id":"prp_1"}', "ü" * 300, "x" * 125, "y" * 126, "z"]
    data = b"".join(ws.send(TextMessage(data=t)) for t in texts)
    ping = ws.send(Ping(b"p"))
    got, used, wait = take_text_frames(data + ping + ws.send(TextMessage(data="after")), LIMIT)
    assert got == texts and used == len(data) and not wait


def test_a_frame_cut_anywhere_is_kept_whole_for_the_next_read() -> None:
    ws = client()
    data = ws.send(TextMessage(data="a" * 20)) + ws.send(TextMessage(data="b" * 300))
    first = len(ws.send(TextMessage(data="a" * 20)))
    for cut in range(1, len(data)):
        got, used, wait = take_text_frames(data[:cut], LIMIT)
        assert wait == (cut != first)  # at the boundary nothing is left over
        assert used == (first if cut >= first else 0) and len(got) == (cut >= first)
        rest, used2, wait2 = take_text_frames(data[used:cut] + data[cut:], LIMIT)
        assert got + rest == ["a" * 20, "b" * 300] and not wait2


def frame(first: int, payload: bytes, *, masked: bool = True, length: bytes | None = None) -> bytes:
    n = len(payload)
    head = bytes((first,)) + (length if length is not None else bytes(((0x80 if masked else 0) | n,)))
    return head + (b"\x01\x02\x03\x04" if masked else b"") + bytes(b ^ (i % 4 + 1) for i, b in enumerate(payload))


@pytest.mark.parametrize("data", [
    frame(0x81, b"ping", masked=False),  # clients must mask: wsproto fails it (1002)
    frame(0xC1, b"ping"),  # RSV1 without an extension
    frame(0x82, b"bin"),  # binary
    frame(0x01, b"part"),  # not final: a fragment
    frame(0x80, b"cont"),  # a continuation
    frame(0x89, b"ping"),  # a ping
    frame(0x81, b"x" * 100, length=b"\xfe" + struct.pack("!H", 100)),  # 2-byte length for 100: not shortest
    frame(0x81, b"x" * 200, length=b"\xff" + struct.pack("!Q", 200)),  # 8-byte length
    frame(0x81, b""),  # empty
    frame(0x81, b"\xe2\x82"),  # invalid UTF-8: wsproto fails it (1007)
])
def test_every_other_frame_is_left_to_wsproto(data: bytes) -> None:
    assert take_text_frames(data + frame(0x81, b"later"), LIMIT) == ([], 0, False)


def test_a_frame_over_the_limit_is_left_to_wsproto_even_before_its_payload_arrives() -> None:
    ws = client()
    big = ws.send(TextMessage(data="x" * 1000))
    assert take_text_frames(big, 999) == ([], 0, False)
    assert take_text_frames(big[:10], 999) == ([], 0, False)
    assert take_text_frames(big, 1000) == (["x" * 1000], len(big), False)
