"""Review and oversight in a real browser (Debian's chromium via Playwright, over HTTPS): access
requests and approvals (S8), the supervision dashboard (S10, D5, D11, S2), the audit trail of a
recording and of a user, and the recording page's timeline and time quality.

Screenshots of each page are saved as test artifacts (``out/screenshots/``, printed).
"""
import base64
import contextlib
import subprocess

import httpx
from sqlalchemy import select

from station.access.requests import approve, request_access
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.supervision import stats
from station.web import charts
from station.web.routes.supervision import _query, chart_unit
from tests.media_fixture import WALL0
from tests.station_fixture import OFFICER2_NO, OFFICER_NO, sqlite_station_world  # noqa: F401
from tests.web_fixture import audit, browser, csrf_of, follow, http_sign_in, screenshot, sign_in, web  # noqa: F401


class Answer:
    """What a same-origin ``fetch`` in the page got: its status and body (the browser's own session)."""

    def __init__(self, status, body):
        self.status, self.body = status, body

    @property
    def ok(self):
        return 200 <= self.status < 300

    def text(self):
        return self.body.decode("utf-8-sig")


def fetch(page, url, form=None):
    """GET ``url`` (or POST ``form``) from inside the page: its cookies, the pinned certificate."""
    status, b64 = page.evaluate("""async ([url, form]) => {
        const r = await fetch(url, form ? {method: 'POST', body: new URLSearchParams(form)} : {});
        const b = new Uint8Array(await r.arrayBuffer());
        let s = ''; for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
        return [r.status, btoa(s)];
    }""", [url, form])
    return Answer(status, base64.b64decode(b64))


def _wang_r1(web):
    with web.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == "r1")).one()


def _row_of(page, table, request_id):
    return page.locator(f"#{table} tr[data-request='{request_id}']")


