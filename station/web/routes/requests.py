"""Access requests and approvals (S8, 调阅审批) in the browser: ask, decide, see the state.

The rules are ``station.access.requests`` (and ``policy`` for what a grant allows); this module
only turns forms into those calls. Anyone signed in with a role asks (from the recording page
or with a recording's number here); an approver other than the requester approves (with the
hours it is valid) or refuses (with a note), and may revoke an approval still in force (with a
note). A refused decision (own request, wrong role) is audited by the rules and answered with
the "无权访问" page; a bad or late form (no reason, hours out of range, already decided, not in
force) is shown on the page with nothing changed.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from station.access import requests as rq
from station.access.accounts import has_role
from station.access.policy import ACTION_ZH, ACTIONS
from station.errors import Conflict, InvalidInput, NotAllowed, NotFound, StationError
from station.recordings import find_recording
from station.web.guard import STAFF, Refused, Web
from station.web.sessions import SignedIn

ERROR_STATUS = {InvalidInput: 400, NotFound: 404, Conflict: 409}


def register(app: FastAPI, web: Web) -> None:
    st = web.st
    web.templates.env.globals.update(REQUEST_STATUS_ZH=rq.STATUS_ZH, ACTION_ZH=ACTION_ZH,
                                     access_requests_of=lambda user, rec_id: rq.requests(st, user, recording=rec_id))

    def page(request: Request, signed: SignedIn, status: int = 200, error: str = "", **form: Any) -> Response:
        approver = has_role(signed.user, "approver")
        everyone = rq.requests(st, signed.user)
        pending = [r for r in everyone if r["status"] == "pending" and r["requester"] != signed.user.username] \
            if approver else []
        mine = [r for r in everyone if r["requester"] == signed.user.username]
        others = [r for r in everyone if r["requester"] != signed.user.username and r["status"] != "pending"]
        return web.render(request, "requests.html", status, signed=signed, pending=pending, mine=mine,
                          others=others, approver=approver, error=error, actions=ACTIONS,
                          max_hours=rq.MAX_GRANT_HOURS, default_hours=rq.grant_hours(st, None),
                          done=request.query_params.get("done", ""), form=form)

    @app.get("/requests", response_class=HTMLResponse)
    def requests_page(request: Request, recording: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view access requests")
        return page(request, signed, recording=recording)

    @app.post("/requests")
    def new_request(request: Request, csrf: str = Form(""), recording: str = Form(""), action: str = Form(""),
                    reason: str = Form(""), back: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, "officer", *STAFF, what="request access to a recording")
        try:
            with st.db.session() as s:
                rec_id = find_recording(s, recording).id
            req = rq.request_access(st, signed.user, rec_id, action, reason)
        except NotAllowed as exc:
            raise Refused("提出调阅申请", str(exc)) from None
        except StationError as exc:
            return page(request, signed, ERROR_STATUS.get(type(exc), 409), f"申请未提交：{exc}",
                        recording=recording, action=action, reason=reason)
        if back == "recording":
            return RedirectResponse(f"/recordings/{rec_id}#access", status_code=303)
        return RedirectResponse(f"/requests?done={req.id}", status_code=303)

    def decide(request: Request, signed: SignedIn, req_id: int, verb: str, hours: str, note: str) -> Response:
        web.need(signed, "approver", what=f"{verb} access request {req_id}")
        try:
            if verb == "approve":
                text = hours.strip()
                if text and not text.isdigit():
                    raise InvalidInput(f"有效时长须为 1 到 {rq.MAX_GRANT_HOURS} 的整数小时（收到 {text!r}）")
                rq.approve(st, signed.user, req_id, hours=int(text) if text else None, note=note)
            elif verb == "revoke":
                rq.revoke(st, signed.user, req_id, note)
            else:
                rq.refuse(st, signed.user, req_id, note)
        except NotAllowed as exc:
            raise Refused(f"{'撤销' if verb == 'revoke' else '审批'}调阅申请 {req_id}", str(exc)) from None
        except StationError as exc:
            done = "撤销" if verb == "revoke" else "审批"
            return page(request, signed, ERROR_STATUS.get(type(exc), 409), f"申请 {req_id} 未能{done}：{exc}")
        return RedirectResponse(f"/requests?done={req_id}", status_code=303)

    @app.post("/requests/{req_id}/approve")
    def approve(request: Request, req_id: int, csrf: str = Form(""), hours: str = Form(""),
                note: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        return decide(request, signed, req_id, "approve", hours, note)

    @app.post("/requests/{req_id}/refuse")
    def refuse(request: Request, req_id: int, csrf: str = Form(""), note: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        return decide(request, signed, req_id, "refuse", "", note)

    @app.post("/requests/{req_id}/revoke")
    def revoke(request: Request, req_id: int, csrf: str = Form(""), note: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        return decide(request, signed, req_id, "revoke", "", note)
