"""Deadlines for shielded cleanup: a shield keeps a cancel out, never a server that stopped answering."""

from __future__ import annotations

import trio


def shielded_deadline(limit_s: float, after_cancel_s: float) -> float:
    """The deadline for a shielded cleanup starting now.

    At most ``limit_s`` from now, and at most ``after_cancel_s`` past the moment the enclosing
    scopes cancel the caller (their deadline, such as a drain's grace period, read before the shield
    hides it), or from now when the caller is cancelled already. So a cleanup that began during a
    drain ends soon after the grace period however long its own limit is.
    """
    now = trio.current_time()
    return min(now + limit_s, max(trio.current_effective_deadline(), now) + after_cancel_s)
