"""The recordings list with its filters, a recording's page, and labelling from it (S2)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from station.access.accounts import has_role, roles_of
from station.app import Station
from station.casework.labels import LabelInput, label_recording, may_label
from station.cli.common import parse_time
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import InvalidInput, NotAllowed, StationError
from station.web.guard import STAFF, Refused, Web


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/", response_class=HTMLResponse)
    def recordings(request: Request, officer: str = "", device: str = "", date_from: str = "",
                   date_to: str = "", case: str = "", category: str = "", label: str = "",
                   hold: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view the recordings list")
        filters = {"officer": officer, "device": device, "date_from": date_from, "date_to": date_to,
                   "case": case, "category": category, "label": label, "hold": hold}
        try:
            rows = recording_rows(st, signed.user, filters)
            error = ""
        except InvalidInput as exc:
            rows, error = [], str(exc)
        return web.render(request, "recordings.html", signed=signed, rows=rows, f=filters, error=error,
                          categories=st.cfg.labels.categories)

    @app.get("/recordings/{rec_id}", response_class=HTMLResponse)
    def recording(request: Request, rec_id: int) -> Response:
        signed = web.who(request)
        with st.db.session() as s:
            rec = s.get(m.Recording, rec_id)
            if rec is None:
                return web.render(request, "not_found.html", 404, signed=signed, what=f"录像 {rec_id}")
            if not (has_role(signed.user, *STAFF) or rec.officer_id == signed.user.officer_no):
                web.need(signed, *STAFF, what=f"recording:{rec_id}")
            segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec_id).order_by(m.Segment.index)).all()
            stops = s.scalars(select(m.Interruption).where(
                m.Interruption.device_id == rec.device_id,
                m.Interruption.wall_ns >= (rec.start_wall_ns or 0) - NS_PER_HOUR,
                m.Interruption.wall_ns <= (rec.end_wall_ns or 0) + NS_PER_HOUR).order_by(m.Interruption.wall_ns)).all()
            labels = s.scalars(select(m.Label).where(m.Label.recording == rec_id).order_by(m.Label.version)).all()
            docking = s.get(m.Docking, rec.docking_id) if rec.docking_id else None
        playing = request.query_params.get("playing") == "1"
        if playing:
            try:
                web.playbacks.get(st, signed.token_sha256, rec_id)
            except NotAllowed:
                playing = False
        return web.render(request, "recording.html", signed=signed, rec=rec, segs=segs, stops=stops, labels=labels,
                          docking=docking, playing=playing, may_label=may_label(signed.user, rec) and not any(
                              lab.current for lab in labels) and rec.status == "stored",
                          categories=st.cfg.labels.categories,
                          label_error=request.query_params.get("label_error", ""))

    @app.post("/recordings/{rec_id}/label")
    def label(request: Request, rec_id: int, csrf: str = Form(""), case_no: str = Form(""),
              activity: str = Form(""), category: str = Form(""), counterpart: str = Form(""),
              content: str = Form(""), place: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        inp = LabelInput(case_no=case_no.strip() or None, activity=activity.strip() or None,
                         category=category.strip() or None, counterpart=counterpart, content=content, place=place)
        try:
            label_recording(st, signed.user, f"#{rec_id}", inp)
        except NotAllowed as exc:
            raise Refused(f"标注录像 {rec_id}", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/recordings/{rec_id}?label_error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/recordings/{rec_id}", status_code=303)


def recording_rows(st: Station, user: m.User, f: dict[str, str]) -> list[dict[str, Any]]:
    """The recordings list with its filters; an officer sees only his own."""
    now = st.now_ns()
    deadline = st.cfg.labels.deadline_hours * NS_PER_HOUR
    with st.db.session() as s:
        q = select(m.Recording).order_by(m.Recording.start_wall_ns.desc())
        if "officer" in roles_of(user) and not has_role(user, *STAFF):
            q = q.where(m.Recording.officer_id == user.officer_no)
        if f["officer"]:
            q = q.where(m.Recording.officer_id == f["officer"])
        if f["device"]:
            q = q.where(m.Recording.device_id.startswith(f["device"]))
        if f["date_from"]:
            q = q.where(m.Recording.start_wall_ns >= parse_time(f["date_from"], st.cfg.timezone))
        if f["date_to"]:
            q = q.where(m.Recording.start_wall_ns < parse_time(f["date_to"], st.cfg.timezone) + 24 * NS_PER_HOUR)
        out = []
        for rec in s.scalars(q.limit(500)):
            labels = s.scalars(select(m.Label).where(m.Label.recording == rec.id, m.Label.current.is_(True))).all()
            cases = [c.case_no for c in (s.get(m.Case, lab.case_id) for lab in labels if lab.case_id) if c]
            held = s.scalars(select(m.Hold).where(m.Hold.recording == rec.id, m.Hold.released_ns.is_(None))).first()
            state = "已标注" if labels else ("逾期未标注" if rec.ingested_ns and now - rec.ingested_ns > deadline
                                            else "未标注")
            categories = sorted({lab.category for lab in labels})
            row: dict[str, Any] = {
                   "id": rec.id, "name": rec.name, "officer": rec.officer_id, "device": rec.device_id[:12],
                   "start": rec.start_wall_ns, "end": rec.end_wall_ns, "segments": rec.segments,
                   "quality": rec.time_quality, "cases": ", ".join(cases),
                   "categories": ", ".join(categories), "label": state,
                   "held": held is not None, "retention_end": rec.retention_end_ns, "status": rec.status}
            if f["case"] and f["case"] not in cases:
                continue
            if f["category"] and f["category"] not in categories:
                continue
            if f["label"] and f["label"] != state:
                continue
            if f["hold"] and (f["hold"] == "held") != row["held"]:
                continue
            out.append(row)
        return out
