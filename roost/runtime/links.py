"""Links into the app: the URLs mails point at, from ``ROOST_APP_URL`` and ``ROOST_LINK_*`` templates
(and ``ROOST_EVENT_LABELS``, the app's names for event kinds, checked at start beside them).

Mail links go to the app's pages, never to roost's own URL (``ROOST_PUBLIC_URL``, which serves
only the unsubscribe link). Each page has a template with ``{placeholder}`` fields; unset, it
defaults to a path under ``ROOST_APP_URL``:

* ``ROOST_LINK_TOPIC``: ``{topic}``, ``{user_id}``; default ``<app>/topics/{topic}``
* ``ROOST_LINK_INBOX``: ``{user_id}``; default ``<app>/inbox``
* ``ROOST_LINK_SETTINGS``: ``{user_id}``; default ``<app>/settings/notifications``
* ``ROOST_LINK_HANDOFF``: ``{handoff_id}``, ``{account_id}``; default ``<app>/handoffs/{handoff_id}``
* ``ROOST_LINK_NOTIFICATION``: ``{notification_id}``, ``{topic}``, ``{user_id}``; default
  ``<app>/notifications/{notification_id}``

A template set on its own works without ``ROOST_APP_URL``; a page with neither has no link (the
mails then leave it out rather than point somewhere that has no page). Every value is
percent-encoded as one path segment or query value (``quote(value, safe="")``), so a topic
``a/b?c`` cannot change the link's shape. Templates are checked at start: an unknown placeholder,
a format spec (``{topic!r}``, ``{topic:>9}``), a scheme other than http(s) or no host is a clear
configuration error (``InvalidInput``, code ``bad_link_setting``).
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

from roost.errors import InvalidInput

# page -> (the placeholders it may use, the default path under ROOST_APP_URL)
PAGES: dict[str, tuple[frozenset[str], str]] = {
    "topic": (frozenset({"topic", "user_id"}), "/topics/{topic}"),
    "inbox": (frozenset({"user_id"}), "/inbox"),
    "settings": (frozenset({"user_id"}), "/settings/notifications"),
    "handoff": (frozenset({"handoff_id", "account_id"}), "/handoffs/{handoff_id}"),
    "notification": (frozenset({"notification_id", "topic", "user_id"}), "/notifications/{notification_id}"),
}
_SAMPLE = "x"  # what a placeholder stands for while a template's shape is checked


def _bad(message: str) -> InvalidInput:
    """A link setting that cannot make a working link (the message names the variable and why)."""
    return InvalidInput(message, code="bad_link_setting")


class _Template:
    """A parsed template: literal text and field names alternating (``parts[1::2]`` are names)."""

    __slots__ = ("parts", "expand")

    def __init__(self, parts: tuple[str, ...]):
        self.parts = parts
        # ``expand(values)``: on the digest's hot path, so the two common shapes get closures of their own.
        if len(parts) == 1:
            self.expand: Callable[[Mapping[str, Any]], str] = lambda values: parts[0]
        elif len(parts) == 3:
            prefix, name, suffix = parts
            self.expand = lambda values: prefix + _quote(values[name]) + suffix
        else:
            self.expand = self._expand

    def _expand(self, values: Mapping[str, Any]) -> str:
        parts = self.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(_quote(values[parts[i]]))
            out.append(parts[i + 1])
        return "".join(out)

    def bind(self, values: Mapping[str, Any], free: str) -> Callable[[Any], str]:
        """The template with ``values`` filled in, as a function of the one field ``free``: for the
        digest, whose links per item differ only in the notification id."""
        merged = [self.parts[0]]
        for i in range(1, len(self.parts), 2):
            name, text = self.parts[i], self.parts[i + 1]
            if name == free:
                merged += [name, text]
            else:
                merged[-1] += _quote(values[name]) + text
        if len(merged) == 3:  # the common shape: a prefix, the value, a suffix
            prefix, suffix = merged[0], merged[2]
            return lambda value: (prefix + value + suffix if type(value) is str and _UNRESERVED(value)
                                  else prefix + _quote(value) + suffix)
        fixed = _Template(tuple(merged))
        return lambda value: fixed.expand({free: value})


_quoted: dict[str, str] = {}
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what ``quote(safe="")`` leaves as it is


def _quote(value: Any) -> str:
    # On the digest's hot path: ids need no quoting (checked, not assumed), and topics repeat
    # across a tick, so a bounded memo spares most ``quote`` calls.
    text = value if type(value) is str else str(value)
    if _UNRESERVED(text):
        return text
    hit = _quoted.get(text)
    if hit is None:
        hit = quote(text, safe="")
        if len(_quoted) < 10_000:
            _quoted[text] = hit
    return hit


def _parse(variable: str, template: str, allowed: frozenset[str]) -> _Template:
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:  # an unmatched "{" or "}"
        raise _bad(f"{variable}={template!r} is not a link template ({exc}); "
                        "write placeholders as {name} and a literal brace as {{ or }}") from None
    parts: list[str] = []
    literal = ""
    for text, name, spec, conversion in pieces:
        literal += text
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise _bad(f"{variable}={template!r}: unknown placeholder {shown}; "
                            f"this link may use {', '.join('{' + a + '}' for a in sorted(allowed))}")
        parts += [literal, name]
        literal = ""
    parts.append(literal)
    parsed = _Template(tuple(parts))
    url = urlsplit(parsed.expand(dict.fromkeys(allowed, _SAMPLE)))
    if url.scheme not in ("http", "https") or not url.netloc:
        raise _bad(f"{variable}={template!r} is not an http(s) URL with a host")
    return parsed


class Links:
    """The app's link templates, parsed and checked once; ``links.topic(topic=..., user_id=...)``
    answers the URL, or None when the page has no link configured."""

    def __init__(self, app_url: str | None = None, templates: Mapping[str, str | None] | None = None):
        """
        Raises:
            InvalidInput: ``app_url`` or a template that cannot make an http(s) link.
        """
        templates = templates or {}
        unknown = set(templates) - set(PAGES)
        if unknown:
            raise _bad(f"ROOST_LINK_{sorted(unknown)[0].upper()} names no page; the pages are "
                       + ", ".join(f"ROOST_LINK_{p.upper()}" for p in PAGES))
        base = (app_url or "").strip()
        if base:
            url = urlsplit(base)
            if url.scheme not in ("http", "https") or not url.netloc or "{" in base or "}" in base:
                raise _bad(f"ROOST_APP_URL={base!r} is not an http(s) URL with a host")
        self.app_url = base.rstrip("/") or None
        self._pages: dict[str, _Template | None] = {}
        for page, (allowed, path) in PAGES.items():
            variable = f"ROOST_LINK_{page.upper()}"
            raw = (templates.get(page) or "").strip()
            if not raw and self.app_url:
                raw = self.app_url.replace("{", "{{").replace("}", "}}") + path
            self._pages[page] = _parse(variable, raw, allowed) if raw else None

    def url(self, page: str, **values: Any) -> str | None:
        """The link to ``page`` with ``values`` filled in (each percent-encoded); None if unconfigured.

        Raises:
            KeyError: a placeholder of the template was not given a value.
        """
        template = self._pages[page]
        return None if template is None else template.expand(values)

    def topic(self, topic: str, user_id: str = "") -> str | None:
        return self.url("topic", topic=topic, user_id=user_id)

    def inbox(self, user_id: str = "") -> str | None:
        return self.url("inbox", user_id=user_id)

    def settings(self, user_id: str = "") -> str | None:
        return self.url("settings", user_id=user_id)

    def handoff(self, handoff_id: str, account_id: str = "") -> str | None:
        return self.url("handoff", handoff_id=handoff_id, account_id=account_id)

    def notification(self, notification_id: str, topic: str = "", user_id: str = "") -> str | None:
        return self.url("notification", notification_id=notification_id, topic=topic, user_id=user_id)

    def notifications_of(self, topic: str, user_id: str) -> Callable[[str], str] | None:
        """``notification`` for one topic and reader, as a function of the notification id (None
        when the page has no link): the digest's per-item links, without re-reading the template."""
        template = self._pages["notification"]
        return None if template is None else template.bind({"topic": topic, "user_id": user_id}, "notification_id")


