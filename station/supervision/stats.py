"""S10 statistics of use: per officer, device or week, over a period.

Every figure comes from the catalogue the dockings built from verified device journals
(never from anyone's word): recordings and their segments, dockings, the interruption and
reason records (``interruptions``), labels. What each figure means, exactly
(station/docs/supervision.md):

* **hours recorded**: the segments' wall-clock spans, clipped to the period;
  **recordings**: those that started in the period.
* **dockings / late dockings (D11)**: dockings that brought records, by their shift end
  ``used_until_ns`` (the last journal record of the batch offloaded). Late when the docking
  began (``checked_in_ns``) more than 24 h after that shift end.
* **labels overdue (S2)**: stored recordings (started in the period) with no current label
  more than ``[labels] deadline_hours`` after their ingest, as of now.
* **interruptions by cause (D5)**: one per interruption, counted from its outcome: the
  reason given in time (``reason-given``) or the reason logged missing (``reason-missing``);
  a reason given late (after its ``reason-missing``) is the same interruption, not another.
* **reasons missing**: the ``reason-missing`` records.
* **not-recording reasons (D6)**: ``not-recording`` records that ask for sign-off, with how
  many await it and how many were rejected; ``signoff_pending`` adds the missing reasons
  still awaiting a supervisor (station.supervision.signoff).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.access.accounts import has_role, require_role
from station.app import Station
from station.cli.common import iso
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import InvalidInput, NotAllowed, NotFound

LATE_DOCKING_NS = 24 * NS_PER_HOUR     # D11: offload within 24 h of the end of the working day
GROUPINGS = ("officer", "device", "week")
NO_OFFICER = "（未知）"

# D5 causes the device journals (firmware.states.INTERRUPTION_CAUSES, recorder.pipeline), in the
# regulations' words where they name them; any other code is shown as journaled
CAUSE_ZH = {
    "fault": "设备故障", "power-loss": "断电", "storage-full": "存储空间不足", "low-battery": "电量不足",
    "camera-stall": "摄像头停顿", "microphone-stall": "麦克风停顿", "storage-error": "存储错误",
}
# D6 reasons (firmware.reasons.NOT_RECORDING_REASONS codes)
NOT_RECORDING_ZH = {
    "state-secret": "涉及国家秘密", "commercial-secret": "涉及商业秘密", "personal-privacy": "涉及个人隐私",
    "work-secret": "涉及工作秘密", "emergency": "情况紧急", "objective-impossibility": "客观原因无法记录",
}
D5_OUTCOMES = ("reason-given", "reason-missing")
SEE_ALL = ("approver", "auditor", "admin", "clerk")   # see every officer's figures; an officer his own


def scope_for(st: Station, user: m.User, officer: str | None, what: str) -> str | None:
    """The officer (警号) ``user`` may look at: any (``officer`` as asked) for supervisors,
    auditors, clerks and admins; an officer only himself (asking for another is refused, audited)."""
    if has_role(user, *SEE_ALL):
        return officer
    require_role(st, user, "officer", *SEE_ALL, what=what)
    if officer is not None and officer != user.officer_no:
        st.trail.event("not-allowed", actor=user.username, subject=f"officer:{officer}",
                       reason=f"an officer may {what} for himself only")
        raise NotAllowed(f"{user.username} may {what} for himself only (警号 {user.officer_no})")
    return user.officer_no


def cause_zh(code: str) -> str:
    return CAUSE_ZH.get(code) or NOT_RECORDING_ZH.get(code) or code


@dataclass(frozen=True)
class Period:
    """[from_ns, to_ns); either end open when None."""

    from_ns: int | None = None
    to_ns: int | None = None

    def __post_init__(self) -> None:
        if self.from_ns is not None and self.to_ns is not None and self.to_ns <= self.from_ns:
            raise InvalidInput("the period ends before it starts (--to must be after --from)")

    def holds(self, t: int | None) -> bool:
        return t is not None and (self.from_ns is None or t >= self.from_ns) and (self.to_ns is None or t < self.to_ns)

    def overlap(self, start: int, end: int) -> int:
        lo = start if self.from_ns is None else max(start, self.from_ns)
        hi = end if self.to_ns is None else min(end, self.to_ns)
        return max(0, hi - lo)


@dataclass
class Figures:
    key: str
    label: str
    recordings: int = 0
    recorded_ms: int = 0
    dockings: int = 0
    late_dockings: int = 0
    unlabelled: int = 0
    labels_overdue: int = 0
    interruptions: int = 0
    interruptions_by_cause: dict[str, int] = field(default_factory=dict)
    reasons_given_late: int = 0
    reasons_missing: int = 0
    not_recording: int = 0
    not_recording_pending: int = 0
    not_recording_approved: int = 0
    not_recording_rejected: int = 0
    signoff_pending: int = 0
    rejected: int = 0

    def add(self, other: "Figures") -> None:
        for k, v in asdict(other).items():
            if isinstance(v, int) and not isinstance(v, bool):
                setattr(self, k, getattr(self, k) + v)
        for c, n in other.interruptions_by_cause.items():
            self.interruptions_by_cause[c] = self.interruptions_by_cause.get(c, 0) + n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recorded"] = duration_text(self.recorded_ms)
        d["recorded_hours"] = f"{self.recorded_ms / 3_600_000:.2f}"
        d["causes"] = causes_text(self.interruptions_by_cause)
        return d


def duration_text(ms: int) -> str:
    s = (ms + 500) // 1000
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def causes_text(by_cause: dict[str, int]) -> str:
    return "、".join(f"{cause_zh(c)}×{n}" for c, n in sorted(by_cause.items(), key=lambda x: (-x[1], x[0])))


def officer_names(s: Session) -> dict[str, str]:
    """officer number (警号) -> display name."""
    return {u.officer_no: u.display_name for u in s.scalars(select(m.User).where(m.User.officer_no.is_not(None)))
            if u.officer_no}


def resolve_device(s: Session, device: str | None) -> str | None:
    """A device id, or a unique prefix of one (at least 4 characters)."""
    if device is None:
        return None
    if s.get(m.Device, device) is not None:
        return device
    if len(device) >= 4:
        found = list(s.scalars(select(m.Device.device_id).where(m.Device.device_id.startswith(device))))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidInput(f"device {device!r} is the start of {len(found)} device ids; give more of it")
    raise NotFound(f"no device {device!r}")


def iso_s(ns: int | None, tz: str) -> str | None:
    """ISO 8601 to the second with the UTC offset of ``tz`` (the exact time is in the ``*_ns`` field)."""
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns // 10**9, ZoneInfo(tz)).isoformat(timespec="seconds")


def week_of(ns: int, tz: str) -> str:
    y, w, _ = dt.datetime.fromtimestamp(ns // 10**9, ZoneInfo(tz)).isocalendar()
    return f"{y}-W{w:02d}"


def signoff_state(row: m.Interruption) -> str | None:
    """pending / approved / rejected for an item that needs a supervisor; None for the others."""
    if not is_signoff_item(row):
        return None
    return row.signoff_decision or "pending"


def is_signoff_item(row: m.Interruption) -> bool:
    return (row.kind == "not-recording" and row.needs_signoff) or row.kind == "reason-missing"


@dataclass
class Stats:
    by: str
    period: Period
    now_ns: int
    groups: list[Figures]
    total: Figures

    def to_dict(self, tz: str) -> dict[str, Any]:
        return {"by": self.by, "from": iso(self.period.from_ns, tz), "to": iso(self.period.to_ns, tz),
                "as_of": iso(self.now_ns, tz), "late_docking_hours": LATE_DOCKING_NS // NS_PER_HOUR,
                "groups": [g.to_dict() for g in self.groups], "total": self.total.to_dict()}


def compute(st: Station, *, period: Period = Period(), by: str = "officer", officer: str | None = None,
            device: str | None = None) -> Stats:
    """The S10 figures, grouped ``by`` officer (警号), device or ISO week (station time zone)."""
    if by not in GROUPINGS:
        raise InvalidInput(f"--by must be one of {', '.join(GROUPINGS)}; got {by!r}")
    tz = st.cfg.timezone
    now = st.now_ns()
    deadline_ns = st.cfg.labels.deadline_hours * NS_PER_HOUR
    groups: dict[str, Figures] = {}
    with st.db.session() as s:
        device = resolve_device(s, device)
        names = officer_names(s)
        labels: dict[str, str] = {d.device_id: d.label or "" for d in s.scalars(select(m.Device))}

        def fig(officer_id: str | None, device_id: str, t: int) -> Figures:
            if by == "officer":
                key = officer_id or ""
                label = f"{officer_id} {names.get(officer_id, '')}".strip() if officer_id else NO_OFFICER
            elif by == "device":
                key, label = device_id, f"{device_id} {labels.get(device_id, '')}".strip()
            else:
                key = label = week_of(t, tz)
            if key not in groups:
                groups[key] = Figures(key, label)
            return groups[key]

        def keep(officer_id: str | None, device_id: str) -> bool:
            return (officer is None or officer_id == officer) and (device is None or device_id == device)

        labelled = set(s.scalars(select(m.Label.recording).where(m.Label.current.is_(True))))
        spans: dict[int, list[tuple[int, int]]] = {}
        q = select(m.Segment.recording, m.Segment.start_wall_ns, m.Segment.end_wall_ns)
        if period.from_ns is not None:
            q = q.where(m.Segment.end_wall_ns > period.from_ns)
        if period.to_ns is not None:
            q = q.where(m.Segment.start_wall_ns < period.to_ns)
        for rec_id, seg_start, seg_end in s.execute(q):
            spans.setdefault(rec_id, []).append((seg_start, seg_end))
        recs = select(m.Recording).order_by(m.Recording.id)
        if officer is not None:
            recs = recs.where(m.Recording.officer_id == officer)
        if device is not None:
            recs = recs.where(m.Recording.device_id == device)
        for rec in s.scalars(recs):
            for seg_start, seg_end in spans.get(rec.id, ()):
                part = period.overlap(seg_start, seg_end)
                if part:
                    fig(rec.officer_id, rec.device_id, max(seg_start, period.from_ns or 0)).recorded_ms \
                        += part // 1_000_000
            start = rec.start_wall_ns
            if not period.holds(start) or start is None:
                continue
            f = fig(rec.officer_id, rec.device_id, start)
            f.recordings += 1
            if rec.status == "stored" and rec.id not in labelled:
                f.unlabelled += 1
                if rec.ingested_ns is not None and now - rec.ingested_ns > deadline_ns:
                    f.labels_overdue += 1
        for d in s.scalars(select(m.Docking).where(m.Docking.used_until_ns.is_not(None)).order_by(m.Docking.id)):
            if not keep(d.officer_id, d.device_id) or not period.holds(d.used_until_ns):
                continue
            assert d.used_until_ns is not None
            f = fig(d.officer_id, d.device_id, d.used_until_ns)
            f.dockings += 1
            if is_late(d):
                f.late_dockings += 1
        for i in s.scalars(select(m.Interruption).order_by(m.Interruption.device_id, m.Interruption.journal_seq)):
            if not keep(i.officer_id, i.device_id) or not period.holds(i.wall_ns):
                continue
            f = fig(i.officer_id, i.device_id, i.wall_ns)
            count_interruption(f, i)
    ordered = [groups[k] for k in sorted(groups)]
    total = Figures("", "合计")
    for g in ordered:
        total.add(g)
    return Stats(by, period, now, ordered, total)


def is_late(d: m.Docking) -> bool:
    """D11: the docking began more than 24 h after the shift end (its batch's last record)."""
    return d.used_until_ns is not None and d.checked_in_ns - d.used_until_ns > LATE_DOCKING_NS


def count_interruption(f: Figures, i: m.Interruption) -> None:
    if i.kind in D5_OUTCOMES:
        if i.kind == "reason-given" and i.late:
            f.reasons_given_late += 1      # answers an interruption already counted by its reason-missing
        else:
            f.interruptions += 1
            f.interruptions_by_cause[i.cause] = f.interruptions_by_cause.get(i.cause, 0) + 1
        if i.kind == "reason-missing":
            f.reasons_missing += 1
    state = signoff_state(i)
    if i.kind == "not-recording" and i.needs_signoff:
        f.not_recording += 1
        if state == "pending":
            f.not_recording_pending += 1
        elif state == "approved":
            f.not_recording_approved += 1
        elif state == "rejected":
            f.not_recording_rejected += 1
    if state == "pending":
        f.signoff_pending += 1
    elif state == "rejected":
        f.rejected += 1


# the columns of the table, the CSV and the PDF (key, heading)
GROUP_HEADING = {"officer": "执法人员（警号 姓名）", "device": "设备", "week": "周"}
COLUMNS: list[tuple[str, str]] = [
    ("recordings", "录像数"), ("recorded", "录制时长"), ("recorded_hours", "小时"), ("dockings", "入库次数"),
    ("late_dockings", "逾期入库(>24h)"), ("unlabelled", "未标注"), ("labels_overdue", "标注逾期"),
    ("interruptions", "中断次数"), ("causes", "中断原因分类"), ("reasons_missing", "未说明中断原因"),
    ("not_recording", "不录像说明"), ("not_recording_pending", "不录像待签批"),
    ("not_recording_rejected", "不录像已驳回"), ("signoff_pending", "待签批合计"), ("rejected", "已驳回合计"),
]


def columns_for(by: str, *, printed: bool = False) -> list[tuple[str, str]]:
    """The table's columns; ``printed`` (text, PDF) leaves out the decimal hours the CSV keeps."""
    return [("label", GROUP_HEADING[by])] + [(k, h) for k, h in COLUMNS if not printed or k != "recorded_hours"]


def rows_for(stats: Stats) -> Iterable[dict[str, Any]]:
    yield from (g.to_dict() for g in stats.groups)
    yield stats.total.to_dict()
