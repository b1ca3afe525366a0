"""The recordings list with its filters, a recording's page, and labelling from it (S2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Select, func, select

from station.access.accounts import has_role
from station.access.policy import live_grant
from station.app import Station
from station.casework.labels import LabelInput, label_recording, may_label
from station.cli.common import parse_time
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import InvalidInput, NotAllowed, StationError
from station.keeping import holds as holding
from station.keeping import retention
from station.web.guard import STAFF, Refused, Web

PAGE_SIZE = 100
LABEL_STATES = ("已标注", "未标注", "逾期未标注")
HOLD_STATES = ("held", "free")
FILTERS = ("officer", "device", "date_from", "date_to", "case", "category", "label", "hold", "retention_to")


@dataclass(frozen=True)
class RecordingPage:
    """One page of the filtered list: its rows, how many match in all, which page of how many."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/", response_class=HTMLResponse)
    def recordings(request: Request, page: str = "1") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view the recordings list")
        filters = {k: request.query_params.get(k, "").strip() for k in FILTERS}
        try:
            if not page.isdigit():
                raise InvalidInput(f"页码须为正整数（收到 {page!r}）")
            listing = recording_rows(st, signed.user, filters, int(page))
            error = ""
        except InvalidInput as exc:
            listing, error = RecordingPage([], 0, 1, 1), str(exc)
        query = urlencode({k: v for k, v in filters.items() if v})
        return web.render(request, "recordings.html", signed=signed, rows=listing.rows, listing=listing,
                          f=filters, error=error, query=query, categories=st.cfg.labels.categories,
                          label_states=LABEL_STATES)

    @app.get("/recordings/{rec_id}", response_class=HTMLResponse)
    def recording(request: Request, rec_id: int) -> Response:
        signed = web.who(request)
        with st.db.session() as s:
            rec = s.get(m.Recording, rec_id)
            staff = has_role(signed.user, *STAFF)
            if rec is None and staff:
                return web.render(request, "not_found.html", 404, signed=signed, what=f"录像 {rec_id}")
            # an officer: his own, or one he holds a live grant for; a missing number is refused
            # like another officer's (no probing which numbers exist)
            if not staff and (rec is None or not (
                    (signed.user.officer_no and rec.officer_id == signed.user.officer_no)
                    or live_grant(s, signed.user.username, rec.id, "view", st.now_ns()))):
                web.need(signed, *STAFF, what=f"recording:{rec_id}", ask=f"/requests?recording=%23{rec_id}")
            assert rec is not None
            segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec_id).order_by(m.Segment.index)).all()
            stops = s.scalars(select(m.Interruption).where(
                m.Interruption.device_id == rec.device_id,
                m.Interruption.wall_ns >= (rec.start_wall_ns or 0) - NS_PER_HOUR,
                m.Interruption.wall_ns <= (rec.end_wall_ns or 0) + NS_PER_HOUR).order_by(m.Interruption.wall_ns)).all()
            labels = s.scalars(select(m.Label).where(m.Label.recording == rec_id).order_by(m.Label.version)).all()
            docking = s.get(m.Docking, rec.docking_id) if rec.docking_id else None
            kept = retention.explain(st.cfg, s, rec) if rec.status == "stored" else None
            held = [(h.id, holding.KINDS_ZH.get(h.kind, h.kind), h.text, h.placed_by, h.placed_ns)
                    for h in retention.active_holds(s, rec.id)]
        playing = request.query_params.get("playing") == "1"
        if playing:
            try:
                web.playbacks.get(st, signed.token_sha256, rec_id)
            except NotAllowed:
                playing = False
        return web.render(request, "recording.html", signed=signed, rec=rec, segs=segs, stops=stops, labels=labels,
                          docking=docking, playing=playing, may_label=may_label(signed.user, rec) and not any(
                              lab.current for lab in labels) and rec.status == "stored",
                          categories=st.cfg.labels.categories, kept=kept, held=held,
                          may_hold=has_role(signed.user, *holding.PLACE_ROLES) and rec.status == "stored",
                          label_error=request.query_params.get("label_error", ""))

    @app.post("/recordings/{rec_id}/label")
    def label(request: Request, rec_id: int, csrf: str = Form(""), case_no: str = Form(""),
              activity: str = Form(""), category: str = Form(""), counterpart: str = Form(""),
              content: str = Form(""), place: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, "clerk", "officer", what=f"label recording:{rec_id}")
        with st.db.session() as s:      # who may label it, before anything about the form's content
            rec = s.get(m.Recording, rec_id)
        if (rec is None and not has_role(signed.user, "clerk")) or (rec is not None
                                                                    and not may_label(signed.user, rec)):
            web.refuse(signed, f"recording:{rec_id}", "label: only an evidence clerk, or the officer whose "
                       "recording it is", "只有证据管理员或录像所属的执法人员可以标注这段录像")
        inp = LabelInput(case_no=case_no.strip() or None, activity=activity.strip() or None,
                         category=category.strip() or None, counterpart=counterpart, content=content, place=place)
        try:
            label_recording(st, signed.user, f"#{rec_id}", inp)
        except NotAllowed as exc:
            raise Refused(f"标注录像 {rec_id}", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/recordings/{rec_id}?label_error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/recordings/{rec_id}", status_code=303)


def _filtered(st: Station, user: m.User, f: dict[str, str], now: int, deadline: int) -> Select[Any]:
    """The matching recordings' query: every filter in SQL, so the database finds a match anywhere
    in the catalogue and the page limit comes last. Label, case and hold filters are semi-joins
    (``id IN`` / ``NOT IN`` a subquery over the indexed ``recording`` columns, never NULL)."""
    rec = m.Recording
    labelled = select(m.Label.recording).where(m.Label.current.is_(True))
    q = select(rec)
    if not has_role(user, *STAFF):              # an officer sees only his own
        q = q.where(rec.officer_id == (user.officer_no or "\x00no officer number"))
    if f.get("officer"):
        q = q.where(rec.officer_id == f["officer"])
    if f.get("device"):
        q = q.where(rec.device_id.startswith(f["device"], autoescape=True))
    if f.get("date_from"):
        q = q.where(rec.start_wall_ns >= parse_time(f["date_from"], st.cfg.timezone))
    if f.get("date_to"):
        q = q.where(rec.start_wall_ns < parse_time(f["date_to"], st.cfg.timezone) + 24 * NS_PER_HOUR)
    if f.get("retention_to"):
        q = q.where(rec.retention_end_ns < parse_time(f["retention_to"], st.cfg.timezone) + 24 * NS_PER_HOUR)
    if f.get("case"):
        q = q.where(rec.id.in_(labelled.join(m.Case, m.Case.id == m.Label.case_id)
                               .where(m.Case.case_no == f["case"])))
    if f.get("category"):
        q = q.where(rec.id.in_(labelled.where(m.Label.category == f["category"])))
    label = f.get("label")
    if label:
        if label not in LABEL_STATES:
            raise InvalidInput(f"标注状态只能是 {'、'.join(LABEL_STATES)}（收到 {label!r}）")
        if label == "已标注":
            q = q.where(rec.id.in_(labelled))
        else:
            late = rec.ingested_ns.is_not(None) & (rec.ingested_ns < now - deadline)
            q = q.where(rec.id.not_in(labelled), late if label == "逾期未标注" else ~late)
    hold = f.get("hold")
    if hold:
        if hold not in HOLD_STATES:
            raise InvalidInput(f"保全只能是 held 或 free（收到 {hold!r}）")
        held = select(m.Hold.recording).where(m.Hold.released_ns.is_(None))
        q = q.where(rec.id.in_(held) if hold == "held" else rec.id.not_in(held))
    return q


def recording_rows(st: Station, user: m.User, f: dict[str, str], page: int = 1,
                   page_size: int = PAGE_SIZE) -> RecordingPage:
    """The recordings list with its filters, newest first, one page of it; an officer sees only his own.

    Three queries whatever the size of the catalogue: the count, the page, and the labels, cases
    and holds of that page's recordings (no query per row)."""
    if page < 1:
        raise InvalidInput(f"页码从 1 开始（收到 {page}）")
    now = st.now_ns()
    deadline = st.cfg.labels.deadline_hours * NS_PER_HOUR
    q = _filtered(st, user, f, now, deadline)
    with st.db.session() as s:
        total = s.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
        pages = max(1, -(-total // page_size))
        page = min(page, pages)              # past the end: the last page (and no huge OFFSET)
        recs = list(s.scalars(q.order_by(m.Recording.start_wall_ns.desc(), m.Recording.id.desc())
                              .limit(page_size).offset((page - 1) * page_size)))
        ids = [r.id for r in recs]
        cases: dict[int, set[str]] = {i: set() for i in ids}
        categories: dict[int, set[str]] = {i: set() for i in ids}
        for rid, category, case_no in s.execute(
                select(m.Label.recording, m.Label.category, m.Case.case_no)
                .outerjoin(m.Case, m.Case.id == m.Label.case_id)
                .where(m.Label.recording.in_(ids), m.Label.current.is_(True))):
            categories[rid].add(category)
            if case_no:
                cases[rid].add(case_no)
        held = set(s.scalars(select(m.Hold.recording).where(m.Hold.recording.in_(ids),
                                                            m.Hold.released_ns.is_(None))))
    rows = []
    for rec in recs:
        late = rec.ingested_ns is not None and rec.ingested_ns < now - deadline
        state = "已标注" if categories[rec.id] else ("逾期未标注" if late else "未标注")
        rows.append({"id": rec.id, "name": rec.name, "officer": rec.officer_id, "device": rec.device_id[:12],
                     "start": rec.start_wall_ns, "end": rec.end_wall_ns, "segments": rec.segments,
                     "quality": rec.time_quality, "cases": ", ".join(sorted(cases[rec.id])),
                     "categories": ", ".join(sorted(categories[rec.id])), "label": state,
                     "held": rec.id in held, "retention_end": rec.retention_end_ns, "status": rec.status})
    return RecordingPage(rows, total, page, pages)
