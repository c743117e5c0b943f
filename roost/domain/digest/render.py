"""Mail bodies from Jinja2 templates: the package's ``roost/templates`` unless the app's own
directory (``ROOST_TEMPLATES_DIR``) has a file of the same name.

Templates: ``digest_subject.txt.j2``, ``digest.txt.j2``, ``digest.html.j2`` and the same three
for a single ``notification``. The HTML environment escapes every value; the text one does not.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined

SAMPLES_PER_KIND = 3


@dataclass
class KindGroup:
    event_kind: str
    count: int = 0
    unread: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TopicGroup:
    topic: str
    count: int = 0
    kinds: list[KindGroup] = field(default_factory=list)


def group_items(items: Iterable[Any], *, sample: Callable[[Any], Any] = lambda item: item) -> list[TopicGroup]:
    """Topics most active first, then event kinds by count (ties by name); each kind keeps its
    newest few items as samples (passed through ``sample``) and counts those still unread.
    ``items``: mappings with topic, event_kind and read_at, oldest first."""
    kinds: dict[tuple[str, str], KindGroup] = {}
    for item in items:
        key = (item["topic"], item["event_kind"])
        group = kinds.get(key)
        if group is None:
            group = kinds[key] = KindGroup(key[1])
        group.count += 1
        if item["read_at"] is None:
            group.unread += 1
        group.samples.append(item)
    topics: dict[str, list[KindGroup]] = {}
    for (topic, _), group in kinds.items():
        group.samples = [sample(i) for i in group.samples[-SAMPLES_PER_KIND:][::-1]]
        topics.setdefault(topic, []).append(group)
    out = []
    for topic, groups in topics.items():
        groups.sort(key=lambda k: (-k.count, k.event_kind))
        out.append(TopicGroup(topic, sum(k.count for k in groups), groups))
    out.sort(key=lambda t: (-t.count, t.topic))
    return out


class DigestItem:
    """One notification as the digest templates see it: ``item.topic``, ``item["topic"]`` or
    ``item.get("topic")`` over a database row (see ``digests.eligible_notifications``).

    ``payload`` is parsed from the row's JSON text on first use only: the default templates show
    ``headline`` (the payload's summary or title, read in SQL), so a tick over a million
    notifications parses none; an overriding template that reads the payload still can.
    """

    __slots__ = ("_row", "_payload", "_line")

    def __init__(self, row: Any):
        self._row = row
        self._payload: dict[str, Any] | None = None
        self._line: str | None = None  # the ``sample`` filter's answer, kept for the second template

    def __getitem__(self, key: str) -> Any:
        if key == "payload":
            if self._payload is None:
                self._payload = json.loads(self._row["payload_json"] or "{}")
            return self._payload
        return self._row[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except (KeyError, IndexError):  # asyncpg's Record and sqlite3.Row answer differently
            return default

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except (KeyError, IndexError):
            raise AttributeError(name) from None


def _sample_line(item: dict[str, Any] | DigestItem) -> str:
    if type(item) is DigestItem:
        if item._line is None:
            row = item._row
            item._line = _line(row["headline"], row["actor_name"], item)
        return item._line
    return _line(item.get("headline"), item.get("actor_name"), item)


def _line(headline: Any, actor: str | None, item: Any) -> str:
    text = headline
    if not text:
        payload = item.get("payload") or {}
        text = payload.get("summary") or payload.get("title") or item["event_kind"].replace("_", " ")
    return f"{actor}: {text}" if actor else str(text)


class Renderer:
    def __init__(self, templates_dir: str | None = None):
        loaders = [FileSystemLoader(templates_dir)] if templates_dir else []
        loaders.append(PackageLoader("roost", "templates"))
        loader = ChoiceLoader(loaders)
        common = {"loader": loader, "undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
        self._text = Environment(autoescape=False, keep_trailing_newline=True, **common)
        self._html = Environment(autoescape=True, **common)
        for env in (self._text, self._html):
            env.filters["sample"] = _sample_line
        self._cache: dict[str, Any] = {}

    def _tpl(self, name: str) -> Any:
        tpl = self._cache.get(name)
        if tpl is None:
            env = self._html if name.endswith(".html.j2") else self._text
            tpl = self._cache[name] = env.get_template(name)
        return tpl

    def render(self, base: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) from ``<base>_subject.txt.j2``, ``<base>.txt.j2``, ``<base>.html.j2``."""
        subject = " ".join(self._tpl(f"{base}_subject.txt.j2").render(context).split())
        return subject, self._tpl(f"{base}.txt.j2").render(context), self._tpl(f"{base}.html.j2").render(context)

    def digest(self, *, user: dict[str, Any], cadence: str, groups: list[TopicGroup], total: int,
               period_start: dt.datetime, period_end: dt.datetime, unsubscribe_url: str,
               app_url: str) -> tuple[str, str, str]:
        return self.render("digest", {
            "user": user, "cadence": cadence, "groups": groups, "total": total, "period_start": period_start,
            "period_end": period_end, "unsubscribe_url": unsubscribe_url, "app_url": app_url,
        })

    def notification(self, *, user: dict[str, Any], notification: dict[str, Any], actor_name: str | None,
                     app_url: str) -> tuple[str, str, str]:
        payload = notification.get("payload") or {}
        return self.render("notification", {
            "user": user, "notification": notification, "payload": payload, "actor_name": actor_name,
            "app_url": app_url,
        })
