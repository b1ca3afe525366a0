"""The station's web interface in a real browser (Debian's chromium driven by Playwright) over HTTPS.

The server is the real application under uvicorn with the station's self-signed certificate,
pinned in the browser by its SPKI hash (no "ignore all certificate errors"). Fed by a real
docking; the station's clock is the test's, so session expiry is tested without waiting.
"""
import contextlib
import ssl
import subprocess
import sys
import time

import httpx
from sqlalchemy import select

from recorder import records
from station.db import models as m
from station.web.tls import spki_pin
from tests.station_fixture import PASSWORD, sqlite_station_world  # noqa: F401
from tests.web_fixture import CHROMIUM, audit, browser, follow, http_sign_in, sign_in, web  # noqa: F401


def test_clerk_signs_in_lists_and_opens_a_recording(web, browser):
    page = sign_in(browser, web, "clerk")
    assert page.url == web.base_url + "/"
    rows = page.locator("#recordings tbody tr")
    assert rows.count() == 2
    assert "未标注" in rows.first.inner_text()
    follow(page, "#recordings tbody tr >> nth=0 >> a")
    assert page.locator("h1").inner_text().startswith(web.cfg.unit)
    assert page.locator("#segments tbody tr").count() in (1, 2)
    assert "入库时已按设备日志校验" in page.locator("#verification").inner_text()
    # filters: by label state and by an officer with no recordings
    page.goto(web.base_url + "/?label=已标注")
    assert "没有符合条件的录像" in page.locator("#recordings").inner_text()
    page.goto(web.base_url + "/?officer=031337")
    assert page.locator("#recordings tbody tr").count() == 2
    assert ("clerk", "user:clerk") in audit(web, "sign-in")


def test_an_officer_sees_his_own_and_is_refused_anothers_with_an_audited_page(web, browser):
    with web.st.db.session() as s:
        rec_id = s.scalars(select(m.Recording.id)).first()
    wang = sign_in(browser, web, "wang")
    assert wang.locator("#recordings tbody tr").count() == 2
    li = sign_in(browser, web, "li")
    assert "没有符合条件的录像" in li.locator("#recordings").inner_text()
    resp = li.goto(f"{web.base_url}/recordings/{rec_id}")
    assert resp.status == 403
    assert li.locator("h1").inner_text() == "无权访问" and "已记入审计日志" in li.inner_text("main")
    assert ("li", f"recording:{rec_id}") in audit(web, "not-allowed")
    # the refusal says where to ask instead: the access-request form, this recording filled in
    follow(li, "#ask")
    assert li.url == f"{web.base_url}/requests?recording=%23{rec_id}"
    assert li.input_value("input[name=recording]") == f"#{rec_id}"
    li.select_option("select[name=action]", "view")
    li.fill("#request-form input[name=reason]", "协助办案")
    follow(li, "#request-form button[type=submit]")
    assert ("li", f"recording:{rec_id}") in audit(web, "access-request")


def test_wrong_password_forged_forms_expiry_and_sign_out(web, browser):
    page = browser.new_context().new_page()
    page.goto(web.base_url + "/login")
    page.fill("input[name=username]", "clerk")
    page.fill("input[name=password]", "wrong-password-1")
    follow(page, "button[type=submit]")
    assert "用户名或密码错误" in page.inner_text("main")
    assert ("clerk", "user:clerk") in audit(web, "sign-in-refused")

    page = sign_in(browser, web, "clerk")
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}["station_session"]
    with httpx.Client(base_url=web.base_url, verify=False, cookies={"station_session": cookie},
                      follow_redirects=False) as c:
        # a form posted from elsewhere (no CSRF token): refused and audited; the session lives on
        r = c.post("/logout", data={"csrf": "forged"})
        assert r.status_code == 403 and "CSRF" in r.text
        assert ("clerk", "web-form") in audit(web, "csrf-refused")
        assert c.get("/").status_code == 200
        # a sign-in form without its cookie-bound token: refused
        r = httpx.post(web.base_url + "/login", data={"username": "clerk", "password": PASSWORD}, verify=False)
        assert r.status_code in (403, 422)
        # idle past [web] session_idle_minutes: signed out
        web.clock.advance((web.cfg.web.session_idle_minutes + 1) * 60 * 10**9)
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"

    page = sign_in(browser, web, "clerk")
    follow(page, "#logout")
    assert page.url.endswith("/login")
    old = {c["name"]: c["value"] for c in page.context.cookies()}.get("station_session")
    assert old is None
    assert ("clerk", "user:clerk") in audit(web, "sign-out")


