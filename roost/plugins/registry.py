"""Plugin registries: built-in plugins by name, plus any an installed package declares.

Connectors, classifiers and assessors each have one ``Registry`` bound to an entry-point group
such as ``roost.connectors`` (processors and transports load their own groups). An app adds its own by
declaring, in its packaging metadata::

    [project.entry-points."roost.connectors"]
    mybox = "myapp.scouting:MyBoxConnector"

The entry point names a factory (usually the class); it is loaded on first use, and a name
that a built-in already has is refused so a package cannot silently replace one.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, TypeVar

from roost.errors import InvalidInput
from roost.runtime.logging import get_logger

T = TypeVar("T")
log = get_logger()
REGISTRIES: list[Registry] = []  # every registry created, in order (``roost plugins`` lists them)


class Registry(Generic[T]):
    def __init__(self, group: str, kind: str):
        self.group = group
        self.kind = kind
        self._factories: dict[str, Callable[[], T]] = {}
        self._sources: dict[str, str] = {}  # name -> where it comes from (``roost plugins`` shows it)
        self._loaded = False
        REGISTRIES.append(self)

    def register(self, name: str, factory: Callable[[], T]) -> None:
        if name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory
        module = getattr(factory, "__module__", "") or ""
        self._sources[name] = "built-in" if module.split(".")[0] == "roost" else f"registered by {module}"

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._factories:
                log.warning("plugin name taken; ignored", group=self.group, name=ep.name, value=ep.value)
                continue
            try:
                self._factories[ep.name] = ep.load()
                self._sources[ep.name] = entry_point_source(ep)
            except Exception as exc:  # a broken plugin must not stop the others
                log.error("plugin failed to load", group=self.group, name=ep.name, error=repr(exc))

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def sources(self) -> dict[str, str]:
        """Each plugin's name and where it comes from: ``built-in`` or its entry point and package."""
        self._load_entry_points()
        return dict(sorted(self._sources.items()))

    def create(self, name: str) -> T:
        """A new instance of the plugin ``name``.

        Raises:
            InvalidInput: no plugin of this kind has that name.
        """
        self._load_entry_points()
        factory = self._factories.get(name)
        if factory is None:
            raise InvalidInput(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}",
                               code=f"unknown_{self.kind}")
        return factory()

    def check(self, name: str) -> str:
        """``name`` if a plugin has it (for validating input), else InvalidInput."""
        self._load_entry_points()
        if name not in self._factories:
            raise InvalidInput(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}",
                               code=f"unknown_{self.kind}")
        return name


def entry_point_source(ep: EntryPoint) -> str:
    """Where a plugin loaded from ``ep`` comes from, for a person: the entry point and its package."""
    dist = getattr(ep, "dist", None)
    package = f" (package {dist.name} {dist.version})" if dist is not None else ""
    return f"entry point {ep.group}: {ep.value}{package}"


def all_registries() -> list[Registry]:
    """Every plugin registry of the package (importing each ``roost.plugins`` module once)."""
    import importlib
    import pkgutil

    import roost.plugins

    for module in pkgutil.walk_packages(roost.plugins.__path__, "roost.plugins."):
        importlib.import_module(module.name)
    return list(REGISTRIES)
