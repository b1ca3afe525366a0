"""Expiry (S11) in the web interface: the staff see what is due, kept and coming due; only an
administrator purges, recordings ticked one by one, with a reason and a confirmation — in real
chromium over HTTPS, the station's clock moved by the test (tests/web_fixture.py)."""
from contextlib import closing

from sqlalchemy import select

from station.clock import NS_PER_DAY
from station.db import models as m
from station.keeping import holds
from station.web.routes import expiry
from tests.station_fixture import sqlite_station_world  # noqa: F401
from tests.test_station_purge import stored_files
from tests.web_fixture import audit, browser, follow, http_sign_in, screenshot, sign_in, web  # noqa: F401


def _ids(w) -> dict[str, int]:
    with w.st.db.session() as s:
        return {r.recording_id: r.id for r in s.scalars(select(m.Recording))}


def _status(w, rec: int) -> str:
    with w.st.db.session() as s:
        return s.get(m.Recording, rec).status


def test_expiry_page_lists_due_kept_and_upcoming_and_only_a_confirmed_admin_purges(web, browser, monkeypatch):
    ids = _ids(web)
    r1, r2 = ids["r1"], ids["r2"]
    files_r1 = stored_files(web, "r1")
    holds.place(web.st, web.user("clerk"), r2, "complaint", reason="当事人投诉，需长期保存")

    # 350 days on: nothing is due yet; both end within the default 30 days, r2 marked held
    web.clock.advance(350 * NS_PER_DAY)
    with closing(http_sign_in(web, "clerk")) as c:
        page = c.get("/expiry").text
        assert 'id="due-' not in page and "没有到期待销毁的录像" in page
        assert f'id="upcoming-{r1}"' in page and f'id="upcoming-{r2}"' in page and "封存中" in page
        assert 'id="upcoming-' not in c.get("/expiry?days=10").text      # a shorter look-ahead
        assert 'id="expiry-purged"' not in c.get("/expiry?purged=1,x").text  # says only what a purge did
        monkeypatch.setattr(expiry, "SHOWN", 1)                           # a long list is cut, and says so
        page = c.get("/expiry").text
        assert page.count('id="upcoming-') == 1 and "共 2 条，仅显示前 1 条" in page
        monkeypatch.undo()

    # a year and a day on: r1 is due, r2 is past retention but kept by its hold
    web.clock.advance(16 * NS_PER_DAY)
    with closing(http_sign_in(web, "clerk")) as c:
        page = c.get("/expiry").text
        assert f'id="due-{r1}"' in page and f'id="kept-{r2}"' in page and "长期保存（封存）中" in page
        mb = sum(p.stat().st_size for p in files_r1[:2]) / 1e6          # its two segments in the mirror
        assert f"<td>{mb:.1f} MB</td>" in page.split(f'id="due-{r1}"')[1].split("</tr>")[0]
        assert 'id="purge-form"' not in page and "销毁须由管理员确认" in page      # a clerk cannot purge
        r = c.post("/expiry/purge", data={"csrf": c.csrf, "recording": str(r1), "reason": "到期", "confirm": "1"})
        assert r.status_code == 403
    assert ("clerk", "purge recordings (S11)") in audit(web, "not-allowed")
    assert _status(web, r1) == "stored" and all(p.is_file() for p in files_r1)

    with closing(http_sign_in(web, "admin")) as a:
        # no confirmation, or nothing ticked: said, and nothing purged
        for data, said in (({"recording": str(r1), "reason": "到期"}, "未勾选确认"),
                           ({"reason": "到期", "confirm": "1"}, "未选择录像")):
            r = a.post("/expiry/purge", data={"csrf": a.csrf, **data})
            assert r.status_code == 303 and said in a.get(r.headers["location"]).text
        # the held one named with it: refused (audited), and nothing purged, r1 neither
        r = a.post("/expiry/purge", data={"csrf": a.csrf, "recording": [str(r1), str(r2)], "reason": "到期",
                                          "confirm": "1"})
        assert "held" in a.get(r.headers["location"]).text
        assert audit(web, "purge-refused")
    assert _status(web, r1) == "stored" and _status(web, r2) == "stored"
    assert all(p.is_file() for p in files_r1)

    # the administrator in the browser: tick r1, give the reason, confirm
    page = sign_in(browser, web, "admin")
    page.goto(f"{web.base_url}/expiry")
    page.check(f"#due-{r1} input[name=recording]")
    page.fill("#purge-form input[name=reason]", "保存期限届满，无保存价值")
    page.check("#purge-confirm")
    follow(page, "#purge-submit")
    assert f"#{r1}" in page.inner_text("#expiry-purged")
    assert page.locator(f"#due-{r1}").count() == 0 and page.locator(f"#kept-{r2}").count() == 1
    screenshot(page, "expiry")
    assert _status(web, r1) == "purged" and _status(web, r2) == "stored"
    assert not any(p.exists() for p in files_r1)
    with web.st.db.session() as s:
        tomb = s.scalars(select(m.Purge).where(m.Purge.recording == r1)).one()
        assert (tomb.purged_by, tomb.confirmed_by, tomb.reason) == ("admin", "admin", "保存期限届满，无保存价值")
    assert ("admin", f"recording:{r1}") in audit(web, "purge")
