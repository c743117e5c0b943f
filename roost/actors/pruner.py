"""Pruner: deletes rows past their time to live, and ends work nobody will finish.

Each prune is a ``Prune``: a name and a domain operation ``(services, now) -> rows touched``
(``roost/serve.py`` lists them). A prune failing with a ``RoostError`` (the database, say) is
logged and the others still run, so one table's trouble does not keep another from being cleaned.
Any other error is a bug: it is logged with its traceback, the other prunes still run, and then
it is raised to the supervisor (restart budget, shown in status). The prunes run every
``prune_interval_s``, and with several processes only in the leader of ``pruner``
(``ctx.every(..., leader=...)``, ``roost.runtime.leadership``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from typing import Awaitable, Callable

import trio

from roost.errors import RoostError
from roost.runtime.actor import Actor, ActorContext
from roost.runtime.services import Services


@dataclass(frozen=True)
class Prune:
    name: str
    run: Callable[[Services, dt.datetime], Awaitable[int]]


class Pruner(Actor):
    name = "pruner"

    def __init__(self, prunes: list[Prune]):
        self.prunes = list(prunes)

    async def prune_once(self, ctx: ActorContext) -> dict[str, int]:
        now = ctx.services.clock.now()
        removed: dict[str, int] = {}
        bugs: list[Exception] = []
        for prune in self.prunes:
            try:
                removed[prune.name] = await prune.run(ctx.services, now)
            except RoostError as exc:  # one table's failure must not stop the others
                ctx.log.error("prune failed", prune=prune.name, error=exc.message)
            except Exception as exc:  # a bug: the other tables are still cleaned, then it goes up
                ctx.log.error("prune crashed", prune=prune.name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                bugs.append(exc)
        ctx.log.info("pruned", **removed)
        if bugs:
            raise bugs[0]
        return removed

    async def run(self, ctx: ActorContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # A singleton: with several processes only the leader of ``pruner`` prunes.
        await ctx.every(ctx.services.settings.prune_interval_s, partial(self.prune_once, ctx), leader=self.name)
