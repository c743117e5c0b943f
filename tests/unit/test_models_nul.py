"""Request bodies refuse NUL anywhere in their text, also through the fast path that skips the walk."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from roost.http.scouts import PushBody


@pytest.mark.parametrize("item", [
    {"source_msg_ref": "r\x00"},
    {"source_msg_ref": "r", "body": "a\\x00b\x00"},  # a literal backslash-x00 beside a real NUL
    {"source_msg_ref": "r", "subject": "\x00", "sender": "\\x00"},
])
def test_a_nul_in_any_pushed_string_is_refused(item: dict) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        PushBody.model_validate({"items": [{"source_msg_ref": "ok"}, item]})


def test_a_nul_in_an_unknown_key_is_refused_and_text_that_only_spells_it_is_taken() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        PushBody.model_validate({"items": [{"source_msg_ref": "r"}], "x\x00": 1})
    body = PushBody.model_validate({"items": [{"source_msg_ref": "r", "body": "a \\x00 and \\u0000 as text"}]})
    assert body.items[0].body == "a \\x00 and \\u0000 as text"
