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

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

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


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue and the whole queue's totals (what the web page shows)."""
    items: list[dict[str, Any]]
    total: int
    overdue_total: int
    page: int                   # the page shown: the one asked for, or the last one past the end
    pages: int


def _unlabelled(st: Station, user: m.User, officer: str | None) -> Select[Any]:
    """The stored recordings with no current label that ``user`` may see (a WHERE, no columns)."""
    scope = visible_officers(st, user)
    labelled = select(m.Label.recording).where(m.Label.current.is_(True))
    q = select(m.Recording.id).where(m.Recording.status == "stored", m.Recording.id.not_in(labelled))
    if officer is not None:
        q = q.where(m.Recording.officer_id == officer)
    if scope is not None:
        q = q.where(m.Recording.officer_id.in_(sorted(scope)))
    return q


def _overdue(now: int, deadline_ns: int) -> ColumnElement[bool]:
    """Past the deadline, strictly (48 h 0 s is still in time); never-timed rows are not overdue."""
    return and_(m.Recording.ingested_ns.is_not(None), m.Recording.ingested_ns < now - deadline_ns)


def _items(st: Station, s: Session, where: Select[Any], now: int, deadline_ns: int,
           offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    cols = (m.Recording.id, m.Recording.device_id, m.Recording.recording_id, m.Recording.name,
            m.Recording.officer_id, m.Recording.start_wall_ns, m.Recording.ingested_ns)
    q = (select(*cols).where(m.Recording.id.in_(where.scalar_subquery()))
         .order_by(m.Recording.ingested_ns, m.Recording.id).offset(offset).limit(limit))
    rows = s.execute(q).all()
    wanted = {r.officer_id for r in rows if r.officer_id}
    officers = {u.officer_no: (u.display_name, u.supervisor) for u in
                s.execute(select(m.User.officer_no, m.User.display_name, m.User.supervisor)
                          .where(m.User.officer_no.in_(sorted(wanted))))} if wanted else {}
    out = []
    for r in rows:
        ingested = r.ingested_ns if r.ingested_ns is not None else now
        age = now - ingested
        name, supervisor = officers.get(r.officer_id, (None, None)) if r.officer_id else (None, None)
        out.append({"recording": r.id, "device_id": r.device_id, "recording_id": r.recording_id,
                    "name": r.name, "officer_id": r.officer_id, "officer": name, "supervisor": supervisor,
                    "start_wall_ns": r.start_wall_ns, "ingested_ns": ingested, "age_ns": age,
                    "age_hours": age // NS_PER_HOUR, "deadline_ns": ingested + deadline_ns,
                    "overdue": age > deadline_ns})
    return out


def queue(st: Station, user: m.User, *, overdue_only: bool = False, officer: str | None = None) -> list[dict[str, Any]]:
    """The unlabelled recordings ``user`` may see, oldest transfer first."""
    now, deadline_ns = st.now_ns(), st.cfg.labels.deadline_hours * NS_PER_HOUR
    where = _unlabelled(st, user, officer)
    if overdue_only:
        where = where.where(_overdue(now, deadline_ns))
    with st.db.session() as s:
        return _items(st, s, where, now, deadline_ns)


def queue_page(st: Station, user: m.User, *, overdue_only: bool, page: int, size: int) -> QueuePage:
    """Page ``page`` (1-based; past the end: the last) of ``queue()``, counted and cut in SQL: an
    office that fell behind has thousands of unlabelled recordings and the page shows ``size``."""
    now, deadline_ns = st.now_ns(), st.cfg.labels.deadline_hours * NS_PER_HOUR
    where = _unlabelled(st, user, None)
    with st.db.session() as s:
        counted = where.with_only_columns(func.count(), func.count().filter(_overdue(now, deadline_ns)))
        total, overdue_total = s.execute(counted).one()
        if overdue_only:
            where, total = where.where(_overdue(now, deadline_ns)), overdue_total
        pages = max(1, -(-int(total) // size))
        page = min(max(1, page), pages)
        items = _items(st, s, where, now, deadline_ns, offset=(page - 1) * size, limit=size)
    return QueuePage(items, int(total), int(overdue_total), page, pages)
