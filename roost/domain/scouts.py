"""Scouts as the API and the console manage them: create, change, list, push items, retry an item.

Configs are checked by their plugins and against the destinations policy before they are stored,
their secrets sealed (``roost.storage.scout_config``; ``"***"`` keeps a stored secret, but not
when the config moves to another host). Each write publishes the wake-up the scout actor
(``roost.actors.scout``) starts runs on: ``SCOUT_CHANGED`` for a saved scout, ``SCOUT_ITEMS``
for pushed or retried items. A run itself is ``roost.domain.scouting``.
"""

from __future__ import annotations

from typing import Any, Sequence

from roost.errors import Conflict, InvalidInput
from roost.plugins.classifiers import classifiers
from roost.plugins.connectors import connectors
from roost.runtime.destinations import DestinationNotAllowed, check_destination
from roost.runtime.services import Services
from roost.runtime.topics import SCOUT_CHANGED, SCOUT_ITEMS
from roost.storage import scout_list, tenancy
from roost.storage import scouts as repo
from roost.storage.database import Row
from roost.storage.scout_config import REDACTED, SecretBox, is_secret_name, merge_redacted

# Where a config's secret goes: changing one of these needs the secret sent again.
_WHERE_KEYS = ("host", "port", "user", "username", "base_url", "url")


async def check_plugins(provider: str, config: dict[str, Any], classifier: str,
                        classifier_config: dict[str, Any]) -> None:
    """The plugins' own checks, then every host the configs name against the destinations policy.

    Raises:
        InvalidInput: an unknown plugin, a config it refuses, or ``destination_not_allowed``.
    """
    connector, judge = connectors.create(provider), classifiers.create(classifier)
    connector.check_config(config)
    judge.check_config(classifier_config)
    for host, port in connector.destinations(config) + judge.destinations(classifier_config):
        try:
            await check_destination(host, port)
        except DestinationNotAllowed as exc:
            raise InvalidInput(str(exc), code="destination_not_allowed") from exc


def _sends_redacted(config: Any) -> bool:
    if isinstance(config, dict):
        return any((is_secret_name(k) and v == REDACTED) or _sends_redacted(v) for k, v in config.items())
    if isinstance(config, list):
        return any(_sends_redacted(v) for v in config)
    return False


def _require_secret_again(key: str, new: dict[str, Any], old: dict[str, Any]) -> None:
    """InvalidInput when a change moves a config elsewhere (host, port, user, base_url) but keeps a secret by "***"."""
    moved = [k for k in _WHERE_KEYS if new.get(k) != old.get(k)]
    if moved and _sends_redacted(new):
        raise InvalidInput(f"{key}: changing {', '.join(moved)} needs the secret again (send it, not \"***\"), "
                           "so a stored secret never goes to a new destination", code="secret_required")


async def create_scout(services: Services, user_id: str, fields: dict[str, Any], *, actor: str) -> Row:
    """Check the plugins' configs, store the scout with its secrets sealed, and wake the actor.

    Raises:
        InvalidInput: see ``check_plugins``.
        NotFound: no such user.
    """
    await check_plugins(fields["provider"], fields["config"], fields["classifier"], fields["classifier_config"])
    box = SecretBox(services.settings.sealing_keys)
    fields = {**fields, "config": box.seal(fields["config"]),
              "classifier_config": box.seal(fields["classifier_config"])}
    row = await repo.create_scout(services.db, user_id=user_id, fields=fields, now=services.clock.now(), actor=actor)
    services.bus.publish(SCOUT_CHANGED, row["id"])
    return row


async def change_scout(services: Services, scout_id: str, changes: dict[str, Any], *, actor: str) -> Row:
    """Apply ``changes`` (``"***"`` keeps a stored secret), check the result, and wake the actor.

    Raises:
        InvalidInput: see ``check_plugins``; ``secret_required`` (see ``_require_secret_again``).
        NotFound: no such scout.
    """
    old = await repo.get_scout(services.db, scout_id)
    changes = dict(changes)
    box = SecretBox(services.settings.sealing_keys)
    for key in ("config", "classifier_config"):
        if key in changes:
            _require_secret_again(key, changes[key], box.open(old[key]))
            changes[key] = merge_redacted(changes[key], old[key])
    config = box.open(changes.get("config", old["config"]))
    cconfig = box.open(changes.get("classifier_config", old["classifier_config"]))
    await check_plugins(old["provider"], config, changes.get("classifier", old["classifier"]), cconfig)
    for key in ("config", "classifier_config"):
        if key in changes:
            changes[key] = box.seal(changes[key])
    row = await repo.update_scout(services.db, scout_id, changes, now=services.clock.now(), actor=actor)
    services.bus.publish(SCOUT_CHANGED, scout_id)
    return row


async def push_items(services: Services, scout_id: str, items: Sequence[repo.NewItem]) -> None:
    """Store pushed items for triage (bodies kept only until the verdict) and wake the scout.

    Raises:
        Conflict: the scout is not a push scout (``not_a_push_scout``) or is disabled (``scout_disabled``).
        NotFound: no such scout.
    """
    scout = await repo.get_scout(services.db, scout_id)
    if connectors.create(scout["provider"]).pull:
        raise Conflict(f"scout {scout_id} uses the {scout['provider']!r} connector; only push scouts take items",
                       code="not_a_push_scout")
    if not scout["enabled"]:
        raise Conflict(f"scout {scout_id} is disabled", code="scout_disabled")
    await repo.push_items(services.db, scout, items, now=services.clock.now())
    services.bus.publish(SCOUT_ITEMS, scout_id)


async def list_scouts(services: Services, *, user_id: str | None, provider: str | None, state: str | None,
                      limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of scouts, filtered by user, provider and state (``scout_list`` defines the states),
    each with its item ``counts``.

    Raises:
        NotFound: no such user.
        InvalidInput: no connector is named ``provider`` (code ``unknown_connector``).
    """
    if user_id is not None:
        await tenancy.get_user(services.db, user_id)
    if provider is not None:
        connectors.check(provider)
    result = await scout_list.list_scouts(services.db, user_id=user_id, provider=provider, state=state,
                                          limit=limit, cursor=cursor)
    counts = await scout_list.item_counts_of(services.db, [row["id"] for row in result["items"]])
    return {**result, "items": [{**row, "counts": counts[row["id"]]} for row in result["items"]]}


async def retry_item(services: Services, scout_id: str, item_id: str, *, actor: str) -> Row:
    """Put a failed item of the scout back to pending (``repo.retry_item``) and wake the scout to triage it.

    Raises:
        NotFound: no such item in that scout.
        Conflict: the item is not failed (``item_not_failed``).
    """
    row = await repo.retry_item(services.db, scout_id, item_id, now=services.clock.now(), actor=actor)
    services.bus.publish(SCOUT_ITEMS, scout_id)
    return row
