"""Case pages: the cases list (opening, closing, reopening a case) and a case's page with its
recordings and its record checklist (音像记录事项清单, S4), downloadable as PDF and CSV.

The rules are ``station.casework.cases`` and ``station.casework.checklist``'s; a downloaded
checklist is an audited ``checklist`` event with the SHA-256 of what was sent, as on the
command line.
"""
from __future__ import annotations

import hashlib
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from station.casework import cases, checklist
from station.casework.cases import CASE_ROLES
from station.errors import NotAllowed, NotFound, StationError
from station.web.guard import STAFF, Refused, Web


def attachment(name: str, ascii_name: str) -> str:
    """A Content-Disposition naming the file in UTF-8 (RFC 6266) with an ASCII fallback."""
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/cases", response_class=HTMLResponse)
    def case_list(request: Request, status: str = "", error: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, *STAFF, what="view the cases list")
        rows = cases.list_cases(st, status if status in ("open", "closed") else None)
        return web.render(request, "cases.html", signed=signed, rows=rows, shown=status, error=error,
                          may_open="clerk" in signed.user.roles.split(","),
                          categories=st.cfg.labels.categories)

    @app.post("/cases")
    def case_open(request: Request, csrf: str = Form(""), case_no: str = Form(""), name: str = Form(""),
                  category: str = Form(""), department: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *CASE_ROLES, what="open a case")
        try:
            made = cases.open_case(st, signed.user, case_no, name, category, department)
        except StationError as exc:
            return RedirectResponse(f"/cases?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/cases/{quote(made['case_no'], safe='')}", status_code=303)

    @app.get("/cases/{case_no}", response_class=HTMLResponse)
    def case_page(request: Request, case_no: str, error: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, *STAFF, what=f"case:{case_no}")
        try:
            case = cases.show_case(st, case_no)
        except NotFound:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"案件 {case_no}")
        may_checklist = bool(set(signed.user.roles.split(",")) & set(checklist.CHECKLIST_ROLES))
        rows = checklist.checklist(st, signed.user, case_no).rows if may_checklist else []
        return web.render(request, "case.html", signed=signed, case=case, rows=rows, columns=checklist.COLUMNS,
                          may_checklist=may_checklist, may_change="clerk" in signed.user.roles.split(","),
                          q=quote(case_no, safe=""), error=error)

    @app.post("/cases/{case_no}/status")
    def case_status(request: Request, case_no: str, csrf: str = Form(""), to: str = Form(""),
                    reason: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *CASE_ROLES, what=f"change case:{case_no}")
        back = f"/cases/{quote(case_no, safe='')}"
        try:
            if to == "closed":
                cases.close_case(st, signed.user, case_no, reason or None)
            elif to == "open":
                cases.reopen_case(st, signed.user, case_no, reason)
            else:
                return RedirectResponse(f"{back}?error={quote('未知的操作')}", status_code=303)
        except NotAllowed as exc:
            raise Refused(f"更改案件 {case_no}", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"{back}?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(back, status_code=303)

    @app.get("/cases/{case_no}/checklist.{fmt}")
    def checklist_file(request: Request, case_no: str, fmt: str) -> Response:
        signed = web.who(request)
        web.need(signed, *checklist.CHECKLIST_ROLES, what=f"checklist:{case_no}")
        if fmt not in ("pdf", "csv"):
            return web.render(request, "not_found.html", 404, signed=signed, what=f"格式 {fmt} 的清单")
        try:
            cl = checklist.checklist(st, signed.user, case_no)
        except NotFound:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"案件 {case_no}")
        data = cl.pdf(st.cfg.timezone) if fmt == "pdf" else cl.csv()
        st.trail.event("checklist", actor=signed.user.username, subject=f"case:{case_no}", rows=len(cl.rows),
                       via="web", **{f"{fmt}_sha256": hashlib.sha256(data).hexdigest()})
        media = "application/pdf" if fmt == "pdf" else "text/csv; charset=utf-8"
        return Response(data, media_type=media, headers={"Content-Disposition": attachment(
            f"{checklist.TITLE}_{case_no}.{fmt}", f"checklist-{cl.case['id']}.{fmt}")})
