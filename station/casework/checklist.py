"""The record checklist (音像记录事项清单, S4) of a case: one row per current label of the case.

Columns (Xiamen annex 2, Luoyang list): 序号, 执法类别 (the label's category), 事项 (the case
name), 记录事项 (the label's content, or its activity), 部门 (the case's department), 记录人
(the officer: name and 警号), 地点, 开始时间, 结束时间 (the labelled range, else the recording),
完整性 (completeness, from the catalogue):

* every segment the device journal attests is stored (``present``, and its file in the
  mirror with the attested size) — segments were verified against the journal at ingest;
* no index missing from the sequence, no gap over ``GAP_NS`` between one segment's end and
  the next one's start;
* interruptions (D5) of the recording with their reasons (``interruption_events``): the reason
  comes with the device's ``reason-given`` record that follows the interruption (same device
  and cause; after a ``reason-missing`` it is a late statement, 事后补充), or is missing
  (``reason-missing``, or no answer at all);
* not-recording reasons (D6) in the recording's time, with their sign-off state.

A row is 完整 only with all segments, no gap and no interruption; otherwise 不完整 with each
finding. The PDF (WeasyPrint, Noto CJK) carries the unit, the case name and number and
signature lines; the CSV has the same columns (UTF-8 with BOM).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.access.accounts import require_role
from station.app import Station
from station.casework.cases import case_dict, linked
from station.casework.view import mirror_path
from station.db import models as m
from station.documents import render
from station.errors import NotFound

TITLE = "音像记录事项清单"
GAP_NS = 1_000_000_000       # more than a second between segments is a gap
CHECKLIST_ROLES = ("clerk", "approver", "auditor")
COLUMNS = [("seq", "序号"), ("category", "执法类别"), ("matter", "事项"), ("item", "记录事项"),
           ("department", "部门"), ("recorder", "记录人"), ("place", "地点"), ("start", "开始时间"),
           ("end", "结束时间"), ("completeness", "完整性")]
SIGNATURES = ("制表人", "审核人", "日期")


def local_time(ns: int | None, tz: str) -> str:
    if ns is None:
        return ""
    return dt.datetime.fromtimestamp(ns // 10**9, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


CAUSE_ZH = {"camera-stall": "摄像头停顿", "microphone-stall": "麦克风停顿", "storage-full": "存储空间不足",
            "storage-error": "存储错误", "low-battery": "电量不足", "power-loss": "断电", "fault": "设备故障"}


def interruption_events(rows: list[m.Interruption]) -> list[dict[str, Any]]:
    """One device's interruptions with their answers (rows in journal order): an ``interruption``
    opens one; the next ``reason-given`` of the same cause answers it (``late`` after a
    ``reason-missing``); ``reason-missing`` marks it missing. An answer with nothing open (its
    interruption journaled as a state change only) opens and answers one itself."""
    pending: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []

    def new(row: m.Interruption, state: str) -> dict[str, Any]:
        ev = {"cause": row.cause, "recording_id": row.recording_id, "wall_ns": row.wall_ns, "reason": None,
              "state": state, "journal_seq": row.journal_seq}
        out.append(ev)
        return ev

    for row in rows:
        ev = pending.get(row.cause)
        if row.kind == "interruption":
            pending[row.cause] = new(row, "open")
            pending[row.cause]["reason"] = row.reason
        elif row.kind == "reason-missing":
            if ev is None or ev["state"] != "open":
                ev = pending[row.cause] = new(row, "missing")
            ev["state"] = "missing"
        elif row.kind == "reason-given":
            if ev is None:
                ev = new(row, "given")
            ev["state"] = "late" if ev["state"] == "missing" else "given"
            ev["reason"] = row.reason or "语音说明"
            if ev["recording_id"] is None:
                ev["recording_id"] = row.recording_id
            pending.pop(row.cause, None)
    for ev in out:
        if ev["state"] == "open" and not ev["reason"]:
            ev["state"] = "missing"        # never answered: no reason stated
        elif ev["state"] == "open":
            ev["state"] = "given"
    return out


def completeness(s: Session, store: Path, rec: m.Recording) -> dict[str, Any]:
    """What the catalogue knows of a recording's completeness; ``text`` for the checklist."""
    if rec.status != "stored":
        return {"complete": False, "status": rec.status, "segments": rec.segments or 0, "present": 0,
                "missing": [], "gaps": [], "interruptions": [], "reasons_missing": 0, "not_recording": [],
                "text": f"不完整：已清除（{rec.status}）"}
    segs = list(s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)))
    missing: list[int] = []
    for g in segs:
        p = mirror_path(store, rec.device_id, g.path)
        if not g.present or not p.is_file() or p.stat().st_size != g.size:
            missing.append(g.index)
    indices = {g.index for g in segs}
    absent = [i for i in range(max(indices) + 1) if i not in indices] if indices else []
    gaps = [{"after": a.index, "gap_ns": b.start_wall_ns - a.end_wall_ns}
            for a, b in zip(segs, segs[1:], strict=False) if b.start_wall_ns - a.end_wall_ns > GAP_NS]
    lo, hi = rec.start_wall_ns or 0, rec.end_wall_ns or rec.start_wall_ns or 0
    rows = list(s.scalars(select(m.Interruption).where(m.Interruption.device_id == rec.device_id)
                          .order_by(m.Interruption.journal_seq)))
    interruptions = [ev for ev in interruption_events(rows)
                     if ev["recording_id"] == rec.recording_id
                     or (ev["recording_id"] is None and lo <= ev["wall_ns"] <= hi)]
    not_recording = [{"reason": row.reason or row.cause, "signed_off_by": row.signed_off_by,
                      "decision": row.signoff_decision, "needs_signoff": row.needs_signoff,
                      "journal_seq": row.journal_seq}
                     for row in rows if row.kind == "not-recording"
                     and (row.recording_id == rec.recording_id or (row.recording_id is None
                                                                   and lo <= row.wall_ns <= hi))]
    reasons_missing = sum(1 for i in interruptions if i["state"] == "missing")
    complete = not missing and not absent and not gaps and not interruptions
    parts: list[str] = []
    total = len(segs)
    if not missing and not absent:
        parts.append(f"共{total}段，已全部入库并经校验")
    else:
        if missing:
            parts.append(f"共{total}段，缺失{len(missing)}段（编号{'、'.join(f'{i:05d}' for i in missing)}）")
        if absent:
            parts.append(f"设备日志中缺少编号{'、'.join(f'{i:05d}' for i in absent)}的段")
    if gaps:
        parts.append(f"间断{len(gaps)}处（共{sum(g['gap_ns'] for g in gaps) // 10**9}秒）")
    for i in interruptions:
        cause = CAUSE_ZH.get(i["cause"], i["cause"])
        parts.append(f"中断（{cause}），原因缺失" if i["state"] == "missing"
                     else f"中断（{cause}），{'事后补充' if i['state'] == 'late' else ''}原因：{i['reason']}")
    for n in not_recording:
        if n["signed_off_by"]:
            state = f"{'已驳回' if n['decision'] == 'rejected' else '已签批'}（{n['signed_off_by']}）"
        else:
            state = "待签批" if n["needs_signoff"] else ""
        parts.append(f"不记录说明：{n['reason']}{state}")
    text = ("完整：" if complete else "不完整：") + "；".join(parts)
    return {"complete": complete, "status": rec.status, "segments": total, "present": total - len(missing),
            "missing": missing, "absent": absent, "gaps": gaps, "interruptions": interruptions,
            "reasons_missing": reasons_missing, "not_recording": not_recording, "text": text}


