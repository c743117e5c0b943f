# ruff: noqa: ASYNC110  (tests poll state that other processes own; there is no event to wait on)
"""Several real ``roost serve`` processes on one PostgreSQL behave as one system (issue 9).

Most tests share one cluster of three processes (``cluster``; process 1 started first, so it
leads the singletons) and each makes its own account, users and devices. The kill -9 tests
start processes of their own. Timings are not asserted here (see ``bench/scaleout.py``); the
bounds below are only how long a test waits before it calls a thing lost.
"""

from __future__ import annotations

import json
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from roost.client import handshake, ws_url_from_http
from roost.storage.database import open_database
from roost.storage.postgres import lock_key
from tests.support.cluster import AckingDevice, Cluster, status, wait_for
from tests.support.dispatch import answering_device, start_batch
from tests.support.handoffs import handoff_body, make_account, make_user, open_inboxes, settle
from tests.support.pg import PgServer
from tests.support.scouting import make_push_scout, push
from tests.support.server import ServerProcess, admin_client, make_device
from tests.support.ws import close_code

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

HEARTBEAT_S = 0.2
# The digest tick, the pruner and each scheduled job (here the built-in processors', usage and tools).
SINGLETONS = {"digest", "pruner", "session:usage", "session:tools"}


def cluster_env(workdir: Path) -> dict[str, str]:
    return {
        "ROOST_HEARTBEAT_S": str(HEARTBEAT_S),
        "ROOST_DIGEST_TICK_SECONDS": "0.3",
        "ROOST_MAIL_TRANSPORT": "file",
        "ROOST_SESSION_DIR": str(workdir / "sessions"),
        "ROOST_PROCESSOR_USAGE_INTERVAL": "3600",
        "ROOST_GRACE_PERIOD_S": "3",
        "ROOST_LOG_LEVEL": "warning",
    }


