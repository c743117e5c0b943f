"""Decoding of device WebSocket frames (``roost.runtime.frames.parse``): every bad frame is an
``InvalidInput`` with ``bad_json`` or ``bad_frame``, never another exception."""

from __future__ import annotations

import json

import pytest

from roost.errors import InvalidInput
from roost.runtime.frames import parse


@pytest.mark.parametrize(("raw", "code"), [
    ("[" * 200_000, "bad_json"),  # RecursionError inside json: still bad_json
    ("{\"type\": \"ping\", \"x\": " + "[" * 40 + "]" * 40 + "}", "bad_json"),  # over the depth limit
    ("{nope", "bad_json"),
    (b"{}", "bad_frame"),
    (None, "bad_frame"),  # how Quart hands over an empty binary frame
    ("[]", "bad_frame"),
    ("{\"type\": 1}", "bad_frame"),
    (json.dumps({"type": "scout_proposal_ack", "proposal_id": "a\x00b"}), "bad_frame"),  # PostgreSQL refuses NUL
    ("{\"type\": \"send_result\", \"id\": \"\\ud800\"}", "bad_frame"),  # and lone surrogates
    ("{\"type\": \"x\", \"\\u0000\": 1}", "bad_frame"),  # keys too
])
def test_a_bad_frame_is_invalid_input_with_a_frame_code(raw, code) -> None:
    with pytest.raises(InvalidInput) as info:
        parse(raw)
    assert info.value.code == code


def test_well_formed_frames_parse_including_escapes_and_paired_surrogates() -> None:
    assert parse('{"type": "ping", "s": "caf\\u00e9 \\ud83d\\ude00 \\\\u0000"}') == {
        "type": "ping", "s": "café \U0001f600 \\u0000"}
    assert parse(json.dumps({"type": "ping", "deep": [[[[1]]]]}))["deep"] == [[[[1]]]]
