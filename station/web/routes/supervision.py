"""The supervision dashboard (S10, D5, D6, D11, S2): charts, the figures, and the sign-off (签批).

Every figure is ``station.supervision.stats.compute`` (the ``station stats`` command's), drawn
server-side as inline SVG (``station.web.charts``); the sign-off forms call
``station.supervision.signoff.decide`` (who may decide is its rule). Officers see their own
figures only (``stats.scope_for``); the CSV and PDF are the command's (``supervision.report``).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from station.access.accounts import has_role
from station.app import Station
from station.cli.common import parse_time
from station.db import models as m
from station.errors import InvalidInput, NotAllowed, NotFound, StationError
from station.supervision import report, signoff, stats
from station.web import charts
from station.web.guard import STAFF, Refused, Web
from station.web.sessions import SignedIn

DEFAULT_WEEKS = 8
MAX_WEEKS = 26            # the per-week chart shows at most half a year


@dataclass(frozen=True)
class Query:
    """The dashboard's period (dates in the station's time zone) and officer, as asked."""

    date_from: str
    date_to: str
    officer: str
    period: stats.Period


def _query(st: Station, date_from: str, date_to: str, officer: str) -> Query:
    """``to`` is inclusive (a whole day); no ``from``: the last ``DEFAULT_WEEKS`` weeks, from a Monday."""
    tz = ZoneInfo(st.cfg.timezone)
    today = dt.datetime.fromtimestamp(st.now_ns() // 10**9, tz).date()
    date_from, date_to = date_from.strip(), date_to.strip()
    if not date_from:
        date_from = (today - dt.timedelta(days=today.weekday(), weeks=DEFAULT_WEEKS - 1)).isoformat()
    start = parse_time(date_from, st.cfg.timezone)
    end = None
    if date_to:
        try:
            end = parse_time((dt.date.fromisoformat(date_to) + dt.timedelta(days=1)).isoformat(), st.cfg.timezone)
        except ValueError:
            raise InvalidInput(f"截止日期须为 YYYY-MM-DD（收到 {date_to!r}）") from None
        if end <= start:
            raise InvalidInput("截止日期早于起始日期")
    return Query(date_from, date_to, officer.strip(), stats.Period(start, end))


def weeks(st: Station, period: stats.Period) -> list[str]:
    """The ISO weeks the period touches (to now when open), at most ``MAX_WEEKS`` (the latest)."""
    assert period.from_ns is not None
    end = period.to_ns if period.to_ns is not None else st.now_ns()
    out: list[str] = []
    t = period.from_ns
    while t < end and len(out) < 10 * MAX_WEEKS:
        w = stats.week_of(t, st.cfg.timezone)
        if not out or out[-1] != w:
            out.append(w)
        t += 24 * 3600 * 10**9
    last = stats.week_of(end - 1, st.cfg.timezone)
    if end > period.from_ns and (not out or out[-1] != last):
        out.append(last)
    return out[-MAX_WEEKS:]


def recorded_ms_by_officer_week(st: Station, period: stats.Period, officer: str | None) -> dict[tuple[str, str], int]:
    """Recorded time by (警号, ISO week) in one query: what ``stats.compute(by="week",
    officer=...)`` gives each officer (segment spans clipped to the period, each counted in the
    week of its start within the period), without one pass over the catalogue per officer."""
    q = (select(m.Recording.officer_id, m.Segment.start_wall_ns, m.Segment.end_wall_ns)
         .join(m.Recording, m.Recording.id == m.Segment.recording).where(m.Recording.officer_id.is_not(None)))
    if period.from_ns is not None:
        q = q.where(m.Segment.end_wall_ns > period.from_ns)
    if period.to_ns is not None:
        q = q.where(m.Segment.start_wall_ns < period.to_ns)
    if officer is not None:
        q = q.where(m.Recording.officer_id == officer)
    out: dict[tuple[str, str], int] = {}
    tz = st.cfg.timezone
    with st.db.session() as s:
        for officer_id, start, end in s.execute(q):
            part = period.overlap(start, end)
            if part:
                key = (str(officer_id), stats.week_of(max(start, period.from_ns or 0), tz))
                out[key] = out.get(key, 0) + part // 1_000_000
    return out


def chart_unit(top_ms: int) -> tuple[str, int]:
    """Hours, or minutes or seconds when every bar would round to nothing in hours."""
    if top_ms >= 3_600_000:
        return "小时", 3_600_000
    if top_ms >= 60_000:
        return "分钟", 60_000
    return "秒", 1000


def dashboard(st: Station, q: Query, officer: str | None) -> dict[str, Any]:
    """The figures by officer, each officer's hours per week, and the charts drawn from them."""
    by_officer = stats.compute(st, period=q.period, by="officer", officer=officer)
    cats = weeks(st, q.period)
    recorded = recorded_ms_by_officer_week(st, q.period, officer)
    per_officer = [(g.label, [recorded.get((g.key, c), 0) for c in cats])
                   for g in by_officer.groups if g.key]   # no officer number: no one to chart
    unit, per = chart_unit(max((v for _, ms in per_officer for v in ms), default=0))
    series = [(label, [round(v / per, 2) for v in ms]) for label, ms in per_officer]
    groups = by_officer.groups
    return {
        "stats": by_officer, "rows": list(stats.rows_for(by_officer)), "columns": stats.columns_for("officer"),
        "hours_chart": charts.grouped_bars("chart-hours", f"每周录制时长（{unit}，按执法人员）", cats, series,
                                           f" {unit}"),
        "late_chart": charts.bar_chart("chart-late", "逾期入库（班次结束后超过 24 小时）",
                                       [(g.label, g.late_dockings) for g in groups], " 次"),
        "overdue_chart": charts.bar_chart("chart-overdue", "标注逾期（入库后超过 48 小时未标注）",
                                          [(g.label, g.labels_overdue) for g in groups], " 条"),
        "missing_chart": charts.bar_chart("chart-missing", "中断原因未说明（D5）",
                                          [(g.label, g.reasons_missing) for g in groups], " 次"),
    }