@pytest.fixture(scope="module")
def cluster(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three processes on one fresh database, shared by the tests of this module that kill nothing."""
    name = pg_server.create_database()
    workdir = tmp_path_factory.mktemp("scaleout")
    (workdir / "sessions").mkdir()
    running = Cluster.start(pg_server.url_for(name), workdir, 3, env=cluster_env(workdir))
    try:
        yield running
    finally:
        running.stop()
        pg_server.drop_database(name)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


async def scout_counts(client: httpx.AsyncClient, scout_id: str) -> dict[str, int]:
    r = await client.get(f"/api/admin/scouts/{scout_id}")
    assert r.status_code == 200, r.text
    return r.json()["counts"]


async def leaders(url: str, *, ignore: str | None = None) -> dict[str, list[str]]:
    """Singleton name -> ids of the processes shown alive that lead it, as ``url``'s status shows them.

    Right after a kill -9 the dead process is still shown alive (with its old leads) until it
    misses three heartbeats, while its successor already shows them: ``ignore`` leaves it out.
    """
    out: dict[str, list[str]] = {}
    for proc in (await status(url))["processes"]:
        if proc["alive"] and proc["id"] != ignore:
            for name in proc["leads"]:
                out.setdefault(name, []).append(proc["id"])
    return out


# -- any socket, any process ------------------------------------------------------------------------


async def test_items_pushed_through_process_3_reach_devices_on_processes_1_and_2_once(cluster: Cluster) -> None:
    p1, p2, p3 = cluster.servers
    async with admin_client(p3.url) as via3, trio.open_nursery() as nursery:
        ann = await make_device(via3, email=unique("ann"))
        bob = await make_device(via3, account=ann["account"], email=unique("bob"))
        scouts = {who: await make_push_scout(via3, env["user"]["id"]) for who, env in (("ann", ann), ("bob", bob))}
        devices = {"ann": AckingDevice(ann["token"], [p1.url]), "bob": AckingDevice(bob["token"], [p2.url])}
        for device in devices.values():
            nursery.start_soon(device.run)
            with trio.fail_after(10):
                await device.connected.wait()

        refs = {who: [f"{who}-{i}" for i in range(10)] for who in devices}
        for i in range(0, 10, 2):  # a few requests each, interleaved
            for who in devices:
                await push(via3, scouts[who]["id"], refs[who][i:i + 2])

        for who, device in devices.items():
            await wait_for(lambda d=device, w=who: d.seen_refs >= set(refs[w]), what=f"{who}'s proposals")
            await wait_for(lambda w=who: _acked(via3, scouts[w]["id"], 10), what=f"{who}'s acks persisted")
        await trio.sleep(0.5)  # room for a duplicate to show up
        nursery.cancel_scope.cancel()

    for who, device in devices.items():
        assert sorted(device.seen_refs) == sorted(refs[who])
        assert all(n == 1 for n in device.frames.values()), f"{who} got a proposal twice: {device.frames}"
        assert device.connections == [p1.url if who == "ann" else p2.url]


async def test_a_push_that_meets_a_run_of_its_scout_in_another_process_is_triaged_after_that_run(
        cluster: Cluster) -> None:
    """Regression (seen in bench/scaleout.py as items left ``pending``): a push reaches process 2
    while another process runs the scout, and that run has already read its pending rows. Here the
    test holds the scout's lock in the other process's place and lets go without triaging; the
    pushed item must not wait for the scout's next poll (an hour here)."""
    p1, p2, p3 = cluster.servers
    async with admin_client(p2.url) as via2, open_database(cluster.database_url) as db, \
            trio.open_nursery() as nursery:
        ann = await make_device(via2, email=unique("ann"))
        scout = await make_push_scout(via2, ann["user"]["id"], poll_interval_s=3600)
        await wait_for(lambda: _no_holder(db, f"scout:{scout['id']}"), what="the scout's first run done")
        device = AckingDevice(ann["token"], [p1.url])
        nursery.start_soon(device.run)
        with trio.fail_after(10):
            await device.connected.wait()
        async with hold_lock(db, f"scout:{scout['id']}"):
            await push(via2, scout["id"], ["r1"])
            await trio.sleep(2.5)  # process 2's run meets the lock (and so does a retry a second later)
        await wait_for(lambda: device.seen_refs == {"r1"}, timeout_s=8, what="the item framed")
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def hold_lock(db: Any, name: str) -> AsyncIterator[None]:
    """Hold the advisory lock ``name``, waiting (up to 10 s) for a run that holds it to end: the
    device's connect may start one right after the first run."""
    give_up = trio.current_time() + 10
    while True:
        async with db.advisory_lock(name) as taken:
            if taken:
                yield
                return
        assert trio.current_time() < give_up, f"{name} stayed held for 10 s"
        await trio.sleep(0.05)


async def _acked(client: httpx.AsyncClient, scout_id: str, n: int) -> bool:
    counts = await scout_counts(client, scout_id)
    return counts["acked"] == n and counts["queued"] == 0 and counts["delivered"] == 0


async def test_a_handoff_created_in_process_1_reaches_sockets_held_by_processes_2_and_3(cluster: Cluster) -> None:
    p1, p2, p3 = cluster.servers
    async with admin_client(p1.url) as via1, trio.open_nursery() as nursery:
        account = await make_account(via1, "Handoffs")
        eve = await make_user(via1, account, unique("eve"), role="engineer")
        olga = await make_user(via1, account, unique("olga"), role="owner")
        inboxes = [*await open_inboxes(nursery, p2.url, [eve, olga]), *await open_inboxes(nursery, p3.url, [eve])]
        r = await via1.post("/api/v1/handoffs", json=handoff_body(account["id"], eve["id"]))
        assert r.status_code == 201, r.text
        handoff_id = r.json()["id"]
        await settle(inboxes, 1, timeout_s=15)
        nursery.cancel_scope.cancel()
    for inbox in inboxes:
        assert [(f["type"], f["handoff"]["id"]) for f in inbox.frames] == [("handoff_created", handoff_id)]


# -- claims, locks and singletons ---------------------------------------------------------------------


async def _lock_holders(db: Any, name: str) -> int:
    key = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    return await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND classid::bigint = $1 AND objid::bigint = $2", key >> 32, key & 0xFFFF_FFFF)


async def test_a_manual_processor_run_gets_409_in_other_processes_while_one_runs_it(cluster: Cluster) -> None:
    p1, p2, p3 = cluster.servers
    user_dir = cluster.workdir / "sessions" / f"u{uuid.uuid4().hex[:6]}"
    user_dir.mkdir(parents=True)
    for i in range(3):
        (user_dir / f"s{i}.jsonl").write_text('{"type": "summary", "summary": "nothing to count"}\n')
    async with open_database(cluster.database_url) as db, admin_client(p1.url) as via1, \
            admin_client(p2.url) as via2, admin_client(p3.url) as via3:
        await wait_for(lambda: _no_holder(db), what="no run of the usage processor going on")
        answers: dict[str, httpx.Response] = {}
        async with trio.open_nursery() as nursery:
            async with db.transaction() as tx:
                # The run in process 1 takes its lock and then waits on this table lock, so it is
                # certainly "running" while the other processes are asked.
                await tx.execute("LOCK TABLE session_processor_state IN ACCESS EXCLUSIVE MODE")

                async def run_in_1() -> None:
                    answers["p1"] = await via1.post("/api/admin/run-session-processor",
                                                    params={"processor": "usage"}, timeout=60)

                nursery.start_soon(run_in_1)
                await wait_for(lambda: _lock_holders(db, "processor:usage"), what="process 1 holding the lock")
                for name, client in (("p2", via2), ("p3", via3)):
                    answers[name] = await client.post("/api/admin/run-session-processor",
                                                      params={"processor": "usage"})
                assert "p1" not in answers
        after = await via2.post("/api/admin/run-session-processor", params={"processor": "usage"})

    assert answers["p2"].status_code == 409 and answers["p2"].json()["error"]["code"] == "already_running"
    assert answers["p3"].status_code == 409
    assert answers["p1"].status_code == 200, answers["p1"].text
    assert answers["p1"].json()["processed"] >= 3 and answers["p1"].json()["failed"] == 0
    assert after.status_code == 200 and after.json()["processed"] == 0  # the lock is free again; nothing new


async def _no_holder(db: Any, name: str = "processor:usage") -> bool:
    return await _lock_holders(db, name) == 0


async def test_the_digest_tick_sends_each_due_digest_once_with_three_processes_ticking(cluster: Cluster) -> None:
    p1, p2, p3 = cluster.servers
    async with admin_client(p1.url) as via1, open_database(cluster.database_url) as db:
        account = await make_account(via1, "Digests")
        users = []
        for i in range(6):
            r = await via1.post("/api/admin/users", json={
                "account_id": account["id"], "email": unique(f"digest{i}"), "display_name": f"D{i}",
                "digest_cadence": "daily"})
            assert r.status_code == 201, r.text
            users.append(r.json())
            for topic in ("rfc-1", "rfc-2"):
                r = await via1.post("/api/v1/notifications", json={
                    "recipient_user_id": users[-1]["id"], "event_kind": "comment", "topic": topic})
                assert r.status_code == 201, r.text
        ids = [u["id"] for u in users]
        # Their slots come now (instead of at 08:00 local): the next tick of whichever process leads.
        await db.execute("UPDATE digest_schedule SET next_at = now() - interval '1 minute' WHERE user_id = ANY($1)",
                         ids)

        async def all_sent() -> bool:
            return await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'digest' AND status = 'sent'"
                                     " AND recipient_user_id = ANY($1)", ids) >= len(ids)

        await wait_for(all_sent, what="every digest sent")
        await trio.sleep(1.5)  # several more ticks of every process: none may send again
        digest_rows = await db.fetch("SELECT recipient_user_id FROM digests WHERE recipient_user_id = ANY($1)", ids)
        mails = await db.fetch("SELECT recipient_user_id, status FROM outbox WHERE kind = 'digest'"
                               " AND recipient_user_id = ANY($1)", ids)
        next_slots = await db.fetch("SELECT next_at > now() AS later FROM digest_schedule WHERE user_id = ANY($1)",
                                    ids)
    assert sorted(r["recipient_user_id"] for r in digest_rows) == sorted(ids)
    assert sorted(r["recipient_user_id"] for r in mails) == sorted(ids)
    assert all(r["later"] for r in next_slots)
    files = [f for d in cluster.mail_dirs() if d.exists() for f in d.glob("*.eml")]
    sent_to = [u["email"] for u in users for f in files if f"To: {u['email']}" in f.read_text(errors="replace")]
    assert sorted(sent_to) == sorted(u["email"] for u in users)  # one file per digest, in one process's outbox


