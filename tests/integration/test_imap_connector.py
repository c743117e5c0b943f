"""The ``imap`` connector against a real Dovecot (started by these tests), on both backends.

Mail is seeded by IMAP APPEND; scout runs go through ``run_scout`` with the rules classifier.
Time for the scout comes from an injected clock; the database stays on the real clock.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import itertools
import os
import time
from typing import Any, Iterator

import pytest
import trio

from roost.domain.scouting import run_scout
from roost.errors import InvalidInput
from roost.plugins.connectors import MAX_SENDER_CHARS, Ref, connectors
from roost.runtime import destinations
from roost.runtime.config import Settings
from roost.runtime.services import Services
from roost.storage import scouts as repo
from roost.storage import tenancy
from roost.storage.scouts import NewItem
from tests.support.dovecot import ALLOW, Dovecot, DovecotUnavailable, append, message, start_dovecot
from tests.support.fixed_clock import FixedClock

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
CI = os.environ.get("CI", "").strip().lower() == "true"
_folders = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    try:
        server = start_dovecot()
    except DovecotUnavailable as exc:
        if CI:
            pytest.fail(f"CI=true and Dovecot cannot run: {exc}", pytrace=False)
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def allow_loopback() -> Iterator[None]:
    """Dovecot listens on 127.0.0.1, which roost refuses unless allowed (tests opening the connector
    directly; ``_setup`` builds Services with the same setting)."""
    with destinations.installed(destinations.Policy.parse([ALLOW])):
        yield


@pytest.fixture
def folder(dovecot: Dovecot) -> str:
    """A fresh folder per test (and backend), so tests never see each other's mail."""
    name = f"T{os.getpid()}x{next(_folders)}"
    imap = dovecot.connect()
    try:
        assert imap.create(f'"{name}"')[0] == "OK"
    finally:
        imap.logout()
    return name


async def _setup(db: Any, config: dict[str, Any], *, allow: str = ALLOW,
                 check: bool = True) -> tuple[Services, dict[str, Any]]:
    services = Services.build(Settings(allowed_destinations=allow), db, FixedClock(T0))  # type: ignore[arg-type]
    acc = await tenancy.create_account(db, name="A", timezone="UTC", now=T0, actor="t")
    user = await tenancy.create_user(db, account_id=acc["id"], fields={
        "email": "a@example.com", "display_name": "A", "timezone": "UTC", "role": "member", "active": True,
        "digest_cadence": "off", "digest_time": "08:00", "digest_weekday": "monday", "quiet_hours": None},
        now=T0, actor="t")
    await tenancy.create_device(db, user_id=user["id"], name="phone", now=T0, actor="t")
    if check:
        connectors.create("imap").check_config(config)
    scout = await repo.create_scout(db, user_id=user["id"], fields={
        "provider": "imap", "config": config, "classifier": "rules",
        "classifier_config": {"spam_patterns": ["(?i)lottery"]}, "poll_interval_s": 60.0, "enabled": True,
        "auto_trash_spam": True, "device_inactivity_pause_days": 7, "ttl_days": 30, "max_failures": 3,
    }, now=T0, actor="t")
    return services, scout


def _seed(dovecot: Dovecot, folder: str, mails: list[tuple[str, str]]) -> None:
    imap = dovecot.connect()
    try:
        for subject, body in mails:
            append(imap, folder, message(subject, body))
    finally:
        imap.logout()


def _folder_state(dovecot: Dovecot, folder: str) -> dict[str, Any]:
    """Message count, how many are \\Seen, and the subjects, read without changing anything."""
    imap = dovecot.connect()
    try:
        typ, data = imap.select(f'"{folder}"', readonly=True)
        assert typ == "OK", data
        count = int(data[0])
        seen = imap.uid("SEARCH", "SEEN")[1][0].split()
        subjects = []
        if count:
            for item in imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]:
                if isinstance(item, tuple):
                    subjects.append(item[1].decode().split(":", 1)[1].strip())
        return {"count": count, "seen": len(seen), "subjects": subjects}
    finally:
        imap.logout()


async def _items(db: Any, scout_id: str) -> list[dict[str, Any]]:
    return (await repo.list_items(db, scout_id, status=None, limit=1000, cursor=None))["items"]


