"""Correcting a label from the recording page (S2): a new version with a reason, never an overwrite.

The rules (who may, what can change, conflicts) are ``station.casework.labels.correct_label``'s;
this module only reads the form and shows the outcome. The recording page lists every version
(retired ones with the reason of the correction that replaced them).
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from station.casework.labels import LabelInput, correct_label, may_label
from station.cli.common import parse_time
from station.db import models as m
from station.errors import NotAllowed, StationError
from station.web.guard import Refused, Web


def register(app: FastAPI, web: Web) -> None:
    st = web.st
    # the recording page shows the correction form to whoever the labelling rules allow
    web.templates.env.globals["may_correct"] = may_label

    def case_no_of(case_id: int) -> str:
        with st.db.session() as s:
            case = s.get(m.Case, case_id)
            return case.case_no if case is not None else f"#{case_id}"

    web.templates.env.globals["case_no_of"] = case_no_of

    @app.post("/labels/{label_id}/correct")
    def correct(request: Request, label_id: int, csrf: str = Form(""), reason: str = Form(""),
                case_no: str = Form(""), activity: str = Form(""), category: str = Form(""),
                counterpart: str = Form(""), content: str = Form(""), place: str = Form(""),
                range_from: str = Form(""), range_to: str = Form(""), whole: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, "clerk", "officer", what=f"label:{label_id}")    # an officer: his own (below)
        with st.db.session() as s:
            lab = s.get(m.Label, label_id)
            rec_id = lab.recording if lab is not None else None
        if rec_id is None:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"标注 {label_id}")
        try:
            tz = st.cfg.timezone
            inp = LabelInput(case_no=case_no.strip() or None, activity=activity.strip() or None,
                             category=category.strip() or None, counterpart=counterpart.strip() or None,
                             content=content.strip() or None, place=place.strip() or None,
                             range_from_ns=parse_time(range_from.strip(), tz) if range_from.strip() else None,
                             range_to_ns=parse_time(range_to.strip(), tz) if range_to.strip() else None,
                             whole=whole == "1")
            correct_label(st, signed.user, label_id, inp, reason)
        except NotAllowed as exc:      # audited by correct_label as not-allowed
            raise Refused(f"更正录像 {rec_id} 的标注", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/recordings/{rec_id}?label_error={quote(str(exc))}#labels",
                                    status_code=303)
        return RedirectResponse(f"/recordings/{rec_id}#labels", status_code=303)
