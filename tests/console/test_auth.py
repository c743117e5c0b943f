"""Console sign-in, roles, CSRF, sessions and the action decorator, on both backends.

A small app (``create_app`` on the test's database) with one probe blueprint of actions under
``/console/probe``, driven by Quart's test client (it keeps cookies like a browser).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, AsyncIterator
from urllib.parse import unquote

import pytest
from quart import Blueprint

from roost import errors
from roost.http.app import create_app
from roost.http.console import auth, sessions
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import audit
from roost.storage.database import open_database
from tests.console.conftest import CONSOLE_TOKENS, OPERATE_TOKEN, READ_TOKEN

pytestmark = pytest.mark.timeout(30)

probe = Blueprint("probe", __name__, url_prefix="/console/probe")


@probe.post("/things/<thing_id>/poke")
@auth.action("poke")
async def poke(thing_id: str) -> Any:
    return auth.done(f"poked {thing_id}", "/console/probe/after")


@probe.post("/conflict")
@auth.action()
async def conflict() -> Any:
    raise errors.Conflict("a run is already going on")


@probe.post("/storage")
@auth.action()
async def storage() -> Any:
    try:
        raise sqlite3.OperationalError("disk I/O error at /secret/path/roost.db")
    except sqlite3.Error as exc:
        raise errors.StorageError("database failed: disk I/O error at /secret/path/roost.db") from exc


@probe.get("/after")
@auth.page()
async def after() -> Any:
    from roost.http.console.render import page_html

    return await page_html("console/error.html", status_code=200, message="after")


@probe.get("/bodies")
@auth.page()
async def bodies() -> Any:
    return "shown" if auth.bodies_visible() else "hidden"


class Probe:
    """The app, its services, and a way to make fresh test clients."""

    def __init__(self, app: Any, services: Services):
        self.app, self.services = app, services

    def client(self) -> Any:
        return self.app.test_client()

    async def signed_in(self, token: str = OPERATE_TOKEN) -> Any:
        client = self.client()
        r = await client.post("/console/login", form={"token": token, "next": "/console"})
        assert r.status_code == 303, await r.get_data(as_text=True)
        return client

    async def csrf(self, client: Any) -> str:
        text = await (await client.get("/console")).get_data(as_text=True)
        return text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]

    async def audit_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await audit.list_entries(self.services.db)]


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def app(database_url: str, overrides: dict[str, Any]) -> AsyncIterator[Probe]:
    settings = Settings(database_url=database_url, console_tokens=CONSOLE_TOKENS, **overrides)
    async with open_database(database_url) as db:
        services = Services.build(settings, db)
        quart_app = create_app(services)
        quart_app.register_blueprint(probe)
        yield Probe(quart_app, services)


def location(response: Any) -> str:
    return unquote(response.headers["Location"])


# -- signed out ---------------------------------------------------------------------------------------


async def test_no_cookie_redirects_to_sign_in_keeping_the_page(app):
    r = await app.client().get("/console/?fragment=processes")
    assert r.status_code == 303
    assert location(r) == "/console/login?next=/console/?fragment=processes"


async def test_no_cookie_on_the_live_stream_and_actions_redirects_to_sign_in(app):
    client = app.client()
    assert (await client.get("/console/live?topics=scout.items")).status_code == 303
    r = await client.post("/console/probe/things/t1/poke", form={"csrf": "x"})
    assert r.status_code == 303 and location(r).startswith("/console/login")
    assert await app.audit_rows() == []


async def test_tampered_or_foreign_cookie_is_not_a_session(app):
    client = await app.signed_in()
    cookie = next(c for c in client.cookie_jar if c.name == auth.SESSION_COOKIE)
    body, mac = cookie.value.split(".")
    for value in (f"{body}x.{mac}", f"{body}.{mac[:-2]}AA", "garbage", "a.b.c", "." * 3000):
        other = app.client()
        other.set_cookie("localhost", auth.SESSION_COOKIE, value, path="/console")
        assert (await other.get("/console")).status_code == 303, value[:20]


async def test_expired_session_must_sign_in_again(app):
    client = app.client()
    async with app.app.app_context():
        value = sessions.session_value("ops", time.time() - 1)
        fresh = sessions.session_value("ops", time.time() + 60)
    client.set_cookie("localhost", auth.SESSION_COOKIE, value, path="/console")
    r = await client.get("/console")
    assert r.status_code == 303 and location(r).startswith("/console/login")
    client.set_cookie("localhost", auth.SESSION_COOKIE, fresh, path="/console")
    assert (await client.get("/console")).status_code == 200


async def test_session_of_a_removed_token_ends(database_url):
    """Changing the tokens changes the signing key: the old cookie no longer signs anyone in."""
    async with open_database(database_url) as db:
        first = create_app(Services.build(Settings(database_url=database_url, console_tokens=CONSOLE_TOKENS), db))
        async with first.app_context():
            value = sessions.session_value("ops", time.time() + 600)
        second = create_app(Services.build(Settings(database_url=database_url,
                                                    console_tokens=CONSOLE_TOKENS.split(",")[0]), db))
        client = second.test_client()
        client.set_cookie("localhost", auth.SESSION_COOKIE, value, path="/console")
        assert (await client.get("/console")).status_code == 303


# -- signing in ---------------------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_httponly_expiring_cookie_and_audits_it(app):
    r = await app.client().post("/console/login", form={"token": OPERATE_TOKEN, "next": "/console/probe/after"})
    assert r.status_code == 303 and location(r) == "/console/probe/after"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert f"Max-Age={int(app.services.settings.console_session_s)}" in cookie and "Secure" not in cookie
    rows = await app.audit_rows()
    assert [(r["actor"], r["action"], r["target_id"]) for r in rows] == [("console:ops", "console.sign_in", "ops")]


async def test_sign_in_behind_https_sets_a_secure_cookie(app):
    r = await app.client().post("/console/login", form={"token": READ_TOKEN},
                                headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303 and "Secure" in r.headers["Set-Cookie"]


async def test_sign_in_never_redirects_outside_the_console(app):
    for target in ("//evil.example/x", "https://evil.example/", "/api/admin/status", "/console\\@evil",
                   "javascript:alert(1)", "/console/\r\nX: y", "/console" + "a" * 5000):
        r = await app.client().post("/console/login", form={"token": OPERATE_TOKEN, "next": target})
        assert r.status_code == 303 and r.headers["Location"] == "/console", target


@pytest.mark.parametrize("overrides", [{"console_login_failures": 100}])
async def test_wrong_or_hostile_token_is_refused_with_a_message(app):
    for token in ("", "x", OPERATE_TOKEN[:-1], OPERATE_TOKEN + "x", "A" * 100_000, "\x00\u202e" * 10,
                  OPERATE_TOKEN.upper()):
        r = await app.client().post("/console/login", form={"token": token})
        text = await r.get_data(as_text=True)
        assert r.status_code == 401 and "not a console token" in text, token[:20]
        assert auth.SESSION_COOKIE not in r.headers.get("Set-Cookie", "")


async def test_malformed_sign_in_bodies_are_refused_not_500(app):
    for body in (b"token=%FF%FE%00", b"token[]=a&token[]=b", b"\xff\xfe=\xff", b"%" * 1000, b"{\"token\": 1}"):
        r = await app.client().post("/console/login", data=body,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code in (400, 401), body


async def test_sign_in_body_over_the_limit_is_413_not_500(app):
    r = await app.client().post("/console/login", form={"token": "A" * (2 * 1024 * 1024)})
    assert r.status_code == 413


async def test_sign_in_from_another_origin_is_refused_but_a_proxy_host_is_fine(app):
    r = await app.client().post("/console/login", form={"token": OPERATE_TOKEN},
                                headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    for headers in ({"Origin": "https://console.example", "X-Forwarded-Host": "console.example"},
                    {"Origin": "http://localhost"}, {"Origin": "http://127.0.0.1:8000"}):  # Host; ROOST_PUBLIC_URL
        r = await app.client().post("/console/login", form={"token": OPERATE_TOKEN}, headers=headers)
        assert r.status_code == 303, headers


@pytest.mark.parametrize("overrides", [{"console_login_failures": 3, "console_login_window_s": 60}])
async def test_many_failed_sign_ins_are_rate_limited_and_logged(app, capsys):
    client = app.client()
    for _ in range(3):
        assert (await client.post("/console/login", form={"token": "wrong"})).status_code == 401
    r = await client.post("/console/login", form={"token": OPERATE_TOKEN})  # even the right one, for now
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in await r.get_data(as_text=True)
    logged = capsys.readouterr()
    assert "console_sign_in_failed" in logged.out + logged.err and "wrong" not in logged.out + logged.err


def test_failed_sign_ins_forget_old_failures_and_bound_addresses():
    failures = sessions.FailedSignIns()
    for i in range(3):
        failures.fail("a", float(i), window_s=10)
    assert failures.limited("a", 3.0, limit=3, window_s=10) == pytest.approx(7.0)
    assert failures.limited("a", 10.5, limit=3, window_s=10) == 0
    for i in range(sessions.MAX_ADDRESSES + 5):
        failures.fail(f"10.0.{i}", 0.0, window_s=10)
    assert len(failures._by_address) == sessions.MAX_ADDRESSES


async def test_console_without_tokens_says_how_to_turn_it_on(database_url):
    async with open_database(database_url) as db:
        client = create_app(Services.build(Settings(database_url=database_url), db)).test_client()
        for r in (await client.get("/console"), await client.post("/console/login", form={"token": "x" * 40})):
            assert r.status_code == 503 and "ROOST_CONSOLE_TOKENS" in await r.get_data(as_text=True)


# -- actions: role, CSRF, audit ---------------------------------------------------------------------------


async def test_action_is_audited_with_the_token_name_and_flashes(app):
    client = await app.signed_in()
    csrf = await app.csrf(client)
    r = await client.post("/console/probe/things/t1/poke", form={"csrf": csrf})
    assert r.status_code == 303 and location(r) == "/console/probe/after"
    rows = [row for row in await app.audit_rows() if row["action"] == "console.poke"]
    assert [(row["actor"], row["target_type"], row["target_id"]) for row in rows] == [("console:ops", "thing", "t1")]
    page = await client.get("/console/probe/after")
    assert "poked t1" in await page.get_data(as_text=True)
    again = await client.get("/console/probe/after")  # the flash is shown once
    assert "poked t1" not in await again.get_data(as_text=True)


async def test_read_role_gets_403_on_actions(app):
    client = await app.signed_in(READ_TOKEN)
    csrf = await app.csrf(client)
    r = await client.post("/console/probe/things/t1/poke", form={"csrf": csrf})
    assert r.status_code == 403 and "role is read" in await r.get_data(as_text=True)
    assert [row for row in await app.audit_rows() if row["action"] == "console.poke"] == []


async def test_missing_wrong_or_foreign_csrf_is_403(app):
    client = await app.signed_in()
    other = await app.signed_in()
    foreign = await app.csrf(other)
    own = await app.csrf(client)
    for form in ({}, {"csrf": ""}, {"csrf": "x" * 32}, {"csrf": foreign}, {"csrf": own * 1000}):
        r = await client.post("/console/probe/things/t1/poke", form=form)
        assert r.status_code == 403, form
    r = await client.post("/console/probe/things/t1/poke", form={"csrf": own},
                          headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert [row for row in await app.audit_rows() if row["action"] == "console.poke"] == []


async def test_domain_error_in_an_action_is_a_flash_message_not_a_500(app):
    client = await app.signed_in()
    csrf = await app.csrf(client)
    r = await client.post("/console/probe/conflict", form={"csrf": csrf, "back": "/console/probe/after"})
    assert r.status_code == 303 and location(r) == "/console/probe/after"
    text = await (await client.get("/console/probe/after")).get_data(as_text=True)
    assert "a run is already going on" in text and 'class="flash error"' in text


async def test_storage_error_in_an_action_never_shows_driver_text(app):
    client = await app.signed_in()
    csrf = await app.csrf(client)
    r = await client.post("/console/probe/storage", form={"csrf": csrf, "back": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["Location"] == "/console"
    text = await (await client.get("/console")).get_data(as_text=True)
    assert "the server failed" in text and "/secret/path" not in text and "disk I/O" not in text


# -- logout --------------------------------------------------------------------------------------------------


async def test_logout_clears_the_session_and_is_audited(app):
    client = await app.signed_in()
    csrf = await app.csrf(client)
    r = await client.post("/console/logout", form={"csrf": csrf})
    assert r.status_code == 303 and r.headers["Location"] == "/console/login"
    assert (await client.get("/console")).status_code == 303
    assert "console.sign_out" in [row["action"] for row in await app.audit_rows()]


async def test_logout_without_csrf_is_refused(app):
    client = await app.signed_in()
    assert (await client.post("/console/logout", form={})).status_code == 403
    assert (await client.get("/console")).status_code == 200


async def test_bodies_are_hidden_from_read_unless_asked_and_shown_to_operate(app):
    reader = await app.signed_in(READ_TOKEN)
    assert await (await reader.get("/console/probe/bodies")).get_data(as_text=True) == "hidden"
    assert await (await reader.get("/console/probe/bodies?show=bodies")).get_data(as_text=True) == "shown"
    operator = await app.signed_in()
    assert await (await operator.get("/console/probe/bodies")).get_data(as_text=True) == "shown"
