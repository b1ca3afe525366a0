"""The casework pages of the station's web interface in real chromium: label corrections with their
history, cases with the record checklist (PDF and CSV), holds, and exports downloaded and then
verified the way a third party would — with the package's own recipe, the system's tools only.

Real components throughout: the application under uvicorn over HTTPS (tests/web_fixture.py),
Debian's chromium driven by Playwright (downloads through its download API), WeasyPrint PDFs
read back with ``pdftotext``, packages unpacked with the system's ``tar`` and checked with
``sh``, ``sha256sum`` and ``openssl``. Screenshots of each page go to the directory printed
(``web_fixture.screenshot``: ``out/screenshots/`` or ``$STATION_SCREENSHOTS``).
"""
import csv
import fcntl
import io
import json
import os
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import expect
from sqlalchemy import select

from station.access.requests import approve, request_access
from station.casework.cases import open_case
from station.casework.labels import LabelInput, label_recording
from station.db import models as m
from station.web import sessions
from tests.station_fixture import PASSWORD, sqlite_station_world  # noqa: F401
from tests.test_evidence_recipe import SYSTEM_PATH
from tests.web_fixture import audit, browser, follow, screenshot, sign_in, web  # noqa: F401

CASE_NO = "厦城管罚〔2026〕77号"
CASE_NAME = "某水果店占道经营案"
MAKER, EXTRACTOR = "陈晓东", "林海峰"


def rec_ids(w) -> dict[str, int]:
    with w.st.db.session() as s:
        return {r.recording_id: r.id for r in s.scalars(select(m.Recording))}


def client(w, username: str) -> tuple[httpx.Client, str]:
    """An HTTPS client signed in as ``username`` (a real session) and its CSRF token."""
    token, signed = sessions.sign_in(w.st, username, PASSWORD)
    c = httpx.Client(base_url=w.base_url, verify=False, cookies={sessions.COOKIE: token},
                     follow_redirects=False, timeout=60)
    return c, signed.csrf


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,
                          check=True, timeout=60).stdout


