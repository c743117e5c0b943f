"""Query-string values a console page reads, checked before anything is looked up."""

from __future__ import annotations

import re

from quart import request


def matched_arg(name: str, pattern: re.Pattern[str], refuse: type[Exception], why: str) -> str | None:
    """The query value ``name`` when it matches ``pattern``; None when it is absent or empty.

    Pages differ in what a value may look like and in the error a bad one raises (both end as a 400
    page), not in this check, so they share it.

    Raises:
        refuse: ``f"{name} {why}"`` for any other value.
    """
    value = request.args.get(name)
    if value in (None, ""):
        return None
    if not pattern.match(value):
        raise refuse(f"{name} {why}")
    return value
