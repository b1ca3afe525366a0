"""The recordings list over a large generated catalogue (tests/catalogue_gen.py), on SQLite and PostgreSQL.

Every filter runs in SQL before the page limit, so a search finds a match however far down the
catalogue it is (the old list filtered in Python after ``LIMIT 500`` and could miss it); each
filter's result is compared with a plain row-by-row computation over the whole catalogue; a
page costs a fixed number of queries. Then screenshots of the list and of a recording's page.
"""
from __future__ import annotations

import re
from contextlib import closing

from sqlalchemy import event, select

from station.clock import NS_PER_HOUR
from station.db import models as m
from station.web.app import create_app
from station.web.routes.recordings import recording_rows
from tests.catalogue_gen import generate
from tests.station_fixture import sqlite_station_world, station_world  # noqa: F401
from tests.web_fixture import browser, http_sign_in, screenshot, serving, sign_in, web  # noqa: F401

N = 620


def _expected(st, f):
    """The ids a filter must return, computed row by row in Python over the whole catalogue."""
    now, deadline = st.now_ns(), st.cfg.labels.deadline_hours * NS_PER_HOUR
    with st.db.session() as s:
        recs = s.scalars(select(m.Recording)).all()
        labels = s.scalars(select(m.Label).where(m.Label.current.is_(True))).all()
        cases = {c.id: c.case_no for c in s.scalars(select(m.Case))}
        held = {h.recording for h in s.scalars(select(m.Hold).where(m.Hold.released_ns.is_(None)))}
    out = set()
    for r in recs:
        mine = [lab for lab in labels if lab.recording == r.id]
        state = "已标注" if mine else ("逾期未标注" if r.ingested_ns and now - r.ingested_ns > deadline else "未标注")
        if f.get("case") and f["case"] not in {cases.get(lab.case_id) for lab in mine}:
            continue
        if f.get("category") and f["category"] not in {lab.category for lab in mine}:
            continue
        if f.get("label") and f["label"] != state:
            continue
        if f.get("hold") and (f["hold"] == "held") != (r.id in held):
            continue
        if f.get("officer") and r.officer_id != f["officer"]:
            continue
        out.add(r.id)
    return out


def _all_ids(st, user, f):
    first = recording_rows(st, user, f, 1, page_size=10_000)
    return {row["id"] for row in first.rows}, first.total