def test_li_asks_is_refused_asks_again_is_approved_and_plays(web, browser):
    rec = _wang_r1(web)
    li = sign_in(browser, web, "li")
    # another officer's recording: the page and playing it are refused, both audited
    assert li.goto(f"{web.base_url}/recordings/{rec.id}").status == 403
    li.goto(web.base_url + "/requests")
    csrf = csrf_of(li.content())
    r = fetch(li, f"{web.base_url}/recordings/{rec.id}/play", {"csrf": csrf, "reason": "看看"})
    assert r.status == 403 and "调阅申请" in r.text()
    assert ("li", f"recording:{rec.id}") in audit(web, "view-refused")
    # bad requests: no reason, no such recording, a forged form — nothing is created
    r = fetch(li, f"{web.base_url}/requests", {"csrf": csrf, "recording": str(rec.id), "action": "view",
                                                          "reason": "  "})
    assert r.status == 400 and "申请未提交" in r.text()
    r = fetch(li, f"{web.base_url}/requests", {"csrf": csrf, "recording": "99999", "action": "view",
                                                          "reason": "核查"})
    assert r.status == 404
    r = fetch(li, f"{web.base_url}/requests", {"csrf": "forged", "recording": str(rec.id),
                                                          "action": "view", "reason": "核查"})
    assert r.status == 403 and ("li", "web-form") in audit(web, "csrf-refused")
    with web.st.db.session() as s:
        assert s.scalars(select(m.AccessRequest)).first() is None

    # li asks, with a reason, from the requests page
    li.fill("#request-form input[name=recording]", str(rec.id))
    li.select_option("#request-form select[name=action]", "view")
    li.fill("#request-form input[name=reason]", "投诉核查")
    follow(li, "#request-form button[type=submit]")
    assert "/requests?done=" in li.url
    first = int(li.url.rsplit("=", 1)[1])
    assert _row_of(li, "mine", first).locator("td.status").inner_text() == "待审批"
    # li may not decide it (no approver role): refused, audited
    r = fetch(li, f"{web.base_url}/requests/{first}/approve", {"csrf": csrf, "hours": "2"})
    assert r.status == 403 and ("li", f"approve access request {first}") in audit(web, "not-allowed")

    # the approver refuses it with a note
    chief = sign_in(browser, web, "chief")
    chief.goto(web.base_url + "/requests")
    row = _row_of(chief, "pending", first)
    assert "投诉核查" in row.inner_text() and "li" in row.inner_text()
    row.locator("form.refuse input[name=note]").fill("与案件无关")
    follow(chief, row.locator("form.refuse button"))
    assert chief.locator("#pending tr[data-request]").count() == 0
    li.goto(web.base_url + "/requests")
    mine = _row_of(li, "mine", first)
    assert mine.locator("td.status").inner_text() == "不予批准" and "与案件无关" in mine.inner_text()
    assert li.goto(f"{web.base_url}/recordings/{rec.id}").status == 403

    # li asks again; the approver approves for 2 hours; a bad hours value changes nothing
    li.goto(web.base_url + "/requests")
    li.fill("#request-form input[name=recording]", str(rec.id))
    li.fill("#request-form input[name=reason]", "投诉核查，补充材料")
    follow(li, "#request-form button[type=submit]")
    second = int(li.url.rsplit("=", 1)[1])
    assert second != first
    r = fetch(chief, f"{web.base_url}/requests/{second}/approve",
                           {"csrf": csrf_of(chief.content()), "hours": "999"})
    assert r.status == 400 and "未能审批" in r.text()
    chief.goto(web.base_url + "/requests")
    row = _row_of(chief, "pending", second)
    row.locator("form.approve input[name=hours]").fill("2")
    row.locator("form.approve input[name=note]").fill("同意")
    follow(chief, row.locator("form.approve button"))
    screenshot(chief, "requests-approver")
    with web.st.db.session() as s:
        req = s.get(m.AccessRequest, second)
        assert (req.status, req.decided_by) == ("approved", "chief")
        assert req.valid_until_ns - req.decided_ns == 2 * NS_PER_HOUR
    assert ("chief", f"access-request:{first}") in audit(web, "access-refuse")
    assert ("chief", f"access-request:{second}") in audit(web, "access-approve")

    # an approver may not decide his own request: refused, audited
    fetch(chief, f"{web.base_url}/requests", {"csrf": csrf_of(chief.content()), "recording": str(rec.id),
                                              "action": "view", "reason": "复核"})
    with web.st.db.session() as s:
        own = s.scalars(select(m.AccessRequest.id).where(m.AccessRequest.requester == "chief")).one()
    r = fetch(chief, f"{web.base_url}/requests/{own}/approve", {"csrf": csrf_of(chief.content()), "hours": "1"})
    assert r.status == 403 and ("chief", f"access-request:{own}") in audit(web, "approval-refused")

    # li now sees the recording and its request state, and plays it
    assert li.goto(f"{web.base_url}/recordings/{rec.id}").status == 200
    assert li.locator(f"#access-requests tr[data-request='{second}'] td.status").inner_text() == "已批准"
    li.click("#play")
    li.wait_for_selector("#video[data-state=ready]", timeout=30000)
    with web.st.db.session() as s:
        seen = s.scalars(select(m.Access).where(m.Access.username == "li", m.Access.granted.is_(True))).all()
    assert [(a.request_id, a.approver) for a in seen] == [(second, "chief")]
    screenshot(li, "recording-with-grant")

    # the grant ends (and with 3 idle hours the session too): refused again once signed in anew
    web.clock.advance(3 * NS_PER_HOUR)
    li = sign_in(browser, web, "li")
    assert li.goto(f"{web.base_url}/recordings/{rec.id}").status == 403
    assert ("li", f"recording:{rec.id}") in audit(web, "not-allowed")