def test_a_changed_password_ends_every_open_session_of_that_account(web):
    """An administrator resets li's password (it may be known to someone): li's two open sessions
    end in the same action, another user's does not, and li signs in with the new one."""
    from station.access.accounts import set_password
    new = "ein-neues-Passwort-2026"
    li_desk, li_laptop, wang = (http_sign_in(web, "li"), http_sign_in(web, "li"), http_sign_in(web, "wang"))
    with contextlib.closing(li_desk), contextlib.closing(li_laptop), contextlib.closing(wang):
        assert li_desk.get("/").status_code == li_laptop.get("/").status_code == wang.get("/").status_code == 200
        set_password(web.st, web.user("admin"), "li", new)
        for c in (li_desk, li_laptop):
            r = c.get("/")
            assert r.status_code == 303 and r.headers["location"] == "/login"
        assert wang.get("/").status_code == 200
    with web.st.db.session() as s:
        entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.type == "user-passwd")).one()
        assert records.parse_line(entry.line.encode("ascii")).payload["details"]["web_sessions_ended"] == 2
    with contextlib.closing(http_sign_in(web, "li", new)) as again:
        assert again.get("/").status_code == 200


def test_station_serve_runs_over_https_with_the_init_certificate(sqlite_station_world):
    w = sqlite_station_world
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "station", "serve", "--port", str(port)], env=w.env(),
                            stderr=subprocess.PIPE, text=True)
    trust = ssl.create_default_context(cafile=str(w.cfg.web_cert_path))   # the init certificate, pinned
    try:
        line = proc.stderr.readline()
        assert f"https://127.0.0.1:{port}/" in line and spki_pin(w.cfg.web_cert_path) in line
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert r.json() == {"status": "ok", "station": w.st.name}
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert httpx.get(f"https://127.0.0.1:{port}/", verify=trust,
                         follow_redirects=False).headers["location"] == "/login"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_playback_of_the_verified_originals_with_hls_and_a_tampered_segment_refused(web, browser):
    with web.st.db.session() as s:
        rec = s.scalars(select(m.Recording).where(m.Recording.recording_id == "r1")).one()
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)).all()
    assert len(segs) == 2
    # li may not play wang's recording: refused, audited
    li = sign_in(browser, web, "li")
    li.goto(f"{web.base_url}/recordings/{rec.id}")
    assert li.locator("h1").inner_text() == "无权访问"
    # wang plays his own (officer_views_own): the playlist lists the original segments
    page = sign_in(browser, web, "wang")
    page.goto(f"{web.base_url}/recordings/{rec.id}")
    page.fill("input[name=reason]", "核对现场情况")
    page.click("#play")
    page.wait_for_selector("#video[data-state=ready]", timeout=30000)
    playlist = page.evaluate("fetch(document.getElementById('video').dataset.playlist).then(r => r.text())")
    assert playlist.count("#EXTINF") == 2 and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    first = page.evaluate(f"fetch('/recordings/{rec.id}/segments/0.ts').then(r => r.arrayBuffer())"
                          ".then(b => Array.from(new Uint8Array(b)).length)")
    assert first == segs[0].size                     # the original bytes, as journaled
    page.evaluate("document.getElementById('video').play()")
    page.wait_for_function("() => document.getElementById('video').currentTime > 0.3", timeout=30000)
    # seek into the second segment
    page.evaluate("v => { const e = document.getElementById('video'); e.currentTime = 1.5; }", None)
    page.wait_for_function("() => document.getElementById('video').currentTime >= 1.5", timeout=30000)
    assert ("wang", f"recording:{rec.id}") in audit(web, "view")
    # a segment changed on disk: not served, an integrity alert in the audit journal
    path = web.st.store / "devices" / rec.device_id / "mirror" / segs[1].path
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    status = page.evaluate(f"fetch('/recordings/{rec.id}/segments/1.ts').then(r => r.status)")
    assert status == 409
    assert ("wang", f"recording:{rec.id}") in audit(web, "integrity-alert")
    # and a new playback is refused outright (view checks every segment first)
    page.goto(f"{web.base_url}/recordings/{rec.id}")
    page.click("#play")
    assert "校验" in page.inner_text("main") or "differs" in page.inner_text("main")