def test_filters_in_sql_find_rows_beyond_the_first_500_on_both_backends(station_world):
    w = station_world
    st = w.st
    gen = generate(st, N, seed=7)
    clerk = w.user("clerk")
    # the needle: the oldest recording, the only one of its case, far beyond the first 500
    page = recording_rows(st, clerk, {"case": gen.needle_case})
    assert page.total == 1 and [r["id"] for r in page.rows] == [gen.needle_id]
    assert gen.needle_case in page.rows[0]["cases"]
    everything = recording_rows(st, clerk, {})
    assert everything.total == N and everything.pages == -(-N // 100) and len(everything.rows) == 100
    last = recording_rows(st, clerk, {}, everything.pages)
    assert last.rows[-1]["id"] == gen.needle_id          # newest first: the oldest is on the last page
    assert recording_rows(st, clerk, {}, 10**12).page == everything.pages   # past the end: the last page
    # each filter agrees with a row-by-row computation over the whole catalogue
    cats = st.cfg.labels.categories
    for f in ({"label": "已标注"}, {"label": "未标注"}, {"label": "逾期未标注"}, {"hold": "held"},
              {"hold": "free"}, {"category": cats[1]}, {"category": cats[0], "hold": "free", "label": "已标注"},
              {"officer": gen.officers[3]}, {"case": gen.needle_case, "label": "未标注"}):
        ids, total = _all_ids(st, clerk, f)
        want = _expected(st, f)
        assert ids == want and total == len(want), f
    assert _all_ids(st, clerk, {"label": "逾期未标注"})[1] > 0 and _all_ids(st, clerk, {"hold": "held"})[1] > 0
    # an officer sees only his own, whatever he asks for
    officer = w.user("wang")
    assert recording_rows(st, officer, {}).total == 0
    assert recording_rows(st, officer, {"officer": gen.officers[0]}).total == 0
    # a page costs a fixed number of queries, not one (or three) per row
    statements = []
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(st.db.engine, "before_cursor_execute", listener)
    try:
        assert len(recording_rows(st, clerk, {"hold": "free"}).rows) == 100
    finally:
        event.remove(st.db.engine, "before_cursor_execute", listener)
    assert len([q for q in statements if q.lstrip().upper().startswith("SELECT")]) <= 4, statements


def test_the_list_page_paginates_keeps_filters_and_refuses_bad_input(sqlite_station_world):
    w = sqlite_station_world
    gen = generate(w.st, N, seed=3)
    with serving(create_app(w.st), w.cfg.web_cert_path, w.cfg.web_key_path) as base_url, \
            closing(http_sign_in(base_url, "clerk")) as c:
        r = c.get("/", params={"label": "已标注"})
        assert r.status_code == 200
        nxt = re.search(r'<a rel="next" href="([^"]+)"', r.text)
        assert nxt and "label=" in nxt.group(1) and "page=2" in nxt.group(1)
        r2 = c.get(nxt.group(1).replace("&amp;", "&"))
        assert "第 2 / " in r2.text and r2.text.count('<tr class="') == 100
        r = c.get("/", params={"case": gen.needle_case})
        assert f'href="/recordings/{gen.needle_id}"' in r.text and "共 1 条" in r.text
        for bad in ({"label": "随便"}, {"hold": "maybe"}, {"page": "x"}, {"page": "0"}, {"date_from": "2026-13-45"}):
            r = c.get("/", params=bad)
            assert r.status_code == 200 and 'class="error"' in r.text and "没有符合条件的录像" in r.text, bad


def test_screenshots_of_the_list_and_a_recording_page(web, browser):
    generate(web.st, 150, seed=5)
    page = sign_in(browser, web, "clerk")
    page.set_viewport_size({"width": 1400, "height": 900})
    assert page.locator("#recordings tbody tr").count() == 100 and page.locator("a[rel=next]").count() == 2
    assert screenshot(page, "recordings-list").stat().st_size > 10_000
    with web.st.db.session() as s:
        rec = s.scalars(select(m.Recording).where(m.Recording.recording_id == "r1")).one()
    wang = sign_in(browser, web, "wang")
    wang.set_viewport_size({"width": 1400, "height": 900})
    wang.goto(f"{web.base_url}/recordings/{rec.id}")
    wang.fill("input[name=reason]", "核对现场情况")
    wang.click("#play")
    wang.wait_for_selector("#video[data-state=ready]", timeout=30000)
    assert screenshot(wang, "recording-page").stat().st_size > 10_000


def test_the_labelling_queue_pages_by_100_oldest_first_and_keeps_the_overdue_filter(sqlite_station_world):
    """An office behind on labelling: the queue page shows 100 at a time, the whole queue's totals,
    every unlabelled recording on exactly one page, in the order of ``queue()`` (oldest first)."""
    from station.casework.queue import queue
    w = sqlite_station_world
    generate(w.st, N, seed=5)
    expected = [i["recording"] for i in queue(w.st, w.user("clerk"))]
    overdue = [i["recording"] for i in queue(w.st, w.user("clerk"), overdue_only=True)]
    assert len(expected) > 100 and overdue
    with serving(create_app(w.st), w.cfg.web_cert_path, w.cfg.web_key_path) as base_url, \
            closing(http_sign_in(base_url, "clerk")) as c:
        seen, url = [], "/queue"
        for _ in range(20):                                   # bounded: N/100 pages at most
            r = c.get(url)
            assert r.status_code == 200
            assert f"共 {len(expected)} 条（逾期 {len(overdue)} 条）" in r.text
            seen += [int(x) for x in re.findall(r'<td><a href="/recordings/(\d+)">', r.text)]
            nxt = re.search(r'<a rel="next" href="([^"]+)"', r.text)
            if not nxt:
                break
            url = nxt.group(1).replace("&amp;", "&")
        assert seen == expected
        r = c.get("/queue", params={"overdue": "1"})
        page_ids = [int(x) for x in re.findall(r'<td><a href="/recordings/(\d+)">', r.text)]
        assert page_ids == overdue[:100]
        nxt = re.search(r'<a rel="next" href="([^"]+)"', r.text)
        assert (nxt is not None) == (len(overdue) > 100)
        if nxt:
            assert "overdue=1" in nxt.group(1)
        for bad in ("x", "0", "-3"):
            r = c.get("/queue", params={"page": bad})
            assert r.status_code == 200 and 'class="error"' in r.text and "页码无效" in r.text
            assert "第 1 / " in r.text
        r = c.get("/queue", params={"page": "999"})             # past the end: the last page
        pages = -(-len(expected) // 100)
        assert f"第 {pages} / {pages} 页" in r.text