def test_an_approver_revokes_a_grant_and_the_playback_stops_at_once(web, browser):
    rec = _wang_r1(web)
    req = request_access(web.st, web.user("li"), rec.id, "view", "投诉核查")
    approve(web.st, web.user("chief"), req.id, hours=2)
    li = sign_in(browser, web, "li")
    li.goto(f"{web.base_url}/recordings/{rec.id}")
    li.fill("input[name=reason]", "投诉核查")
    li.click("#play")
    li.wait_for_selector("#video[data-state=ready]", timeout=30000)
    segment = f"{web.base_url}/recordings/{rec.id}/segments/0.ts"
    assert fetch(li, segment).ok
    # chief withdraws it under 其他申请 on /requests: a note is required, then it is shown revoked
    chief = sign_in(browser, web, "chief")
    chief.goto(web.base_url + "/requests")
    row = _row_of(chief, "others", req.id)
    assert row.locator("td.status").inner_text() == "已批准"
    row.locator("form.revoke input[name=note]").fill("批准范围有误")
    follow(chief, row.locator("form.revoke button"))
    row = _row_of(chief, "others", req.id)
    assert row.locator("td.status").inner_text() == "已撤销"
    assert "chief" in row.locator("td.revoke").inner_text() and "批准范围有误" in row.locator("td.revoke").inner_text()
    assert row.locator("form.revoke").count() == 0
    screenshot(chief, "requests-revoked")
    assert ("chief", f"access-request:{req.id}") in audit(web, "access-revoke")
    # li's open playback ends at its next fetch (refused and audited), and the page is refused again
    for url in (segment, f"{web.base_url}/recordings/{rec.id}/playlist.m3u8"):
        r = fetch(li, url)
        assert r.status == 403, url
    assert ("li", f"recording:{rec.id}") in audit(web, "not-allowed")
    assert li.goto(f"{web.base_url}/recordings/{rec.id}").status == 403
    li.goto(web.base_url + "/requests")                 # where li sees why
    mine = _row_of(li, "mine", req.id)
    assert mine.locator("td.status").inner_text() == "已撤销"
    assert "批准范围有误" in mine.locator("td.revoke").inner_text()
    assert mine.locator("form.revoke").count() == 0     # nobody revokes from his own list
    # a second revocation of the same request changes nothing and says why
    r = fetch(chief, f"{web.base_url}/requests/{req.id}/revoke", {"csrf": csrf_of(chief.content()), "note": "再次"})
    assert r.status == 409 and "未能撤销" in r.text()
    with web.st.db.session() as s:
        got = s.get(m.AccessRequest, req.id)
        assert (got.status, got.revoked_by, got.revoke_note, got.decided_by) == (
            "revoked", "chief", "批准范围有误", "chief")


def _li_with_a_missing_reason(w):
    """li's device: one recording, then an interruption whose reason went missing (D5)."""
    def extra(dev):
        j = dev.journal.append
        j("interruption", {"cause": "camera-stall", "recording_id": "q1", "stall_timeout_ms": 2000})
        j("reason-missing", {"cause": "camera-stall", "why": "timeout", "interrupted_ns": 31, "resumed_ns": 40,
                             "mono_ns": 100})
    w.dock_device("dev-li", {"q1": 1}, officer=OFFICER2_NO, extra=extra)


