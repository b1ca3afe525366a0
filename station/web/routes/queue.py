"""The 48-hour labelling queue (S2): an officer's own, or everyone's for the staff."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from station.casework.queue import queue
from station.web.guard import STAFF, Web


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/queue", response_class=HTMLResponse)
    def label_queue(request: Request, overdue: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view the labelling queue")
        items = queue(st, signed.user, overdue_only=overdue == "1")
        return web.render(request, "queue.html", signed=signed, items=items, overdue=overdue == "1",
                          hours=st.cfg.labels.deadline_hours)