def register(app: FastAPI, web: Web) -> None:
    st = web.st

    def scope(signed: SignedIn, officer: str) -> str | None:
        web.need(signed, "officer", *STAFF, what="view the supervision dashboard")
        try:
            return stats.scope_for(st, signed.user, officer or None, "see the statistics of use")
        except NotAllowed as exc:          # audited by scope_for
            raise Refused("查看其他执法人员的统计", str(exc)) from None

    def show(request: Request, signed: SignedIn, date_from: str = "", date_to: str = "", officer: str = "",
             error: str = "", status: int = 200) -> Response:
        who = scope(signed, officer)
        see_all = has_role(signed.user, *stats.SEE_ALL)
        try:
            q = _query(st, date_from, date_to, officer)
            data = dashboard(st, q, who)
        except StationError as exc:
            return web.render(request, "supervision.html", 400, signed=signed, error=str(exc),
                              q=Query(date_from, date_to, officer, stats.Period()), data=None, items=[],
                              may_sign=False, see_all=see_all)
        items = signoff.list_items(st, signed.user, pending_only=True, officer=who)
        return web.render(request, "supervision.html", status, signed=signed, q=q, data=data, items=items,
                          error=error, may_sign=has_role(signed.user, "approver"), as_of=st.now_ns(),
                          see_all=see_all)

    @app.get("/supervision", response_class=HTMLResponse)
    def supervision(request: Request, date_from: str = "", date_to: str = "", officer: str = "") -> Response:
        return show(request, web.who(request), date_from, date_to, officer)

    def figures(signed: SignedIn, date_from: str, date_to: str,
                officer: str) -> tuple[str | None, stats.Stats | Response]:
        """The scope and the per-officer figures a download holds, or the 400 answer to bad input."""
        who = scope(signed, officer)
        try:
            return who, stats.compute(st, period=_query(st, date_from, date_to, officer).period, by="officer",
                                      officer=who)
        except StationError as exc:
            return who, Response(str(exc), status_code=400, media_type="text/plain; charset=utf-8")

    @app.get("/supervision.csv")
    def supervision_csv(request: Request, date_from: str = "", date_to: str = "", officer: str = "") -> Response:
        _, s = figures(web.who(request), date_from, date_to, officer)
        if isinstance(s, Response):
            return s
        return Response(report.stats_csv(s), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="stats.csv"'})

    @app.get("/supervision.pdf")
    def supervision_pdf(request: Request, date_from: str = "", date_to: str = "", officer: str = "") -> Response:
        signed = web.who(request)
        who, s = figures(signed, date_from, date_to, officer)
        if isinstance(s, Response):
            return s
        pending = [p for p in signoff.list_items(st, signed.user, pending_only=True, officer=who)
                   if s.period.holds(p["wall_ns"])]
        data = report.stats_pdf(st, s, made_by=signed.user.display_name or signed.user.username, pending=pending)
        return Response(data, media_type="application/pdf",
                        headers={"Content-Disposition": 'attachment; filename="stats.pdf"'})

    @app.post("/supervision/signoff/{item}")
    def sign_off(request: Request, item: int, csrf: str = Form(""), decision: str = Form(""),
                 note: str = Form("")) -> Response:
        signed = web.who(request)
        web.check_csrf(signed, csrf)
        web.need(signed, "approver", what=f"sign off item {item}")
        try:
            signoff.decide(st, signed.user, item, decision, note)
        except NotAllowed as exc:          # own item, not the officer's supervisor: audited by decide
            raise Refused(f"签批事项 {item}", str(exc)) from None
        except StationError as exc:        # no note, already decided, no such item: nothing changed
            return show(request, signed, error=f"事项 {item} 未能签批：{exc}",
                        status=404 if isinstance(exc, NotFound) else 400 if isinstance(exc, InvalidInput) else 409)
        return RedirectResponse("/supervision#signoff", status_code=303)