# ---- labels, cases, checklist, holds -------------------------------------------------------------------
def test_correct_a_label_see_its_history_case_page_checklist_and_holds(web, browser, tmp_path):
    ids = rec_ids(web)
    page = sign_in(browser, web, "clerk")
    # open a case from the cases page
    follow(page, "nav >> text=案件")
    assert page.url == web.base_url + "/cases"
    page.fill("#case-open input[name=case_no]", CASE_NO)
    page.fill("#case-open input[name=name]", CASE_NAME)
    page.fill("#case-open input[name=department]", "市容科")
    follow(page, "#case-open-submit")
    assert page.locator("h1").inner_text() == CASE_NAME
    assert "尚无录像标注到本案件" in page.inner_text("#case-recordings")
    # label r1 to it, then correct the label with a reason
    page.goto(f"{web.base_url}/recordings/{ids['r1']}")
    page.fill("#label-form input[name=case_no]", CASE_NO)
    page.fill("#label-form input[name=counterpart]", "某水果店")
    page.fill("#label-form input[name=content]", "占道经营检查")
    page.fill("#label-form input[name=place]", "思明区中山路")
    follow(page, "#label-submit")
    with web.st.db.session() as s:
        first = s.scalars(select(m.Label).where(m.Label.recording == ids["r1"])).one()
    assert page.locator("#label-form").count() == 0          # labelled: corrections from now on
    page.click(f"#correct-{first.id} summary")
    page.fill(f"#correct-{first.id} input[name=content]", "占道经营复查")
    page.fill(f"#correct-{first.id} input[name=reason]", "检查内容记录有误")
    follow(page, f"#correct-{first.id} .correct-submit")
    rows = page.locator("#labels tbody tr")
    assert rows.count() == 2
    old, new = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "占道经营检查" in old and "已更正" in old and CASE_NO in old
    assert "占道经营复查" in new and "检查内容记录有误" in new and "思明区中山路" in new
    with web.st.db.session() as s:
        labels = s.scalars(select(m.Label).where(m.Label.recording == ids["r1"]).order_by(m.Label.id)).all()
        name = s.get(m.Recording, ids["r1"]).name
    assert [(lab.version, lab.current) for lab in labels] == [(1, False), (2, True)]
    assert labels[1].correction_reason == "检查内容记录有误" and "占道经营复查" in name   # S3 name follows
    assert ("clerk", f"recording:{ids['r1']}") in audit(web, "label-correct")
    screenshot(page, "casework-recording-label-history")

    # a correction without a reason, of a retired version, by another officer, without CSRF: refused
    c, csrf = client(web, "clerk")
    r = c.post(f"/labels/{labels[1].id}/correct", data={"csrf": csrf, "content": "x", "reason": " "})
    assert r.status_code == 303
    assert "reason" in c.get(r.headers["location"]).text
    r = c.post(f"/labels/{labels[0].id}/correct", data={"csrf": csrf, "content": "x", "reason": "再改"})
    assert "was corrected already" in c.get(r.headers["location"]).text
    r = c.post(f"/labels/{labels[1].id}/correct", data={"csrf": csrf, "range_from": "2000-01-01T08:00:00",
                                                        "reason": "时段有误"})
    assert "the time range must lie within" in c.get(r.headers["location"]).text
    r = c.post(f"/labels/{labels[1].id}/correct", data={"csrf": csrf, "range_to": "昨天", "reason": "时段有误"})
    assert "not an ISO 8601 date/time" in c.get(r.headers["location"]).text
    assert c.post(f"/labels/{labels[1].id}/correct", data={"content": "x", "reason": "r"}).status_code == 403
    assert c.post("/labels/999999/correct", data={"csrf": csrf, "reason": "r"}).status_code == 404
    li, li_csrf = client(web, "li")
    r = li.post(f"/labels/{labels[1].id}/correct", data={"csrf": li_csrf, "content": "x", "reason": "r"})
    assert r.status_code == 403 and "无权访问" in r.text
    assert ("li", f"recording:{ids['r1']}") in audit(web, "not-allowed")
    with web.st.db.session() as s:
        assert len(s.scalars(select(m.Label).where(m.Label.recording == ids["r1"])).all()) == 2

    # the case page: its recording and its checklist; the PDF and the CSV downloaded
    follow(page, "nav >> text=案件")
    assert CASE_NO in page.inner_text("#cases")
    screenshot(page, "casework-cases")
    follow(page, f"#cases >> text={CASE_NO}")
    assert name in page.inner_text("#case-recordings")
    checklist_row = page.inner_text("#checklist tbody")
    assert "占道经营复查" in checklist_row and "完整：共2段" in checklist_row and "wang（031337）" in checklist_row
    screenshot(page, "casework-case")
    with page.expect_download() as dl:
        page.click("#checklist-pdf")
    pdf = tmp_path / "checklist.pdf"
    dl.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = "".join(pdf_text(pdf).split())          # narrow table cells wrap: compare without whitespace
    for expected in ("音像记录事项清单", web.cfg.unit, CASE_NAME, CASE_NO, "占道经营复查", "思明区中山路",
                     "wang（031337）", "完整：共2段", "制表人"):
        assert expected in text, expected
    with page.expect_download() as dl:
        page.click("#checklist-csv")
    data = Path(dl.value.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert table[0][:3] == ["序号", "执法类别", "事项"] and table[1][2] == CASE_NAME and len(table) == 2
    assert audit(web, "checklist").count(("clerk", f"case:{CASE_NO}")) == 2
    # an officer may not see cases, an administrator not the checklist: audited refusals
    wang, _ = client(web, "wang")
    assert wang.get("/cases").status_code == 403
    admin, _ = client(web, "admin")
    assert admin.get(f"/cases/{CASE_NO}").status_code == 200
    assert admin.get(f"/cases/{CASE_NO}/checklist.pdf").status_code == 403
    assert ("admin", f"checklist:{CASE_NO}") in audit(web, "not-allowed")
    assert c.get("/cases/no-such-case").status_code == 404
    assert c.get(f"/cases/{CASE_NO}/checklist.exe").status_code == 404

    # holds: the clerk places one with a reason, from the recording's page (which shows its
    # retention end and that it is not held); he cannot release it; the supervisor does
    with web.st.db.session() as s:
        r2 = s.get(m.Recording, ids["r2"])
        assert r2 is not None
        kept_until = r2.retention_end_ns
    page.goto(f"{web.base_url}/recordings/{ids['r2']}")
    shown = page.inner_text("#retention")
    if kept_until is None:                                # linked to an open case
        assert "结案前一直保存" in shown, shown
    else:                                                 # the stored end, as a date in the station's zone
        day = datetime.fromtimestamp(kept_until / 1e9, ZoneInfo(web.st.cfg.timezone)).date().isoformat()
        assert shown.startswith(f"{day} 止"), shown
    assert page.inner_text("#holds").startswith("未封存")
    follow(page, "#place-hold")
    assert page.input_value("#hold-place input[name=recording]") == f"#{ids['r2']}"
    page.select_option("#hold-place select[name=kind]", "complaint")
    page.fill("#hold-place input[name=reason]", "当事人投诉，待核查")
    follow(page, "#hold-submit")
    assert page.locator("#holds tbody tr").count() == 1
    assert "投诉" in page.inner_text("#holds") and "当事人投诉，待核查" in page.inner_text("#holds")
    assert page.locator("#holds form.release").count() == 0
    page.goto(f"{web.base_url}/recordings/{ids['r2']}")
    assert "投诉" in page.inner_text("#holds") and "封存期间不销毁" in page.inner_text("#retention")
    page.goto(f"{web.base_url}/holds")
    with web.st.db.session() as s:
        hold = s.scalars(select(m.Hold)).one()
    assert (hold.recording, hold.kind, hold.placed_by) == (ids["r2"], "complaint", "clerk")
    assert c.post(f"/holds/{hold.id}/release", data={"csrf": csrf, "reason": "x"}).status_code == 403
    assert ("clerk", f"hold:{hold.id}") in audit(web, "not-allowed")
    r = c.post("/holds", data={"csrf": csrf, "recording": "#999999", "kind": "dispute", "reason": "r"})
    assert "no recording" in c.get(r.headers["location"]).text
    r = c.post("/holds", data={"csrf": csrf, "recording": f"#{ids['r1']}", "kind": "dispute", "reason": ""})
    assert "reason" in c.get(r.headers["location"]).text
    assert c.post("/holds", data={"recording": f"#{ids['r1']}", "kind": "dispute", "reason": "r"}).status_code == 403
    auditor, a_csrf = client(web, "auditor")
    assert auditor.get("/holds").status_code == 200
    assert auditor.post("/holds", data={"csrf": a_csrf, "recording": f"#{ids['r1']}", "kind": "dispute",
                                        "reason": "r"}).status_code == 403
    with web.st.db.session() as s:
        assert len(s.scalars(select(m.Hold)).all()) == 1
    screenshot(page, "casework-holds")
    chief = sign_in(browser, web, "chief")
    follow(chief, "nav >> text=封存")
    chief.fill("#holds form.release input[name=reason]", "投诉已核查处理完毕")
    follow(chief, "#holds form.release button")
    assert "没有封存" in chief.inner_text("#holds")
    chief.goto(web.base_url + "/holds?all=1")
    assert "已解除：chief" in chief.inner_text("#holds") and "投诉已核查处理完毕" in chief.inner_text("#holds")
    assert ("chief", f"hold:{hold.id}") in audit(web, "hold-release")
    for cl in (c, li, wang, admin, auditor):
        cl.close()


# ---- exports -------------------------------------------------------------------------------------------------
def test_export_from_the_web_download_and_verify_with_the_package_recipe(web, browser, tmp_path):
    ids = rec_ids(web)
    clerk = web.user("clerk")
    open_case(web.st, clerk, CASE_NO, CASE_NAME, "行政处罚", "市容科")
    label_recording(web.st, clerk, "r1", LabelInput(case_no=CASE_NO, counterpart="某水果店", content="占道经营检查",
                                                     place="思明区中山路"))
    c, csrf = client(web, "clerk")
    # no approved copy request: the export is refused, and the refusal registered
    r = c.post("/exports", data={"csrf": csrf, "case_no": CASE_NO, "maker": MAKER, "extractor": EXTRACTOR})
    assert r.status_code == 403 and "复制申请" in r.text
    assert ("clerk", f"recording:{ids['r1']}") in audit(web, "copy-refused")
    req = request_access(web.st, clerk, ids["r1"], "copy", "案卷归档")
    approve(web.st, web.user("chief"), req.id)
    r = c.post("/exports", data={"csrf": csrf, "case_no": CASE_NO, "maker": "", "extractor": EXTRACTOR})
    assert "maker" in c.get(r.headers["location"]).text                         # bad input: said, nothing made
    assert c.post("/exports", data={"case_no": CASE_NO, "maker": MAKER, "extractor": EXTRACTOR}).status_code == 403

    page = sign_in(browser, web, "clerk")
    page.goto(f"{web.base_url}/exports?case={CASE_NO}")
    page.fill("#export-form input[name=maker]", MAKER)
    page.fill("#export-form input[name=extractor]", EXTRACTOR)
    page.fill("#export-form input[name=copies]", "2")
    follow(page, "#export-submit")
    page.locator("#export-made").wait_for(timeout=60000)    # written in the background; the page follows it
    assert page.locator("#export-made").count() == 1 and page.locator("#export-running").count() == 0
    with web.st.db.session() as s:
        exp = s.scalars(select(m.Export)).one()
    row = page.inner_text(f"#export-{exp.id}")
    assert CASE_NO in row and MAKER in row and f"#{ids['r1']}" in row
    screenshot(page, "casework-exports")
    with page.expect_download() as dl:
        page.click(f"#export-{exp.id} a.download-tar >> nth=0")
    tar = tmp_path / "package.tar"
    dl.value.save_as(tar)
    assert dl.value.suggested_filename == Path(exp.directory).name + "-副本1.tar"
    assert ("clerk", f"export:{exp.id}") in audit(web, "export-download")

    # the third party: unpack with tar, follow README.txt — sha256sum -c, then each device's verify command
    dest = tmp_path / "court"
    dest.mkdir()
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
    subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True, env=env, timeout=120)
    (copy,) = dest.iterdir()
    assert copy.name == Path(exp.directory).name + "-副本1"
    man = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    assert man["case"]["case_no"] == CASE_NO and man["maker"] == MAKER and man["copy"]["label"] == "副本 1/2"
    assert [rec["id"] for rec in man["recordings"]] == [ids["r1"]]
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True, env=env,
                          timeout=120)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert os.access(copy / "check-evidence.sh", os.X_OK)
    readme = (copy / "README.txt").read_text(encoding="utf-8")
    for dev in man["devices"]:
        assert dev["verify_command"] in readme
        v = subprocess.run(["sh", "-c", dev["verify_command"]], cwd=copy, capture_output=True, text=True, env=env,
                           timeout=120)
        assert v.returncode == 0 and "PASS" in v.stdout, v.stdout + v.stderr
    # ... and a flipped byte in an original segment fails that same recipe
    seg = copy / man["recordings"][0]["segments"][0]["path"]
    seg.chmod(0o644)
    data = bytearray(seg.read_bytes())
    data[1000] ^= 1
    seg.write_bytes(bytes(data))
    v = subprocess.run(["sh", "-c", man["devices"][0]["verify_command"]], cwd=copy, capture_output=True, text=True,
                       env=env, timeout=120)
    assert v.returncode != 0 and "PASS" not in v.stdout

    # the zip of copy 2 holds the same files (stored: byte for byte)
    r = c.get(f"/exports/{exp.id}/2.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None
        names = {n.split("/", 1)[1] for n in z.namelist() if not n.endswith("/")}
        man2 = json.loads(z.read(f"{Path(exp.directory).name}-副本2/manifest.json"))
    on_disk = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
    assert names == on_disk and man2["copy"]["label"] == "副本 2/2"

    # who may download, and nothing but the catalogue's own package directories
    for user in ("wang", "chief", "auditor"):
        other, _ = client(web, user)
        assert other.get(f"/exports/{exp.id}/1.tar").status_code == 403
        assert (user, f"export:{exp.id}") in audit(web, "not-allowed")
        other.close()
    for bad in (f"/exports/{exp.id}/3.tar", f"/exports/{exp.id}/0.tar", f"/exports/{exp.id}/1.rar",
                "/exports/999/1.tar", f"/exports/{exp.id}/..%2F..%2F..%2Fetc%2Fpasswd.tar",
                f"/exports/{exp.id}/1.tar%2F..%2F..%2Fkeys"):
        assert c.get(bad).status_code in (404, 422), bad
    package = Path(f"{exp.directory}-副本1")
    secret = web.st.store / "keys"
    link = package / "devices" / "keys"
    os.chmod(link.parent, 0o755)
    link.symlink_to(secret)                 # a planted link: the whole download is refused
    r = c.get(f"/exports/{exp.id}/1.tar")
    assert r.status_code == 403 and "异常" in r.text
    link.unlink()
    outside = tmp_path / "elsewhere" / "pkg"
    (tmp_path / "elsewhere" / "pkg-副本1").mkdir(parents=True)
    with web.st.db.session(write=True) as s:
        s.get(m.Export, exp.id).directory = str(outside)     # a row naming a directory outside the store
    r = c.get(f"/exports/{exp.id}/1.tar")
    assert r.status_code == 403 and "不在本站导出目录内" in r.text
    c.close()


# ---- every casework route: signed out → sign-in, missing CSRF → refused ------------------------------------
ROUTES = [("GET", "/cases"), ("GET", "/cases/X"), ("GET", "/cases/X/checklist.pdf"), ("POST", "/cases"),
          ("POST", "/cases/X/status"), ("GET", "/holds"), ("POST", "/holds"), ("POST", "/holds/1/release"),
          ("GET", "/exports"), ("POST", "/exports"), ("GET", "/exports/1/1.tar"), ("POST", "/labels/1/correct")]


def _a_case_the_clerk_may_copy(web) -> None:
    clerk = web.user("clerk")
    open_case(web.st, clerk, CASE_NO, CASE_NAME, "行政处罚", "市容科")
    label_recording(web.st, clerk, "r1", LabelInput(case_no=CASE_NO, counterpart="某水果店", content="占道经营检查",
                                                     place="思明区中山路"))
    approve(web.st, web.user("chief"), request_access(web.st, clerk, rec_ids(web)["r1"], "copy", "案卷归档").id)


def _submit_export(page, web) -> None:
    page.goto(f"{web.base_url}/exports?case={CASE_NO}")
    page.fill("#export-form input[name=maker]", MAKER)
    page.fill("#export-form input[name=extractor]", EXTRACTOR)
    follow(page, "#export-submit")


def test_the_export_form_is_answered_at_once_and_the_page_follows_the_package_being_written(web, browser):
    """Another export holds the export directory (its lock, as a second station process would):
    the form is answered all the same, the page says the package is being made and refreshes
    itself, only its clerk sees the job, and the package appears once the directory is free."""
    _a_case_the_clerk_may_copy(web)
    out = web.st.store / "exports"
    out.mkdir(exist_ok=True)
    fd = os.open(out / ".station-export.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        page = sign_in(browser, web, "clerk")
        _submit_export(page, web)
        assert "/exports?job=" in page.url
        # (expect: the page reloads itself every 2 s, so the check retries across a reload)
        expect(page.locator("#export-running")).to_contain_text("正在生成导出包")
        screenshot(page, "casework-export-running")
        with web.st.db.session() as s:
            assert s.scalars(select(m.Export)).first() is None
        chief = sign_in(browser, web, "chief")                 # staff, but not the clerk who started it
        chief.goto(web.base_url + "/exports?job=" + page.url.split("job=", 1)[1])
        assert "没有这个导出任务" in chief.inner_text("#export-error")
        assert chief.locator("#export-running").count() == 0
    finally:
        os.close(fd)
    page.locator("#export-made").wait_for(timeout=60000)
    with web.st.db.session() as s:
        exp = s.scalars(select(m.Export)).one()
    assert CASE_NO in page.inner_text(f"#export-{exp.id}") and page.locator("#export-running").count() == 0
    assert [p.name for p in out.iterdir() if p.name.startswith(".station-export-partial")] == []


def test_an_export_that_fails_in_the_background_says_why_on_the_page_and_leaves_nothing(web, browser):
    _a_case_the_clerk_may_copy(web)
    out = web.st.store / "exports"
    out.write_text("not a directory", encoding="utf-8")    # the export directory cannot be used
    page = sign_in(browser, web, "clerk")
    _submit_export(page, web)
    page.locator("#export-error").wait_for(timeout=60000)
    assert "导出未完成" in page.inner_text("#export-error") and str(out) in page.inner_text("#export-error")
    assert page.locator("#export-running").count() == 0 and page.locator("#export-made").count() == 0
    with web.st.db.session() as s:
        assert s.scalars(select(m.Export)).first() is None
    assert out.read_text(encoding="utf-8") == "not a directory"


def test_casework_routes_need_a_session_and_csrf(web):
    c, _ = client(web, "admin")
    with httpx.Client(base_url=web.base_url, verify=False, follow_redirects=False) as anon:
        for method, path in ROUTES:
            r = anon.request(method, path)
            assert r.status_code == 303 and r.headers["location"] == "/login", (method, path)
            if method == "POST":
                r = c.post(path, data={"csrf": "forged", "reason": "r"})
                assert r.status_code == 403 and "CSRF" in r.text, path
    assert len([a for a in audit(web, "csrf-refused") if a[0] == "admin"]) == 6
    c.close()
