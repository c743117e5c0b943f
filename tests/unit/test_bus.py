"""The in-process bus and the relay's payload format (ids only, under PostgreSQL's 8000 bytes)."""

from __future__ import annotations

import trio
import trio.testing

from roost.actors.busrelay import decode_payload, encode_payloads
from roost.runtime.bus import Bus
from roost.runtime.leadership import Leadership


async def test_overflow_wakes_a_subscriber_waiting_for_a_message() -> None:
    bus = Bus()
    with bus.subscribe("t") as sub:
        got = []

        async def receive() -> None:
            got.append(await sub.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            bus.overflow("t")
        assert got[0].overflowed
        bus.publish("t", "a")
        assert (await sub.receive()).ids == ("a",)  # one overflow reported once, then messages again


async def test_only_shared_topics_go_to_the_relay_and_local_subscribers_always_get_them() -> None:
    bus = Bus()
    relayed = []
    bus.attach(lambda topic, ids: relayed.append((topic, ids)))
    bus.share("shared")
    with bus.subscribe("shared") as a, bus.subscribe("local") as b:
        bus.publish("shared", "1", "2")
        bus.publish("local", "3")
        assert (await a.receive()).ids == ("1", "2") and (await b.receive()).ids == ("3",)
    assert relayed == [("shared", ("1", "2"))]


def test_payloads_merge_by_topic_and_drop_repeated_ids() -> None:
    [payload] = encode_payloads([("a", ("1", "2")), ("b", ("x",)), ("a", ("2", "3"))])
    assert decode_payload(payload) == [("a", ("1", "2", "3")), ("b", ("x",))]


def test_payloads_are_split_under_the_limit_and_lose_no_id() -> None:
    ids = tuple(f"prp_{i:026d}" for i in range(2000))
    payloads = encode_payloads([("proposal.queued", ids)])
    assert len(payloads) > 1
    assert all(len(p.encode()) <= 7900 for p in payloads)
    received = [i for p in payloads for _, got in decode_payload(p) for i in got or ()]
    assert tuple(received) == ids


def test_an_id_too_long_for_any_payload_becomes_a_catch_up_for_its_topic() -> None:
    payloads = encode_payloads([("t", ("x" * 9000,)), ("u", ("ok",))], overflowed=["v"])
    entries = [e for p in payloads for e in decode_payload(p)]
    assert sorted(entries, key=lambda e: e[0]) == [("t", None), ("u", ("ok",)), ("v", None)]


def test_a_process_alone_leads_everything_and_in_a_cluster_only_what_it_took() -> None:
    leadership = Leadership()
    leadership.want("digest", "pruner")
    assert leadership.leads("digest") and leadership.led() == ["digest", "pruner"]
    leadership.engage()
    assert not leadership.leads("digest") and leadership.led() == []
    leadership.took("pruner")
    assert leadership.leads("pruner") and not leadership.leads("digest")
    leadership.lose_all()
    assert leadership.led() == []
