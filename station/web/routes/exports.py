"""Exports for the case file (S7) from the web: make one (a case, or chosen recordings), list them,
download a copy as one streamed tar or zip.

Making is ``station.export.package``: its checks (clerk role, an approved copy request per
recording, all registered) in the request, then the package written in the background
(``station.web.export_jobs``) while the clerk's page shows it being made and refreshes itself
until it is there; packages go to ``<store>/exports``. A download serves only a copy directory of
an ``Export`` row, resolved inside that directory (never a path from the request), only to a
clerk, and is an audited ``export-download`` event.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from station.access.accounts import has_role
from station.app import Station
from station.casework import cases
from station.db import models as m
from station.errors import NotAllowed, StationError
from station.export.package import COPY_WORD, EXPORT_ROLES, MAX_COPIES, prepare
from station.web import archive
from station.web.guard import STAFF, Refused, Web
from station.web.routes.cases import attachment

_REFS = re.compile(r"[\s,，]+")


def export_dir(st: Station) -> Path:
    return st.store / "exports"


def export_rows(st: Station) -> list[dict[str, Any]]:
    base = export_dir(st).resolve()
    with st.db.session() as s:
        rows = s.execute(select(m.Export, m.Case).outerjoin(m.Case, m.Export.case_id == m.Case.id)
                         .order_by(m.Export.id.desc())).all()
        return [{"id": e.id, "case_no": c.case_no if c else "", "case_name": c.name if c else "",
                 "name": Path(e.directory).name, "maker": e.maker, "extractor": e.extractor,
                 "extracted_ns": e.extracted_ns, "copies": e.copies, "recordings": json.loads(e.recordings),
                 "manifest_sha256": e.manifest_sha256, "created_by": e.created_by, "status": e.status,
                 "here": Path(e.directory).parent.resolve() == base} for e, c in rows]


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/exports", response_class=HTMLResponse)
    def export_list(request: Request, case: str = "", recordings: str = "", error: str = "",
                    made: str = "", job: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, *STAFF, what="view the exports")
        running = None
        if job:
            found = web.exports.get(job, signed.user.username)
            if found is None:
                error = error or "没有这个导出任务（本站可能已重启）：请查看下方列表，必要时重新导出"
            elif found.state == "done":
                return RedirectResponse(f"/exports?made={found.export_id}#export-{found.export_id}", status_code=303)
            elif found.state == "failed":
                error = error or f"导出未完成，未留下任何文件：{found.error}"
            else:
                running = found
        return web.render(request, "exports.html", signed=signed, rows=export_rows(st),
                          cases=[c for c in cases.list_cases(st) if c["recordings"]], case=case,
                          recordings=recordings, error=error, made=made, max_copies=MAX_COPIES,
                          may_export=has_role(signed.user, *EXPORT_ROLES), running=running)

    @app.post("/exports")
    def export_make(request: Request, csrf: str = Form(""), case_no: str = Form(""), recordings: str = Form(""),
                    maker: str = Form(""), extractor: str = Form(""), copies: str = Form("2"),
                    playable: str = Form(""), reason: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *EXPORT_ROLES, what="export recordings for the case file (S7)")
        refs = [r for r in _REFS.split(recordings.strip()) if r]
        try:
            n_copies = int(copies) if copies.strip().isdigit() else 0
            prep = prepare(st, signed.user, case_no=case_no.strip() or None, refs=refs, maker=maker,
                           extractor=extractor, copies=n_copies, want_playable=playable == "1",
                           reason=reason or None)
            job = web.exports.start(st, signed.user, prep, export_dir(st))
        except NotAllowed as exc:      # registered by the export (role or copy access)
            raise Refused("导出录像", f"{exc}。每段录像都需要本人已获批准的复制申请。") from None
        except StationError as exc:
            return RedirectResponse(f"/exports?error={quote(str(exc))}&case={quote(case_no)}"
                                    f"&recordings={quote(recordings)}", status_code=303)
        return RedirectResponse(f"/exports?job={job.id}", status_code=303)

    @app.get("/exports/{export_id}/{copy}.{fmt}")
    def export_download(request: Request, export_id: int, copy: int, fmt: str) -> Response:
        signed = web.who(request)
        web.need(signed, *EXPORT_ROLES, what=f"export:{export_id}")
        with st.db.session() as s:
            row = s.get(m.Export, export_id)
            directory = row.directory if row is not None else None
            copies = row.copies if row is not None else 0
        if directory is None or fmt not in archive.FORMATS or not 1 <= copy <= copies:
            return web.render(request, "not_found.html", 404, signed=signed, what=f"导出 {export_id} 的副本 {copy}")
        base = export_dir(st).resolve()
        path = Path(f"{directory}-{COPY_WORD}{copy}")
        where = path.parent.resolve()
        if where != base or path.is_symlink() or not path.resolve().is_relative_to(base):
            web.refuse(signed, f"export:{export_id}", "the package is not in the station's export directory",
                       "该导出包不在本站导出目录内，网页不提供下载")
        try:
            entries = archive.listing(path, path.name)
        except (archive.Unsafe, OSError) as exc:
            web.refuse(signed, f"export:{export_id}", f"unsafe package: {exc}",
                       f"导出包内容异常（{exc}），不提供下载；请核查导出目录")
        st.trail.event("export-download", actor=signed.user.username, subject=f"export:{export_id}", via="web",
                       copy=copy, format=fmt, files=sum(1 for e in entries if not e.is_dir),
                       bytes=sum(e.size for e in entries))
        stream = archive.tar_stream(entries) if fmt == "tar" else archive.zip_stream(entries)
        return StreamingResponse(stream, media_type=archive.FORMATS[fmt], headers={
            "Content-Disposition": attachment(f"{path.name}.{fmt}", f"export-{export_id}-{copy}.{fmt}")})