async def test_a_batch_sent_through_process_3_reaches_devices_on_1_and_2_within_the_accounts_limit(
        cluster: Cluster) -> None:
    """The two-process limit test (test_dispatch_processes.py) with the batch's process holding no socket."""
    p1, p2, p3 = cluster.servers
    async with admin_client(p3.url) as via3:
        first = await make_device(via3, email=unique("out1"))
        second = await make_device(via3, account=first["account"], email=unique("out2"))
        r = await via3.put(f"/api/admin/accounts/{first['account']['id']}/outreach-settings",
                           json={"max_per_minute": 7})
        assert r.status_code == 200, r.text
        seen_1: list[str] = []
        seen_2: list[str] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(answering_device, p1.url, first["token"], seen_1)
            await nursery.start(answering_device, p2.url, second["token"], seen_2)
            batches = [await start_batch(via3, first, 10), await start_batch(via3, second, 10)]
            await wait_for(lambda: len(seen_1) + len(seen_2) >= 7, what="7 send_requests")
            await trio.sleep(1.0)  # room for an eighth, which the limit forbids
            nursery.cancel_scope.cancel()
        counts = [(await via3.get(f"/api/v1/outreach/batches/{b['id']}")).json()["counts"] for b in batches]
    assert len(seen_1) + len(seen_2) == 7 == len(set(seen_1) | set(seen_2))
    assert sum(c["sent"] + c["dispatched"] for c in counts) == 7
    assert sum(c["pending"] for c in counts) == 13