def test_supervision_dashboard_charts_figures_and_signoff(web, browser):
    _li_with_a_missing_reason(web)
    web.clock.advance(49 * NS_PER_HOUR)            # past the 48 h labelling deadline
    chief = sign_in(browser, web, "chief")
    chief.goto(web.base_url + "/supervision")
    q = _query(web.st, "", "", "")
    want = {g.key: g for g in stats.compute(web.st, period=q.period, by="officer").groups}
    assert set(want) == {OFFICER_NO, OFFICER2_NO}
    # hours per officer per week: one bar per officer and week, the figure the command computes
    unit, per = chart_unit(max(g.recorded_ms for g in want.values()))
    assert unit in chief.locator("#chart-hours").get_attribute("aria-label")
    for g in want.values():
        weekly = {x.key: x.recorded_ms for x in stats.compute(web.st, period=q.period, by="week",
                                                               officer=g.key).groups}
        bars = chief.locator(f"#chart-hours rect.bar[data-series='{g.label}']")
        drawn = {bars.nth(i).get_attribute("data-category"): float(bars.nth(i).get_attribute("data-value"))
                 for i in range(bars.count())}
        assert {k: v for k, v in drawn.items() if v} == {k: round(v / per, 2) for k, v in weekly.items() if v}
        assert abs(sum(drawn.values()) - g.recorded_ms / per) < 0.02 and max(drawn.values()) > 0

    def bar(chart, g):
        return chief.locator(f"#{chart} g.bar[data-label='{g.label}']").get_attribute("data-value")

    assert bar("chart-overdue", want[OFFICER_NO]) == "2" and bar("chart-overdue", want[OFFICER2_NO]) == "1"
    assert bar("chart-missing", want[OFFICER2_NO]) == "1" and bar("chart-missing", want[OFFICER_NO]) == "0"
    assert bar("chart-late", want[OFFICER_NO]) == "0"
    assert "合计" in chief.locator("#stats").inner_text()
    screenshot(chief, "supervision")
    # downloads: the command's CSV and PDF
    r = fetch(chief, web.base_url + "/supervision.csv")
    assert r.ok and r.body.startswith(b"\xef\xbb\xbf") and "合计" in r.body.decode("utf-8-sig")
    r = fetch(chief, web.base_url + "/supervision.pdf")
    assert r.ok and r.body.startswith(b"%PDF")
    # bad dates: a clear error, nothing else
    r = fetch(chief, web.base_url + "/supervision?date_from=2026-10-01&date_to=2026-09-01")
    assert r.status == 400 and "早于" in r.text()

    # the sign-off of li's missing reason by his supervisor
    item = chief.locator("#signoff-items tr[data-item]")
    assert item.count() == 1 and "中断原因未说明" in item.inner_text()
    item_id = int(item.get_attribute("data-item"))
    signoff_url = f"{web.base_url}/supervision/signoff/{item_id}"
    r = fetch(chief, signoff_url, {"csrf": csrf_of(chief.content()), "decision": "approved", "note": " "})
    assert r.status == 400 and "未能签批" in r.text()
    item.locator("input[name=note]").fill("已核实：摄像头故障")
    follow(chief, item.locator("button[value=approved]"))
    assert chief.locator("#signoff-items tr[data-item]").count() == 0
    with web.st.db.session() as s:
        row = s.get(m.Interruption, item_id)
        assert (row.signoff_decision, row.signed_off_by) == ("approved", "chief")
    assert ("chief", f"interruption:{item_id}") in audit(web, "signoff")
    r = fetch(chief, signoff_url, {"csrf": csrf_of(chief.content()), "decision": "rejected", "note": "再看"})
    assert r.status == 409 and "未能签批" in r.text()

    # an officer sees his own figures only; asking for another's is refused and audited
    wang = sign_in(browser, web, "wang")
    wang.goto(web.base_url + "/supervision")
    assert wang.locator("#stats tbody tr").count() == 2 and OFFICER2_NO not in wang.inner_text("#stats")
    assert wang.goto(f"{web.base_url}/supervision?officer={OFFICER2_NO}").status == 403
    assert ("wang", f"officer:{OFFICER2_NO}") in audit(web, "not-allowed")
    # and may not sign off
    r = fetch(wang, signoff_url, {"csrf": csrf_of(wang.content()), "decision": "approved", "note": "x"})
    assert r.status == 403


