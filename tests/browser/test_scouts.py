"""The scouts and devices pages in a real browser (Debian's chromium through Playwright), as a person
uses them: a pushed item's count changes without a reload; a device that connects appears, and one
revoked leaves the connected list of a second tab while its socket (a real WebSocket client held
here) is closed 1008. Each page visited is screenshotted and checked with axe-core."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

pytestmark = pytest.mark.timeout(60)


class HeldSocket:
    """A device's WebSocket, held open in a thread of its own (its own trio run) until the server closes it."""

    def __init__(self, base_url: str, token: str):
        self.url = base_url.replace("http://", "ws://") + "/ws/device"
        self.token = token
        self.registered = threading.Event()
        self.closed = threading.Event()
        self.close_code: int | None = None
        self.error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HeldSocket:
        self.thread.start()
        assert self.registered.wait(10), f"the device socket did not register: {self.error!r}"
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.closed.is_set() and self._token is not None and self._scope is not None:
            try:  # we close it ourselves
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self.thread.join(10)

    def _run(self) -> None:
        try:
            trio.run(self._hold)
        except BaseException as exc:  # reported by the assertions above and below
            self.error = exc
            self.registered.set()
            self.closed.set()

    async def _hold(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._scope = trio.CancelScope()
        with self._scope:
            await self._connect()

    async def _connect(self) -> None:
        headers = [("Authorization", f"Bearer {self.token}")]
        async with open_websocket_url(self.url, extra_headers=headers) as ws:
            try:
                await ws.send_message(json.dumps({"type": "register"}))
                while json.loads(await ws.get_message())["type"] != "hello_ok":
                    pass
                self.registered.set()
                with trio.fail_after(30):
                    while True:
                        await ws.get_message()
            except ConnectionClosed as closed:
                self.close_code = closed.reason.code
            finally:
                await ws._stream.aclose()
                self.closed.set()


def _device(api: httpx.Client, account_id: str, email: str) -> dict[str, Any]:
    user = api.post("/api/admin/users", json={"account_id": account_id, "email": email, "display_name": email})
    assert user.status_code == 201, user.text
    device = api.post("/api/admin/devices", json={"user_id": user.json()["id"], "name": f"phone of {email}"})
    assert device.status_code == 201, device.text
    return {"user": user.json(), **device.json()}


@pytest.fixture
def acme(api: httpx.Client) -> dict[str, Any]:
    account = api.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"})
    assert account.status_code == 201, account.text
    return account.json()


def test_a_pushed_items_count_changes_without_a_reload(operator_page, roost_url, api, acme, shot, axe):
    from playwright.sync_api import expect

    ann = _device(api, acme["id"], "ann@example.com")
    scout = api.post("/api/admin/scouts", json={"user_id": ann["user"]["id"], "provider": "push",
                                                "config": {}, "poll_interval_s": 3600})
    assert scout.status_code == 201, scout.text
    sid = scout.json()["id"]
    page = operator_page
    page.goto(f"{roost_url}/console/scouts")
    expect(page.get_by_role("link", name=sid)).to_be_visible()
    shot(page, "scouts-list")
    axe(page)

    page.get_by_role("link", name=sid).click()
    queued = page.locator('#scout-counts [data-status="queued"]')
    expect(queued).to_have_text("0")
    page.wait_for_function("document.documentElement.getAttribute('data-live-state') === 'open'")
    page.evaluate("window.__notReloaded = true")
    pushed = api.post(f"/api/v1/scouts/{sid}/items", json={"items": [
        {"source_msg_ref": f"m{i}", "subject": f"Hello {i}", "body": "hi", "sender": "x@example.com"}
        for i in range(3)]})
    assert pushed.status_code == 202, pushed.text
    expect(queued).to_have_text("3", timeout=5000)  # by the live stream, not a reload
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("#scout-items")).to_contain_text("Hello 2")
    shot(page, "scout-items")
    axe(page)