async def test_revocation_deactivation_and_batch_done_reach_sockets_held_by_other_processes(
        cluster: Cluster) -> None:
    p1, p2, p3 = cluster.servers
    async with admin_client(p1.url) as via1, admin_client(p3.url) as via3:
        env = await make_device(via1, email=unique("sockev"))
        r = await via1.post("/api/admin/devices", json={"user_id": env["user"]["id"], "name": "laptop"})
        assert r.status_code == 201, r.text
        laptop = r.json()
        other = await make_device(via1, account=env["account"], email=unique("sockev2"))
        async with open_websocket_url(ws_url_from_http(p3.url)) as creators_laptop, \
                open_websocket_url(ws_url_from_http(p2.url)) as doomed, \
                open_websocket_url(ws_url_from_http(p2.url)) as others:
            await handshake(creators_laptop, laptop["token"])
            await handshake(doomed, env["token"])
            await handshake(others, other["token"])
            batch = await start_batch(via1, env, 2)
            r = await via1.delete(f"/api/admin/devices/{env['device']['id']}")  # held by process 2
            assert r.status_code == 200, r.text
            assert await close_code(doomed) == 1008
            with trio.fail_after(10):  # the batch ended by the revocation: its creator hears it on 3
                frame = json.loads(await creators_laptop.get_message())
                while frame["type"] != "batch_done":
                    frame = json.loads(await creators_laptop.get_message())
            assert frame["batch"]["id"] == batch["id"] and frame["batch"]["status"] == "done"
            r = await via3.patch(f"/api/admin/users/{other['user']['id']}", json={"active": False})
            assert r.status_code == 200, r.text
            assert await close_code(others) == 1008



async def test_every_process_lists_all_live_processes_and_one_leader_per_singleton(cluster: Cluster) -> None:
    ports = sorted(s.port for s in cluster.servers)

    async def listed_everywhere() -> list[dict]:
        answers = [await status(s.url) for s in cluster.servers]
        ok = all(sorted(p["port"] for p in a["processes"] if p["alive"]) == ports for a in answers)
        return answers if ok else []

    answers = await wait_for(listed_everywhere, what="three live processes in every status")
    for server, answer in zip(cluster.servers, answers, strict=True):
        me = next(p for p in answer["processes"] if p["id"] == answer["process_id"])
        assert me["port"] == server.port and me["pid"] == server.proc.pid
        assert {"id", "host", "pid", "port", "started_at", "last_heartbeat", "sockets", "leads", "alive"} <= set(me)
    assert len({a["process_id"] for a in answers}) == 3
    led = await wait_for(lambda: _leading_all(cluster.servers[1].url), what="a leader for each singleton")
    assert all(len(ids) == 1 for ids in led.values()), led  # one leader per singleton


async def _leading_all(url: str) -> dict[str, list[str]] | None:
    led = await leaders(url)
    return led if SINGLETONS <= set(led) else None


