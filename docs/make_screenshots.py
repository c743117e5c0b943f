"""Render sample mails with roost's templates and screenshot them in headless chromium.

    .venv/bin/python docs/make_screenshots.py            # writes docs/digest.png
    .venv/bin/python docs/make_screenshots.py --html-only --out /tmp/mails   # the HTML files alone

Needs Debian's ``chromium`` (``apt-get install -y --no-install-recommends chromium``) for the
PNGs. The data is made up; the templates, labels, links and time zones are the real code path
(``roost.domain.digest.render``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.domain.digest.render import Renderer, group_items  # noqa: E402
from roost.runtime.links import Links  # noqa: E402

DOCS = Path(__file__).resolve().parent
NOW = dt.datetime(2026, 11, 6, 7, 0, tzinfo=dt.UTC)
LINKS = Links("https://app.example.com", {"handoff": "https://app.example.com/escalations/{handoff_id}"})
LABELS = {"comment_added": "New comments", "review_requested": "Reviews requested", "status_changed": "Status changes"}


def sample_items() -> list[dict]:
    rows = [
        ("rfc-42: Retire the v1 API", "comment_added", "Priya", "The migration guide needs a section on webhooks"),
        ("rfc-42: Retire the v1 API", "comment_added", "Tom", "Agree with Priya, and the SDKs lag behind"),
        ("rfc-42: Retire the v1 API", "comment_added", "Lena", "Can we keep /v1/status for the probes?"),
        ("rfc-42: Retire the v1 API", "comment_added", "Priya", "Draft of the guide is in the doc"),
        ("rfc-42: Retire the v1 API", "review_requested", "Tom", "Please review the timeline"),
        ("Billing: invoices in EUR", "status_changed", "Ana", "Moved to In progress"),
        ("Billing: invoices in EUR", "comment_added", "Marco", "Rounding follows the EU rule now"),
        ("Onboarding checklist", "file_uploaded", "Lena", "checklist-v3.pdf"),
    ]
    out = []
    for i, (topic, kind, actor, headline) in enumerate(rows):
        out.append({"id": f"ntf_{i:04d}", "topic": topic, "event_kind": kind, "read_at": None, "actor_name": actor,
                    "headline": headline, "payload": {"summary": headline},
                    "created_at": NOW - dt.timedelta(hours=len(rows) - i)})
    return out


def digest_html() -> str:
    render = Renderer(links=LINKS, labels=LABELS)
    user = {"id": "usr_ann", "display_name": "Ann", "timezone": "Europe/Berlin", "digest_time": "08:00"}
    items = sample_items()
    groups = group_items(items, watched={"rfc-42: Retire the v1 API", "Billing: invoices in EUR"})
    _, _, html = render.digest(user=user, cadence="daily", groups=groups, total=len(items),
                               period_start=NOW - dt.timedelta(days=1), period_end=NOW,
                               unsubscribe_url="https://roost.example.com/unsubscribe?token=...", unread_total=23)
    return html


def escalation_html() -> str:
    render = Renderer(links=LINKS, labels=LABELS)
    user = {"id": "usr_bob", "display_name": "Bob", "timezone": "America/New_York"}
    handoff = {"id": "hnd_0001", "account_id": "acc_1", "subject_ref": "Ticket #8812: refund stuck", "priority": "high",
               "notes": "Customer was charged twice; the refund API answers 409.", "created_at": NOW,
               "created_by": "usr_ann"}
    _, _, html = render.escalation(user=user, handoff=handoff, creator_name="Ann")
    return html


def screenshot(html_file: Path, png: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y --no-install-recommends chromium")
    with tempfile.TemporaryDirectory() as profile:
        args = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",  # paint all before the shot
                f"--screenshot={png}", "--window-size=700,900", html_file.as_uri()]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
        subprocess.run(args, check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs (and with --html-only the HTML) go")
    parser.add_argument("--html-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.out if args.html_only else Path(tmp)
        for name, html in (("digest", digest_html()), ("escalation", escalation_html())):
            page = where / f"{name}.html"
            page.write_text(html, encoding="utf-8")
            if not args.html_only:
                screenshot(page, args.out / f"{name}.png")
                print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