def test_the_labelling_queue_and_labelling_in_the_browser(web, browser):
    # the officer sees his two unlabelled recordings, his supervisor too, another officer none
    wang = sign_in(browser, web, "wang")
    wang.goto(web.base_url + "/queue")
    assert wang.locator("#queue tbody tr").count() == 2 and "未到期" in wang.inner_text("#queue")
    chief = sign_in(browser, web, "chief")
    chief.goto(web.base_url + "/queue")
    assert chief.locator("#queue tbody tr").count() == 2
    li = sign_in(browser, web, "li")
    li.goto(web.base_url + "/queue")
    assert "没有待标注的录像" in li.inner_text("#queue")
    # 49 h after the transfer: overdue, for the officer and his supervisor
    web.clock.advance(49 * 3600 * 10**9)
    clerk = sign_in(browser, web, "clerk")
    clerk.goto(web.base_url + "/queue?overdue=1")
    assert clerk.locator("#queue tbody tr.overdue").count() == 2
    # the clerk labels r1 from its page: the S3 name follows the label, the queue shrinks
    follow(clerk, "#queue tbody tr >> nth=0 >> a")
    clerk.fill("input[name=activity]", "夜间巡查")
    clerk.select_option("select[name=category]", "行政检查")
    clerk.fill("input[name=counterpart]", "某某餐饮店")
    clerk.fill("input[name=content]", "油烟排放检查")
    clerk.fill("input[name=place]", "思明区湖滨南路")
    follow(clerk, "#label-submit")
    assert "某某餐饮店" in clerk.locator("h1").inner_text() and "油烟排放检查" in clerk.locator("h1").inner_text()
    assert "行政检查" in clerk.inner_text("#labels") and clerk.locator("#label-form").count() == 0
    clerk.goto(web.base_url + "/queue")
    assert clerk.locator("#queue tbody tr").count() == 1
    # bad input comes back as a message, nothing written; li may not label wang's recording (audited)
    with web.st.db.session() as s:
        other = s.scalars(select(m.Recording).where(m.Recording.name.contains("未标注"))).one()
    clerk.goto(f"{web.base_url}/recordings/{other.id}")
    clerk.fill("input[name=case_no]", "NO-SUCH-CASE")
    clerk.fill("input[name=counterpart]", "x")
    clerk.fill("input[name=content]", "x")
    clerk.fill("input[name=place]", "x")
    follow(clerk, "#label-submit")
    assert "NO-SUCH-CASE" in clerk.inner_text("#label-error")
    with web.st.db.session() as s:
        assert s.scalars(select(m.Label).where(m.Label.recording == other.id)).all() == []
    li = sign_in(browser, web, "li")          # a new session: the old one ended idle 49 h ago
    csrf = li.evaluate("() => document.querySelector('input[name=csrf]').value")
    status = li.evaluate(
        "([u, t]) => fetch(u, {method: 'POST', body: new URLSearchParams({csrf: t, activity: 'a', category: '其他', "
        "counterpart: 'a', content: 'a', place: 'a'})}).then(r => r.status + ' ' + r.url)",
        [f"{web.base_url}/recordings/{other.id}/label", csrf])
    assert status.startswith("403"), status
    assert ("li", f"recording:{other.id}") in audit(web, "not-allowed")
