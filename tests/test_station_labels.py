"""S2 labelling, cases and the S3 name that follows the label, on both catalogue backends, fed by
real dockings. The 48 h rule runs on the injected clock (the action API); the command line runs
on the system clock, where the fixture's recordings (ingested on the test clock, two months
back) are all overdue.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from recorder.identity import device_id_for_pem
from recorder.journal import iter_records
from recorder.verify import verify_directory
from station.audit.integrity import verify_station
from station.casework import cases, labels, queue, view
from station.clock import NS_PER_DAY, NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound
from station.keeping import purge
from tests.station_fixture import OFFICER2_NO, OFFICER_NO, UNIT, sqlite_station_world, station_world  # noqa: F401


def rec(w, rid: str) -> m.Recording:
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == rid)).one()


def mirror_state(w) -> dict[str, tuple[int, int, int, bytes]]:
    """Every file of every device mirror: inode, mtime, mode and bytes."""
    out = {}
    for p in sorted((w.st.store / "devices").rglob("mirror/**/*")):
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_ino, st.st_mtime_ns, st.st_mode, p.read_bytes())
    return out


def mirrors_verify(w) -> None:
    for name, dev in w.devices.items():
        d = w.st.store / "devices" / device_id_for_pem(dev.pem) / "mirror"
        assert verify_directory(d, dev.pem).ok, name


def audit(w, type_: str) -> list[dict]:
    return [r.payload for r in iter_records(w.st.trail.journal_dir / "journal.log") if r.type == type_]


def view_files(w, name: str) -> list[str]:
    return sorted(p.name for p in (w.st.store / "recordings" / name).iterdir())


def test_label_and_correction_rename_the_view_keep_history_and_never_touch_the_originals(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 2, "r2": 1})
    before = mirror_state(w)
    r1 = rec(w, "r1")
    old_name = r1.name
    assert old_name.startswith(f"{UNIT}_未标注_") and view_files(w, old_name) == [
        f"{old_name}_00000.ts", f"{old_name}_00001.ts"]

    c = w.cli_json("case", "open", "--case-no", "厦城执罚〔2026〕17号", "--name", "某餐馆占道经营案",
                   "--category", "行政处罚", "--department", "思明大队", user="clerk")
    assert c["status"] == "open" and c["category"] == "行政处罚"

    out = w.cli_json("label", "r1", "--case", "厦城执罚〔2026〕17号", "--counterpart", "张三_餐馆",
                     "--content", "占道经营检查", "--place", "思明区中山路 12 号", user="clerk")
    lab1 = out["label"]
    assert lab1["version"] == 1 and lab1["current"] and lab1["category"] == "行政处罚"
    name1 = out["name"]
    assert name1 == f"{UNIT}_张三-餐馆_{r1.date}_占道经营检查_r1" and out["old_name"] == old_name
    assert out["retention_end_ns"] is None           # linked to an open case: kept while it is open
    assert view_files(w, name1) == [f"{name1}_00000.ts", f"{name1}_00001.ts"]
    assert not (w.st.store / "recordings" / old_name).exists()
    got = rec(w, "r1")
    assert (got.name, got.counterpart, got.content) == (name1, "张三_餐馆", "占道经营检查")
    mirror = w.st.store / "devices" / got.device_id / "mirror"
    with w.st.db.session() as s:
        seg0 = s.scalars(select(m.Segment).where(m.Segment.recording == got.id, m.Segment.index == 0)).one()
    assert (w.st.store / "recordings" / name1 / f"{name1}_00000.ts").stat().st_ino == (mirror / seg0.path).stat().st_ino

    # a second label over the same range is refused: never silently overwritten
    again = w.cli("label", "r1", "--case", "厦城执罚〔2026〕17号", "--counterpart", "李四", "--content", "复查",
                  "--place", "同上", user="clerk")
    assert again.returncode == 6 and f"label correct {lab1['id']}" in again.stderr
    # a correction needs a reason
    assert w.cli("label", "correct", str(lab1["id"]), "--counterpart", "李四", user="clerk").returncode == 2

    out2 = w.cli_json("label", "correct", str(lab1["id"]), "--counterpart", "李四", "--reason", "相对人登记有误",
                      user="clerk")
    lab2 = out2["label"]
    assert (lab2["version"], lab2["counterpart"], lab2["content"], lab2["case_no"]) == (
        2, "李四", "占道经营检查", "厦城执罚〔2026〕17号")
    assert out2["retired"] == lab1["id"] and out2["old_name"] == name1
    name2 = out2["name"]
    assert "_李四_" in name2 and view_files(w, name2) == [f"{name2}_00000.ts", f"{name2}_00001.ts"]
    assert not (w.st.store / "recordings" / name1).exists()
    with pytest.raises(Conflict, match="current"):          # only the current version can be corrected
        labels.correct_label(w.st, w.user("clerk"), lab1["id"], labels.LabelInput(content="x"), "y")

    hist = w.cli_json("label", "history", "r1", user="clerk")
    assert [(h["id"], h["version"], h["current"], h["superseded_by"]) for h in hist["labels"]] == [
        (lab1["id"], 1, False, lab2["id"]), (lab2["id"], 2, True, None)]
    assert hist["labels"][1]["correction_reason"] == "相对人登记有误"
    human = w.cli("label", "history", "r1", user="clerk", check=True).stdout
    assert "已更正" in human and "相对人登记有误" in human

    # the originals: same inodes, bytes, times, modes; the mirror still verifies; the station too
    assert mirror_state(w) == before
    mirrors_verify(w)
    report = verify_station(w.st, files=True)
    assert report.ok, report.findings
    assert w.cli("names", "check", user="clerk").returncode == 0
    # audited: the label and its correction, with the names
    lab_rec = audit(w, "label")[-1]
    assert lab_rec["actor"] == "clerk" and lab_rec["details"]["name"] == name1
    corr = audit(w, "label-correct")[-1]
    assert corr["reason"] == "相对人登记有误" and corr["details"]["retired"] == lab1["id"]
    assert audit(w, "case-open")[-1]["subject"] == "case:厦城执罚〔2026〕17号"


def test_bad_input_unknown_case_category_range_recording_and_who_may_label(station_world):
    w = station_world
    w.dock_device("dev", {"2": 1, "r2": 1})      # device recording id "2" is catalogue #1; r2 is #2
    assert (rec(w, "2").id, rec(w, "r2").id) == (1, 2), "a fresh catalogue numbers from 1"
    clerk, wang, li = w.user("clerk"), w.user("wang"), w.user("li")
    base = ["--counterpart", "某公司", "--content", "检查", "--place", "现场"]
    inp = dict(counterpart="某公司", content="检查", place="现场")
    with pytest.raises(InvalidInput, match="行政处罚.*行政检查|行政检查.*行政处罚"):    # the allowed ones named
        cases.open_case(w.st, clerk, "A-1", "某案", "罚款")
    with pytest.raises(NotAllowed):
        cases.open_case(w.st, wang, "A-1", "某案", "行政检查")
    cases.open_case(w.st, clerk, "A-1", "某案", "行政检查")
    with pytest.raises(Conflict):
        cases.open_case(w.st, clerk, "A-1", "又一案", "行政检查")

    r = w.cli("label", "r2", "--case", "NO-SUCH", *base, user="clerk")
    assert r.returncode == 5 and "NO-SUCH" in r.stderr
    with pytest.raises(NotFound):
        labels.label_recording(w.st, clerk, "r9", labels.LabelInput(case_no="A-1", **inp))
    r = w.cli("label", "2", "--case", "A-1", *base, user="clerk")       # catalogue #2 or device id "2"?
    assert r.returncode == 2 and "ambiguous" in r.stderr and "#1" in r.stderr and "#2" in r.stderr
    with pytest.raises(InvalidInput, match="categories"):
        labels.label_recording(w.st, clerk, "r2", labels.LabelInput(activity="日常巡查", category="巡逻", **inp))
    with pytest.raises(InvalidInput):                                   # neither case nor activity
        labels.label_recording(w.st, clerk, "r2", labels.LabelInput(**inp))
    with pytest.raises(InvalidInput):
        labels.label_recording(w.st, clerk, "r2", labels.LabelInput(case_no="A-1", counterpart="甲", content=" ",
                                                                    place="某地"))
    r2 = rec(w, "r2")
    with pytest.raises(InvalidInput, match="within"):                   # a range outside the recording
        labels.label_recording(w.st, clerk, "#2", labels.LabelInput(
            case_no="A-1", range_from_ns=r2.start_wall_ns - 10**9, range_to_ns=r2.end_wall_ns, **inp))
    with pytest.raises(InvalidInput):                                   # an empty range
        labels.label_recording(w.st, clerk, "#2", labels.LabelInput(
            case_no="A-1", range_from_ns=r2.start_wall_ns + 10, range_to_ns=r2.start_wall_ns + 10, **inp))

    # who: li (another officer) may not label wang's recording; the refusal is audited
    r = w.cli("label", "#2", "--case", "A-1", *base, user="li")
    assert r.returncode == 3
    refusal = audit(w, "not-allowed")[-1]
    assert (refusal["subject"], refusal["actor"]) == (f"recording:{r2.id}", "li")
    with pytest.raises(NotAllowed):
        labels.label_recording(w.st, w.user("chief"), "#2", labels.LabelInput(case_no="A-1", **inp))
    with pytest.raises(NotAllowed):
        labels.history(w.st, li, "#2")
    # wang labels his own, named unambiguously by device and recording id
    out = w.cli_json("label", f"{r2.device_id}/r2", "--case", "A-1", *base, user="wang")
    assert out["recording"] == r2.id and out["label"]["labelled_by"] == "wang"
    assert labels.label_recording(w.st, clerk, "#1", labels.LabelInput(
        activity="日常巡查", category="其他", **inp)).label["activity"] == "日常巡查"
    # no label row was written by any refusal
    with w.st.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Label)) == 2
    assert verify_station(w.st).ok


def test_ranges_of_one_recording_two_cases_and_overlap_refused(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 3})
    clerk = w.user("clerk")
    cases.open_case(w.st, clerk, "C-1", "甲案", "行政检查")
    cases.open_case(w.st, clerk, "C-2", "乙案", "行政强制")
    r1 = rec(w, "r1")
    mid = r1.start_wall_ns + 1_500_000_000
    a = labels.label_recording(w.st, clerk, "r1", labels.LabelInput(
        case_no="C-1", counterpart="甲", content="检查一", place="甲地", range_to_ns=mid))
    assert a.label["range_start_ns"] == r1.start_wall_ns and a.label["range_end_ns"] == mid
    with pytest.raises(Conflict):        # overlaps the first range
        labels.label_recording(w.st, clerk, "r1", labels.LabelInput(
            case_no="C-2", counterpart="乙", content="检查二", place="乙地", range_from_ns=mid - 10**6))
    b = labels.label_recording(w.st, clerk, "r1", labels.LabelInput(
        case_no="C-2", counterpart="乙", content="检查二", place="乙地", range_from_ns=mid))
    assert b.label["category"] == "行政强制" and b.label["range_end_ns"] == r1.end_wall_ns
    assert b.name == a.name and "_甲_" in b.name        # the name follows the label that starts first
    # correcting the first to cover the whole recording would overlap the second
    with pytest.raises(Conflict):
        labels.correct_label(w.st, clerk, a.label["id"], labels.LabelInput(whole=True), "范围有误")
    with pytest.raises(InvalidInput):
        labels.correct_label(w.st, clerk, a.label["id"], labels.LabelInput(content="x"), "  ")
    with pytest.raises(NotFound):
        labels.correct_label(w.st, clerk, 999, labels.LabelInput(content="x"), "why")
    shown = cases.show_case(w.st, "C-2")
    assert [lab["id"] for lab in shown["labels"]] == [b.label["id"]]
    assert [c["recordings"] for c in cases.list_cases(w.st)] == [1, 1]


def test_queue_48_hours_officer_and_supervisor_and_labelled_leaves(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1, "r2": 1})
    clerk, wang, li, chief, deputy = (w.user(u) for u in ("clerk", "wang", "li", "chief", "deputy"))
    ingested = rec(w, "r1").ingested_ns
    assert ingested == w.clock.now_ns()
    w.clock.advance(47 * NS_PER_HOUR)
    items = queue.queue(w.st, clerk)
    assert [(i["recording_id"], i["age_hours"], i["overdue"]) for i in items] == [("r1", 47, False),
                                                                                 ("r2", 47, False)]
    assert items[0]["deadline_ns"] == ingested + 48 * NS_PER_HOUR and items[0]["supervisor"] == "chief"
    assert queue.queue(w.st, clerk, overdue_only=True) == []
    w.clock.advance(1 * NS_PER_HOUR)                      # exactly 48 h: still in time
    assert queue.queue(w.st, clerk, overdue_only=True) == []
    w.clock.advance(1 * NS_PER_HOUR)                      # 49 h: overdue
    over = queue.queue(w.st, clerk, overdue_only=True)
    assert [(i["recording_id"], i["age_hours"], i["overdue"]) for i in over] == [("r1", 49, True), ("r2", 49, True)]
    # the web page's cut, counted in SQL on both engines: the same items, a page at a time
    first = queue.queue_page(w.st, clerk, overdue_only=False, page=1, size=1)
    last = queue.queue_page(w.st, clerk, overdue_only=True, page=9, size=1)      # past the end: the last
    assert (first.total, first.overdue_total, first.page, first.pages) == (2, 2, 1, 2)
    assert (last.total, last.overdue_total, last.page, last.pages) == (2, 2, 2, 2)
    assert first.items + last.items == over
    # flagged to the officer (his own) and to his supervisor, to nobody else
    assert len(queue.queue(w.st, wang, overdue_only=True)) == 2
    assert len(queue.queue(w.st, chief, overdue_only=True)) == 2
    assert queue.queue(w.st, li) == [] and queue.queue(w.st, deputy) == []
    assert queue.queue(w.st, clerk, officer=OFFICER2_NO) == []
    # labelled: it leaves the queue (the record says it was labelled late)
    cases.open_case(w.st, clerk, "Q-1", "某案", "行政检查")
    labels.label_recording(w.st, wang, "r1", labels.LabelInput(case_no="Q-1", counterpart="甲", content="检查",
                                                               place="某地"))
    assert [i["recording_id"] for i in queue.queue(w.st, chief, overdue_only=True)] == ["r2"]
    assert [(p.total, p.overdue_total, [i["recording_id"] for i in p.items]) for p in
            [queue.queue_page(w.st, chief, overdue_only=True, page=1, size=100)]] == [(1, 1, ["r2"])]
    assert audit(w, "label")[-1]["details"]["overdue"] is True

    # the command line (system clock: these recordings were ingested two months back)
    got = w.cli_json("queue", "--overdue", user="chief")
    assert [(i["recording_id"], i["overdue"], i["officer_id"]) for i in got] == [("r2", True, OFFICER_NO)]
    assert w.cli_json("queue", user="li") == []
    human = w.cli("queue", user="wang", check=True).stdout
    assert "逾期未标注" in human and "r2" in human and "1 overdue" in human


def test_case_close_and_reopen_recompute_retention_in_the_same_action(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1, "r2": 1})
    clerk = w.user("clerk")
    cases.open_case(w.st, clerk, "K-1", "某案", "行政处罚")
    labels.label_recording(w.st, clerk, "r1", labels.LabelInput(case_no="K-1", counterpart="甲", content="检查",
                                                                place="某地"))
    r1, r2 = rec(w, "r1"), rec(w, "r2")
    assert r1.retention_end_ns is None and r2.retention_end_ns == r2.end_wall_ns + 365 * NS_PER_DAY
    w.clock.advance(30 * NS_PER_DAY)
    closed = cases.close_case(w.st, clerk, "K-1", "结案")
    end = w.clock.now_ns() + 365 * NS_PER_DAY
    assert closed["status"] == "closed" and closed["retention_end_ns"] == {str(r1.id): end}
    assert rec(w, "r1").retention_end_ns == end
    rec_close = audit(w, "case-close")[-1]
    assert rec_close["rows"]["recordings"] == {str(r1.id): rec_close["rows"]["recordings"][str(r1.id)]}
    assert rec_close["details"]["retention_changed"] == 1
    with pytest.raises(Conflict):
        cases.close_case(w.st, clerk, "K-1")
    with pytest.raises(Conflict):        # a closed case takes no new label
        labels.label_recording(w.st, clerk, "r2", labels.LabelInput(case_no="K-1", counterpart="甲",
                                                                    content="检查", place="某地"))
    with pytest.raises(InvalidInput):
        cases.reopen_case(w.st, clerk, "K-1", "")
    with pytest.raises(NotAllowed):
        cases.reopen_case(w.st, w.user("wang"), "K-1", "补充证据")
    cases.reopen_case(w.st, clerk, "K-1", "补充证据")
    assert rec(w, "r1").retention_end_ns is None
    with pytest.raises(NotFound):
        cases.close_case(w.st, clerk, "K-404")
    # the command line
    out = w.cli_json("case", "close", "K-1", user="clerk")
    assert out["status"] == "closed" and out["retention_end_ns"][str(r1.id)] is not None
    assert w.cli_json("case", "list", "--status", "closed", user="auditor")[0]["case_no"] == "K-1"
    show = w.cli("case", "show", "K-1", user="clerk", check=True).stdout
    assert "已结案" in show and "K-1" in show
    assert w.cli("case", "reopen", "K-1", user="clerk").returncode == 2          # --reason required
    assert verify_station(w.st).ok


def test_a_purged_recording_cannot_be_labelled(station_world):
    w = station_world
    w.dock_device("dev", {"r1": 1})
    r1 = rec(w, "r1")
    w.clock.advance(400 * NS_PER_DAY)          # past the default year
    purge.purge(w.st, w.user("admin"), [str(r1.id)], reason="保存期限届满")
    assert rec(w, "r1").status == "purged"
    w.cli_json("case", "open", "--case-no", "P-1", "--name", "某案", "--category", "行政检查", user="clerk")
    r = w.cli("label", "r1", "--case", "P-1", "--counterpart", "甲", "--content", "检查", "--place", "某地",
              user="clerk")
    assert r.returncode == 6 and "purged" in r.stderr
    with w.st.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Label)) == 0


def _crash(w, point: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = w.env("clerk")
    env["BODYCAM_CRASHPOINT"] = f"{point}:1"
    return subprocess.run([sys.executable, "-m", "station", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_kill_9_halfway_through_a_rename_leaves_a_whole_named_view_and_repair_tidies(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})
    before = mirror_state(w)
    old = rec(w, "r1").name
    w.cli_json("case", "open", "--case-no", "X-1", "--name", "某案", "--category", "行政检查", user="clerk")
    args = ("label", "r1", "--case", "X-1", "--counterpart", "甲", "--content", "检查", "--place", "某地")

    # killed after staging: nothing committed, the old view whole, a staging leftover
    assert _crash(w, "label-rename-staged", *args).returncode == -9
    assert rec(w, "r1").name == old and view_files(w, old) == [f"{old}_00000.ts", f"{old}_00001.ts"]
    check = w.cli("names", "check", "--json", user="clerk")
    assert check.returncode == 1 and [f["kind"] for f in json.loads(check.stdout)["findings"]] == ["ViewStaging"]

    # killed after the new directory was published but before the commit: the catalogue keeps the
    # old name and its directory is whole; the new one is an orphan
    assert _crash(w, "label-rename-published", *args).returncode == -9
    assert rec(w, "r1").name == old and view_files(w, old) == [f"{old}_00000.ts", f"{old}_00001.ts"]
    with w.st.db.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Label)) == 0
    assert verify_station(w.st, files=True).ok
    kinds = sorted(f["kind"] for f in json.loads(w.cli("names", "check", "--json", user="clerk").stdout)["findings"])
    assert kinds == ["ViewStale"]          # the staging leftover went: this label repaired the view first
    rep = w.cli_json("names", "repair", user="clerk")
    assert rep["ok"] and [(f["kind"], f["repaired"]) for f in rep["findings"]] == [("ViewStale", True)]
    assert sorted(p.name for p in (w.st.store / "recordings").iterdir() if p.name != ".staging") == [old]
    assert w.cli("names", "check", user="clerk").returncode == 0

    # killed after the commit, before the old directory went: the new name is whole
    assert _crash(w, "label-rename-committed", *args).returncode == -9
    new = rec(w, "r1").name
    assert new != old and view_files(w, new) == [f"{new}_00000.ts", f"{new}_00001.ts"]
    assert (w.st.store / "recordings" / old).is_dir()
    assert verify_station(w.st, files=True).ok          # the label's audit line is caught up
    assert audit(w, "label")[-1]["details"]["name"] == new
    # the next label action on the recording repairs its view first (no explicit repair)
    lab = w.cli_json("label", "history", "r1", user="clerk")["labels"][0]
    w.cli_json("label", "correct", str(lab["id"]), "--content", "复查", "--reason", "内容有误", user="clerk")
    final = rec(w, "r1").name
    assert sorted(p.name for p in (w.st.store / "recordings").iterdir() if p.name != ".staging") == [final]
    assert w.cli("names", "check", user="clerk").returncode == 0
    assert mirror_state(w) == before
    mirrors_verify(w)
    assert w.cli("verify", "--files").returncode == 0


def test_unknown_view_directories_are_reported_never_removed(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 1})
    stray = w.st.store / "recordings" / "某人手工建的目录"
    stray.mkdir()
    (stray / "note.txt").write_text("x", encoding="utf-8")
    name = rec(w, "r1").name
    os.unlink(next((w.st.store / "recordings" / name).iterdir()))     # a view link lost
    with w.st.db.session() as s:
        r = view.check_views(w.st.store, s, repair=True)
    assert sorted((f.kind, f.repaired) for f in r.findings) == [("ViewFileMissing", True), ("ViewUnknown", False)]
    assert not r.ok and stray.is_dir() and view_files(w, name) == [f"{name}_00000.ts"]
    assert w.cli("names", "check", user="wang").returncode == 3


def test_two_devices_recording_ids_alike_get_two_named_views(sqlite_station_world):
    """Recording ids are unique per device only: a second device's ``r1`` of the same day gets
    its device id in its name at ingest (and keeps it when labelled alike), never the first
    one's named view."""
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 2})
    w.dock_device("dev2", {"r1": 1})
    with w.st.db.session() as s:
        first, second = s.scalars(select(m.Recording).order_by(m.Recording.id)).all()
    assert first.device_id != second.device_id and first.recording_id == second.recording_id == "r1"
    assert first.name == f"{UNIT}_未标注_{first.date}_未标注_r1" and first.date == second.date
    assert second.name == f"{first.name}-{second.device_id[:8]}"
    assert view_files(w, first.name) == [f"{first.name}_00000.ts", f"{first.name}_00001.ts"]
    assert view_files(w, second.name) == [f"{second.name}_00000.ts"]
    for r in (first, second):                     # each view links its own device's mirror
        mirror = w.st.store / "devices" / r.device_id / "mirror"
        linked = (w.st.store / "recordings" / r.name / f"{r.name}_00000.ts").stat().st_ino
        assert linked in {p.stat().st_ino for p in mirror.rglob("*.ts")}
    with w.st.db.session() as s:
        assert view.check_views(w.st.store, s, repair=False).ok
    for ref in (f"#{first.id}", f"#{second.id}"):   # labelled alike: the names stay apart
        w.cli_json("label", ref, "--activity", "夜间巡查", "--category", "其他", "--counterpart", "某店",
                   "--content", "巡查", "--place", "湖滨南路", user="clerk")
    with w.st.db.session() as s:
        a, b = (s.get(m.Recording, r.id).name for r in (first, second))
        assert a == f"{UNIT}_某店_{first.date}_巡查_r1" and b == f"{a}-{second.device_id[:8]}"
        assert view.check_views(w.st.store, s, repair=False).ok


def test_cli_time_range_label_uses_the_station_time_zone(sqlite_station_world):
    w = sqlite_station_world
    w.dock_device("dev", {"r1": 3})
    r1 = rec(w, "r1")
    w.cli_json("case", "open", "--case-no", "T-1", "--name", "某案", "--category", "行政检查", user="clerk")
    from station.cli.common import iso
    t0 = iso(r1.start_wall_ns + 500_000_000, w.cfg.timezone)
    assert t0.endswith("+08:00")
    out = w.cli_json("label", "r1", "--case", "T-1", "--counterpart", "甲", "--content", "检查", "--place", "某地",
                     "--from", t0[:-6], user="clerk")          # local time without offset: Asia/Shanghai
    assert out["label"]["range_start_ns"] == r1.start_wall_ns + 500_000_000
    assert out["label"]["range_end_ns"] == r1.end_wall_ns
    assert time.time_ns() > out["label"]["labelled_ns"] > 0
