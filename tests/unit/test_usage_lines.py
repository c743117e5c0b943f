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
    templates = [
        # the key written with \u escapes: no "usage" bytes in the line
        '{"timestamp": "STAMP", "requestId": "rN", "message": {MSG, "\\u0075sage": {COUNTS}}}',
        '{"timestamp": "STAMP", "requestId": "sN", "message": {MSG, "us\\u0061ge": {COUNTS}}}',
        '{"timestamp": "STAMP", "requestId": "tN", "message": {MSG, "usag\\u0065": {COUNTS}}}',
        # whitespace around the key, keys in another order; usage nested elsewhere (counts nothing)
        '{ "message" : { "usage" :{COUNTS} , MSG }, "timestamp":"STAMP" ,"requestId":"uN"}',
        '{"toolUseResult": {"usage": {"output_tokens": 999}}, "timestamp": "STAMP", "message": {MSG}}',
        # "usage" only inside a string, after an escaped quote
        '{"type": "user", "message": {"content": "the \\"usage\\" field"}, "timestamp": "STAMP"}',
        # the standard library reads these, orjson does not: NaN, an integer beyond 64 bits, a lone surrogate
        '{"timestamp": "STAMP", "requestId": "vN", "x": NaN, "message": {MSG, "usage": {COUNTS}}}',
        '{"timestamp": "STAMP", "requestId": "wN", "message": {MSG, "usage": {"input_tokens": BIG}}}',
        '{"timestamp": "STAMP", "requestId": "xN", "s": "\\ud800", "message": {MSG, "usage": {COUNTS}}}',
        # two letters of the key escaped, beside a control-character escape
        '{"timestamp": "STAMP", "requestId": "yN", "ansi": "\\u001b[0m", '
        '"message": {MSG, "\\u0075s\\u0061ge": {COUNTS}}}',
        # a CRLF line ending, and a line that is not JSON at all
        '{"timestamp": "STAMP", "requestId": "zN", "message": {MSG, "usage": {COUNTS}}}\r',
        '{"usage": broken',
        # UTF-16 (json.loads of bytes detects it): NULs between the letters
        '{"timestamp": "STAMP", "requestId": "qN", "message": {MSG, "usage": {COUNTS}}}',
    ]
    filled = [t.replace("STAMP", stamp).replace("MSG", msg).replace("COUNTS", COUNTS).replace("BIG", str(2**70))
              .replace("N\"", f"{n}\"") for t in templates]
    out = [line.encode() for line in filled[:-1]]
    out.append(b"\xef\xbb\xbf" + out[3])  # a UTF-8 BOM before a line (json.loads of bytes accepts it)
    out.append(filled[-1].encode("utf-16-le"))
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