def test_audit_trail_of_a_recording_and_of_a_user_with_downloads(web, browser, tmp_path):
    rec = _wang_r1(web)
    with contextlib.closing(http_sign_in(web, "wang")) as c:   # something to find in the trails
        r = c.post("/requests", data={"csrf": c.csrf, "recording": str(rec.id), "action": "copy", "reason": "移送"})
        assert r.status_code == 303
    auditor = sign_in(browser, web, "auditor")
    auditor.goto(f"{web.base_url}/recordings/{rec.id}")
    follow(auditor, "#audit-link")
    types = [t.get_attribute("data-type") for t in auditor.locator("#audit-trail tbody tr").all()]
    assert "ingest" in types and "access-request" in types
    with web.st.db.session() as s:
        want = s.scalars(select(m.AuditEntry.seq).where(m.AuditEntry.subject == f"recording:{rec.id}")).all()
    seqs = {int(t.inner_text()) for t in auditor.locator("#audit-trail tbody tr td:first-child").all()}
    assert set(want) <= seqs
    screenshot(auditor, "audit-recording")
    # downloads are audited; the PDF reads back
    r = fetch(auditor, f"{web.base_url}/recordings/{rec.id}/audit.csv")
    assert r.ok and "access-request" in r.body.decode("utf-8-sig") and "移送" in r.body.decode("utf-8-sig")
    r = fetch(auditor, f"{web.base_url}/recordings/{rec.id}/audit.pdf")
    assert r.ok and r.body.startswith(b"%PDF")
    pdf = tmp_path / "trail.pdf"
    pdf.write_bytes(r.body)
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "录像审计记录" in text and "access-request" in text
    downloads = audit(web, "audit-trail-download")
    assert downloads.count(("auditor", f"recording:{rec.id}")) == 2

    # a user's trail: what wang did and what was done to his account
    auditor.goto(web.base_url + "/audit")
    follow(auditor, "#users a[href='/users/wang/audit']")
    rows = auditor.locator("#audit-trail tbody tr")
    kinds = {rows.nth(i).get_attribute("data-type") for i in range(rows.count())}
    assert {"user-create", "sign-in", "access-request"} <= kinds
    screenshot(auditor, "audit-user")
    assert auditor.goto(web.base_url + "/users/nobody/audit").status == 404

    # others may not read trails: refused, audited
    for who, url in (("wang", f"/recordings/{rec.id}/audit"), ("clerk", "/users/wang/audit"),
                     ("chief", f"/recordings/{rec.id}/audit.csv")):
        with contextlib.closing(http_sign_in(web, who)) as c:
            assert c.get(url).status_code == 403
    refused = audit(web, "not-allowed")
    assert ("wang", f"audit trail of recording:{rec.id}") in refused
    assert ("clerk", "audit trail of user:wang") in refused
    assert audit(web, "audit-trail-download").count(("chief", f"recording:{rec.id}")) == 0


    # without a session every page of this module goes to sign-in; every form needs its CSRF token
    pages = ["/requests", "/supervision", "/supervision.csv", "/supervision.pdf", "/audit",
             f"/recordings/{rec.id}/audit", f"/recordings/{rec.id}/audit.pdf", "/users/wang/audit",
             "/users/wang/audit.csv"]
    forms = ["/requests", "/requests/1/approve", "/requests/1/refuse", "/supervision/signoff/1"]
    with httpx.Client(base_url=web.base_url, verify=False, follow_redirects=False) as anon:
        for url in pages:
            r = anon.get(url)
            assert (r.status_code, r.headers.get("location")) == (303, "/login"), url
        for url in forms:
            r = anon.post(url, data={"csrf": "x", "note": "x", "decision": "approved"})
            assert (r.status_code, r.headers.get("location")) == (303, "/login"), url
    with contextlib.closing(http_sign_in(web, "chief")) as c:
        before = len(audit(web, "csrf-refused"))
        for url in forms:
            r = c.post(url, data={"recording": str(rec.id), "action": "view", "reason": "x", "note": "x",
                                  "decision": "approved"})
            assert r.status_code == 403 and "CSRF" in r.text, url
        assert len(audit(web, "csrf-refused")) == before + len(forms)
        with web.st.db.session() as s:
            assert s.scalars(select(m.AccessRequest).where(m.AccessRequest.requester == "chief")).first() is None


def test_timeline_marks_gaps_missing_segments_and_reasons_escaped():
    """The timeline drawing itself (no browser): order, a gap, a quarantined segment, reasons."""
    s = 10**9
    spans = [charts.Span(0, 100 * s, 110 * s, "GPS", True), charts.Span(1, 110 * s, 120 * s, "RTC", True),
             charts.Span(3, 150 * s, 160 * s, "UNSYNCED", False)]
    marks = [charts.Mark(125 * s, "中断", "断电", None), charts.Mark(140 * s, "说明中断原因", "断电", "<b>换电池</b>"),
             charts.Mark(100 * 86400 * s, "中断", "断电", "另一班次")]     # far away: left out
    svg = str(charts.timeline(spans, marks, lambda ns: f"t{ns // s}"))
    assert svg.count('class="segment"') == 3 and svg.count('class="interruption"') == 2
    assert "缺分段 2–2：30.0 秒" in svg and 'data-quality="UNSYNCED"' in svg and "不在库" in svg
    assert "未说明原因" in svg and "&lt;b&gt;换电池&lt;/b&gt;" in svg and "<b>" not in svg
    assert "另一班次" not in svg and "t160" in svg
    assert "没有分段" in str(charts.timeline([], marks, str))
    bars = str(charts.bar_chart("c", "<标题>", [("a&b", 2), ("c", 0)], " 次"))
    assert "&lt;标题&gt;" in bars and 'data-label="a&amp;b" data-value="2"' in bars


