"""S4: the record checklist (音像记录事项清单) of a case, from real dockings with interruptions and
their reasons in the device journal; the PDF is read back with pdftotext, the CSV parsed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess

import pytest
from sqlalchemy import select

from recorder.journal import iter_records
from station.casework import cases, checklist, labels
from station.cli.common import iso
from station.db import models as m
from station.errors import NotAllowed, NotFound
from tests.station_fixture import OFFICER_NO, UNIT, station_world  # noqa: F401

DEVICE_FAULT = {"code": "device-fault", "number": 1, "zh": "设备故障", "en": "device fault", "kind": "interruption"}
CASE_NO = "厦城执罚〔2026〕21号"
CASE_NAME = "某餐馆占道经营案"


def shift(dev):
    """r1: a camera stall answered in time; r2: storage full, its reason never given
    (firmware.states / recorder.pipeline payloads)."""
    j = dev.journal.append
    j("interruption", {"cause": "camera-stall", "recording_id": "r1", "stall_timeout_ms": 2000})
    j("reason-pending", {"cause": "camera-stall", "how": "interrupt", "mono_ns": 11,
                         "suggested_reason": "device-fault"})
    j("reason-given", {"cause": "camera-stall", "reason": DEVICE_FAULT, "note_id": None, "interrupted_ns": 11,
                       "resumed_ns": 20, "mono_ns": 25, "late": False, "while_recording": True})
    j("interruption", {"cause": "storage-full", "recording_id": "r2"})
    j("reason-pending", {"cause": "storage-full", "how": "interrupt", "mono_ns": 40,
                         "suggested_reason": "storage-full"})
    j("reason-missing", {"cause": "storage-full", "why": "timeout", "interrupted_ns": 40, "resumed_ns": 50,
                         "mono_ns": 100})


def rec(w, rid):
    with w.st.db.session() as s:
        return s.scalars(select(m.Recording).where(m.Recording.recording_id == rid)).one()


def flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_checklist_rows_completeness_pdf_and_csv(station_world, tmp_path):
    w = station_world
    w.dock_device("dev", {"r1": 2, "r2": 1, "r3": 2}, extra=shift)
    clerk = w.user("clerk")
    cases.open_case(w.st, clerk, CASE_NO, CASE_NAME, "行政处罚", department="思明大队")
    cases.open_case(w.st, clerk, "OTHER-1", "别的案", "行政检查")
    r3 = rec(w, "r3")
    half = r3.start_wall_ns + 1_000_000_000
    for rid, content, place, rng in (("r1", "检查一", "中山路", {}), ("r2", "检查二", "思明南路", {}),
                                     ("r3", "检查三", "鹭江道", {"range_from_ns": half})):
        labels.label_recording(w.st, clerk, rid, labels.LabelInput(case_no=CASE_NO, counterpart="张三",
                                                                   content=content, place=place, **rng))
    # the first half of r3 belongs to another case: not in this checklist
    labels.label_recording(w.st, clerk, "r3", labels.LabelInput(case_no="OTHER-1", counterpart="李四",
                                                                content="别的", place="别处", range_to_ns=half))
    # a corrected label shows as its current version only
    lab2 = labels.history(w.st, clerk, "r2")["labels"][0]
    labels.correct_label(w.st, clerk, lab2["id"], labels.LabelInput(content="检查二复查"), "记录事项写错")

    cl = checklist.checklist(w.st, clerk, CASE_NO)
    rows = cl.rows
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert [r["item"] for r in rows] == ["检查一", "检查二复查", "检查三"]
    assert {r["matter"] for r in rows} == {CASE_NAME} and {r["department"] for r in rows} == {"思明大队"}
    assert {r["category"] for r in rows} == {"行政处罚"}
    assert {r["recorder"] for r in rows} == {f"wang（{OFFICER_NO}）"}
    assert [r["place"] for r in rows] == ["中山路", "思明南路", "鹭江道"]
    assert rows[2]["start_ns"] == half and rows[2]["end_ns"] == r3.end_wall_ns
    assert rows[0]["start"] == iso(rec(w, "r1").start_wall_ns, "Asia/Shanghai")[:19].replace("T", " ")
    c1, c2, c3 = (r["completeness"] for r in rows)
    assert c1 == "不完整：共2段，已全部入库并经校验；中断（摄像头停顿），原因：设备故障"
    assert c2 == "不完整：共1段，已全部入库并经校验；中断（存储空间不足），原因缺失"
    assert c3 == "完整：共2段，已全部入库并经校验"
    assert rows[1]["detail"]["reasons_missing"] == 1 and rows[2]["detail"]["complete"] is True

    # the command: PDF and CSV, audited with their hashes
    pdf, csv_path = tmp_path / "清单.pdf", tmp_path / "清单.csv"
    out = w.cli_json("checklist", CASE_NO, "--pdf", str(pdf), "--csv", str(csv_path), user="clerk")
    assert [r["item"] for r in out["rows"]] == ["检查一", "检查二复查", "检查三"]
    text = flat(subprocess.run(["pdftotext", "-raw", str(pdf), "-"], capture_output=True, text=True,
                               check=True).stdout)
    for want in ("音像记录事项清单", UNIT, CASE_NAME, CASE_NO, "序号", "执法类别", "事项", "记录事项", "部门",
                 "记录人", "地点", "开始时间", "结束时间", "完整性", "制表人", "审核人"):
        assert flat(want) in text, want
    for r in rows:
        assert flat(f"{r['seq']}行政处罚{CASE_NAME}{r['item']}思明大队wang（{OFFICER_NO}）{r['place']}"
                    f"{r['start']}{r['end']}{r['completeness']}") in text, r["seq"]
    assert "别的案" not in text and "检查二复查" in text and "检查二思明" not in text

    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert table[0] == ["序号", "执法类别", "事项", "记录事项", "部门", "记录人", "地点", "开始时间", "结束时间",
                        "完整性"]
    assert [row[0] for row in table[1:]] == ["1", "2", "3"]
    assert [row[3] for row in table[1:]] == ["检查一", "检查二复查", "检查三"]
    assert [row[9] for row in table[1:]] == [c1, c2, c3]

    event = [r.payload for r in iter_records(w.st.trail.journal_dir / "journal.log") if r.type == "checklist"][-1]
    assert event["subject"] == f"case:{CASE_NO}" and event["details"]["rows"] == 3
    assert event["details"]["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert event["details"]["csv_sha256"] == hashlib.sha256(raw).hexdigest()

    # who and what: an officer may not; an unknown case is not found
    assert w.cli("checklist", CASE_NO, user="wang").returncode == 3
    with pytest.raises(NotAllowed):
        checklist.checklist(w.st, w.user("li"), CASE_NO)
    with pytest.raises(NotFound):
        checklist.checklist(w.st, clerk, "NO-SUCH")
    human = w.cli("checklist", "OTHER-1", user="auditor", check=True).stdout
    assert "音像记录事项清单" in human and "别的" in human and "完整" in human

    # a stored original lost behind the station's back: the checklist says so (as verify --files does)
    with w.st.db.session() as s:
        seg = s.scalars(select(m.Segment).where(m.Segment.recording == r3.id, m.Segment.index == 1)).one()
    (w.st.store / "devices" / r3.device_id / "mirror" / seg.path).unlink()
    row3 = checklist.checklist(w.st, clerk, CASE_NO).rows[2]
    assert row3["completeness"] == "不完整：共2段，缺失1段（编号00001）" and row3["detail"]["missing"] == [1]
