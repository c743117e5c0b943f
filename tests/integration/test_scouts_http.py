"""Scout admin and push endpoints: bad input, secret redaction and sealing, 409 while a run holds the lock."""

from __future__ import annotations

import pytest
import trio

from roost.domain.scouting import lock_name
from roost.errors import AlreadyRunning
from tests.support.scouting import make_push_scout
from tests.support.server import SECRET_KEY, admin_client, make_device, running_server

IMAP = {"host": "127.0.0.1", "port": 1, "tls": False, "insecure": True, "user": "u", "password": "hunter2"}


@pytest.mark.parametrize("body, code", [
    ({"provider": "push"}, "validation_failed"),  # no user_id
    ({"user_id": "usr_x", "provider": "nope"}, "unknown_connector"),
    ({"user_id": "usr_x", "provider": "push", "classifier": "nope"}, "unknown_classifier"),
    ({"user_id": "usr_x", "provider": "push", "poll_interval_s": 0}, "validation_failed"),
    ({"user_id": "usr_x", "provider": "push", "poll_interval_s": "60"}, "validation_failed"),
    ({"user_id": "usr_x", "provider": "push", "classifier_config": {"spam_patterns": ["("]}}, "invalid_input"),
    ({"user_id": "usr_x", "provider": "push", "config": {"x": 1}}, "invalid_input"),
    ({"user_id": "usr_x", "provider": "imap", "config": {"host": "h"}}, "invalid_input"),
    ({"user_id": "usr_x", "provider": "push", "extra": 1}, "validation_failed"),
])
async def test_create_scout_rejects_bad_input(database_url, body, code):
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        r = await client.post("/api/admin/scouts", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == code


async def test_scout_endpoints_answer_404_401_and_409(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        assert (await client.post("/api/admin/scouts", json={"user_id": "usr_nobody", "provider": "push"})
                ).status_code == 404
        for method, path in [("GET", "/api/admin/scouts/sct_x"), ("PATCH", "/api/admin/scouts/sct_x"),
                             ("DELETE", "/api/admin/scouts/sct_x"), ("POST", "/api/admin/scouts/sct_x/run"),
                             ("GET", "/api/admin/scouts/sct_x/items")]:
            r = await client.request(method, path, json={} if method == "PATCH" else None)
            assert r.status_code == 404, (method, path, r.text)
        async with admin_client(srv.url, token="wrong") as bad:
            assert (await bad.get("/api/admin/scouts/sct_x")).status_code == 401
            assert (await bad.post("/api/v1/scouts/sct_x/items", json={"items": []})).status_code == 401
        scout = await make_push_scout(client, ann["user"]["id"])
        sid = scout["id"]
        for body in [{"items": []}, {"items": [{"subject": "no ref"}]}, {"items": "x"},
                     {"items": [{"source_msg_ref": "a", "body": 5}]}]:
            r = await client.post(f"/api/v1/scouts/{sid}/items", json=body)
            assert r.status_code == 400, (body, r.text)
        r = await client.post(f"/api/v1/scouts/{sid}/items", content=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert (await client.get(f"/api/admin/scouts/{sid}/items", params={"status": "bogus"})).status_code == 400
        assert (await client.get(f"/api/admin/scouts/{sid}/items", params={"limit": 0})).status_code == 400
        assert (await client.patch(f"/api/admin/scouts/{sid}", json={"enabled": None})).status_code == 400
        while True:  # the scout actor may be running the new scout right now: wait for the lock
            try:
                async with srv.services.locks.hold(lock_name(sid)):
                    r = await client.post(f"/api/admin/scouts/{sid}/run")
                    assert r.status_code == 409 and r.json()["error"]["code"] == "already_running"
                break
            except AlreadyRunning:
                await trio.sleep(0.05)
        r = await client.post(f"/api/admin/scouts/{sid}/run")
        assert r.status_code == 200 and r.json()["scout_id"] == sid
        r = await client.patch(f"/api/admin/scouts/{sid}", json={"enabled": False})
        assert r.json()["status"] == "disabled"
        r = await client.post(f"/api/v1/scouts/{sid}/items", json={"items": [{"source_msg_ref": "a"}]})
        assert r.status_code == 409
        assert (await client.delete(f"/api/admin/scouts/{sid}")).status_code == 200
        assert (await client.get(f"/api/admin/scouts/{sid}")).status_code == 404


async def test_secrets_are_redacted_and_sealed_at_rest_with_a_key(database_url):
    async with running_server(database_url, secret_key=SECRET_KEY, allowed_destinations="127.0.0.1") as srv, \
            admin_client(srv.url) as client:
        ann = await make_device(client)
        r = await client.post("/api/admin/scouts", json={
            "user_id": ann["user"]["id"], "provider": "imap", "config": IMAP, "enabled": False,
            "classifier": "openai", "classifier_config": {"api_key": "sk-secret", "base_url": "http://127.0.0.1:9"}})
        assert r.status_code == 201, r.text
        scout = r.json()
        assert scout["config"]["password"] == "***" and scout["classifier_config"]["api_key"] == "***"
        assert scout["config"]["host"] == "127.0.0.1"
        stored = await srv.services.db.fetchrow("SELECT config, classifier_config FROM scouts WHERE id = $1",
                                                scout["id"])
        assert "hunter2" not in str(stored) and "sk-secret" not in str(stored)
        # sending "***" back keeps the stored secret
        r = await client.patch(f"/api/admin/scouts/{scout['id']}", json={"config": {**IMAP, "password": "***",
                                                                                    "folder": "Work"}})
        assert r.status_code == 200, r.text
        from roost.storage.scout_config import SecretBox

        config = (await srv.services.db.fetchrow("SELECT config FROM scouts WHERE id = $1", scout["id"]))["config"]
        assert SecretBox(SECRET_KEY).open(config)["password"] == "hunter2"
        assert config["folder"] == "Work"


@pytest.mark.parametrize("provider, config, classifier_config, words", [
    ("imap", IMAP, {}, "127.0.0.1 is a loopback address"),
    ("imap", {**IMAP, "host": "169.254.169.254"}, {}, "a cloud metadata address"),
    ("imap", {**IMAP, "host": "10.0.0.5"}, {}, "a private address"),
    ("imap", {**IMAP, "host": "100.64.0.1"}, {}, "CGNAT"),
    ("imap", {**IMAP, "host": "localhost"}, {}, "loopback"),
    ("push", {}, {"base_url": "http://127.0.0.1:1/"}, "loopback"),
    ("push", {}, {"base_url": "http://[::1]:8080/v1"}, "loopback"),
])
async def test_scouts_cannot_point_inside_the_network(database_url, provider, config, classifier_config, words):
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        body = {"user_id": ann["user"]["id"], "provider": provider, "config": config, "enabled": False}
        if classifier_config:
            body |= {"classifier": "openai", "classifier_config": classifier_config}
        r = await client.post("/api/admin/scouts", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "destination_not_allowed" and words in error["message"]
        assert "ROOST_ALLOWED_DESTINATIONS" in error["message"]  # says how to allow it
        # a PATCH cannot move an allowed scout there either
        r = await client.post("/api/admin/scouts", json={"user_id": ann["user"]["id"], "provider": "push"})
        sid = r.json()["id"]
        if classifier_config:
            r = await client.patch(f"/api/admin/scouts/{sid}", json={
                "classifier": "openai", "classifier_config": classifier_config})
            assert r.status_code == 400 and r.json()["error"]["code"] == "destination_not_allowed", r.text


async def test_allowed_destinations_let_a_self_hosted_server_through_and_insecure_shows(database_url):
    async with running_server(database_url, allowed_destinations="127.0.0.0/8,mail.internal") as srv, \
            admin_client(srv.url) as client:
        ann = await make_device(client)
        r = await client.post("/api/admin/scouts", json={
            "user_id": ann["user"]["id"], "provider": "imap", "config": IMAP, "enabled": False})
        assert r.status_code == 201, r.text
        assert r.json()["insecure"] is True and r.json()["config"]["insecure"] is True
        plain = {k: v for k, v in IMAP.items() if k != "insecure"}
        r = await client.post("/api/admin/scouts", json={
            "user_id": ann["user"]["id"], "provider": "imap", "config": plain, "enabled": False})
        assert r.status_code == 400 and "insecure" in r.json()["error"]["message"], r.text
        r = await client.post("/api/admin/scouts", json={
            "user_id": ann["user"]["id"], "provider": "imap", "config": {**plain, "starttls": True}, "enabled": False})
        assert r.status_code == 201 and r.json()["insecure"] is False, r.text


async def test_moving_a_config_elsewhere_needs_the_secret_again(database_url):
    async with running_server(database_url, allowed_destinations="127.0.0.1,127.0.0.2") as srv, \
            admin_client(srv.url) as client:
        ann = await make_device(client)
        r = await client.post("/api/admin/scouts", json={
            "user_id": ann["user"]["id"], "provider": "imap", "config": IMAP, "enabled": False,
            "classifier": "openai", "classifier_config": {"api_key": "sk-own", "base_url": "http://127.0.0.1:9/v1"}})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for change in ({"host": "127.0.0.2"}, {"port": 2}, {"user": "someone-else"}):
            r = await client.patch(f"/api/admin/scouts/{sid}", json={"config": {**IMAP, "password": "***", **change}})
            assert r.status_code == 400 and r.json()["error"]["code"] == "secret_required", r.text
        r = await client.patch(f"/api/admin/scouts/{sid}", json={"classifier_config": {
            "api_key": "***", "base_url": "http://127.0.0.2:9/v1"}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "secret_required", r.text
        # the same place with "***", or a new place with the secret itself: fine
        r = await client.patch(f"/api/admin/scouts/{sid}", json={"config": {**IMAP, "password": "***"}})
        assert r.status_code == 200, r.text
        r = await client.patch(f"/api/admin/scouts/{sid}", json={"config": {**IMAP, "host": "127.0.0.2",
                                                                            "password": "new-one"}})
        assert r.status_code == 200 and r.json()["config"]["host"] == "127.0.0.2", r.text

async def test_a_manual_run_of_a_disabled_scout_answers_409_scout_disabled(database_url):
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        ann = await make_device(client)
        scout = await make_push_scout(client, ann["user"]["id"], enabled=False)
        r = await client.post(f"/api/admin/scouts/{scout['id']}/run")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "scout_disabled"
        assert (await client.get(f"/api/admin/scouts/{scout['id']}")).json()["last_run_at"] is None  # nothing ran
        assert (await client.patch(f"/api/admin/scouts/{scout['id']}", json={"enabled": True})).status_code == 200
        r = await client.post(f"/api/admin/scouts/{scout['id']}/run")
        if r.status_code == 409:  # the actor, woken by the change, may hold it right now
            assert r.json()["error"]["code"] == "already_running"
        else:
            assert r.status_code == 200, r.text
