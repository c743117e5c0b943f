"""Checks that share one fresh world: a fresh database costs more than a check, so a test module runs
several checks on each world it makes.

A module makes ``checks = CheckGroups()``, puts ``@checks("group")`` on each check (an async function
of the world), and has one test ``@checks.parametrize()`` that awaits ``run(group, world)``: one case
a group, named by it, its checks in the order the module defines them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest

Check = Callable[[Any], Awaitable[None]]


class CheckGroups:
    """Named groups of checks, each group's checks in the order they were registered."""

    def __init__(self) -> None:
        self.groups: dict[str, list[Check]] = {}

    def __call__(self, group: str) -> Callable[[Check], Check]:
        """Register the decorated check in ``group`` (after the checks already there)."""

        def register(check: Check) -> Check:
            self.groups.setdefault(group, []).append(check)
            return check

        return register

    def parametrize(self) -> pytest.MarkDecorator:
        """Parametrize a test's ``group`` argument (a list of checks): one case a group, the group's name its id."""
        return pytest.mark.parametrize("group", list(self.groups.values()), ids=list(self.groups))


async def run(checks: list[Check], world: Any) -> None:
    """Await each check on ``world`` in turn."""
    for check in checks:
        await check(world)