@dataclass
class Checklist:
    case: dict[str, Any]
    unit: str
    rows: list[dict[str, Any]]
    made_ns: int

    def csv(self) -> bytes:
        return render.csv_bytes(COLUMNS, self.rows)

    def html(self, tz: str) -> str:
        meta = [("单位", self.unit), ("案件名称", self.case["name"]), ("案件编号", self.case["case_no"]),
                ("执法类别", self.case["category"]), ("部门", self.case["department"] or "—"),
                ("制表时间", local_time(self.made_ns, tz))]
        return render.page(TITLE, render.html_table(COLUMNS, self.rows), meta=meta, landscape=True,
                           signatures=SIGNATURES)

    def pdf(self, tz: str) -> bytes:
        return render.pdf(self.html(tz))


def checklist(st: Station, user: m.User, case_no: str) -> Checklist:
    require_role(st, user, *CHECKLIST_ROLES, what="make a record checklist")
    tz = st.cfg.timezone
    with st.db.session() as s:
        case = s.scalars(select(m.Case).where(m.Case.case_no == case_no)).first()
        if case is None:
            raise NotFound(f"no case {case_no}")
        officers = {u.officer_no: u for u in s.scalars(select(m.User).where(m.User.officer_no.is_not(None)))}
        rows = []
        cache: dict[int, dict[str, Any]] = {}
        for n, (lab, rec) in enumerate(linked(s, case.id), start=1):
            if rec.id not in cache:
                cache[rec.id] = completeness(s, st.store, rec)
            who = officers.get(rec.officer_id) if rec.officer_id else None
            recorder = f"{who.display_name}（{rec.officer_id}）" if who else (rec.officer_id or "")
            start = lab.range_start_ns if lab.range_start_ns is not None else rec.start_wall_ns
            end = lab.range_end_ns if lab.range_end_ns is not None else rec.end_wall_ns
            rows.append({"seq": n, "category": lab.category, "matter": case.name,
                         "item": lab.content or lab.activity or "", "department": case.department,
                         "recorder": recorder, "place": lab.place, "start": local_time(start, tz),
                         "end": local_time(end, tz), "completeness": cache[rec.id]["text"],
                         "recording": rec.id, "label": lab.id, "name": rec.name, "start_ns": start,
                         "end_ns": end, "complete": cache[rec.id]["complete"], "detail": cache[rec.id]})
        return Checklist(case_dict(case), st.cfg.unit, rows, st.now_ns())
