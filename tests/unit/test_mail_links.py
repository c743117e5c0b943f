"""Links into the app, event labels, local times and the mail templates, without a database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from roost.domain.digest.formats import label, local_time
from roost.domain.digest.render import Renderer, group_items
from roost.errors import InvalidInput
from roost.runtime.config import Settings
from roost.runtime.links import Links, parse_event_labels

NOW = dt.datetime(2026, 11, 5, 18, 13, tzinfo=dt.UTC)
USER = {"id": "usr_ann", "display_name": "Ann", "timezone": "Europe/Paris", "digest_time": "08:00"}


def env(**values: str) -> dict[str, str]:
    return {f"ROOST_{k.upper()}": v for k, v in values.items()}


def test_every_page_defaults_under_the_app_url() -> None:
    links = Settings.from_env(env(app_url="https://app.example.com/"))
    built = Links(links.app_url, links.link_templates)
    assert built.topic("rfc-7") == "https://app.example.com/topics/rfc-7"
    assert built.inbox() == "https://app.example.com/inbox"
    assert built.settings() == "https://app.example.com/settings/notifications"
    assert built.handoff("hnd_1") == "https://app.example.com/handoffs/hnd_1"
    assert built.notification("ntf_1") == "https://app.example.com/notifications/ntf_1"


def test_a_link_template_wins_over_the_default_and_works_without_an_app_url() -> None:
    settings = Settings.from_env({"ROOST_LINK_HANDOFF": "https://app.example.com/escalations/{handoff_id}?a={account_id}"})
    links = Links(settings.app_url, settings.link_templates)
    assert links.handoff("hnd_1", "acc_9") == "https://app.example.com/escalations/hnd_1?a=acc_9"
    assert links.topic("rfc-7") is None and links.inbox() is None  # no page, no link: never roost's own URL


def test_values_are_percent_encoded_so_they_cannot_change_the_links_shape() -> None:
    links = Links("https://app.example.com", {"topic": "https://app.example.com/t/{topic}?u={user_id}"})
    assert links.topic("a/b?c=d&e#f g", "u 1") == "https://app.example.com/t/a%2Fb%3Fc%3Dd%26e%23f%20g?u=u%201"
    assert links.topic("ünï") == "https://app.example.com/t/%C3%BCn%C3%AF?u="
    bound = links.notifications_of("a/b", "u1")
    assert bound is not None and bound("n/1") == "https://app.example.com/notifications/n%2F1"


@pytest.mark.parametrize(("variables", "names"), [
    ({"LINK_HANDOFF": "https://app.example.com/escalations/{id}"}, ["ROOST_LINK_HANDOFF", "{id}", "{handoff_id}"]),
    ({"LINK_TOPIC": "https://app.example.com/t/{topic!r}"}, ["ROOST_LINK_TOPIC", "{topic!r}"]),
    ({"LINK_TOPIC": "https://app.example.com/t/{topic:>99}"}, ["ROOST_LINK_TOPIC", "{topic:>99}"]),
    ({"LINK_TOPIC": "https://app.example.com/t/{topic.__class__}"}, ["ROOST_LINK_TOPIC", "unknown placeholder"]),
    ({"LINK_TOPIC": "https://app.example.com/t/{topic"}, ["ROOST_LINK_TOPIC", "not a link template"]),
    ({"LINK_HANDOFF": "javascript:alert(1)//{handoff_id}"}, ["ROOST_LINK_HANDOFF", "http(s)"]),
    ({"LINK_INBOX": "ftp://app.example.com/inbox"}, ["ROOST_LINK_INBOX", "http(s)"]),
    ({"LINK_INBOX": "/inbox"}, ["ROOST_LINK_INBOX", "http(s)"]),
    ({"LINK_TOPICS": "https://app.example.com/{topic}"}, ["ROOST_LINK_TOPICS", "names no page"]),
    ({"APP_URL": "app.example.com"}, ["ROOST_APP_URL"]),
    ({"APP_URL": "data:text/html,<script>"}, ["ROOST_APP_URL"]),
    ({"EVENT_LABELS": "[1, 2]"}, ["ROOST_EVENT_LABELS", "JSON object"]),
    ({"EVENT_LABELS": "{nope"}, ["ROOST_EVENT_LABELS", "not JSON"]),
    ({"EVENT_LABELS": '{"comment_added": 7}'}, ["ROOST_EVENT_LABELS", "comment_added"]),
    ({"EVENT_LABELS": '{"comment_added": ""}'}, ["ROOST_EVENT_LABELS", "comment_added"]),
])
def test_bad_link_settings_are_refused_at_start_naming_the_variable(variables: dict[str, str],
                                                                     names: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env({f"ROOST_{k}": v for k, v in variables.items()})
    for name in names:
        assert name in caught.value.message


def test_the_apps_label_map_wins_and_other_kinds_read_as_words() -> None:
    labels = parse_event_labels('{"comment_added": "New comments"}')
    assert label("comment_added", labels) == "New comments"
    assert label("review_requested", labels) == "Review requested"
    assert label("status.changed", {}) == "Status changed"


def test_times_read_in_the_readers_zone() -> None:
    assert local_time(NOW, "Europe/Paris") == "Thu 5 Nov 2026, 19:13 CET"
    assert local_time(NOW, "America/New_York") == "Thu 5 Nov 2026, 13:13 EST"
    assert local_time(NOW, "Asia/Kolkata", with_day=False) == "23:43 IST"
    assert local_time(NOW, "Not/AZone") == "Thu 5 Nov 2026, 18:13 UTC"


def _items(**payload_text: str) -> list[dict]:
    return [{"id": f"ntf_{i}", "topic": topic, "event_kind": kind, "read_at": None, "actor_name": actor,
             "headline": headline, "payload": {"summary": headline}}
            for i, (topic, kind, actor, headline) in enumerate([
                ("rfc-7", "comment_added", payload_text.get("actor", "Bob"), payload_text.get("headline", "fine")),
                ("rfc-7", "comment_added", None, "second"),
                ("ops", "deploy_failed", None, "red"),
            ])]


def _digest(render: Renderer, items: list[dict], watched: set[str] | None = None) -> tuple[str, str, str]:
    return render.digest(user=USER, cadence="daily", groups=group_items(items, watched=watched or set()),
                         total=len(items), period_start=NOW - dt.timedelta(days=1), period_end=NOW,
                         unsubscribe_url="https://roost.example/unsubscribe?token=t", unread_total=12)


def test_the_digest_groups_by_topic_with_watched_topics_first_and_links_each_into_the_app() -> None:
    render = Renderer(links=Links("https://app.example.com"), labels={"comment_added": "New comments"})
    subject, text, html = _digest(render, _items(), watched={"ops"})
    assert subject == "Your daily digest: 3 updates on 2 topics"
    assert text.index("ACTIVITY ON WHAT YOU WATCH") < text.index("ops (1 update)") < text.index("MORE FOR YOU") \
        < text.index("rfc-7 (2 updates)")
    assert "2 x New comments" in text and "1 x Deploy failed" in text
    assert "since Wed 4 Nov 2026, 19:13 CET" in text
    assert "You have 12 unread notifications in your inbox." in text and "still unread" not in text
    assert 'href="https://app.example.com/topics/rfc-7"' in html
    assert 'href="https://app.example.com/notifications/ntf_0"' in html
    assert 'href="https://app.example.com/inbox"' in html
    assert 'href="https://roost.example/unsubscribe?token=t"' in html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "max-width:600px" in html and "<link" not in html and "<img" not in html  # no external assets


def test_hostile_payload_text_stays_text_in_the_html() -> None:
    render = Renderer(links=Links("https://app.example.com"))
    hostile = '<script>alert("x")</script>'
    _, text, html = _digest(render, _items(headline=hostile, actor='<img src=x onerror=alert(1)>'))
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<img" not in html
    assert hostile in text  # the text part is text
    handoff = {"id": "hnd_1", "account_id": "acc_1", "subject_ref": hostile, "priority": "high", "notes": hostile,
               "created_at": NOW, "created_by": "usr_bob", "assessment": {"summary": hostile}}
    subject, _, html = render.escalation(user=USER, handoff=handoff, creator_name="<b>Bob</b>",
                                         assessment=handoff["assessment"])
    assert "<script>" not in html and "<b>Bob</b>" not in html and "&lt;b&gt;Bob&lt;/b&gt;" in html
    assert subject == f"[high] Escalation: {hostile}"  # a header, not HTML
    notification = {"id": "ntf_1", "topic": "rfc-7", "event_kind": "mention", "created_at": NOW,
                    "payload": {"text": hostile, "subject": "hi"}}
    _, _, html = render.notification(user=USER, notification=notification, actor_name=hostile)
    assert "<script>" not in html


def test_the_escalation_links_to_the_apps_handoff_page_and_shows_the_creators_time_in_the_readers_zone() -> None:
    render = Renderer(links=Links(None, {"handoff": "https://app.example.com/escalations/{handoff_id}"}))
    handoff = {"id": "hnd_42", "account_id": "acc_1", "subject_ref": "Ticket 9", "priority": "urgent", "notes": "",
               "created_at": NOW, "created_by": "usr_bob", "assessment": None}
    subject, text, html = render.escalation(user=USER, handoff=handoff, creator_name="Bob")
    assert "Claim it: https://app.example.com/escalations/hnd_42" in text
    assert 'href="https://app.example.com/escalations/hnd_42"' in html and "/api/v1/handoffs" not in text + html
    assert "Thu 5 Nov 2026, 19:13 CET" in text


def test_templates_in_the_apps_directory_override_the_packages(tmp_path: Path) -> None:
    (tmp_path / "digest_subject.txt.j2").write_text("{{ total }} things for {{ user.display_name }}")
    (tmp_path / "escalation.txt.j2").write_text("Go to {{ url }} ({{ handoff.priority|upper }})\n")
    render = Renderer(str(tmp_path), links=Links("https://app.example.com"))
    subject, text, _ = _digest(render, _items())
    assert subject == "3 things for Ann" and "rfc-7 (2 updates)" in text  # the rest falls back to the package's
    handoff = {"id": "hnd_1", "account_id": "acc_1", "subject_ref": "T", "priority": "low", "notes": "",
               "created_at": NOW, "created_by": "usr_bob", "assessment": None}
    assert render.escalation(user=USER, handoff=handoff, creator_name="Bob")[1] == \
        "Go to https://app.example.com/handoffs/hnd_1 (LOW)\n"
