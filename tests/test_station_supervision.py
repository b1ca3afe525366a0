"""Supervision (S10 statistics, D6/D5 sign-off, S9 ledger report), fed by real dockings.

Two officers dock their devices: li's an hour after his shift (on time), wang's 25 hours after
(D11: late). Their device journals hold what firmware/states.py and recorder/pipeline.py write
for an interruption answered in time, one whose reason went missing and was answered late, and
a lawful not-recording period (D6). Time rules run on the station's injected clock; the
command line runs as a subprocess on the same catalogue.
"""
import csv
import io
import subprocess
import time

import pytest
from sqlalchemy import select

from station.audit.integrity import verify_station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed
from station.supervision import ledger_report, report, signoff, stats
from tests.media_fixture import WALL0
from tests.station_fixture import OFFICER2_NO, OFFICER_NO, station_world  # noqa: F401

DEVICE_FAULT = {"code": "device-fault", "number": 1, "zh": "设备故障", "en": "device fault", "kind": "interruption"}
PRIVACY = {"code": "personal-privacy", "number": 3, "zh": "涉及个人隐私", "en": "personal privacy",
           "kind": "not-recording"}
SECRET = {"code": "state-secret", "number": 1, "zh": "涉及国家秘密", "en": "state secret", "kind": "not-recording"}


def wang_shift(dev):
    """A camera stall answered in time; a low battery whose reason went missing, then came late;
    a not-recording period with its basis (firmware.states payloads)."""
    j = dev.journal.append
    j("interruption", {"cause": "camera-stall", "recording_id": "r2", "stall_timeout_ms": 2000})
    j("state", {"from": "recording", "to": "interrupted", "cause": "camera-stall", "mono_ns": 10})
    j("reason-pending", {"cause": "camera-stall", "how": "interrupt", "mono_ns": 11,
                         "suggested_reason": "device-fault"})
    j("reason-given", {"cause": "camera-stall", "reason": DEVICE_FAULT, "note_id": None, "interrupted_ns": 11,
                       "resumed_ns": 20, "mono_ns": 25, "late": False, "while_recording": True})
    j("state", {"from": "recording", "to": "interrupted", "cause": "low-battery", "mono_ns": 30})
    j("reason-pending", {"cause": "low-battery", "how": "interrupt", "mono_ns": 31, "suggested_reason": "low-battery"})
    j("reason-missing", {"cause": "low-battery", "why": "timeout", "interrupted_ns": 31, "resumed_ns": 40,
                         "mono_ns": 100})
    j("reason-given", {"cause": "low-battery", "reason": None, "note_id": "VN-7", "interrupted_ns": 31,
                       "resumed_ns": 40, "mono_ns": 120, "late": True, "while_recording": False})
    j("not-recording", {"reason": PRIVACY, "note_id": None, "basis": "当事人要求保护个人隐私", "mono_ns": 130,
                        "needs_signoff": True})


def li_shift(dev):
    dev.journal.append("not-recording", {"reason": SECRET, "note_id": "VN-9", "basis": None, "mono_ns": 5,
                                         "needs_signoff": True})


def two_shifts(w):
    """li docks 1 h after his shift, wang 25 h after his; returns (li's, wang's) docking times."""
    w.record("dev-li", {"q1": 1}, officer=OFFICER2_NO, extra=li_shift)
    w.clock.t = time.time_ns() + NS_PER_HOUR
    li_at = w.clock.now_ns()
    w.dock_device("dev-li")
    w.record("dev-wang", {"r1": 2, "r2": 1}, officer=OFFICER_NO, extra=wang_shift)
    w.clock.t = time.time_ns() + 25 * NS_PER_HOUR
    wang_at = w.clock.now_ns()
    w.dock_device("dev-wang")
    return li_at, wang_at


def by_key(s):
    return {g.key: g for g in s.groups}