def links_from(settings: Any) -> Links:
    """The ``Links`` of a ``Settings`` (its ``app_url`` and ``link_templates``).

    Raises:
        InvalidInput: see ``Links``.
    """
    return Links(settings.app_url, settings.link_templates)


def link_templates(env: Mapping[str, str]) -> dict[str, str]:
    """Every ``ROOST_LINK_<PAGE>`` variable that is set, by page (``{"handoff": "https://..."}``);
    a page that does not exist (``ROOST_LINK_TOPICS``) is passed on, for ``Links`` to refuse by name."""
    return {key[len("ROOST_LINK_"):].lower(): value for key, value in env.items()
            if key.startswith("ROOST_LINK_") and value.strip()}


def check_mail_settings(settings: Any) -> None:
    """Refuse, at start, link templates and event labels that cannot work.

    Raises:
        InvalidInput: naming the variable and what is wrong (see ``Links``, ``parse_event_labels``).
    """
    links_from(settings)
    parse_event_labels(settings.event_labels)


def parse_event_labels(raw: str | None) -> dict[str, str]:
    """``ROOST_EVENT_LABELS``: a JSON object of event kind -> label (``{"comment_added": "New comments"}``).

    Raises:
        InvalidInput: not a JSON object of non-empty strings (each at most 200 characters).
    """
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"ROOST_EVENT_LABELS is not JSON ({exc.args[0] if exc.args else exc})") from None
    if not isinstance(value, dict):
        raise _bad('ROOST_EVENT_LABELS must be a JSON object of event kind -> label, e.g. '
                        '{"comment_added": "New comments"}')
    for kind, label in value.items():
        if not isinstance(label, str) or not label.strip() or len(label) > 200 or "\x00" in label:
            raise _bad(f"ROOST_EVENT_LABELS: the label of {kind[:80]!r} must be a non-empty string "
                            "of at most 200 characters")
    return {k: v.strip() for k, v in value.items()}
