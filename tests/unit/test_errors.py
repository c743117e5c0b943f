"""The error tree drawn in ``roost.errors``' docstring is the tree of its classes, with the HTTP
statuses ``roost.http.errors`` really answers."""

from __future__ import annotations

import re

from roost import errors
from roost.http.errors import status_for

_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)\s+(?P<text>.*?)(?:\((?P<status>\d{3})\))?$")


def drawn_tree() -> dict[str, tuple[str | None, int | None]]:
    """Each class in the drawing: its drawn parent (None for a root) and its drawn HTTP status."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    drawn: dict[str, tuple[str | None, int | None]] = {}
    parents: list[str] = []  # the drawn ancestors of the current line, by depth
    for line in block.splitlines():
        match = _LINE.match(line[4:])
        assert match, f"not a line of the drawing: {line!r}"
        depth = len(match["indent"]) // 4
        parents = parents[:depth]
        status = int(match["status"]) if match["status"] else None
        drawn[match["name"]] = (parents[-1] if parents else None, status)
        parents.append(match["name"])
    return drawn


def class_tree() -> dict[str, str | None]:
    """Each exception class defined in ``roost.errors`` and its parent there (None for a root)."""
    defined = {name: cls for name, cls in vars(errors).items()
               if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == errors.__name__}
    tree: dict[str, str | None] = {}
    for name, cls in defined.items():
        ours = [base.__name__ for base in cls.__bases__ if base.__name__ in defined]
        assert len(ours) <= 1, f"{name} has two parents in roost.errors: {ours}"
        tree[name] = ours[0] if ours else None
    return tree


def test_the_drawn_tree_is_the_class_tree() -> None:
    assert {name: parent for name, (parent, _) in drawn_tree().items()} == class_tree()


def test_every_class_is_reached_from_the_two_roots() -> None:
    def walk(cls: type) -> set[str]:
        return {cls.__name__}.union(*(walk(sub) for sub in cls.__subclasses__() if sub.__module__ == errors.__name__))

    assert walk(errors.RoostError) | walk(errors.PluginFailure) == set(class_tree())


def test_the_drawn_statuses_are_the_ones_http_answers() -> None:
    for name, (_, status) in drawn_tree().items():
        cls = getattr(errors, name)
        if cls is errors.RoostError:
            assert status is None  # the root: each class below says its own
        elif issubclass(cls, errors.RoostError):
            assert status is not None, f"{name}: the drawing gives no HTTP status"
            assert status_for(cls.__new__(cls)) == status, name
        else:
            assert status is None, f"{name} is not a RoostError: it never reaches HTTP as itself"


def test_plugin_failures_are_not_roost_errors() -> None:
    """The plugin boundary passes a RoostError through as it is and wraps anything else in a PluginError."""
    assert not issubclass(errors.PluginFailure, errors.RoostError)
    assert issubclass(errors.TooDeep, ValueError)  # jsonlimits.loads raises ValueError like json.loads