def test_stats_signoff_and_ledger_from_real_dockings(station_world, tmp_path):
    w = station_world
    li_at, wang_at = two_shifts(w)

    # what the catalogue took from the journals: causes, reasons, the late answer, the D6 basis
    with w.st.db.session() as s:
        rows = {(r.officer_id, r.kind, r.cause): r for r in s.scalars(select(m.Interruption))}
        dockings = {d.officer_id: d for d in s.scalars(select(m.Docking))}
    late_answer = rows[(OFFICER_NO, "reason-given", "low-battery")]
    assert late_answer.late and late_answer.reason == "语音说明 VN-7"
    assert rows[(OFFICER_NO, "reason-given", "camera-stall")].reason == "设备故障"
    assert not rows[(OFFICER_NO, "reason-given", "camera-stall")].late
    assert rows[(OFFICER_NO, "reason-missing", "low-battery")].reason is None
    assert rows[(OFFICER_NO, "not-recording", "personal-privacy")].reason == \
        "涉及个人隐私；依据：当事人要求保护个人隐私"
    assert rows[(OFFICER2_NO, "not-recording", "state-secret")].reason == "涉及国家秘密（语音说明 VN-9）"
    assert dockings[OFFICER_NO].checked_in_ns == wang_at
    assert 25 * NS_PER_HOUR - 60 * 10**9 < wang_at - dockings[OFFICER_NO].used_until_ns < 25 * NS_PER_HOUR + 10**9
    assert 0 < li_at - dockings[OFFICER2_NO].used_until_ns < 2 * NS_PER_HOUR

    # S10 figures on the injected clock: 49 h after li's ingest his recording's label is overdue,
    # wang's (ingested 24 h later) not yet. A segment's wall span runs from its first frame to its
    # last (the fixture's 1 s segments of 25 frames: 960 ms each).
    w.clock.t = li_at + 49 * NS_PER_HOUR
    g = by_key(stats.compute(w.st))
    wang, li = g[OFFICER_NO], g[OFFICER2_NO]
    assert (wang.recordings, wang.recorded_ms, wang.dockings, wang.late_dockings) == (2, 2880, 1, 1)
    assert (li.recordings, li.recorded_ms, li.dockings, li.late_dockings) == (1, 960, 1, 0)
    assert (wang.unlabelled, wang.labels_overdue, li.unlabelled, li.labels_overdue) == (2, 0, 1, 1)
    assert wang.interruptions == 2 and wang.interruptions_by_cause == {"camera-stall": 1, "low-battery": 1}
    assert (wang.reasons_missing, wang.reasons_given_late) == (1, 1)
    assert (wang.not_recording, wang.not_recording_pending, wang.signoff_pending) == (1, 1, 2)
    assert (li.interruptions, li.reasons_missing, li.not_recording_pending, li.signoff_pending) == (0, 0, 1, 1)
    text = report.stats_text(w.st, stats.compute(w.st)).splitlines()
    assert "逾期入库(>24h)" in text[1] and text[2].split()[:5] == [OFFICER_NO, "wang", "2", "0:00:03", "1"]
    w.clock.advance(24 * NS_PER_HOUR)
    assert stats.compute(w.st).total.labels_overdue == 3
    # a period clips the segments (both devices recorded from WALL0) and keeps what falls in it
    clip = by_key(stats.compute(w.st, period=stats.Period(WALL0 + 500 * 10**6, WALL0 + 1500 * 10**6)))
    assert (clip[OFFICER_NO].recorded_ms, clip[OFFICER_NO].recordings, clip[OFFICER_NO].dockings) == (1420, 0, 0)
    assert clip[OFFICER2_NO].recorded_ms == 460
    by_device = stats.compute(w.st, by="device", device=dockings[OFFICER_NO].device_id[:6])
    assert [(x.key, x.recordings, x.late_dockings) for x in by_device.groups] == [
        (dockings[OFFICER_NO].device_id, 2, 1)]
    tz = w.cfg.timezone
    weeks = {stats.week_of(t, tz) for t in [WALL0] + [d.used_until_ns for d in dockings.values()]
             + [r.wall_ns for r in rows.values()]}
    by_week = stats.compute(w.st, by="week")
    assert {x.key for x in by_week.groups} == weeks and by_week.total.recorded_ms == 3840

    # the sign-off workflow (the command line for a refusal, exit 3, and an approval)
    pending = signoff.list_items(w.st, w.user("chief"), pending_only=True)
    assert sorted((p["officer_id"], p["kind"]) for p in pending) == [
        (OFFICER_NO, "not-recording"), (OFFICER_NO, "reason-missing"), (OFFICER2_NO, "not-recording")]
    d6 = next(p["item"] for p in pending if p["officer_id"] == OFFICER_NO and p["kind"] == "not-recording")
    li_d6 = next(p["item"] for p in pending if p["officer_id"] == OFFICER2_NO)
    own = w.cli("signoff", "approve", str(d6), "--note", "本人确认", user="wang")
    assert own.returncode == 3 and "his own" in own.stderr
    with pytest.raises(NotAllowed, match="supervisor"):           # an approver, not wang's supervisor
        signoff.decide(w.st, w.user("deputy"), d6, "approved", "同意")
    with pytest.raises(NotAllowed, match="approver"):             # a clerk is no approver
        signoff.decide(w.st, w.user("clerk"), d6, "approved", "同意")
    with pytest.raises(InvalidInput):
        signoff.decide(w.st, w.user("chief"), d6, "approved", "  ")
    assert [p["item"] for p in signoff.list_items(w.st, w.user("wang"))] == sorted(
        p["item"] for p in pending if p["officer_id"] == OFFICER_NO)  # an officer sees his own items only
    with pytest.raises(NotAllowed):
        signoff.list_items(w.st, w.user("wang"), officer=OFFICER2_NO)
    ok = w.cli_json("signoff", "approve", str(d6), "--note", "经核实，涉及个人隐私，同意", user="chief")
    assert (ok["state"], ok["signed_off_by"], ok["signoff_note"]) == ("approved", "chief", "经核实，涉及个人隐私，同意")
    with pytest.raises(Conflict):
        signoff.decide(w.st, w.user("chief"), d6, "rejected", "改主意")
    w.clock.advance(NS_PER_HOUR)
    rejected = signoff.decide(w.st, w.user("chief"), li_d6, "rejected", "依据不足，请补充说明")
    assert rejected["state_zh"] == "已驳回"
    left = signoff.list_items(w.st, w.user("chief"), pending_only=True)
    assert [(p["officer_id"], p["kind"]) for p in left] == [(OFFICER_NO, "reason-missing")]
    with w.st.db.session() as s:
        audit = [(e.type, e.actor, e.subject) for e in s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.seq))]
        li_row = s.get(m.Interruption, li_d6)
        assert li_row is not None and li_row.signed_off_ns == w.clock.now_ns()
        assert (li_row.signoff_decision, li_row.signed_off_by) == ("rejected", "chief")
    for who in ("wang", "deputy"):
        assert ("signoff-refused", who, f"interruption:{d6}") in audit
    assert ("signoff", "chief", f"interruption:{d6}") in audit
    assert ("signoff", "chief", f"interruption:{li_d6}") in audit
    assert audit.count(("signoff", "chief", f"interruption:{d6}")) == 1
    assert verify_station(w.st).ok

    # the statistics on the command line: JSON, CSV, PDF; the rejection stays visible
    out = w.cli_json("stats", "--csv", str(tmp_path / "s.csv"), "--pdf", str(tmp_path / "s.pdf"), user="chief")
    cli = {x["key"]: x for x in out["groups"]}
    assert (cli[OFFICER_NO]["late_dockings"], cli[OFFICER_NO]["reasons_missing"], cli[OFFICER_NO]["recorded"],
            cli[OFFICER_NO]["signoff_pending"], cli[OFFICER_NO]["not_recording_approved"]) == (1, 1, "0:00:03", 1, 1)
    assert (cli[OFFICER2_NO]["not_recording_rejected"], cli[OFFICER2_NO]["rejected"],
            cli[OFFICER2_NO]["signoff_pending"]) == (1, 1, 0)
    assert out["total"]["dockings"] == 2 and out["total"]["late_dockings"] == 1
    table = list(csv.reader(io.StringIO((tmp_path / "s.csv").read_bytes().decode("utf-8-sig"))))
    head = table[0]
    assert head[0] == "执法人员（警号 姓名）" and "逾期入库(>24h)" in head and "未说明中断原因" in head
    wang_row = dict(zip(head, next(r for r in table if r[0].startswith(OFFICER_NO)), strict=True))
    assert (wang_row["录像数"], wang_row["逾期入库(>24h)"], wang_row["中断次数"], wang_row["未说明中断原因"]) == \
        ("2", "1", "2", "1")
    assert wang_row["中断原因分类"] == "摄像头停顿×1、电量不足×1"
    assert table[-1][0] == "合计"
    text = pdftotext(tmp_path / "s.pdf")
    assert "执法记录仪使用情况统计" in text and OFFICER_NO in text and OFFICER2_NO in text
    assert "待签批事项" in text and "中断原因未说明" in text and "审核人" in text
    # an officer sees his own figures only
    assert stats.scope_for(w.st, w.user("wang"), None, "see") == OFFICER_NO
    assert stats.scope_for(w.st, w.user("chief"), None, "see") is None
    with pytest.raises(NotAllowed):
        stats.scope_for(w.st, w.user("wang"), OFFICER2_NO, "see the statistics of use")

    # S9: the usage ledger report
    led = ledger_report.build(w.st)
    dock_rows = {r["officer_id"]: r for r in led.rows if r["event"] == "docking"}
    assert (dock_rows[OFFICER_NO]["recordings"], dock_rows[OFFICER_NO]["recording_ids"],
            dock_rows[OFFICER_NO]["late"], dock_rows[OFFICER_NO]["recorded"]) == (2, "r1, r2", True, "0:00:03")
    assert dock_rows[OFFICER2_NO]["late"] is False and dock_rows[OFFICER2_NO]["status"] == "ok"
    assert dock_rows[OFFICER_NO]["docked"].endswith("+08:00") and "逾期入库" in dock_rows[OFFICER_NO]["note"]
    assert led.devices == 2
    out = w.cli("ledger-report", "--csv", str(tmp_path / "l.csv"), "--pdf", str(tmp_path / "l.pdf"),
                user="clerk", check=True).stdout
    assert out.splitlines()[0].split()[:4] == ["序号", "设备", "事项", "使用人（警号"]
    wang_line = next(ln for ln in out.splitlines() if f"{OFFICER_NO} wang" in ln)
    assert dock_rows[OFFICER_NO]["docked"] in wang_line and "逾期入库" in wang_line and "r1, r2" in wang_line
    assert out.rstrip().endswith(f"PDF: {tmp_path / 'l.pdf'}")
    ltable = list(csv.reader(io.StringIO((tmp_path / "l.csv").read_bytes().decode("utf-8-sig"))))
    assert ltable[0][:4] == ["序号", "设备编号", "事项", "使用人（警号 姓名）"] and len(ltable) == 3
    ltext = pdftotext(tmp_path / "l.pdf")
    assert "执法记录仪使用登记台账" in ltext and "入库" in ltext and "逾期入库" in ltext and OFFICER_NO in ltext
    assert [r["officer_id"] for r in ledger_report.build(w.st, officer=OFFICER2_NO).rows] == [OFFICER2_NO]
    assert ledger_report.build(w.st, device=dock_rows[OFFICER_NO]["device_id"][:8]).devices == 1


def pdftotext(path):
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
