"""The usage processor's line skipping never drops a line that counts.

``UsageProcessor.extract`` parses only the lines that can carry usage; the reference parses every
line. On generated transcripts mixed with awkward lines (escaped keys, odd nesting, NaN, huge
integers, lone surrogates, a BOM, CRLF, UTF-16), both must fold to the same messages.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from roost.plugins.processors.usage import UsageProcessor, parse_line
from roost.storage.usage import fold
from tests.support.transcripts import generate_session

COUNTS = '"input_tokens": 7, "output_tokens": 11, "cache_creation_input_tokens": 13, "cache_read_input_tokens": 17'


def awkward(n: int) -> list[bytes]:
    """Lines that carry usage in ways a naive substring test would miss, and lines that only look like it."""
    stamp = f"2025-07-{1 + n % 28:02d}T10:00:00.000Z"
    msg = f'"id": "msg_awk_{n}", "model": "claude-x"'
    lines = [
        # the key written with \u escapes: no "usage" bytes in the line
        '{"timestamp": "%s", "requestId": "r%d", "message": {%s, "\\u0075sage": {%s}}}' % (stamp, n, msg, COUNTS),
        '{"timestamp": "%s", "requestId": "s%d", "message": {%s, "us\\u0061ge": {%s}}}' % (stamp, n, msg, COUNTS),
        '{"timestamp": "%s", "requestId": "t%d", "message": {%s, "usag\\u0065": {%s}}}' % (stamp, n, msg, COUNTS),
        # whitespace around the key, keys in another order, nested a level deeper elsewhere too
        '{ "message" : { "usage" :{%s} , %s }, "timestamp":"%s" ,"requestId":"u%d"}' % (COUNTS, msg, stamp, n),
        '{"toolUseResult": {"usage": {"output_tokens": 999}}, "timestamp": "%s", "message": {%s}}' % (stamp, msg),
        # "usage" only inside a string, and a string holding an escaped quote before it
        '{"type": "user", "message": {"content": "the \\"usage\\" field"}, "timestamp": "%s"}' % stamp,
        # the standard library reads these, orjson does not: NaN, an integer beyond 64 bits, a lone surrogate
        '{"timestamp": "%s", "requestId": "v%d", "x": NaN, "message": {%s, "usage": {%s}}}' % (stamp, n, msg, COUNTS),
        ('{"timestamp": "%s", "requestId": "w%d", "message": {%s, "usage": {"input_tokens": %d, "output_tokens": 3}}}'
         % (stamp, n, msg, 2**70)),
        '{"timestamp": "%s", "requestId": "x%d", "s": "\\ud800", "message": {%s, "usage": {%s}}}'
        % (stamp, n, msg, COUNTS),
        # a key escaped with an upper-case hex digit where it has one (none for u, s, a, g, e) and a control escape
        '{"timestamp": "%s", "requestId": "y%d", "ansi": "\\u001b[0m", "message": {%s, "\\u0075s\\u0061ge": {%s}}}'
        % (stamp, n, msg, COUNTS),
        # a CRLF line ending, and a line that is not JSON at all
        '{"timestamp": "%s", "requestId": "z%d", "message": {%s, "usage": {%s}}}\r' % (stamp, n, msg, COUNTS),
        '{"usage": broken',
    ]
    out = [line.encode() for line in lines]
    out.append(b"\xef\xbb\xbf" + out[3])  # a UTF-8 BOM before a line (json.loads of bytes accepts it)
    utf16 = ('{"timestamp": "%s", "requestId": "q%d", "message": {%s, "usage": {%s}}}'
             % (stamp, n, msg, COUNTS)).encode("utf-16-le")
    out.append(utf16.replace(b"\n\x00", b""))
    return out


def tree_blobs(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    blobs = []
    for i in range(6):
        session = generate_session(rng, start=dt.datetime(2025, 6, 1, tzinfo=dt.UTC) + dt.timedelta(days=i), turns=8)
        lines = [line.encode() for line in session.lines]
        for j, extra in enumerate(awkward(i)):
            lines.insert(rng.randrange(len(lines) + 1), extra)
            if j % 3 == 0:  # a copy with plain ASCII too, so a block of ordinary lines meets the odd ones
                lines.insert(rng.randrange(len(lines) + 1), json.dumps({"type": "user", "n": j}).encode())
        blobs.append(b"\n".join(lines) + b"\n")
    return blobs


def reference(blob: bytes) -> list:
    """Parse every line, no skipping."""
    return [item for line in blob.split(b"\n") if (item := parse_line(line)) is not None]


def totals(items: list) -> dict:
    return {(m.message_id, m.request_id): (m.day, m.model, m.counts) for m in fold(items)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_skipping_lines_keeps_every_line_that_carries_usage(seed: int) -> None:
    processor = UsageProcessor()
    for blob in tree_blobs(seed):
        fast = processor.extract("dev", blob)
        slow = reference(blob)
        assert totals(fast) == totals(slow)
        assert len(fast) == len(slow)


def test_the_awkward_lines_do_count_so_the_comparison_can_fail() -> None:
    lines = awkward(0)
    counted = {m.request_id for m in (parse_line(line) for line in lines) if m is not None}
    assert {"r0", "s0", "t0", "u0", "v0", "w0", "x0", "y0", "z0", "q0"} <= counted
    for line in lines[:3]:  # escaped keys: no "usage" bytes, yet they count
        assert b'"usage"' not in line
        assert len(UsageProcessor().extract("dev", line + b"\n")) == 1


def test_a_block_of_ordinary_lines_is_searched_and_the_escaped_key_is_found_within_it() -> None:
    blob = b"".join(line + b"\n" for line in awkward(3))
    plain = b'{"type": "user", "message": {"content": "no counts here"}}\n' * 50
    processor = UsageProcessor()
    assert totals(processor.extract("dev", plain + blob + plain)) == totals(reference(plain + blob + plain))
    assert processor.extract("dev", plain) == []
