"""The labelling queue (S2): stored recordings with no current label, their age since transfer
(``ingested_ns``: the 48 h start when the station first stored them) and their deadline
(``[labels] deadline_hours`` later). Past the deadline (strictly: 48 h 0 s is still in time)
an item is overdue.

Who sees what: evidence clerks, auditors and administrators the whole queue; an officer his
own recordings (``officer_id`` = his 警号); a supervisor (approver) those of the officers whose
account names him as ``supervisor`` — so an overdue item is flagged to the officer and to his
supervisor, each item naming both. A labelled recording (any current label, even of a range)
leaves the queue.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from station.access.accounts import has_role
from station.app import Station
from station.clock import NS_PER_HOUR
from station.db import models as m

ALL_ROLES = ("clerk", "auditor", "admin")


def visible_officers(st: Station, user: m.User) -> set[str] | None:
    """The officer numbers whose queue ``user`` sees; None: all."""
    if has_role(user, *ALL_ROLES):
        return None
    out: set[str] = set()
    if has_role(user, "officer") and user.officer_no:
        out.add(user.officer_no)
    if has_role(user, "approver"):
        with st.db.session() as s:
            out |= {u.officer_no for u in s.scalars(select(m.User).where(m.User.supervisor == user.username))
                    if u.officer_no}
    return out


def queue(st: Station, user: m.User, *, overdue_only: bool = False, officer: str | None = None) -> list[dict[str, Any]]:
    """The unlabelled recordings ``user`` may see, oldest transfer first."""
    now = st.now_ns()
    deadline_ns = st.cfg.labels.deadline_hours * NS_PER_HOUR
    scope = visible_officers(st, user)
    with st.db.session() as s:
        labelled = select(m.Label.recording).where(m.Label.current.is_(True))
        q = select(m.Recording).where(m.Recording.status == "stored", m.Recording.id.not_in(labelled))
        if officer is not None:
            q = q.where(m.Recording.officer_id == officer)
        if scope is not None:
            q = q.where(m.Recording.officer_id.in_(sorted(scope)))
        recs = list(s.scalars(q.order_by(m.Recording.ingested_ns, m.Recording.id)))
        officers = {u.officer_no: u for u in s.scalars(select(m.User).where(m.User.officer_no.is_not(None)))}
    out = []
    for rec in recs:
        ingested = rec.ingested_ns if rec.ingested_ns is not None else now
        age = now - ingested
        overdue = age > deadline_ns
        if overdue_only and not overdue:
            continue
        who = officers.get(rec.officer_id) if rec.officer_id else None
        out.append({"recording": rec.id, "device_id": rec.device_id, "recording_id": rec.recording_id,
                    "name": rec.name, "officer_id": rec.officer_id,
                    "officer": who.display_name if who else None,
                    "supervisor": who.supervisor if who else None,
                    "start_wall_ns": rec.start_wall_ns, "ingested_ns": ingested, "age_ns": age,
                    "age_hours": age // NS_PER_HOUR, "deadline_ns": ingested + deadline_ns,
                    "overdue": overdue})
    return out
