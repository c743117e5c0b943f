"""Every plugin roost can use, of every kind, for ``roost plugins``: kind, name, and where it comes from.

Kinds: connectors, classifiers and assessors (``roost.plugins.registry`` registries), session
processors (``roost.plugins.processors``) and mail transports (``roost.plugins.transports``). Each
plugin is ``built-in`` or comes from an installed package's entry point (the group, the object it
names, and the package).
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("connector", "classifier", "assessor", "session processor", "mail transport")


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    source: str


def catalog() -> list[PluginInfo]:
    """Every plugin, by kind (in ``KINDS`` order) then name."""
    from roost.plugins import processors, transports
    from roost.plugins.registry import all_registries

    by_kind: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
    for registry in all_registries():
        by_kind.setdefault(registry.kind, {}).update(registry.sources())
    by_kind["session processor"] = processors.sources()
    by_kind["mail transport"] = transports.sources()
    return [PluginInfo(kind, name, source) for kind, found in by_kind.items() for name, source in sorted(found.items())]
