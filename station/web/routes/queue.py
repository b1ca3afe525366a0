"""The 48-hour labelling queue (S2): an officer's own, or everyone's for the staff, 100 a page.

Paged because an office that falls behind has thousands of unlabelled recordings: the page
shows the oldest first (the most overdue), with the totals of the whole queue.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from station.casework.queue import queue_page
from station.web.guard import STAFF, Web

PAGE_SIZE = 100


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/queue", response_class=HTMLResponse)
    def label_queue(request: Request, overdue: str = "", page: str = "1") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view the labelling queue")
        error = ""
        try:
            number = int(page)
            if number < 1:
                raise ValueError(page)
        except ValueError:
            number, error = 1, f"页码无效：{page}（应为正整数）"
        shown = queue_page(st, signed.user, overdue_only=overdue == "1", page=number, size=PAGE_SIZE)
        return web.render(request, "queue.html", signed=signed, items=shown.items, overdue=overdue == "1",
                          hours=st.cfg.labels.deadline_hours, total=shown.total,
                          overdue_total=shown.overdue_total, page=shown.page, pages=shown.pages,
                          error=error)
