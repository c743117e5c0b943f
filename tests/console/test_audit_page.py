"""The audit log page: newest first, filters, paging, bad filters refused, live topic."""

from __future__ import annotations

import datetime as dt

import pytest

from roost.storage import audit

pytestmark = pytest.mark.timeout(30)


async def add_rows(db, n: int, *, actor: str, target_id: str | None = None) -> None:
    at = dt.datetime.now(dt.UTC)
    for i in range(n):
        await audit.record(db, at=at, actor=actor, action="x.made", target_type="thing",
                           target_id=target_id or f"t{i}", details={"i": i})


async def test_audit_page_entries_filters_paging_and_live_part(console, console_server):
    client = await console("read")
    html = (await client.get("/console/audit")).text
    assert "console:viewer" in html and "console.sign_in" in html and "<time datetime=" in html
    assert 'data-live="audit.written"' in html
    fragment = (await client.get("/console/audit", params={"fragment": "entries"})).text
    assert "<html" not in fragment and "console.sign_in" in fragment

    db = console_server.services.db
    await add_rows(db, 60, actor="service:app")
    await add_rows(db, 2, actor="service:other", target_id="needle")
    html = (await client.get("/console/audit", params={"actor": "service:other"})).text
    assert html.count("<code>needle</code>") == 2 and "service:app" not in html.split("<table>")[1]
    html = (await client.get("/console/audit", params={"target_id": "needle"})).text
    assert html.count("<code>needle</code>") == 2
    first = (await client.get("/console/audit", params={"actor": "service:app"})).text
    assert first.count("<tr>") == 51 and 'rel="next"' in first and 'rel="prev"' not in first  # 50 rows + header
    href = first.split('rel="next"')[0].split('<a href="')[-1].split('"')[0].replace("&amp;", "&")
    second = (await client.get(href)).text
    assert second.count("<tr>") == 11 and 'rel="prev"' in second and 'rel="next"' not in second
    assert "data-live" not in second.split('id="entries"')[1].split(">")[0]  # an older page holds still


async def test_audit_page_refuses_hostile_filters_without_a_500(console):
    client = await console("read")
    for params in ({"actor": "a" * 5000}, {"before": "'; DROP TABLE audit_log; --"}, {"before": "aud_" + "z" * 500},
                   {"target_id": "x\x00y"}):
        r = await client.get("/console/audit", params=params)
        assert r.status_code == 400, params
        assert "DROP" not in r.text
    r = await client.get("/console/audit", params={"actor": "<script>alert(1)</script>"})
    assert r.status_code == 200 and "<script>alert" not in r.text
