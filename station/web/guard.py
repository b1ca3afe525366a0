"""What every page shares: the templates, who is signed in, the role check and the CSRF check.

A route module receives one ``Web`` and calls ``web.who(request)`` first (no session → the
sign-in page), then ``web.need(...)`` for its roles (refused → the audited "无权访问" page, 403)
and ``web.check_csrf(...)`` on every POST. Raising ``Refused`` anywhere renders that page.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates

from station.access.accounts import ROLE_ZH, has_role
from station.app import Station
from station.cli.common import iso
from station.web import sessions
from station.web.export_jobs import ExportJobs
from station.web.playback import Playbacks

HERE = Path(__file__).resolve().parent
STAFF = ("clerk", "approver", "auditor", "admin")


class Redirect(Exception):
    """Answered with a 303 to ``to`` (e.g. the sign-in page)."""

    def __init__(self, to: str) -> None:
        self.to = to


class Refused(Exception):
    """Answered with the "无权访问" page (403); ``what`` was asked, ``why`` it was refused; ``ask``:
    the page where the refused user can ask for it instead (e.g. an access request for that recording)."""

    def __init__(self, what: str, why: str, ask: str | None = None) -> None:
        self.what, self.why, self.ask = what, why, ask


class Web:
    """One station's web context: built once by ``create_app`` and handed to every route module."""

    def __init__(self, st: Station) -> None:
        self.st = st
        self.playbacks = Playbacks()      # open playbacks by (session, recording); see playback.py
        self.exports = ExportJobs()       # exports being written in the background; see export_jobs.py
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(ROLE_ZH=ROLE_ZH)
        self.templates.env.filters["iso"] = lambda ns: (iso(ns, st.cfg.timezone) or "")[:19].replace("T", " ")

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {"unit": self.st.cfg.unit, **ctx},
                                               status_code=status)

    def signed_or_none(self, request: Request) -> sessions.SignedIn | None:
        return sessions.current(self.st, request.cookies.get(sessions.COOKIE))

    def who(self, request: Request) -> sessions.SignedIn:
        signed = self.signed_or_none(request)
        if signed is None:
            raise Redirect("/login")
        return signed

    def need(self, signed: sessions.SignedIn, *roles: str, what: str, ask: str | None = None) -> None:
        """Refuse (audited) unless the signed-in user holds one of ``roles``."""
        if not has_role(signed.user, *roles):
            self.refuse(signed, what, f"needs role {' or '.join(roles)}",
                        f"需要角色：{'、'.join(ROLE_ZH[r] for r in roles)}", ask=ask)

    def refuse(self, signed: sessions.SignedIn, what: str, reason: str, why_zh: str, ask: str | None = None) -> None:
        """Audit a refusal and answer with the "无权访问" page (``ask``: where to ask for it instead)."""
        self.st.trail.event("not-allowed", actor=signed.user.username, subject=what, reason=reason, via="web")
        raise Refused(what, why_zh, ask)

    def refuse_fetch(self, signed: sessions.SignedIn, what: str, reason: str) -> PlainTextResponse:
        """Audit a refused fetch that is no page (a playlist, a segment: the player asked, or someone
        guessing numbers) and answer a plain 403."""
        self.st.trail.event("not-allowed", actor=signed.user.username, subject=what, reason=reason, via="web")
        return PlainTextResponse(reason, status_code=403)

    def check_csrf(self, signed: sessions.SignedIn, token: str) -> None:
        if not sessions.same(token, signed.csrf):
            self.st.trail.event("csrf-refused", actor=signed.user.username, subject="web-form", via="web")
            raise Refused("提交表单", "表单已过期或来源不明（CSRF 校验失败），请重新打开页面")
