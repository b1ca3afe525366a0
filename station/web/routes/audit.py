"""The audit trail of a recording and of a user (auditor, administrator): a page, CSV and PDF.

A recording's trail is every signed audit record about it: those whose subject is the
recording (ingest-time labels, views, refusals, integrity alerts, purge...), its access
requests' decisions, its holds, the docking that brought it, and the exports that took it.
A user's trail is every record the user did (actor) or that is about the account
(``user:NAME``). The rows are the catalogue's copies of the signed journal lines
(``audit_entries``), read back from the line itself (``station verify`` attests them).

Viewing the page is not audited (no command shows the trail, so there is no audited
equivalent to follow); a CSV or PDF leaves the station, so each download is an audited
``audit-trail-download`` event, like a printed checklist.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select

from recorder import records
from station.app import Station
from station.cli.common import iso
from station.db import models as m
from station.documents import render
from station.web.guard import Web
from station.web.sessions import SignedIn

READERS = ("auditor", "admin")
PAGE_ROWS = 2000           # the page shows the latest this many; the downloads have every row
COLUMNS: list[tuple[str, str]] = [("seq", "序号"), ("at", "时间"), ("type", "事项"), ("actor", "操作人"),
                                  ("subject", "对象"), ("reason", "事由"), ("details", "详情")]


@dataclass(frozen=True)
class Trail:
    title: str
    subject: str          # what the trail is about, e.g. recording:12 (the download's audit subject)
    rows: list[dict[str, Any]]


def _row(e: m.AuditEntry, tz: str) -> dict[str, Any]:
    payload = records.parse_line(e.line.encode("ascii")).payload
    details = payload.get("details") or {}
    return {"seq": e.seq, "wall_ns": e.wall_ns, "at": (iso(e.wall_ns, tz) or "")[:19].replace("T", " "),
            "type": e.type, "actor": e.actor, "subject": e.subject, "reason": payload.get("reason") or "",
            "details": json.dumps(details, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
            if details else "", "hash": e.hash}


def recording_trail(st: Station, rec: m.Recording) -> Trail:
    with st.db.session() as s:
        req_ids = s.scalars(select(m.AccessRequest.id).where(m.AccessRequest.recording == rec.id)).all()
        hold_ids = s.scalars(select(m.Hold.id).where(m.Hold.recording == rec.id)).all()
        subjects = [f"recording:{rec.id}", *(f"access-request:{i}" for i in req_ids), *(f"hold:{i}" for i in hold_ids)]
        if rec.docking_id is not None:
            subjects.append(f"docking:{rec.docking_id}")
        entries = list(s.scalars(select(m.AuditEntry).where(
            or_(m.AuditEntry.subject.in_(subjects), m.AuditEntry.type == "export")).order_by(m.AuditEntry.seq)))
    rows = []
    for e in entries:
        row = _row(e, st.cfg.timezone)
        if e.type == "export" and e.subject not in subjects:
            took = json.loads(row["details"] or "{}").get("recordings") or []
            if rec.id not in took:
                continue
        rows.append(row)
    return Trail(f"录像审计记录：{rec.id} {rec.name}", f"recording:{rec.id}", rows)


def user_trail(st: Station, username: str) -> Trail:
    with st.db.session() as s:
        entries = list(s.scalars(select(m.AuditEntry).where(
            or_(m.AuditEntry.actor == username, m.AuditEntry.subject == f"user:{username}"))
            .order_by(m.AuditEntry.seq)))
    return Trail(f"用户审计记录：{username}", f"user:{username}", [_row(e, st.cfg.timezone) for e in entries])


def trail_pdf(st: Station, trail: Trail, made_by: str) -> bytes:
    body = ("<style>table { font-size: 7pt; } td { overflow-wrap: anywhere; } "
            "td:nth-child(-n+4), th { white-space: nowrap; }</style>"
            + render.html_table(COLUMNS, trail.rows))
    doc = render.page(trail.title, body, landscape=True,
                      meta=[("单位", st.cfg.unit), ("工作站", st.name), ("记录数", len(trail.rows)),
                            ("打印时间", iso(st.now_ns(), st.cfg.timezone)), ("打印人", made_by)],
                      signatures=["审计人", "日期"])
    return render.pdf(doc)


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    def answer(request: Request, signed: SignedIn, trail: Trail, fmt: str, base: str) -> Response:
        if fmt == "":
            rows = trail.rows[-PAGE_ROWS:]
            return web.render(request, "audit_trail.html", signed=signed, trail=trail, rows=list(reversed(rows)),
                              cut=len(trail.rows) - len(rows), base=base)
        st.trail.event("audit-trail-download", actor=signed.user.username, subject=trail.subject, format=fmt,
                       records=len(trail.rows), via="web")
        name = trail.subject.replace(":", "-")
        if fmt == "csv":
            return Response(render.csv_bytes(COLUMNS, trail.rows), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="audit-{quote(name)}.csv"'})
        return Response(trail_pdf(st, trail, signed.user.display_name or signed.user.username),
                        media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="audit-{quote(name)}.pdf"'})

    def recording(request: Request, rec_id: int, fmt: str) -> Response:
        signed = web.who(request)
        web.need(signed, *READERS, what=f"audit trail of recording:{rec_id}")
        with st.db.session() as s:
            rec = s.get(m.Recording, rec_id)
        if rec is None:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"录像 {rec_id}")
        return answer(request, signed, recording_trail(st, rec), fmt, f"/recordings/{rec_id}/audit")

    def user(request: Request, username: str, fmt: str) -> Response:
        signed = web.who(request)
        web.need(signed, *READERS, what=f"audit trail of user:{username}")
        trail = user_trail(st, username)
        with st.db.session() as s:
            known = s.get(m.User, username) is not None
        if not known and not trail.rows:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"用户 {username}")
        return answer(request, signed, trail, fmt, f"/users/{quote(username, safe='')}/audit")

    @app.get("/audit", response_class=HTMLResponse)
    def audit_index(request: Request, recording: str = "", user: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, *READERS, what="the audit trail")
        if recording.strip().lstrip("#").isdigit():
            return RedirectResponse(f"/recordings/{int(recording.strip().lstrip('#'))}/audit", status_code=303)
        if user.strip():
            return RedirectResponse(f"/users/{quote(user.strip(), safe='')}/audit", status_code=303)
        with st.db.session() as s:
            users = list(s.scalars(select(m.User).order_by(m.User.username)))
        error = f"录像编号须为数字（收到 {recording!r}）" if recording.strip() else ""
        return web.render(request, "audit_index.html", 400 if error else 200, signed=signed, users=users,
                          error=error)

    @app.get("/recordings/{rec_id}/audit", response_class=HTMLResponse)
    def recording_page(request: Request, rec_id: int) -> Response:
        return recording(request, rec_id, "")

    @app.get("/recordings/{rec_id}/audit.csv")
    def recording_csv(request: Request, rec_id: int) -> Response:
        return recording(request, rec_id, "csv")

    @app.get("/recordings/{rec_id}/audit.pdf")
    def recording_pdf(request: Request, rec_id: int) -> Response:
        return recording(request, rec_id, "pdf")

    @app.get("/users/{username}/audit", response_class=HTMLResponse)
    def user_page(request: Request, username: str) -> Response:
        return user(request, username, "")

    @app.get("/users/{username}/audit.csv")
    def user_csv(request: Request, username: str) -> Response:
        return user(request, username, "csv")

    @app.get("/users/{username}/audit.pdf")
    def user_pdf(request: Request, username: str) -> Response:
        return user(request, username, "pdf")
