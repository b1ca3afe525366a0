"""What the recording page shows beyond its facts: the segment timeline, the time quality, the
voice notes (and the one route that plays a voice note).

``register`` gives the templates ``timeline_svg(rec, segs, stops)`` (the segments in order
over wall-clock time, gaps and interruptions with their reasons marked; see
``station.web.charts.timeline``), ``QUALITY_ZH`` (what each stamp time quality means, from
docs/evidence-format.md's ``time_quality``), the Chinese of interruption kinds and causes, and
``voice_notes_of(rec, stops)`` (``station.web.voice_notes``); and serves
``/recordings/{id}/notes/{note_id}.aac`` inside an open playback of that recording.
"""
from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import Response
from markupsafe import Markup

from station.db import models as m
from station.errors import NotAllowed, NotFound, StationError
from station.supervision.stats import cause_zh
from station.web import charts, voice_notes
from station.web.guard import Web

# (short name, what it means for the burned-in time and the journal's times)
QUALITY_ZH = {
    "GPS": ("卫星授时", "时钟已由卫星定位校准，时间可信（误差通常在毫秒级）"),
    "NTP": ("网络校时", "时钟已由网络时间服务器校准，时间可信"),
    "RTC": ("设备时钟", "仅依设备内部时钟，自上次校准以来可能有漂移，时间须结合其他证据判断"),
    "UNSYNCED": ("未校时", "设备时钟从未校准，画面和日志中的时间不可作准，只可确定先后顺序"),
}
KIND_ZH = {"interruption": "中断", "reason-given": "说明中断原因", "reason-missing": "中断原因未说明",
           "not-recording": "不录像说明", "reason-pending": "待说明原因"}


def register(app: FastAPI, web: Web) -> None:
    st = web.st
    fmt = web.templates.env.filters["iso"]

    def timeline_svg(rec: m.Recording, segs: Sequence[m.Segment], stops: Sequence[m.Interruption]) -> Markup:
        spans = [charts.Span(g.index, g.start_wall_ns, g.end_wall_ns, g.time_quality, g.present) for g in segs]
        # this recording's own records, and any other within its span (the table lists the hour around)
        start, end = rec.start_wall_ns or 0, rec.end_wall_ns or rec.start_wall_ns or 0
        marks = [charts.Mark(i.wall_ns, KIND_ZH.get(i.kind, i.kind), cause_zh(i.cause), i.reason) for i in stops
                 if i.recording_id == rec.recording_id or start <= i.wall_ns <= end]
        return charts.timeline(spans, marks, lambda ns: str(fmt(ns)))

    web.templates.env.globals.update(timeline_svg=timeline_svg, QUALITY_ZH=QUALITY_ZH, STOP_KIND_ZH=KIND_ZH,
                                     cause_zh=cause_zh,
                                     voice_notes_of=lambda rec, stops: voice_notes.notes_of(st, rec, stops))

    @app.get("/recordings/{rec_id}/notes/{note_id}.aac")
    def voice_note(request: Request, rec_id: int, note_id: str) -> Response:
        signed = web.who(request)
        try:
            web.playbacks.get(st, signed.token_sha256, rec_id)     # viewing was allowed and audited
        except NotAllowed as exc:
            return web.refuse_fetch(signed, f"recording:{rec_id}", str(exc))
        with st.db.session() as s:
            rec = s.get(m.Recording, rec_id)
            stops = voice_notes.stops_near(s, rec) if rec is not None else []
        found = [n for n in voice_notes.notes_of(st, rec, stops) if n.note_id == note_id] if rec else []
        if rec is None or not found:
            return Response(f"录像 {rec_id} 没有语音说明 {note_id}", status_code=404,
                            media_type="text/plain; charset=utf-8")
        try:
            data = voice_notes.note_bytes(st, signed.user, rec, found[0])
        except NotFound as exc:
            return Response(str(exc), status_code=404, media_type="text/plain; charset=utf-8")
        except StationError as exc:          # not what the device journal attests: alert raised
            return Response(str(exc), status_code=409, media_type="text/plain; charset=utf-8")
        return Response(data, media_type="audio/aac")
