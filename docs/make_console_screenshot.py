"""Screenshot the operator console's overview for the README (docs/console.png).

    .venv/bin/python docs/make_console_screenshot.py

Starts a real ``roost serve`` on a temporary SQLite database with a console token, pushes a few
scout items through the API, signs in through the login form in headless Debian ``chromium``
(Playwright, ``apt-get install -y --no-install-recommends chromium``) and saves the top of the
overview. The data is made up; the page is the real one.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import SERVICE_TOKEN, ServerProcess  # noqa: E402

DOCS = Path(__file__).resolve().parent
TOKEN = "docs-console-token-for-the-readme-screenshot-01"


def seed(url: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10) as api:
        account = api.post("/api/admin/accounts", json={"name": "Acme", "timezone": "Europe/Berlin"}).json()
        user = api.post("/api/admin/users", json={"account_id": account["id"], "email": "ann@example.com",
                                                   "display_name": "Ann"}).json()
        scout = api.post("/api/admin/scouts", json={"user_id": user["id"], "provider": "push"}).json()
        for i in range(3):
            api.post(f"/api/v1/scouts/{scout['id']}/items",
                     json={"items": [{"source_msg_ref": f"m{i}-{j}", "subject": f"Invoice {i}-{j}"} for j in range(4)]})
            time.sleep(0.3)


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess.start(f"sqlite:///{tmp}/roost.db", Path(tmp), env={
            "ROOST_CONSOLE_TOKENS": f"ops:operate:{TOKEN}", "ROOST_HEARTBEAT_S": "1",
            "ROOST_SESSION_DIR": f"{tmp}/sessions"})
        try:
            seed(server.url)
            asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                            args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1000, "height": 760})
                page.goto(server.url + "/console")
                page.get_by_label("Console token").fill(TOKEN)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_selector("#throughput svg")
                page.screenshot(path=str(DOCS / "console.png"))
                browser.close()
        finally:
            server.kill()
    print(f"wrote {DOCS / 'console.png'} ({(DOCS / 'console.png').stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
