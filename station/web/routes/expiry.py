"""Expiry (S11, 到期销毁) from the web: what is due, what is coming due, and the purge itself.

The staff see the recordings past retention and not held (what a purge would delete), those
past retention that are kept and why (a hold, an open case), and those whose retention ends
within the next days, so nothing expires unnoticed (the weekly list of upcoming deletions
that clerks know from other evidence systems). Purging is ``station.keeping.purge.purge``:
an administrator, the recordings ticked one by one, a reason and an explicit confirmation;
each recording one audited ``purge`` action with its files' hashes and a tombstone. The
daily timer only lists (deploy/station/station-purge.service); nothing expires by itself.
"""
from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from station.access.accounts import has_role
from station.app import Station
from station.clock import NS_PER_DAY
from station.db import models as m
from station.errors import NotAllowed, StationError
from station.keeping import purge
from station.keeping.retention import active_holds_many
from station.web.guard import STAFF, Refused, Web

UPCOMING_DAYS = 30          # the default look-ahead; ?days=N (1..3650) for another
UNFINISHED_CHECKED = 20     # the latest purges checked for files left behind (see purge.unfinished)
SHOWN = 200                 # rows shown per list, oldest first (the page says how many more there are)
_CHINESE_PART = re.compile(r"[^A-Za-z]+")


def _why_kept(text: str) -> str:
    """The Chinese half of ``purge.refusal``'s bilingual reason ("长期保存（封存）中 held: ...")."""
    found = _CHINESE_PART.match(text)
    return found.group(0).strip() if found else text


def expiry_rows(st: Station, days: int) -> dict[str, Any]:
    """due: may be purged now (with bytes); kept: past retention but refused (and why);
    upcoming: retention ends within ``days`` (held ones marked). Stored recordings only; each
    list shows at most ``SHOWN`` rows (``totals`` has the full counts)."""
    now = st.now_ns()
    rows: dict[str, Any] = {"due": [], "kept": [], "upcoming": [], "totals": {"due": 0, "kept": 0, "upcoming": 0}}
    window = (m.Recording.status == "stored", m.Recording.retention_end_ns.is_not(None),
              m.Recording.retention_end_ns <= now + days * NS_PER_DAY)
    with st.db.session() as s:
        # sizes: the segments' (one query over the window), not every attested file's: reading
        # each device journal for the exact list is `station purge list`'s job, not a page's
        sizes = {rec: int(total or 0) for rec, total in s.execute(
            select(m.Segment.recording, func.sum(m.Segment.size))
            .join(m.Recording, m.Recording.id == m.Segment.recording)
            .where(*window, m.Segment.present.is_(True)).group_by(m.Segment.recording))}
        q = select(m.Recording).where(*window).order_by(m.Recording.retention_end_ns, m.Recording.id)
        recs = list(s.scalars(q))
        holds = active_holds_many(s, [r.id for r in recs])
        # past retention: due unless purge.refusals says why not (the test of purge.candidates),
        # judged for all of them in a few queries
        refused = purge.refusals(st, s, [r for r in recs if (r.retention_end_ns or 0) <= now], now, holds)
        for rec in recs:
            end = rec.retention_end_ns
            assert end is not None                      # the window's condition
            why = refused.get(rec.id)
            kind = "upcoming" if end > now else "kept" if why else "due"
            rows["totals"][kind] += 1
            if len(rows[kind]) >= SHOWN:
                continue
            row = {"id": rec.id, "name": rec.name, "officer": rec.officer_id, "retention_end_ns": rec.retention_end_ns,
                   "held": bool(holds[rec.id])}
            if kind == "due":
                row["bytes"] = sizes.get(rec.id, 0)
            elif kind == "kept":
                row["why"] = _why_kept(why or "")
            rows[kind].append(row)
    rows["unfinished"] = len(purge.unfinished(st, latest=UNFINISHED_CHECKED))
    return rows


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    @app.get("/expiry", response_class=HTMLResponse)
    def expiry_list(request: Request, days: str = "", error: str = "", purged: str = "") -> Response:
        signed = web.who(request)
        web.need(signed, *STAFF, what="view recordings due for purge (S11)")
        n = int(days) if days.isdigit() and 1 <= int(days) <= 3650 else UPCOMING_DAYS
        return web.render(request, "expiry.html", signed=signed, days=n, error=error, purged=purged,
                          may_purge=has_role(signed.user, *purge.PURGE_ROLES), **expiry_rows(st, n))

    @app.post("/expiry/purge")
    def expiry_purge(request: Request, csrf: str = Form(""), recording: Annotated[list[str] | None, Form()] = None,
                     reason: str = Form(""), confirm: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, *purge.PURGE_ROLES, what="purge recordings (S11)")
        refs = [r.strip() for r in recording or [] if r.strip()]
        if not refs:
            return RedirectResponse(f"/expiry?error={quote('未选择录像：没有销毁任何录像')}", status_code=303)
        if confirm != "1":
            return RedirectResponse(f"/expiry?error={quote('未勾选确认：没有销毁任何录像')}", status_code=303)
        try:
            done = purge.purge(st, signed.user, refs, reason=reason)
        except NotAllowed as exc:
            raise Refused("销毁录像", str(exc)) from None
        except StationError as exc:
            return RedirectResponse(f"/expiry?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"/expiry?purged={','.join(str(o.recording) for o in done)}", status_code=303)
