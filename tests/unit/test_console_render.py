"""Console rendering helpers that need no server: where forms come back to, times, charts, redirects."""

from __future__ import annotations

import datetime as dt

from quart import Quart

from roost.http.console.auth import safe_next
from roost.http.console.chart import bar_chart
from roost.http.console.render import here, time_tag


async def test_forms_in_a_swapped_part_come_back_to_the_page_not_the_fragment():
    app = Quart(__name__)
    async with app.test_request_context("/console/scouts?status=failed&fragment=rows"):
        assert here() == "/console/scouts?status=failed"
    async with app.test_request_context("/console/audit?fragment=entries"):
        assert here() == "/console/audit"


def test_time_tag_carries_iso_for_the_browser_and_utc_in_the_title():
    html = str(time_tag(dt.datetime(2026, 12, 6, 0, 5, tzinfo=dt.UTC)))
    assert html == ('<time datetime="2026-12-06T00:05:00+00:00" data-local title="2026-12-06 00:05:00 UTC">'
                    "2026-12-06 00:05:00 UTC</time>")
    assert str(time_tag(None)) == "—"
    assert "&lt;script&gt;" in str(time_tag("<script>"))


def test_bar_chart_says_its_figures_in_words_and_escapes_labels():
    svg = str(bar_chart([0, 2, 5, 0], title="scout <runs>", labels=["a", "b", "<c>", "d"]))
    assert svg.startswith('<svg class="chart" role="img"') and svg.count("<rect") == 2
    assert "scout &lt;runs&gt;: 7 in all, peak 5" in svg and "&lt;c&gt;: 5" in svg
    assert "<rect" not in str(bar_chart([], title="none"))


def test_safe_next_keeps_console_paths_only():
    assert safe_next("/console/audit?actor=x") == "/console/audit?actor=x"
    for bad in ("//evil", "https://evil/console", "/consolex", "/api", "/console\\x", None, ""):
        assert safe_next(bad) == "/console"


def test_audit_rows_written_inside_a_console_action_name_the_console_token():
    from roost.storage import audit

    reset = audit.acting_as.set("console:ops")
    try:
        assert audit.actor_name("service") == "console:ops"
        assert audit.actor_name("scheduler") == "scheduler"
    finally:
        audit.acting_as.reset(reset)
    reset = audit.acting_as.set("app")
    try:
        assert audit.actor_name("service") == "service:app"
    finally:
        audit.acting_as.reset(reset)