async def test_imap_scout_queues_relevant_mail_archives_spam_and_never_marks_mail_read(db, dovecot, folder):
    mails = [(f"You won the lottery #{i}" if i % 10 == 0 else f"Meeting notes {i}",
              f"Hello,\nthis is message number {i}.\nRegards") for i in range(1, 201)]
    await trio.to_thread.run_sync(_seed, dovecot, folder, mails)
    archive = f"{folder}Archive"
    services, scout = await _setup(db, dovecot.config(folder=folder, archive_folder=archive))

    report = await run_scout(services, scout["id"])
    assert report.error is None, report
    assert (report.listed, report.queued, report.discarded, report.archived) == (200, 180, 20, 20)

    items = await _items(db, scout["id"])
    queued = [i for i in items if i["status"] == "queued"]
    assert len(queued) == 180
    for item in queued:  # subject and snippet cached for delivery, nothing else of the mail
        n = item["raw_subject"].removeprefix("Meeting notes ")
        assert item["raw_snippet"] == f"Hello, this is message number {n}. Regards"
    spam = [i for i in items if i["status"] == "discarded"]
    assert len(spam) == 20 and all(i["archived_at"] is not None and "lottery" in i["reason"] for i in spam)
    assert await db.fetchval("SELECT COUNT(*) FROM scout_items WHERE body IS NOT NULL") == 0

    inbox = await trio.to_thread.run_sync(_folder_state, dovecot, folder)
    moved = await trio.to_thread.run_sync(_folder_state, dovecot, archive)
    assert inbox["count"] == 180 and inbox["seen"] == 0
    assert moved["count"] == 20 and moved["seen"] == 0
    assert sorted(moved["subjects"]) == sorted(s for s, _ in mails if "lottery" in s)

    # nothing new: nothing queued; a new message: queued on the next poll
    report = await run_scout(services, scout["id"])
    assert (report.listed, report.queued, report.error) == (0, 0, None)
    await trio.to_thread.run_sync(_seed, dovecot, folder, [("One more thing", "late news")])
    report = await run_scout(services, scout["id"])
    assert (report.listed, report.queued, report.error) == (1, 1, None)
    assert len([i for i in await _items(db, scout["id"]) if i["status"] == "queued"]) == 181
    assert (await trio.to_thread.run_sync(_folder_state, dovecot, folder))["seen"] == 0


def _recreate(dovecot: Dovecot, folder: str) -> None:
    imap = dovecot.connect()
    try:
        assert imap.delete(f'"{folder}"')[0] == "OK"
        assert imap.create(f'"{folder}"')[0] == "OK"
    finally:
        imap.logout()


async def test_a_new_uidvalidity_lists_the_folder_again_and_old_refs_never_fetch_another_message(
        db, dovecot, folder):
    await trio.to_thread.run_sync(_seed, dovecot, folder, [(f"first {i}", "a") for i in range(3)])
    services, scout = await _setup(db, dovecot.config(folder=folder))
    report = await run_scout(services, scout["id"])
    assert report.queued == 3
    old_cursor = (await repo.get_scout(db, scout["id"]))["cursor"]
    old_validity = old_cursor.split(":")[0]
    # a ref of the old validity still waiting for triage
    await repo.record_refs(db, scout, [NewItem(f"{old_validity}:1000")], cursor=old_cursor, now=T0)

    await trio.to_thread.run_sync(_recreate, dovecot, folder)  # a new UIDVALIDITY; UIDs start at 1 again
    await trio.to_thread.run_sync(_seed, dovecot, folder, [("second 0", "b"), ("second 1", "b")])
    report = await run_scout(services, scout["id"])
    assert (report.listed, report.queued, report.retried) == (2, 2, 1)
    cursor = (await repo.get_scout(db, scout["id"]))["cursor"]
    assert cursor.split(":")[0] != old_validity and cursor.endswith(":2")
    items = {i["source_msg_ref"]: i for i in await _items(db, scout["id"])}
    stale = items[f"{old_validity}:1000"]
    assert stale["status"] == "pending" and "UIDVALIDITY" in stale["last_error"]
    assert sorted(i["raw_subject"] for i in items.values() if i["status"] == "queued") == [
        "first 0", "first 1", "first 2", "second 0", "second 1"]


async def test_archive_falls_back_to_copy_and_expunge_of_that_message_only(dovecot, folder):
    await trio.to_thread.run_sync(_seed, dovecot, folder, [("keep me", "x"), ("spam", "y")])
    imap = dovecot.connect()
    try:  # the user deleted a message but has not expunged it: the fallback must not expunge it
        imap.select(f'"{folder}"')
        imap.store("1", "+FLAGS", r"(\Deleted)")
    finally:
        imap.logout()
    archive = f"{folder}Archive"
    async with connectors.create("imap").open(dovecot.config(folder=folder, archive_folder=archive)) as session:
        session.imap.capabilities = tuple(c for c in session.imap.capabilities if c != "MOVE")  # type: ignore[attr-defined]
        refs, _ = await session.list_new(None)
        await session.archive(Ref(refs[1].source_msg_ref))
        with pytest.raises(Exception, match="not in"):
            await session.fetch_content(Ref(refs[1].source_msg_ref))
        assert (await session.fetch_metadata(Ref(refs[0].source_msg_ref))).subject == "keep me"
    assert (await trio.to_thread.run_sync(_folder_state, dovecot, folder))["count"] == 1
    assert (await trio.to_thread.run_sync(_folder_state, dovecot, archive))["subjects"] == ["spam"]


