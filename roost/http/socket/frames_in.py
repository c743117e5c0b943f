"""Received frames without wsproto, for the common case: whole, final, masked text frames.

A device acks every proposal with a frame of its own; on the server, wsproto took ~15-25 µs of
CPU to parse each one (its frame and message decoders, an incremental UTF-8 decoder per message,
the events, Hypercorn's message buffer), a third of the event loop's time per proposal (issue 21).
When the connection sits at a frame boundary (``RoostWSStream.handle``), ``take_text_frames``
reads the frames at the start of the received bytes that need none of that: FIN set, no RSV bit,
opcode text, masked (as a client's must be), a payload of 1 to 65,535 bytes in the shortest
length encoding, within the message limit, valid UTF-8. It stops at the first frame that is
anything else (a ping, a close, binary, a fragment, a bad one) and hands the rest to wsproto,
which then sees a stream that begins at a frame boundary, as if the frames taken had been parsed
by it: order, limits and errors (1002, 1007, 1009) stay wsproto's and roost's. A plain frame cut
by the end of a read is kept by the stream (at most 64 KiB) and read again with the next bytes.
"""

from __future__ import annotations

FIN_TEXT = 0x81  # FIN, no RSV bits, opcode 1 (text)
MASKED = 0x80


def take_text_frames(data: bytes, limit: int) -> tuple[list[str], int, bool]:
    """The plain text frames at the start of ``data`` (see the module doc) as text, how many bytes
    they took, and whether the bytes after them begin a plain frame not all received yet (to keep
    for the next read); ``limit`` is the largest payload taken (the message size limit)."""
    texts: list[str] = []
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] != FIN_TEXT:
            return texts, pos, False
        if end - pos < 2:
            return texts, pos, True
        second = data[pos + 1]
        n = second & 0x7F
        if not second & MASKED or n == 0 or n == 127:  # unmasked (refused), empty, or an 8-byte length
            return texts, pos, False
        head = 6
        if n == 126:
            if end - pos < 4:
                return texts, pos, True
            n = int.from_bytes(data[pos + 2:pos + 4])
            if n < 126:  # not the shortest encoding: wsproto refuses it
                return texts, pos, False
            head = 8
        if n > limit:
            return texts, pos, False
        start = pos + head
        if end < start + n:
            return texts, pos, True
        mask = data[start - 4:start]
        raw = (int.from_bytes(data[start:start + n], "little")
               ^ int.from_bytes((mask * ((n + 3) // 4))[:n], "little")).to_bytes(n, "little")
        try:
            texts.append(raw.decode())
        except UnicodeDecodeError:  # wsproto fails the connection (1007) on it
            return texts, pos, False
        pos = start + n
    return texts, pos, False
