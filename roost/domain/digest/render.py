"""Mail bodies from Jinja2 templates: the package's ``roost/templates`` unless the app's own
directory (``ROOST_TEMPLATES_DIR``) has a file of the same name.

Each mail is three templates, ``<name>_subject.txt.j2``, ``<name>.txt.j2`` and ``<name>.html.j2``:
``digest``, ``notification`` (a single personal-direct notification), ``escalation`` (a handoff
someone escalated) and ``assessment`` (the assessor's read of an escalation). The HTML ones extend
``_layout.html.j2`` (an e-mail-safe ~600 px column: inline styles, tables for layout, light and
dark). The HTML environment escapes every value; the text one does not.

Every template sees ``links`` (``roost.runtime.links.Links``: the app's pages; a page without a
link configured answers None and the mail leaves it out) and these filters: ``label`` (an event
kind as the app names it, ``ROOST_EVENT_LABELS``, else ``comment_added`` -> "Comment added"),
``local(timezone)`` and ``clock(timezone)`` (an instant in the reader's zone), ``sample`` (a digest
item's one line) and ``item_url(user_id)`` (the app's link to one notification).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined

from roost.domain.digest.formats import label, local_time
from roost.runtime.links import Links, links_from, parse_event_labels

SAMPLES_PER_KIND = 3


@dataclass
class KindGroup:
    event_kind: str
    count: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""  # how the app names the kind (set by ``Renderer.digest``)
    items: list[Any] = field(default_factory=list, repr=False)  # every item of the kind, oldest first

    @property
    def unread(self) -> int:
        """How many of the kind's items are unread (counted when asked: a digest's items all are)."""
        return [i["read_at"] for i in self.items].count(None)


@dataclass
class TopicGroup:
    topic: str
    count: int = 0
    kinds: list[KindGroup] = field(default_factory=list)
    watched: bool = False  # the reader watches this topic
    # Set by ``Renderer.digest``: the app's page of the topic, and which part of the digest this
    # group opens ("watched", "others" after watched ones, or None: not the first of its part).
    url: str | None = None
    opens: str | None = None


def group_items(items: Iterable[Any], *, sample: Callable[[Any], Any] = lambda item: item,
                watched: frozenset[str] | set[str] = frozenset()) -> list[TopicGroup]:
    """Topics the reader watches first (``watched``), then the others, each part most active
    first; within a topic, event kinds by count (ties by name). Each kind keeps its newest few
    items as samples (passed through ``sample``), and all of them for ``unread``.
    ``items``: mappings with topic, event_kind and read_at, oldest first."""
    buckets: dict[tuple[str, str], list[Any]] = {}
    for item in items:  # once per notification of a tick: kept to the bare minimum
        key = (item["topic"], item["event_kind"])
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [item]
        else:
            bucket.append(item)
    topics: dict[str, list[KindGroup]] = {}
    for (topic, kind), bucket in buckets.items():
        group = KindGroup(kind, len(bucket), [sample(i) for i in bucket[:-SAMPLES_PER_KIND - 1:-1]], items=bucket)
        topics.setdefault(topic, []).append(group)
    out = []
    for topic, groups in topics.items():
        groups.sort(key=lambda k: (-k.count, k.event_kind))
        out.append(TopicGroup(topic, sum(k.count for k in groups), groups, topic in watched))
    out.sort(key=lambda t: (not t.watched, -t.count, t.topic))
    return out


class DigestItem:
    """One notification as the digest templates see it: ``item.topic``, ``item["topic"]`` or
    ``item.get("topic")`` over a database row (see ``digests.eligible_notifications``).

    ``payload`` is parsed from the row's JSON text on first use only: the default templates show
    ``headline`` (the payload's summary or title, read in SQL), so a tick over a million
    notifications parses none; an overriding template that reads the payload still can.
    """

    __slots__ = ("_row", "_payload", "_line", "url")

    def __init__(self, row: Any):
        self._row = row
        self._payload: dict[str, Any] | None = None
        self._line: str | None = None  # the ``sample`` filter's answer, kept for the second template
        self.url: str | None = None  # the app's link to this notification (set by ``Renderer.digest``)

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
    """The mails' templates (``templates_dir`` first, then the package's), with the app's ``links``
    and event-kind ``labels``. Build one per settings with ``renderer_for``; rendering is pure and
    thread-safe (the digest renders in worker threads)."""

    def __init__(self, templates_dir: str | None = None, *, links: Links | None = None,
                 labels: dict[str, str] | None = None):
        loaders = [FileSystemLoader(templates_dir)] if templates_dir else []
        loaders.append(PackageLoader("roost", "templates"))
        loader = ChoiceLoader(loaders)
        common = {"loader": loader, "undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
        self._text = Environment(autoescape=False, keep_trailing_newline=True, **common)
        self._html = Environment(autoescape=True, **common)
        self.links = links or Links()
        self.labels = labels or {}
        for env in (self._text, self._html):
            env.filters["sample"] = _sample_line
            env.filters["label"] = self.label
            env.filters["local"] = local_time
            env.filters["clock"] = lambda instant, tz: local_time(instant, tz, with_day=False)
            env.filters["item_url"] = self.item_url
            env.globals["links"] = self.links
        self._cache: dict[str, Any] = {}

    def label(self, event_kind: str) -> str:
        return label(event_kind, self.labels)

    def item_url(self, item: Any, user_id: str = "") -> str | None:
        """The app's link to one notification (a digest sample or a row)."""
        if type(item) is DigestItem and item.url is not None:
            return item.url
        return self.links.notification(item["id"], item["topic"], user_id)

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
               unread_total: int | None = None, app_url: str | None = None) -> tuple[str, str, str]:
        """A digest: ``groups`` from ``group_items``; ``unread_total`` counts everything unread in
        the reader's inbox (not only this digest's items; None: not known)."""
        user_id = user["id"]
        watched = 0
        links, labels = self.links, self.labels
        previous: TopicGroup | None = None
        for group in groups:  # done here, not in the templates: a tick renders a million samples
            group.url = links.topic(group.topic, user_id)
            watched += group.watched
            if previous is None:
                group.opens = "watched" if group.watched else None
            elif previous.watched and not group.watched:
                group.opens = "others"
            previous = group
            link = links.notifications_of(group.topic, user_id)
            for kind in group.kinds:
                kind.label = label(kind.event_kind, labels)
                if link is None:
                    continue
                for item in kind.samples:
                    if type(item) is DigestItem:
                        item.url = link(item._row["id"])
                    elif isinstance(item, dict):
                        item["url"] = link(item["id"])
        inbox = self.links.inbox(user_id)
        return self.render("digest", {
            "user": user, "cadence": cadence, "groups": groups, "total": total, "period_start": period_start,
            "period_end": period_end, "unsubscribe_url": unsubscribe_url, "unread_total": unread_total,
            "watched_topics": watched, "inbox_url": inbox, "settings_url": self.links.settings(user_id),
            "app_url": app_url or inbox or "",
        })

    def notification(self, *, user: dict[str, Any], notification: dict[str, Any], actor_name: str | None,
                     app_url: str | None = None) -> tuple[str, str, str]:
        """One notification's own mail (``app_url``: accepted for old callers, unused: links come
        from ``links``)."""
        payload = notification.get("payload") or {}
        user_id = user["id"]
        topic = notification["topic"]
        return self.render("notification", {
            "user": user, "notification": notification, "payload": payload, "actor_name": actor_name,
            "url": self.links.notification(notification["id"], topic, user_id),
            "topic_url": self.links.topic(topic, user_id), "inbox_url": self.links.inbox(user_id),
            "settings_url": self.links.settings(user_id), "app_url": app_url or "",
        })

    def escalation(self, *, user: dict[str, Any], handoff: dict[str, Any], creator_name: str | None,
                   assessment: dict[str, Any] | None = None) -> tuple[str, str, str]:
        """The mail telling ``user`` (an owner, admin or engineer) that a handoff was escalated;
        ``url`` is the app's handoff page (``ROOST_LINK_HANDOFF``)."""
        return self.render("escalation", self._handoff_context(user, handoff, creator_name, assessment))

    def assessment(self, *, user: dict[str, Any], handoff: dict[str, Any], creator_name: str | None,
                   assessment: dict[str, Any]) -> tuple[str, str, str]:
        """The mail carrying the assessor's read of an escalation to the people it was sent to."""
        return self.render("assessment", self._handoff_context(user, handoff, creator_name, assessment))

    def _handoff_context(self, user: dict[str, Any], handoff: dict[str, Any], creator_name: str | None,
                         assessment: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "user": user, "handoff": handoff, "creator_name": creator_name or handoff.get("created_by") or "Someone",
            "assessment": assessment if isinstance(assessment, dict) else None,
            "url": self.links.handoff(handoff["id"], handoff.get("account_id") or ""),
            "settings_url": self.links.settings(user.get("id") or ""),
        }


_renderers: dict[int, tuple[Any, Renderer]] = {}


def renderer_for(settings: Any) -> Renderer:
    """The ``Renderer`` of a ``Settings`` (``templates_dir``, ``links``, ``event_labels``), built once."""
    hit = _renderers.get(id(settings))
    if hit is None or hit[0] is not settings:
        hit = (settings, Renderer(settings.templates_dir, links=links_from(settings),
                                  labels=parse_event_labels(settings.event_labels)))
        if len(_renderers) > 64:  # tests build many settings; a process has one
            _renderers.clear()
        _renderers[id(settings)] = hit
    return hit[1]
