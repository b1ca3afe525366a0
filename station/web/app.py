"""The web application: routes, each behind sign-in, CSRF (on every POST) and a role check.

``create_app(station)`` builds it around one open ``Station``; ``station serve`` runs it with
uvicorn over HTTPS. A refused route renders the "not allowed" page (403) and the refusal is
audited, like a refused command.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from station.access.accounts import ROLE_ZH, has_role, roles_of
from station.app import Station
from station.casework.labels import LabelInput, label_recording, may_label
from station.casework.queue import queue
from station.cli.common import iso, parse_time
from station.clock import NS_PER_HOUR
from station.db import models as m
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound, StationError
from station.web import sessions
from station.web.playback import Playbacks

HERE = Path(__file__).resolve().parent
HLS_JS = HERE / "node_modules" / "hls.js" / "dist" / "hls.min.js"
STAFF = ("clerk", "approver", "auditor", "admin")


class _Redirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


class _Refused(Exception):
    def __init__(self, what: str, why: str) -> None:
        self.what, self.why = what, why


def create_app(st: Station) -> FastAPI:
    app = FastAPI(title="证据管理工作站", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(ROLE_ZH=ROLE_ZH)
    templates.env.filters["iso"] = lambda ns: (iso(ns, st.cfg.timezone) or "")[:19].replace("T", " ")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"unit": st.cfg.unit, **ctx}, status_code=status)

    def who(request: Request) -> sessions.SignedIn:
        signed = sessions.current(st, request.cookies.get(sessions.COOKIE))
        if signed is None:
            raise _Redirect("/login")
        return signed

    def need(signed: sessions.SignedIn, *roles: str, what: str) -> None:
        if not has_role(signed.user, *roles):
            st.trail.event("not-allowed", actor=signed.user.username, subject=what,
                           reason=f"needs role {' or '.join(roles)}", via="web")
            raise _Refused(what, f"需要角色：{'、'.join(ROLE_ZH[r] for r in roles)}")

    def check_csrf(signed: sessions.SignedIn, token: str) -> None:
        if not sessions.same(token, signed.csrf):
            st.trail.event("csrf-refused", actor=signed.user.username, subject="web-form", via="web")
            raise _Refused("提交表单", "表单已过期或来源不明（CSRF 校验失败），请重新打开页面")

    @app.exception_handler(_Redirect)
    async def _redirect(request: Request, exc: _Redirect) -> Response:
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> Response:
        return render(request, "not_allowed.html", 403, what=exc.what, why=exc.why,
                      signed=sessions.current(st, request.cookies.get(sessions.COOKIE)))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; media-src 'self' blob:; object-src 'none'; "
                                    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # ---- signing in and out ------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, error: str = "") -> Response:
        token = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        resp = render(request, "login.html", csrf=token, error=error)
        resp.set_cookie(sessions.LOGIN_CSRF_COOKIE, token, httponly=True, secure=True, samesite="strict")
        return resp

    @app.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              csrf: str = Form("")) -> Response:
        if not sessions.same(csrf, request.cookies.get(sessions.LOGIN_CSRF_COOKIE)):
            st.trail.event("csrf-refused", actor="unknown", subject="sign-in", via="web")
            return render(request, "login.html", 403, csrf=request.cookies.get(sessions.LOGIN_CSRF_COOKIE, ""),
                          error="表单已过期，请重新登录")
        try:
            token, _ = sessions.sign_in(st, username.strip(), password)
        except NotAllowed:
            return render(request, "login.html", 401, csrf=csrf, error="用户名或密码错误")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(sessions.COOKIE, token, httponly=True, secure=True, samesite="strict")
        resp.delete_cookie(sessions.LOGIN_CSRF_COOKIE)
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        signed = who(request)
        check_csrf(signed, csrf)
        sessions.sign_out(st, signed)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(sessions.COOKIE)
        return resp

    # ---- recordings ---------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def recordings(request: Request, officer: str = "", device: str = "", date_from: str = "",
                   date_to: str = "", case: str = "", category: str = "", label: str = "",
                   hold: str = "") -> Response:
        signed = who(request)
        if not has_role(signed.user, "officer", *STAFF):
            need(signed, "officer", *STAFF, what="view the recordings list")
        filters = {"officer": officer, "device": device, "date_from": date_from, "date_to": date_to,
                   "case": case, "category": category, "label": label, "hold": hold}
        try:
            rows = _recording_rows(st, signed.user, filters)
            error = ""
        except InvalidInput as exc:
            rows, error = [], str(exc)
        return render(request, "recordings.html", signed=signed, rows=rows, f=filters, error=error,
                      categories=st.cfg.labels.categories)

    @app.get("/recordings/{rec_id}", response_class=HTMLResponse)
    def recording(request: Request, rec_id: int) -> Response:
        signed = who(request)
        with st.db.session() as s:
            rec = s.get(m.Recording, rec_id)
            if rec is None:
                return render(request, "not_found.html", 404, signed=signed, what=f"录像 {rec_id}")
            if not (has_role(signed.user, *STAFF) or rec.officer_id == signed.user.officer_no):
                need(signed, *STAFF, what=f"recording:{rec_id}")
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
                playbacks.get(st, signed.token_sha256, rec_id)
            except NotAllowed:
                playing = False
        return render(request, "recording.html", signed=signed, rec=rec, segs=segs, stops=stops, labels=labels,
                      docking=docking, playing=playing, may_label=may_label(signed.user, rec) and not any(
                          lab.current for lab in labels) and rec.status == "stored",
                      categories=st.cfg.labels.categories, label_error=request.query_params.get("label_error", ""))

    # ---- labelling (S2): the 48 h queue and the label form ----------------------------------
    @app.get("/queue", response_class=HTMLResponse)
    def label_queue(request: Request, overdue: str = "") -> Response:
        signed = who(request)
        need(signed, "officer", *STAFF, what="view the labelling queue")
        items = queue(st, signed.user, overdue_only=overdue == "1")
        return render(request, "queue.html", signed=signed, items=items, overdue=overdue == "1",
                      hours=st.cfg.labels.deadline_hours)

    @app.post("/recordings/{rec_id}/label")
    def label(request: Request, rec_id: int, csrf: str = Form(""), case_no: str = Form(""),
              activity: str = Form(""), category: str = Form(""), counterpart: str = Form(""),
              content: str = Form(""), place: str = Form("")) -> Response:
        signed = who(request)
        check_csrf(signed, csrf)
        inp = LabelInput(case_no=case_no.strip() or None, activity=activity.strip() or None,
                         category=category.strip() or None, counterpart=counterpart, content=content, place=place)
        try:
            label_recording(st, signed.user, f"#{rec_id}", inp)
        except NotAllowed as exc:
            raise _Refused(f"标注录像 {rec_id}", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/recordings/{rec_id}?label_error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/recordings/{rec_id}", status_code=303)

    playbacks = Playbacks()

    @app.post("/recordings/{rec_id}/play")
    def play(request: Request, rec_id: int, reason: str = Form(""), csrf: str = Form("")) -> Response:
        signed = who(request)
        check_csrf(signed, csrf)
        try:
            playbacks.start(st, signed.token_sha256, signed.user, rec_id, reason)
        except NotAllowed as exc:
            raise _Refused(f"查看录像 {rec_id}", f"{exc}。请先提出调阅申请。") from None
        except (Conflict, NotFound, StationError) as exc:
            return render(request, "not_allowed.html", 409, signed=signed, what=f"播放录像 {rec_id}",
                          why=str(exc))
        return RedirectResponse(f"/recordings/{rec_id}?playing=1", status_code=303)

    @app.get("/recordings/{rec_id}/playlist.m3u8")
    def playlist(request: Request, rec_id: int) -> Response:
        signed = who(request)
        try:
            pb = playbacks.get(st, signed.token_sha256, rec_id)
        except NotAllowed as exc:
            return Response(str(exc), status_code=403)
        return Response(Playbacks.playlist(pb, rec_id), media_type="application/vnd.apple.mpegurl")

    @app.get("/recordings/{rec_id}/segments/{index}.ts")
    def segment(request: Request, rec_id: int, index: int) -> Response:
        signed = who(request)
        try:
            pb = playbacks.get(st, signed.token_sha256, rec_id)
            data = Playbacks.segment(st, signed.user, pb, index)
        except NotAllowed as exc:
            return Response(str(exc), status_code=403)
        except NotFound as exc:
            return Response(str(exc), status_code=404)
        except StationError as exc:          # the original is not what the journal attests
            return Response(str(exc), status_code=409)
        return Response(data, media_type="video/mp2t")

    @app.get("/vendor/hls.min.js")
    def hls_js() -> Response:
        if not HLS_JS.is_file():
            return Response("hls.js is not installed: run deploy/bootstrap-dev.sh (npm ci)", status_code=503)
        return FileResponse(HLS_JS, media_type="text/javascript")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "station": st.name}

    app.state.station = st
    return app


def _recording_rows(st: Station, user: m.User, f: dict[str, str]) -> list[dict[str, Any]]:
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
