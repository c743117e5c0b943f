"""Opaque, time-ordered ids: a prefix, then 48 bits of milliseconds and 80 random bits (base32).

Time order lets a list page by ``id > cursor`` with one index; the random part makes ids
unguessable, so a user cannot probe another user's rows by counting.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
