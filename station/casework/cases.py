"""Cases (案件): opened, closed and reopened by an evidence clerk; labels link recordings to them.

A case has a number (案件编号, unique), a name (案件名称: the checklist's 事项), an enforcement
category (执法类别, one of ``[labels] categories``) and a department (部门). Recordings linked
to an open case are kept without end; closing it starts ``[retention] after_case_closed_days``
(S5), so closing and reopening recompute the retention end of every recording currently
labelled to the case, in the same audited action.
"""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from station.access.accounts import require_role
from station.app import Station
from station.casework.labels import check_category, clean_text, label_dict
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotFound
from station.keeping import retention

CASE_ROLES = ("clerk",)
_CASE_NO = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,64}$")


def _find(s: Session, case_no: str) -> m.Case:
    case = s.scalars(select(m.Case).where(m.Case.case_no == case_no)).first()
    if case is None:
        raise NotFound(f"no case {case_no}")
    return case


def case_dict(case: m.Case) -> dict[str, Any]:
    return {"id": case.id, "case_no": case.case_no, "name": case.name, "category": case.category,
            "department": case.department, "status": case.status, "opened_ns": case.opened_ns,
            "opened_by": case.opened_by, "closed_ns": case.closed_ns}


def linked(s: Session, case_id: int) -> list[tuple[m.Label, m.Recording]]:
    """The current labels of the case with their recordings, in time order."""
    rows = s.execute(select(m.Label, m.Recording).join(m.Recording, m.Label.recording == m.Recording.id)
                     .where(m.Label.case_id == case_id, m.Label.current.is_(True))).all()
    out = [(lab, rec) for lab, rec in rows]
    out.sort(key=lambda lr: (lr[0].range_start_ns if lr[0].range_start_ns is not None
                             else lr[1].start_wall_ns or 0, lr[0].id))
    return out


def open_case(st: Station, user: m.User, case_no: str, name: str, category: str,
              department: str = "") -> dict[str, Any]:
    require_role(st, user, *CASE_ROLES, what="open a case")
    case_no = case_no.strip()
    if not _CASE_NO.match(case_no):
        raise InvalidInput("案件编号 (--case-no): 1-64 characters, no control characters or slashes")
    title = clean_text("案件名称 (--name)", name)
    cat = check_category(st, category)
    dept = clean_text("部门 (--department)", department, required=False) or ""
    with st.trail.action("case-open", actor=user.username, subject=f"case:{case_no}", category=cat) as ch:
        if ch.session.scalars(select(m.Case).where(m.Case.case_no == case_no)).first() is not None:
            raise Conflict(f"case {case_no} exists already")
        case = m.Case(case_no=case_no, name=title, category=cat, department=dept, status="open",
                      opened_ns=st.now_ns(), opened_by=user.username, closed_ns=None)
        ch.add(case)
        ch.session.flush()
        out = case_dict(case)
    return out


def _set_status(st: Station, user: m.User, case_no: str, status: str, reason: str | None) -> dict[str, Any]:
    verb = "close" if status == "closed" else "reopen"
    require_role(st, user, *CASE_ROLES, what=f"{verb} a case")
    with st.db.session() as s:
        _find(s, case_no)       # NotFound before anything is written
    with st.trail.action(f"case-{verb}", actor=user.username, subject=f"case:{case_no}", reason=reason) as ch:
        s = ch.session
        case = _find(s, case_no)
        if case.status == status:
            raise Conflict(f"case {case_no} is {status} already")
        case.status = status
        case.closed_ns = st.now_ns() if status == "closed" else None
        ch.touch(case)
        ends: dict[str, int | None] = {}
        changed = 0
        for _, rec in linked(s, case.id):
            if str(rec.id) in ends:
                continue
            changed += retention.refresh(ch, st.cfg, rec)
            ends[str(rec.id)] = rec.retention_end_ns
        ch.details.update(recordings=len(ends), retention_changed=changed, retention_end_ns=ends)
        out = case_dict(case)
        out["retention_end_ns"] = ends
    return out


def close_case(st: Station, user: m.User, case_no: str, reason: str | None = None) -> dict[str, Any]:
    return _set_status(st, user, case_no, "closed", clean_text("reason", reason, required=False))


def reopen_case(st: Station, user: m.User, case_no: str, reason: str) -> dict[str, Any]:
    return _set_status(st, user, case_no, "open", clean_text("the reason for reopening (--reason)", reason))


def show_case(st: Station, case_no: str) -> dict[str, Any]:
    with st.db.session() as s:
        case = _find(s, case_no)
        out = case_dict(case)
        out["labels"] = [{**label_dict(lab, case.case_no), "device_id": rec.device_id,
                          "recording_id": rec.recording_id, "name": rec.name, "officer_id": rec.officer_id,
                          "status": rec.status, "start_wall_ns": rec.start_wall_ns,
                          "end_wall_ns": rec.end_wall_ns, "retention_end_ns": rec.retention_end_ns}
                         for lab, rec in linked(s, case.id)]
    return out


def list_cases(st: Station, status: str | None = None) -> list[dict[str, Any]]:
    with st.db.session() as s:
        q = select(m.Case).order_by(m.Case.opened_ns, m.Case.id)
        if status:
            q = q.where(m.Case.status == status)
        cases = list(s.scalars(q))
        out = []
        for c in cases:
            d = case_dict(c)
            d["recordings"] = len({rec.id for _, rec in linked(s, c.id)})
            out.append(d)
    return out
