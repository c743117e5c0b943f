"""Secrets at rest and service tokens (issue 17 items 4 and 5), on SQLite and PostgreSQL.

Sealing with HKDF sub-keys and rotation (first key seals, every key opens, ``reseal_all`` and the
``roost reseal`` command move everything to the first), the unsealed state in the status and the
start-up log, unsubscribe links that die on re-subscribe, and named service tokens in the audit log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from roost.domain.digest import unsubscribe
from roost.runtime.clock import utcnow
from roost.storage import audit
from roost.storage import scouts as repo
from roost.storage.database import Database
from roost.storage.scout_config import PURPOSE_SEALING, PURPOSE_UNSUBSCRIBE, SEALED, SecretBox, reseal_all, subkey
from tests.support.digest import make_account, make_user
from tests.support.server import SECRET_KEY, admin_client, make_device, running_server

OLD, NEW = SECRET_KEY, Fernet.generate_key().decode()
APP_TOKEN, OPS_TOKEN = "app-token-" + "a1" * 16, "ops-token-" + "b2" * 16


def legacy_seal(key: str, value: Any) -> dict[str, str]:
    """A value as roost sealed it before sub-keys: Fernet keyed with SHA-256 of the key."""
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
    return {SEALED: fernet.encrypt(json.dumps(value).encode()).decode()}


# -- sealing ---------------------------------------------------------------------------------------


def test_sealing_uses_a_derived_sub_key_not_the_key_itself() -> None:
    sealed = SecretBox(OLD).seal({"password": "hunter2"})["password"][SEALED]
    derived = Fernet(base64.urlsafe_b64encode(subkey(OLD, PURPOSE_SEALING)))
    assert json.loads(derived.decrypt(sealed.encode())) == "hunter2"
    raw = Fernet(base64.urlsafe_b64encode(hashlib.sha256(OLD.encode()).digest()))
    with pytest.raises(Exception):  # noqa: B017 - InvalidToken: the raw-key Fernet does not open it
        raw.decrypt(sealed.encode())
    assert subkey(OLD, PURPOSE_SEALING) != subkey(OLD, PURPOSE_UNSUBSCRIBE)


def test_the_first_key_seals_and_every_key_opens() -> None:
    old_sealed = SecretBox(OLD).seal({"password": "p1"})
    rotated = SecretBox((NEW, OLD))
    assert rotated.open(old_sealed) == {"password": "p1"}
    new_sealed = rotated.seal({"password": "p2"})
    assert SecretBox(NEW).open(new_sealed) == {"password": "p2"}  # sealed under the first key only
    from roost.errors import NotConfigured

    with pytest.raises(NotConfigured, match="ROOST_SECRET_KEYS"):
        SecretBox(OLD).open(new_sealed)


async def test_reseal_moves_every_secret_to_the_first_key_and_seals_plain_ones(db: Database) -> None:
    now = utcnow()
    user = await make_user(db, await make_account(db, now), now=now, email="ann@example.com")
    configs = {
        "sealed_old": SecretBox(OLD).seal({"host": "h", "password": "pw:old"}),
        "legacy": {"host": "h", "password": legacy_seal(OLD, "pw:legacy")},
        "plain": {"host": "h", "password": "pw:plain"},
        "no_secret": {"host": "h"},
    }
    ids = {}
    for name, config in configs.items():
        row = await repo.create_scout(db, user_id=user["id"], now=now, actor="test", fields={
            "provider": "imap", "config": config, "classifier": "rules",
            "classifier_config": {"api_key": "key:" + name},
            "poll_interval_s": 60, "enabled": False, "auto_trash_spam": False, "device_inactivity_pause_days": None,
            "ttl_days": 7, "max_failures": 3})
        ids[name] = row["id"]

    report = await reseal_all(db, SecretBox((NEW, OLD)))

    assert (report.scouts, report.changed, report.failed) == (4, 4, [])  # every classifier_config had a secret
    only_new = SecretBox(NEW)
    for name, scout_id in ids.items():
        row = await repo.get_scout(db, scout_id)
        assert "pw:" not in json.dumps(row["config"]) and "key:" not in json.dumps(row["classifier_config"])
        assert only_new.open(row["classifier_config"]) == {"api_key": "key:" + name}
        if name != "no_secret":
            assert only_new.open(row["config"])["password"] == "pw:" + name.split("_")[-1]

    # A value no configured key opens is reported and left alone; the others are still done.
    stray = SecretBox(Fernet.generate_key().decode()).seal({"password": "lost"})
    await db.execute("UPDATE scouts SET config = $2 WHERE id = $1", ids["plain"], stray)
    again = await reseal_all(db, SecretBox(NEW))
    assert again.failed == [ids["plain"]] and again.changed == 3
    assert (await repo.get_scout(db, ids["plain"]))["config"] == stray


def test_roost_reseal_command_reseals_a_database(tmp_path: Path) -> None:
    """The CLI end to end, as an operator runs it after putting a new key first."""
    import trio

    url = f"sqlite:///{tmp_path}/roost.db"

    async def prepare() -> str:
        from roost.storage.database import open_database
        from roost.storage.migrator import migrate

        async with open_database(url) as db:
            await migrate(db)
            now = utcnow()
            user = await make_user(db, await make_account(db, now), now=now, email="ann@example.com")
            row = await repo.create_scout(db, user_id=user["id"], now=now, actor="test", fields={
                "provider": "imap", "config": {"password": "hunter2"}, "classifier": "rules",
                "classifier_config": {}, "poll_interval_s": 60, "enabled": False, "auto_trash_spam": False,
                "device_inactivity_pause_days": None, "ttl_days": 7, "max_failures": 3})
            return row["id"]

    async def stored(scout_id: str) -> Any:
        from roost.storage.database import open_database

        async with open_database(url) as db:
            return (await repo.get_scout(db, scout_id))["config"]

    scout_id = trio.run(prepare)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    weak = subprocess.run([sys.executable, "-m", "roost", "reseal", "--database-url", url], capture_output=True,
                          text=True, env={**env, "ROOST_SECRET_KEYS": "short"}, timeout=60)
    assert weak.returncode == 1 and "Fernet.generate_key()" in weak.stderr  # refused, saying how to make one
    assert trio.run(stored, scout_id) == {"password": "hunter2"}

    done = subprocess.run([sys.executable, "-m", "roost", "reseal", "--database-url", url], capture_output=True,
                          text=True, env={**env, "ROOST_SECRET_KEYS": f"{NEW},{OLD}"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "resealed: 1" in done.stdout
    config = trio.run(stored, scout_id)
    assert "hunter2" not in json.dumps(config) and SecretBox(NEW).open(config) == {"password": "hunter2"}


# -- status and start-up log -----------------------------------------------------------------------


async def test_without_a_key_the_status_and_the_start_up_log_say_secrets_are_unsealed(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with running_server(database_url) as srv, admin_client(srv.url) as client:
        status = (await client.get("/api/admin/status")).json()
    assert status["secrets"]["sealed"] is False and status["secrets"]["keys"] == 0
    assert "UNSEALED" in status["secrets"]["message"] and "ROOST_SECRET_KEYS" in status["secrets"]["message"]
    assert "scout secrets are stored UNSEALED" in capfd.readouterr().out


async def test_with_keys_the_status_says_sealed_and_names_the_tokens_never_their_values(database_url: str) -> None:
    async with running_server(database_url, service_token=None, service_tokens=f"app:{APP_TOKEN},ops:{OPS_TOKEN}",
                              secret_keys=f"{NEW},{OLD}") as srv, admin_client(srv.url, APP_TOKEN) as client:
        r = await client.get("/api/admin/status")
    assert r.status_code == 200, r.text
    assert r.json()["secrets"] == {"sealed": True, "keys": 2, "service_tokens": ["app", "ops"],
                                   "message": "scout secrets are sealed at rest (2 keys; the first seals)"}
    assert APP_TOKEN not in r.text and NEW not in r.text


# -- service tokens --------------------------------------------------------------------------------


async def test_each_named_token_works_and_the_audit_log_names_the_one_that_made_each_change(
    database_url: str
) -> None:
    async with running_server(database_url, service_token=None,
                              service_tokens=f"app:{APP_TOKEN},ops:{OPS_TOKEN}") as srv:
        async with admin_client(srv.url, APP_TOKEN) as app, admin_client(srv.url, OPS_TOKEN) as ops:
            account = (await app.post("/api/admin/accounts", json={"name": "Acme"})).json()
            env = await make_device(ops, account=account)
            r = await app.patch(f"/api/admin/users/{env['user']['id']}", json={"display_name": "Ann B"})
            assert r.status_code == 200, r.text
        for wrong in (APP_TOKEN[:-1], APP_TOKEN + "x", "", "default"):
            async with admin_client(srv.url, wrong or None) as anyone:
                assert (await anyone.get("/api/admin/status")).status_code == 401, wrong
        rows = await audit.list_entries(srv.services.db)
    by_action = {(r["action"], r["target_id"]): r["actor"] for r in rows}
    assert by_action[("account.create", account["id"])] == "service:app"
    assert by_action[("user.create", env["user"]["id"])] == "service:ops"
    assert by_action[("device.create", env["device"]["id"])] == "service:ops"
    assert by_action[("user.update", env["user"]["id"])] == "service:app"


def test_match_token_checks_every_entry_and_names_the_match() -> None:
    from roost.http.auth import match_token

    tokens = {"app": APP_TOKEN, "ops": OPS_TOKEN}
    assert match_token(OPS_TOKEN, tokens) == "ops" and match_token(APP_TOKEN, tokens) == "app"
    assert match_token(None, tokens) is None and match_token("", tokens) is None
    assert match_token(OPS_TOKEN + "\udcff", tokens) is None  # not UTF-8 encodable: still just "no"


# -- unsubscribe links -----------------------------------------------------------------------------


def test_unsubscribe_links_verify_under_every_key_and_carry_the_epoch() -> None:
    old, new = subkey(OLD, PURPOSE_UNSUBSCRIBE), subkey(NEW, PURPOSE_UNSUBSCRIBE)
    token = unsubscribe.sign(old, "usr_1", 3)
    assert unsubscribe.verify((new, old), token) == ("usr_1", 3)
    assert unsubscribe.verify((new,), token) is None
    assert unsubscribe.verify((old,), token.replace(".3.", ".4.")) is None  # the epoch is signed
    for bad in ("usr_1.x.abc", "usr_1..abc", ".3." + token.rsplit(".", 1)[1], "²." + token, "a" * 300):
        assert unsubscribe.verify((old,), bad) is None


async def test_an_old_unsubscribe_link_stops_working_after_a_re_subscribe(database_url: str) -> None:
    async with running_server(database_url, secret_key=OLD) as srv, admin_client(srv.url) as client:
        env = await make_device(client, digest_cadence="daily")
        user_id = env["user"]["id"]
        keys = await unsubscribe.keys(srv.services)
        link = unsubscribe.sign(keys[0], user_id, 0)
        async with admin_client(srv.url, token=None) as mail:
            assert (await mail.post("/unsubscribe", params={"token": link})).status_code == 200
            assert (await mail.post("/unsubscribe", params={"token": link})).status_code == 200  # idempotent
            r = await client.patch(f"/api/admin/users/{user_id}", json={"digest_cadence": "weekly"})
            assert r.status_code == 200 and r.json()["digest_cadence"] == "weekly"
            stale = await mail.post("/unsubscribe", params={"token": link})
            page = await mail.get("/unsubscribe", params={"token": link})
            assert (await client.get(f"/api/admin/users/{user_id}")).json()["digest_cadence"] == "weekly"
            fresh = await mail.post("/unsubscribe", params={"token": unsubscribe.sign(keys[0], user_id, 1)})
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_token"
    assert "turned back on" in stale.json()["error"]["message"]
    assert page.status_code == 400
    assert fresh.status_code == 200, fresh.text


async def test_changing_other_digest_settings_keeps_the_epoch(database_url: str) -> None:
    async with running_server(database_url, secret_key=OLD) as srv, admin_client(srv.url) as client:
        env = await make_device(client, digest_cadence="daily")
        user_id = env["user"]["id"]
        key = (await unsubscribe.keys(srv.services))[0]
        r = await client.patch(f"/api/admin/users/{user_id}", json={"digest_cadence": "weekly", "digest_time": "09:00"})
        assert r.status_code == 200, r.text
        async with httpx.AsyncClient(base_url=srv.url) as mail:
            r = await mail.post("/unsubscribe", params={"token": unsubscribe.sign(key, user_id, 0)})
    assert r.status_code == 200, r.text


def legacy_link(key: str, user_id: str) -> str:
    """A link as roost mailed it before epochs: ``<user id>.<mac>``, MAC'd with the raw key."""
    mac = hmac.new(key.encode(), b"roost-unsubscribe-v1:" + user_id.encode(), hashlib.sha256).digest()
    return f"{user_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_a_link_mailed_before_epochs_works_until_the_first_re_subscribe(database_url: str) -> None:
    async with running_server(database_url, secret_key=OLD) as srv, admin_client(srv.url) as client:
        env = await make_device(client, digest_cadence="daily")
        user_id = env["user"]["id"]
        link = legacy_link(OLD, user_id)
        async with admin_client(srv.url, token=None) as mail:
            forged = await mail.post("/unsubscribe", params={"token": legacy_link(NEW, user_id)})
            first = await mail.post("/unsubscribe", params={"token": link})
            r = await client.patch(f"/api/admin/users/{user_id}", json={"digest_cadence": "weekly"})
            assert r.status_code == 200, r.text
            stale = await mail.post("/unsubscribe", params={"token": link})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_token"
    assert first.status_code == 200, first.text
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_token"