def _wang_with_a_voice_note(w):
    """wang's second camera: recording v1, a camera stall answered by a spoken reason (voice note VN-1)."""
    import numpy as np

    from common.clock import TimeQuality, TimeSample
    from recorder.voice_note import VoiceNoteWriter

    def extra(dev):
        rate = 16000
        pcm = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 8000).astype(np.int16)
        start = TimeSample(0, WALL0 + 5 * 10**9, TimeQuality.NTP)
        end = TimeSample(10**9, WALL0 + 6 * 10**9, TimeQuality.NTP)
        VoiceNoteWriter(dev.store, dev.journal, rate).seal("VN-1", pcm, start, end, {
            "state": "interrupted", "answers": "interruption", "cause": "camera-stall", "interrupted_ns": 1,
            "recording_id": "v1"})
        dev.journal.append("reason-given", {"cause": "camera-stall", "reason": None, "note_id": "VN-1",
                                            "interrupted_ns": 1, "resumed_ns": 2, "mono_ns": 3, "late": False,
                                            "while_recording": True})
    w.dock_device("dev-vn", {"v1": 1}, extra=extra)
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == "v1")).one()


def test_recording_page_timeline_quality_request_and_voice_note(web, browser):
    rec = _wang_r1(web)
    wang = sign_in(browser, web, "wang")
    wang.goto(f"{web.base_url}/recordings/{rec.id}")
    with web.st.db.session() as s:
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)).all()
    drawn = wang.locator("#timeline g.segment")
    assert drawn.count() == len(segs) == 2
    assert [drawn.nth(i).get_attribute("data-index") for i in range(2)] == ["0", "1"]
    assert {drawn.nth(i).get_attribute("data-quality") for i in range(2)} == {g.time_quality for g in segs}
    quality = wang.locator("#time-quality").inner_text()
    assert rec.time_quality in quality and ("校时" in quality or "时钟" in quality)
    # the owner asks to copy his own recording (a copy always needs an approval)
    wang.select_option("#access-request-form select[name=action]", "copy")
    wang.fill("#access-request-form input[name=reason]", "移送检察院")
    follow(wang, "#access-request-submit")
    assert wang.url.endswith(f"/recordings/{rec.id}#access")
    assert "待审批" in wang.locator("#access-requests").inner_text()
    assert ("wang", f"recording:{rec.id}") in audit(web, "access-request")
    screenshot(wang, "recording-timeline")

    # a recording whose interruption was answered by a spoken reason: its voice note
    rec = _wang_with_a_voice_note(web)
    note_url = f"{web.base_url}/recordings/{rec.id}/notes/VN-1.aac"
    wang.goto(f"{web.base_url}/recordings/{rec.id}")
    row = wang.locator("#voice-note-list tr[data-note='VN-1']")
    assert "中断原因" in row.inner_text() and "1.0 秒" in row.inner_text()
    assert wang.locator("#voice-note-list audio").count() == 0
    # not before pressing 播放 (the access check and its audit record)
    assert fetch(wang, note_url).status == 403
    wang.click("#play")
    wang.wait_for_selector("#video[data-state=ready]", timeout=30000)
    wang.wait_for_function("() => document.querySelector('#voice-note-list audio').duration > 0.5", timeout=30000)
    got = fetch(wang, note_url)
    mirror = web.st.store / "devices" / rec.device_id / "mirror"
    clip = next((mirror / "notes").glob("VN-1*"))
    assert got.status == 200 and got.body == clip.read_bytes()
    screenshot(wang, "recording-voice-note")
    # another officer without a grant, an unknown note, a path out of the mirror: nothing served
    li = sign_in(browser, web, "li")
    li.goto(web.base_url + "/requests")
    assert fetch(li, note_url).status == 403
    assert fetch(wang, f"{web.base_url}/recordings/{rec.id}/notes/VN-2.aac").status == 404
    assert fetch(wang, f"{web.base_url}/recordings/{rec.id}/notes/..%2F..%2Fjournal.aac").status == 404
    # the clip altered on disk: refused, an integrity alert
    clip.chmod(0o644)
    data = bytearray(clip.read_bytes())
    data[100] ^= 0xFF
    clip.write_bytes(bytes(data))
    r = fetch(wang, note_url)
    assert r.status == 409 and ("wang", f"recording:{rec.id}") in audit(web, "integrity-alert")
    assert "voice note notes/VN-1.aac" in r.text() and "segment" not in r.text()     # named by its path
