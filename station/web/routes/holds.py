"""Holds (S6, 封存/长期保存): the active holds, placing one on a recording, releasing one — each
with a reason. Who may is ``station.keeping.holds``'s (place: clerk, approver, admin; release:
approver, admin); the page is for the staff.
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from station.access.accounts import has_role
from station.errors import NotAllowed, StationError
from station.keeping import holds
from station.web.guard import STAFF, Refused, Web


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/holds", response_class=HTMLResponse)
    def hold_list(request: Request, all: str = "", recording: str = "", error: str = "") -> Response:  # noqa: A002
        signed = web.who(request)
        web.need(signed, *STAFF, what="view the holds")
        rows = holds.list_holds(st, active_only=all != "1")
        return web.render(request, "holds.html", signed=signed, rows=rows, show_all=all == "1",
                          recording=recording, error=error, kinds=holds.KINDS_ZH,
                          may_place=has_role(signed.user, *holds.PLACE_ROLES),
                          may_release=has_role(signed.user, *holds.RELEASE_ROLES))

    @app.post("/holds")
    def hold_place(request: Request, csrf: str = Form(""), recording: str = Form(""), kind: str = Form(""),
                   text: str = Form(""), reason: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *holds.PLACE_ROLES, what="place a hold (S6)")
        try:
            holds.place(st, signed.user, recording.strip(), kind, reason=reason, text=text or None)
        except NotAllowed as exc:
            raise Refused("封存录像", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/holds?error={quote(str(exc))}&recording={quote(recording)}",
                                    status_code=303)
        return RedirectResponse("/holds", status_code=303)

    @app.post("/holds/{hold_id}/release")
    def hold_release(request: Request, hold_id: int, csrf: str = Form(""), reason: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *holds.RELEASE_ROLES, what=f"hold:{hold_id}")
        try:
            holds.release(st, signed.user, hold_id, reason=reason)
        except NotAllowed as exc:
            raise Refused(f"解除封存 {hold_id}", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/holds?error={quote(str(exc))}", status_code=303)
        return RedirectResponse("/holds", status_code=303)
