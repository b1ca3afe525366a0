"""The usage ledger (台账, S9) as a readable, printable report: per device, who used it, when it
was checked out to them and handed back, when it was docked, what it recorded.

Two kinds of entry, in time order per device:

* **领用** (check-out, D12): an ``assignments`` row: the officer the device was checked out to,
  when and by whom, when it was checked in again (归还); the recordings that started in between.
* **入库** (docking): a ``dockings`` row: the officer named by the device journal (or the
  assignment), the period the offloaded batch covers (its first and last journal record), when
  it was docked and when the docking ended, its status, the recordings it first stored and their
  length, and whether it was later than 24 h after the shift (D11, station.supervision.stats).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.supervision.stats import duration_text, is_late, iso_s, officer_names, resolve_device

SHORT_ID = 12   # device ids are 32 hex digits: the printout shows the first 12 (the CSV all)
STATUS_ZH = {"ok": "完成", "partial": "部分文件隔离", "quarantined": "已隔离", "interrupted": "中断（待续传）",
             "refused": "拒绝", "in-progress": "进行中"}
COLUMNS: list[tuple[str, str]] = [
    ("seq", "序号"), ("device", "设备"), ("event_zh", "事项"), ("officer", "使用人（警号 姓名）"),
    ("from", "领用/使用开始"), ("until", "归还/使用结束"), ("docked", "入库时间"), ("docked_end", "入库完成"),
    ("recordings", "录像数"), ("recorded", "录制时长"), ("recording_ids", "录像"), ("status_zh", "状态"),
    ("note", "备注"),
]
CSV_COLUMNS = [("device_id", "设备编号") if k == "device" else (k, h) for k, h in COLUMNS]
PRINT_COLUMNS = [(k, h) for k, h in COLUMNS if k != "docked_end"]


@dataclass
class LedgerReport:
    rows: list[dict[str, Any]]
    devices: int


def _recorded_ms(s: Session, recs: list[m.Recording]) -> int:
    """The recordings' segment spans (first to last frame, as attested), in ms."""
    if not recs:
        return 0
    q = select(m.Segment.start_wall_ns, m.Segment.end_wall_ns).where(m.Segment.recording.in_([r.id for r in recs]))
    return sum((end - start) // 1_000_000 for start, end in s.execute(q))


def build(st: Station, *, device: str | None = None, officer: str | None = None) -> LedgerReport:
    tz = st.cfg.timezone
    rows: list[dict[str, Any]] = []
    with st.db.session() as s:
        device = resolve_device(s, device)
        names = officer_names(s)

        def who(no: str | None) -> str:
            return f"{no} {names.get(no, '')}".strip() if no else "（未知）"

        devices = list(s.scalars(select(m.Device).order_by(m.Device.device_id)))
        known = {d.device_id for d in devices}
        extra = sorted({d for d in s.scalars(select(m.Docking.device_id))} - known)
        shown = 0
        for dev_id, label in [(d.device_id, d.label or "") for d in devices] + [(x, "") for x in extra]:
            if device is not None and dev_id != device:
                continue
            entries: list[tuple[int, dict[str, Any]]] = []
            recs = list(s.scalars(select(m.Recording).where(m.Recording.device_id == dev_id)
                                  .order_by(m.Recording.start_wall_ns, m.Recording.id)))
            for a in s.scalars(select(m.Assignment).where(m.Assignment.device_id == dev_id)):
                if officer is not None and a.officer_id != officer:
                    continue
                end = a.checked_in_ns
                made = [r for r in recs if r.start_wall_ns is not None and r.start_wall_ns >= a.checked_out_ns
                        and (end is None or r.start_wall_ns < end)]
                note = f"领用经办 {a.checked_out_by}" + (f"；归还经办 {a.checked_in_by}" if a.checked_in_by else
                                                        "；未归还")
                entries.append((a.checked_out_ns, {
                    "event": "checkout", "event_zh": "领用", "officer_id": a.officer_id, "officer": who(a.officer_id),
                    "from_ns": a.checked_out_ns, "until_ns": end, "docked_ns": None, "docked_end_ns": None,
                    "recordings": len(made), "recorded_ms": _recorded_ms(s, made),
                    "recording_ids": ", ".join(r.recording_id for r in made), "status": "open" if end is None
                    else "returned", "status_zh": "使用中" if end is None else "已归还", "note": note,
                    "late": False}))
            for d in s.scalars(select(m.Docking).where(m.Docking.device_id == dev_id)):
                if officer is not None and d.officer_id != officer:
                    continue
                stored = [r for r in recs if r.docking_id == d.id]
                late = is_late(d)
                note = ""
                if d.used_until_ns is not None:
                    delay_h = (d.checked_in_ns - d.used_until_ns) // NS_PER_HOUR
                    note = f"逾期入库：班次结束后 {delay_h} 小时 (D11)" if late else ""
                if d.detail and d.status not in ("ok",):
                    note = "；".join(x for x in (note, d.detail) if x)
                entries.append((d.checked_in_ns, {
                    "event": "docking", "event_zh": "入库", "officer_id": d.officer_id, "officer": who(d.officer_id),
                    "from_ns": d.used_from_ns, "until_ns": d.used_until_ns, "docked_ns": d.checked_in_ns,
                    "docked_end_ns": d.checked_out_ns, "recordings": len(stored),
                    "recorded_ms": _recorded_ms(s, stored), "recording_ids": ", ".join(r.recording_id for r in stored),
                    "status": d.status, "status_zh": STATUS_ZH.get(d.status, d.status), "note": note, "late": late,
                    "docking_id": d.id}))
            if entries:
                shown += 1
            for _, e in sorted(entries, key=lambda x: x[0]):
                e.update(device_id=dev_id, device=f"{dev_id[:SHORT_ID]} {label}".strip(), seq=len(rows) + 1,
                         recorded=duration_text(e["recorded_ms"]), **{
                             k: iso_s(e[f"{k}_ns"], tz) for k in ("from", "until", "docked", "docked_end")})
                rows.append(e)
    return LedgerReport(rows, shown)