async def test_a_wrong_password_is_a_run_error_not_a_crash(db, dovecot, folder):
    services, scout = await _setup(db, {**dovecot.config(folder=folder), "password": "wrong"})
    report = await run_scout(services, scout["id"])
    assert report.error is not None and report.error.startswith("auth:"), report.error
    assert (await repo.get_scout(db, scout["id"]))["last_error"] == report.error
    assert "AUTHENTICATIONFAILED" not in report.error  # the server's words stay out of the API


async def test_loopback_is_refused_at_connect_time_unless_allowed(db, dovecot, folder):
    services, scout = await _setup(db, dovecot.config(folder=folder), allow="")
    report = await run_scout(services, scout["id"])
    assert report.error is not None and report.error.startswith("blocked:"), report.error
    assert "ROOST_ALLOWED_DESTINATIONS" in report.error
    assert "Login" not in dovecot.log().split("\n")[-1]


async def test_a_plaintext_login_needs_insecure(db, dovecot, folder):
    config = {k: v for k, v in dovecot.config(folder=folder).items() if k != "insecure"}
    with pytest.raises(InvalidInput, match="insecure"):
        connectors.create("imap").check_config(config)
    # a config stored before the check (or by another route) is refused at connect time too
    services, scout = await _setup(db, config, check=False)
    report = await run_scout(services, scout["id"])
    assert report.error is not None and report.error.startswith("insecure:"), report.error


async def test_a_hostile_html_message_is_bounded_and_triaged(db, dovecot, folder):
    """1 MB of '<' as the only (HTML) body and 100 KB of '<' as From: triaged like any mail."""
    raw = (b"From: " + b"<" * 100_000 + b"\r\nTo: scout@example.com\r\nSubject: hostile\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n" + b"<" * 1_000_000 + b"\r\n")
    imap = dovecot.connect()
    try:
        append(imap, folder, raw)
        append(imap, folder, message("after it", "<p>fine</p>"))
    finally:
        imap.logout()
    services, scout = await _setup(db, dovecot.config(folder=folder))
    gaps: list[float] = []

    async def heartbeat() -> None:
        # How long the event loop is away between 10 ms sleeps, counted in the main thread's own CPU
        # time: what the loop spent running code (a blocking parse would show), not the time a busy
        # machine (the other test worker, Dovecot, PostgreSQL) left this process waiting for a core.
        while True:
            c0 = time.thread_time()
            await trio.sleep(0.01)
            gaps.append(time.thread_time() - c0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        started = trio.current_time()
        report = await run_scout(services, scout["id"])
        took = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert (report.error, report.queued, report.retried, report.failed) == (None, 2, 0, 0), report
    # The bar, kept here as the issue asks "in the suite" (bench/hostile_text.py has the
    # figures): both triaged within 2 s, and the loop never busy for 200 ms meanwhile.
    assert took < 2.0 and max(gaps) < 0.2, (took, max(gaps))
    items = {i["raw_subject"]: i for i in await _items(db, scout["id"])}
    hostile = items["hostile"]
    assert hostile["status"] == "queued" and len(hostile["sender"]) == MAX_SENDER_CHARS
    assert hostile["raw_snippet"].startswith("<<<")  # lexbor reads a lone '<' as text


async def test_html_mail_becomes_text_without_tags_scripts_or_entities(dovecot, folder):
    html = ("<html><head><style>p {color: red}</style></head><body><p>Invoice &amp; receipt</p>"
            "<script>alert(1)</script><div>due <b>Friday</b></div></body></html>")
    raw = (b"From: Ann <ann@example.com>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode() + b"\r\n")
    imap = dovecot.connect()
    try:
        append(imap, folder, raw)
    finally:
        imap.logout()
    async with connectors.create("imap").open(dovecot.config(folder=folder)) as session:
        refs, _ = await session.list_new(None)
        content = await session.fetch_content(Ref(refs[0].source_msg_ref))
        meta = await session.fetch_metadata(Ref(refs[0].source_msg_ref))
    assert content.subject == meta.subject == "café"
    assert content.sender == "Ann <ann@example.com>"
    assert " ".join(content.body.split()) == "Invoice & receipt due Friday"


def test_imaplib_is_the_blocking_client(dovecot):
    """Sanity: the fixture's server speaks IMAP with MOVE and UIDPLUS after login."""
    imap = dovecot.connect()
    try:
        caps = imap.capability()[1][0].decode().upper().split()
        assert "MOVE" in caps and "UIDPLUS" in caps
    finally:
        imap.logout()
    assert isinstance(imap, imaplib.IMAP4)