def test_revoking_a_device_drops_its_socket_and_it_leaves_the_connected_list(
        browser_context, operator_page, roost_url, api, acme, shot, axe):
    from playwright.sync_api import expect

    ann = _device(api, acme["id"], "ann@example.com")
    bob = _device(api, acme["id"], "bob@example.com")
    watcher = browser_context.new_page()  # a second tab that only watches
    for page in (operator_page, watcher):
        page.goto(f"{roost_url}/console/devices")
        page.wait_for_function("document.documentElement.getAttribute('data-live-state') === 'open'")
    row = f'tr[data-device="{ann["id"]}"]'
    with HeldSocket(roost_url, ann["token"]) as held, HeldSocket(roost_url, bob["token"]):
        expect(operator_page.locator(row)).to_be_visible(timeout=5000)  # appeared live (device.registered)
        expect(watcher.locator(row)).to_be_visible(timeout=5000)
        shot(operator_page, "devices-connected")
        axe(operator_page)

        operator_page.once("dialog", lambda dialog: dialog.accept())  # the data-confirm question
        operator_page.locator(row).get_by_role("button", name=f"Revoke device {ann['id']}").click()
        expect(operator_page.get_by_role("status")).to_contain_text("revoked")
        assert held.closed.wait(5), "the revoked device's socket stayed open"
        assert held.close_code == 1008, (held.close_code, held.error)
        expect(watcher.locator(row)).to_have_count(0, timeout=5000)  # left the list without a reload
        expect(watcher.locator(f'tr[data-device="{bob["id"]}"]')).to_be_visible()
        expect(operator_page.locator(row)).to_have_count(0)
        shot(watcher, "devices-after-revoke")
        axe(watcher)


# -- fixtures (the core's tests/browser/conftest.py replaces these once merged) --------------------

SERVICE = "browser-test-service-token-0000000000001"
OPERATE = "browser-test-operate-token-000000000000001"


@pytest.fixture(scope="module")
def roost_url(tmp_path_factory: pytest.TempPathFactory):
    import os
    import subprocess
    import sys
    import time

    from tests.support.server import free_port

    folder = tmp_path_factory.mktemp("browser-roost")
    port = free_port()
    env = {**os.environ, "ROOST_DATABASE_URL": f"sqlite:///{folder / 'roost.db'}", "ROOST_SERVICE_TOKEN": SERVICE,
           "ROOST_CONSOLE_TOKENS": f"ops:operate:{OPERATE}", "ROOST_PORT": str(port), "ROOST_LOG_FORMAT": "json"}
    with open(folder / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "roost", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            else:
                raise AssertionError("roost serve did not get ready: " + (folder / "serve.log").read_text()[-2000:])
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.fixture
def api(roost_url: str):
    with httpx.Client(base_url=roost_url, headers={"Authorization": f"Bearer {SERVICE}"}, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium (apt-get install chromium)")
    import asyncio

    # trio_asyncio (imported by the PostgreSQL backend) installs its own event loop policy for the
    # whole process; Playwright's sync API needs a plain asyncio loop of its own.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


@pytest.fixture
def operator_page(browser_context, roost_url: str):
    page = browser_context.new_page()
    page.goto(f"{roost_url}/console/login")
    page.get_by_label("Console token").fill(OPERATE)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    return page


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory):
    import os
    from pathlib import Path

    folder = Path(os.environ["ROOST_SCREENSHOTS"]) if os.environ.get("ROOST_SCREENSHOTS") \
        else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture
def shot(shots_dir):
    def take(page, name: str) -> None:
        page.screenshot(path=str(shots_dir / f"scouts-{name}.png"), full_page=True)

    return take


@pytest.fixture
def axe():
    from axe_playwright_python.sync_playwright import Axe

    def check(page) -> None:
        results = Axe().run(page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        assert not bad, [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in bad]

    return check
