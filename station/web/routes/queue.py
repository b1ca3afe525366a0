"""The 48-hour labelling queue (S2): an officer's own, or everyone's for the staff, 100 a page.

Paged because an office that falls behind has thousands of unlabelled recordings: the page
shows the oldest first (the most overdue), with the totals of the whole queue.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from station.casework.queue import queue
from station.web.guard import STAFF, Web

PAGE_SIZE = 100


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/queue", response_class=HTMLResponse)
    def label_queue(request: Request, overdue: str = "", page: str = "1") -> Response:
        signed = web.who(request)
        web.need(signed, "officer", *STAFF, what="view the labelling queue")
        items = queue(st, signed.user, overdue_only=overdue == "1")
        pages = max(1, -(-len(items) // PAGE_SIZE))
        error = ""
        try:
            number = int(page)
            if number < 1:
                raise ValueError(page)
        except ValueError:
            number, error = 1, f"页码无效：{page}（应为正整数）"
        number = min(number, pages)              # past the end: the last page
        shown = items[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
        return web.render(request, "queue.html", signed=signed, items=shown, overdue=overdue == "1",
                          hours=st.cfg.labels.deadline_hours, total=len(items),
                          overdue_total=sum(1 for i in items if i["overdue"]), page=number, pages=pages,
                          error=error)
