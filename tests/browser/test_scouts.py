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

from tests.browser.conftest import sign_in, wait_js
from tests.support.server import SERVICE_TOKEN

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
def api(roost_server: Any) -> Any:
    with httpx.Client(base_url=roost_server.url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
                      timeout=10) as client:
        yield client


@pytest.fixture
def acme(api: httpx.Client) -> dict[str, Any]:
    account = api.post("/api/admin/accounts", json={"name": "Acme", "timezone": "UTC"})
    assert account.status_code == 201, account.text
    return account.json()


def test_a_pushed_items_count_changes_without_a_reload(page, roost_server, api, acme, shot, axe):
    from playwright.sync_api import expect

    ann = _device(api, acme["id"], "ann@example.com")
    scout = api.post("/api/admin/scouts", json={"user_id": ann["user"]["id"], "provider": "push",
                                                "config": {}, "poll_interval_s": 3600})
    assert scout.status_code == 201, scout.text
    sid = scout.json()["id"]
    sign_in(page, roost_server, "operate", path="/console/scouts")
    expect(page.get_by_role("link", name=sid)).to_be_visible()
    shot(page, "scouts-list")
    axe(page)

    page.get_by_role("link", name=sid).click()
    queued = page.locator('#scout-counts [data-status="queued"]')
    expect(queued).to_have_text("0")
    wait_js(page, "document.documentElement.getAttribute('data-live-state') === 'open'", timeout=10_000)
    page.evaluate("window.__notReloaded = true")
    pushed = api.post(f"/api/v1/scouts/{sid}/items", json={"items": [
        {"source_msg_ref": f"m{i}", "subject": f"Hello {i}", "body": "hi", "sender": "x@example.com"}
        for i in range(3)]})
    assert pushed.status_code == 202, pushed.text
    expect(queued).to_have_text("3", timeout=10_000)  # by the live stream, not a reload
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("#scout-items")).to_contain_text("Hello 2", timeout=10_000)
    shot(page, "scout-items")
    axe(page)
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: the page still fits, tables scroll
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "scout-items-375px")
    axe(page)


def test_revoking_a_device_drops_its_socket_and_it_leaves_the_connected_list(page, roost_server, api, acme, shot, axe):
    from playwright.sync_api import expect

    ann = _device(api, acme["id"], "ann@example.com")
    bob = _device(api, acme["id"], "bob@example.com")
    roost_url = roost_server.url
    sign_in(page, roost_server, "operate", path="/console/devices")
    operator_page = page
    watcher = page.context.new_page()  # a second tab that only watches
    watcher.goto(f"{roost_url}/console/devices")
    for tab in (operator_page, watcher):
        wait_js(tab, "document.documentElement.getAttribute('data-live-state') === 'open'", timeout=10_000)
    row = f'tr[data-device="{ann["id"]}"]'
    with HeldSocket(roost_url, ann["token"]) as held, HeldSocket(roost_url, bob["token"]):
        expect(operator_page.locator(row)).to_be_visible(timeout=10_000)  # appeared live (device.registered)
        expect(watcher.locator(row)).to_be_visible(timeout=10_000)
        shot(operator_page, "devices-connected")
        axe(operator_page)

        operator_page.once("dialog", lambda dialog: dialog.accept())  # the data-confirm question
        operator_page.locator(row).get_by_role("button", name=f"Revoke device {ann['id']}").click()
        expect(operator_page.get_by_role("status")).to_contain_text("revoked")
        assert held.closed.wait(5), "the revoked device's socket stayed open"
        assert held.close_code == 1008, (held.close_code, held.error)
        expect(watcher.locator(row)).to_have_count(0, timeout=10_000)  # left the list without a reload
        expect(watcher.locator(f'tr[data-device="{bob["id"]}"]')).to_be_visible()
        expect(operator_page.locator(row)).to_have_count(0)
        shot(watcher, "devices-after-revoke")
        axe(watcher)
