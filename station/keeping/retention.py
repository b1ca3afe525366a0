"""When a recording may be purged (S5): its retention end, recomputed whenever what decides it changes.

* the default period (``[retention] default_days``, at least a year) from the recording's end;
* the longest period of the categories its current labels name (``by_category``);
* linked to a case (a current label with a case): kept while the case is open (no end), and
  ``after_case_closed_days`` after it is closed — the longest over its cases;
* a hold (S6) does not change the end; it stops the purge (``station.keeping.purge``).

``refresh`` is called by every action that changes one of these (ingest, label, case
close/reopen: ``refresh_case``) inside that action, so the new end is attested with it.
``explain`` says which rule decided (``station retention show``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.audit.trail import Change
from station.clock import NS_PER_DAY
from station.config import StationConfig
from station.db import models as m

IN_CHUNK = 500       # ids per IN (...) list: well under SQLite's and PostgreSQL's limits

# the rule that decided a retention end, and how the command line shows it
RULES_ZH = {"default": "默认保存期限", "category": "执法类别保存期限", "case-open": "关联案件未结案",
            "case-closed": "案件结案后保存期限"}


@dataclass(frozen=True)
class Decision:
    """A retention end and why: ``rule`` one of RULES_ZH; ``end_ns`` None while a case is open."""

    end_ns: int | None
    rule: str
    base_ns: int                    # the recording's end (what the periods count from)
    days: int                       # the period of the deciding rule
    category: str | None = None     # rule category: the category with the longest period
    case_no: str | None = None      # rule case-*: the (open, or latest-closing) case
    case_closed_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"end_ns": self.end_ns, "rule": self.rule, "base_ns": self.base_ns, "days": self.days,
                "category": self.category, "case_no": self.case_no, "case_closed_ns": self.case_closed_ns}

    def text_zh(self) -> str:
        """The reason as a clerk reads it."""
        if self.rule == "case-open":
            return f"{RULES_ZH[self.rule]}（案件 {self.case_no}）：结案前一直保存"
        if self.rule == "case-closed":
            return f"{RULES_ZH[self.rule]}（案件 {self.case_no}）：结案后 {self.days} 天"
        if self.rule == "category":
            return f"{RULES_ZH[self.rule]}（{self.category}）：录制结束后 {self.days} 天"
        return f"{RULES_ZH[self.rule]}：录制结束后 {self.days} 天"


def _session(ch_or_session: Change | Session) -> Session:
    return ch_or_session.session if isinstance(ch_or_session, Change) else ch_or_session


def explain(cfg: StationConfig, ch_or_session: Change | Session, rec: m.Recording) -> Decision:
    """The retention end of ``rec`` and the rule that decided it."""
    return explain_many(cfg, _session(ch_or_session), [rec])[rec.id]


def explain_many(cfg: StationConfig, s: Session, recs: list[m.Recording]) -> dict[int, Decision]:
    """``explain`` for many recordings, by id, in two queries per ``IN_CHUNK`` recordings (their
    current labels, then those labels' cases) instead of a few per recording: the 到期销毁 page and
    ``purge list`` judge thousands at a time."""
    labels: dict[int, list[m.Label]] = {r.id: [] for r in recs}
    ids = list(labels)
    for i in range(0, len(ids), IN_CHUNK):
        for lab in s.scalars(select(m.Label).where(m.Label.recording.in_(ids[i:i + IN_CHUNK]),
                                                   m.Label.current.is_(True)).order_by(m.Label.id)):
            labels[lab.recording].append(lab)
    case_ids = sorted({lab.case_id for labs in labels.values() for lab in labs if lab.case_id is not None})
    cases: dict[int, m.Case] = {}
    for i in range(0, len(case_ids), IN_CHUNK):
        cases.update((c.id, c) for c in s.scalars(select(m.Case).where(m.Case.id.in_(case_ids[i:i + IN_CHUNK]))))
    return {rec.id: _decide(cfg, rec, labels[rec.id], cases) for rec in recs}


def _decide(cfg: StationConfig, rec: m.Recording, labels: list[m.Label], cases: dict[int, m.Case]) -> Decision:
    base = rec.end_wall_ns or rec.start_wall_ns or rec.ingested_ns or 0
    days, rule, category = cfg.retention.default_days, "default", None
    for lab in labels:
        d = cfg.retention.by_category.get(lab.category, 0)
        if d > days:
            days, rule, category = d, "category", lab.category
    decision = Decision(base + days * NS_PER_DAY, rule, base, days, category)
    for lab in labels:
        if lab.case_id is None:
            continue
        case = cases.get(lab.case_id)
        if case is None:
            continue
        if case.status != "closed" or case.closed_ns is None:
            return Decision(None, "case-open", base, 0, case_no=case.case_no)
        after = cfg.retention.after_case_closed_days
        end = case.closed_ns + after * NS_PER_DAY
        assert decision.end_ns is not None
        if end > decision.end_ns:
            decision = Decision(end, "case-closed", base, after, case_no=case.case_no,
                                case_closed_ns=case.closed_ns)
    return decision


def retention_end(cfg: StationConfig, ch_or_session: Change | Session, rec: m.Recording) -> int | None:
    """The retention end of ``rec`` in ns, or None while a linked case is open."""
    return explain(cfg, ch_or_session, rec).end_ns


def refresh(ch: Change, cfg: StationConfig, rec: m.Recording) -> bool:
    """Recompute ``rec.retention_end_ns`` inside the action ``ch``; True (and attested) if it changed.

    A purged recording keeps the end it was purged under (its tombstone says so too).
    """
    if rec.status == "purged":
        return False
    end = retention_end(cfg, ch, rec)
    if end == rec.retention_end_ns:
        return False
    old = rec.retention_end_ns
    rec.retention_end_ns = end
    ch.touch(rec)
    changes = ch.details.setdefault("retention_refreshed", [])
    if isinstance(changes, list) and len(changes) < 200:
        changes.append({"recording": rec.id, "from_ns": old, "to_ns": end})
    return True


def refresh_case(ch: Change, cfg: StationConfig, case_id: int) -> int:
    """After a case is closed or reopened (inside that action): refresh every recording a current
    label links to it. Returns how many retention ends changed."""
    s = ch.session
    s.flush()
    ids = set(s.scalars(select(m.Label.recording).where(m.Label.case_id == case_id, m.Label.current.is_(True))))
    changed = 0
    for rid in sorted(ids):
        rec = s.get(m.Recording, rid)
        if rec is not None and refresh(ch, cfg, rec):
            changed += 1
    return changed


def active_holds(s: Session, recording_id: int) -> list[m.Hold]:
    """The holds (S6) on a recording not yet released."""
    return active_holds_many(s, [recording_id])[recording_id]


def active_holds_many(s: Session, recording_ids: list[int]) -> dict[int, list[m.Hold]]:
    """``active_holds`` of many recordings, by id (one query per ``IN_CHUNK``)."""
    out: dict[int, list[m.Hold]] = {rid: [] for rid in recording_ids}
    ids = list(out)
    for i in range(0, len(ids), IN_CHUNK):
        for h in s.scalars(select(m.Hold).where(m.Hold.recording.in_(ids[i:i + IN_CHUNK]),
                                                m.Hold.released_ns.is_(None)).order_by(m.Hold.id)):
            out[h.recording].append(h)
    return out
