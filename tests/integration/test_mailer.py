"""The mailer against a real SMTP server (aiosmtpd, in its own thread and event loop) on both backends."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import sys

import trio
from trio.testing import wait_all_tasks_blocked as wait_all_blocked

from roost.actors import mailer as mailer_module
from roost.actors.mailer import Mailer
from roost.plugins.transports.file import FileTransport
from roost.plugins.transports.smtp import SmtpTransport
from roost.storage import outbox
from roost.storage.database import Database
from tests.support.digest import make_services
from tests.support.server import free_port


async def queue_one(db: Database, **extra) -> str:
    async with db.transaction() as tx:
        return await outbox.enqueue(
            tx, recipient_user_id=None, to="ann@example.com", subject="Hello Ann", text="plain body\n",
            html="<p>html body</p>", kind="test",
            **{"headers": {"List-Unsubscribe": "<https://x.example/u?token=t>"}, **extra},
        )


async def test_smtp_delivers_both_parts_with_a_stable_message_id(db: Database, smtp) -> None:
    server, port = smtp
    services = make_services(db, mail_from="roost <noreply@example.com>")
    outbox_id = await queue_one(db)

    done = await Mailer().drain(services, SmtpTransport("127.0.0.1", port))

    assert done == {"sent": 1, "queued": 0, "failed": 0}
    [msg] = server.messages
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "sent" and row["sent_at"] is not None and row["attempts"] == 1
    assert msg["Message-ID"] == row["message_id"] == f"<{outbox_id}@roost.mail>"
    assert (msg["From"], msg["To"], msg["Subject"]) == ("roost <noreply@example.com>", "ann@example.com", "Hello Ann")
    assert msg["List-Unsubscribe"] == "<https://x.example/u?token=t>"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "plain body"
    assert msg.get_body(("html",)).get_content().strip() == "<p>html body</p>"
    assert await Mailer().drain(services, SmtpTransport("127.0.0.1", port)) == {"sent": 0, "queued": 0, "failed": 0}
    assert len(server.messages) == 1


async def test_a_4xx_reply_is_retried_later_and_then_sent(db: Database, smtp) -> None:
    server, port = smtp
    services = make_services(db, mail_retry_initial_s=0.0)
    outbox_id = await queue_one(db)
    server.fail_next.append("451 try again later")

    first = await Mailer().drain(services, SmtpTransport("127.0.0.1", port))
    row = await outbox.get(db, outbox_id)
    # retry_initial 0 s: the retry is due at once, so the same drain may already have sent it
    assert first["queued"] + first["sent"] >= 1
    if row["status"] != "sent":
        await Mailer().drain(services, SmtpTransport("127.0.0.1", port))
        row = await outbox.get(db, outbox_id)
    assert row["status"] == "sent" and row["attempts"] == 2
    assert len(server.messages) == 1


async def test_backoff_delays_the_retry(db: Database, smtp) -> None:
    server, port = smtp
    services = make_services(db, mail_retry_initial_s=60.0)
    outbox_id = await queue_one(db)
    server.fail_next.append("421 closing")
    assert (await Mailer().drain(services, SmtpTransport("127.0.0.1", port)))["queued"] == 1
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "queued" and "421" in row["last_error"]
    assert row["next_attempt_at"] > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40)


async def test_a_refused_connection_is_transient_and_gives_up_after_max_attempts(db: Database) -> None:
    services = make_services(db, mail_retry_initial_s=0.0, mail_max_attempts=2)
    outbox_id = await queue_one(db)
    transport = SmtpTransport("127.0.0.1", free_port(), timeout_s=2)
    await Mailer().drain(services, transport)
    await Mailer().drain(services, transport)
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "failed" and row["attempts"] == 2 and "gave up after 2 attempts" in row["last_error"]


async def test_a_5xx_reply_fails_at_once(db: Database, smtp) -> None:
    server, port = smtp
    services = make_services(db)
    outbox_id = await queue_one(db)
    server.fail_next.append("550 no such user")
    assert (await Mailer().drain(services, SmtpTransport("127.0.0.1", port)))["failed"] == 1
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "failed" and "550" in row["last_error"]


async def test_a_crash_between_acceptance_and_commit_is_resent_with_the_same_message_id(
    db: Database, database_url: str, smtp
) -> None:
    server, port = smtp
    outbox_id = await queue_one(db)
    with trio.fail_after(60):
        proc = await trio.run_process([sys.executable, "-m", "tests.support.mail_crash", database_url, str(port)],
                                      capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(server.messages) == 1
    assert (await outbox.get(db, outbox_id))["status"] == "sending"

    services = make_services(db, mail_sending_lease_s=0.0)  # PostgreSQL reclaims by lease; SQLite at start
    mailer = Mailer()
    assert await mailer.reclaim(services, at_start=True) == 1
    assert (await mailer.drain(services, SmtpTransport("127.0.0.1", port)))["sent"] == 1
    assert await mailer.drain(services, SmtpTransport("127.0.0.1", port)) == {"sent": 0, "queued": 0, "failed": 0}

    first, second = server.messages
    assert first["Message-ID"] == second["Message-ID"] == f"<{outbox_id}@roost.mail>"
    assert (await outbox.get(db, outbox_id))["status"] == "sent"


async def test_a_live_claim_is_not_reclaimed_before_its_lease_ends(db: Database) -> None:
    services = make_services(db)
    await queue_one(db)
    [row] = await outbox.claim(db, now=services.clock.now(), limit=10, claimed_by="other-process")
    assert await Mailer().reclaim(services, at_start=False) == 0
    assert (await outbox.get(db, row["id"]))["status"] == "sending"


async def test_the_file_transport_writes_one_eml_per_message(db: Database, tmp_path) -> None:
    services = make_services(db)
    ids = [await queue_one(db) for _ in range(3)]
    await Mailer().drain(services, FileTransport(str(tmp_path / "mail")))
    files = sorted(p.name for p in (tmp_path / "mail").iterdir())
    assert files == sorted(f"{i}@roost.mail.eml" for i in ids)
    parsed = email.message_from_bytes((tmp_path / "mail" / files[0]).read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Hello Ann"


async def test_many_messages_are_each_written_once_and_all_recorded_sent(db: Database, tmp_path) -> None:
    services = make_services(db)
    ids = [await queue_one(db) for _ in range(260)]  # more than one claim, several workers, several groups
    done = await Mailer().drain(services, FileTransport(str(tmp_path / "mail")))
    assert done == {"sent": 260, "queued": 0, "failed": 0}
    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == sorted(f"{i}@roost.mail.eml" for i in ids)
    assert (await outbox.counts(db))["sent"] == 260


async def test_outcomes_that_come_back_during_a_write_are_written_together(db: Database, monkeypatch) -> None:
    services = make_services(db)
    ids = [await queue_one(db) for _ in range(5)]
    rows = await outbox.claim(db, now=services.clock.now(), limit=10, claimed_by=services.process_id)
    groups: list[list[str]] = []
    first_write = trio.Event()
    release = trio.Event()
    real = outbox.mark_sent_many

    async def slow_mark(db_, outbox_ids, **kwargs):
        groups.append(list(outbox_ids))
        if len(groups) == 1:
            first_write.set()
            await release.wait()  # the first group's statement is still running
        return await real(db_, outbox_ids, **kwargs)

    monkeypatch.setattr(outbox, "mark_sent_many", slow_mark)
    recorder = mailer_module._Recorder(services)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.record, [mailer_module._Outcome(rows[0])])
        await first_write.wait()
        for row in rows[1:]:
            nursery.start_soon(recorder.record, [mailer_module._Outcome(row)])
        await wait_all_blocked()
        release.set()
    assert [sorted(g) for g in groups] == [[rows[0]["id"]], sorted(r["id"] for r in rows[1:])]
    assert recorder.done == {"sent": 5, "queued": 0, "failed": 0}
    assert [(await outbox.get(db, i))["status"] for i in ids] == ["sent"] * 5


async def test_a_transport_plugins_own_error_is_retried_with_its_reason(db: Database) -> None:
    class Broken:
        name = "broken"

        def send(self, mail) -> None:
            raise RuntimeError("plugin bug")

    services = make_services(db, mail_retry_initial_s=60.0)
    outbox_id = await queue_one(db)
    assert await Mailer().drain(services, Broken()) == {"sent": 0, "queued": 1, "failed": 0}
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "queued" and row["last_error"] == "RuntimeError: plugin bug"


async def test_a_message_that_cannot_be_composed_fails_with_the_reason(db: Database, tmp_path) -> None:
    services = make_services(db)
    outbox_id = await queue_one(db, headers={"X-Huge": "x" * 1200})
    assert await Mailer().drain(services, FileTransport(str(tmp_path))) == {"sent": 0, "queued": 0, "failed": 1}
    row = await outbox.get(db, outbox_id)
    assert row["status"] == "failed" and row["last_error"].startswith("cannot compose the message")