async def test_a_process_killed_with_sigkill_is_shown_dead_after_three_heartbeats(
        cluster: Cluster, tmp_path: Path) -> None:
    extra = await trio.to_thread.run_sync(lambda: ServerProcess.start(
        cluster.database_url, tmp_path, env=cluster_env(cluster.workdir), ready_timeout_s=60))
    try:
        extra_id = (await status(extra.url))["process_id"]

        async def seen_alive() -> bool:
            procs = {p["id"]: p for p in (await status(cluster[0].url))["processes"]}
            return extra_id in procs and procs[extra_id]["alive"]

        await wait_for(seen_alive, what="the extra process listed alive")
        extra.kill()  # SIGKILL: no goodbye, only its heartbeats stop

        async def shown_dead() -> dict | None:
            procs = {p["id"]: p for p in (await status(cluster[0].url))["processes"]}
            return procs if extra_id in procs and not procs[extra_id]["alive"] else None

        procs = await wait_for(shown_dead, what="the killed process shown dead")
        assert all(p["alive"] for pid, p in procs.items() if pid != extra_id and p["port"] in
                   {s.port for s in cluster.servers})
    finally:
        extra.kill()


# -- kill -9 in the middle of a delivery stream ---------------------------------------------------------


async def test_kill_9_of_process_1_mid_stream_loses_nothing_repeats_only_unacked_and_moves_leadership(
        pg_empty_url: str, tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    cluster = await trio.to_thread.run_sync(lambda: Cluster.start(pg_empty_url, tmp_path, 3,
                                                                  env=cluster_env(tmp_path)))
    p1, p2, p3 = cluster.servers
    per_device = 60
    try:
        async with admin_client(p3.url) as via3, open_database(pg_empty_url) as db:
            p1_id = (await status(p1.url))["process_id"]
            led_by_1 = await wait_for(lambda: _led_by(p3.url, p1_id), what="process 1 leading the singletons")

            envs, scouts, devices = [], [], []
            for i in range(3):
                env = await make_device(via3, email=unique(f"k{i}"),
                                        **({"account": envs[0]["account"]} if envs else {}))
                envs.append(env)
                scouts.append(await make_push_scout(via3, env["user"]["id"]))
                devices.append(AckingDevice(env["token"], [p1.url, p2.url]))
            refs = [[f"d{i}-{j}" for j in range(per_device)] for i in range(3)]

            async with trio.open_nursery() as nursery:
                for device in devices:
                    nursery.start_soon(device.run)
                    with trio.fail_after(10):
                        await device.connected.wait()

                async def stream() -> None:
                    for j in range(0, per_device, 3):
                        for i in range(3):
                            await push(via3, scouts[i]["id"], refs[i][j:j + 3])
                        await trio.sleep(0.03)

                nursery.start_soon(stream)
                await wait_for(lambda: sum(len(d.seen_refs) for d in devices) >= per_device,
                               what="a third of the stream delivered")
                await trio.to_thread.run_sync(p1.kill)
                acked_at_kill = {r["id"] for r in await db.fetch("SELECT id FROM scout_items WHERE status = 'acked'")}

                moved = await wait_for(lambda: _moved(p3.url, p1_id, led_by_1), timeout_s=5,
                                       what="process 1's leadership taken over")
                for i, device in enumerate(devices):
                    await wait_for(lambda d=device, r=refs[i]: d.seen_refs >= set(r), timeout_s=20,
                                   what=f"device {i}'s proposals after the kill")
                    await wait_for(lambda s=scouts[i]: _acked(via3, s["id"], per_device), timeout_s=20,
                                   what=f"device {i}'s acks persisted")
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
    finally:
        cluster.stop()

    assert acked_at_kill, "the kill came before any ack was persisted: the test proves nothing"
    assert set(moved) >= led_by_1
    for i, device in enumerate(devices):
        assert device.seen_refs == set(refs[i])
        assert device.connections[0] == p1.url and set(device.connections[1:]) == {p2.url}
        repeated = {pid for pid, n in device.frames.items() if n > 1}
        assert not repeated & acked_at_kill, f"device {i} got proposals again whose ack was persisted"


async def _led_by(url: str, process_id: str) -> set[str] | None:
    mine = {name for name, ids in (await leaders(url)).items() if ids == [process_id]}
    return mine if SINGLETONS <= mine else None


async def _moved(url: str, dead_id: str, names: set[str]) -> dict[str, list[str]] | None:
    led = await leaders(url, ignore=dead_id)
    return led if all(len(led.get(name, [])) == 1 for name in names) else None
