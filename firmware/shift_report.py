"""``bodycam report``: a shift at a glance, from the signed journal alone.

Reads an evidence directory (``journal.log`` and the files it attests), verifies it with the
device's public key, and draws a timeline picture (plain SVG text, no drawing library) with
one lane per kind: device states, recordings, segments, interruptions and the reasons given
or missing for them, events (marks, voice notes, self-checks, boots), battery, storage, time
quality and dockings, over wall time. Beside the picture, a summary of what the journal
proves (verification verdict, records, recordings, segments, interruptions and their
reasons, time quality...), as text or JSON.

It reads nothing but the evidence format (``recorder.journal``/``records``/``verify``) and
``common``: a report can be made anywhere the evidence can be verified, device or desk.

    bodycam report EVIDENCE_DIR --pubkey device-key.pub.pem --out report.svg [--json]

Every drawn element carries the journal figures it stands for as ``data-*`` attributes
(``data-start-ns``/``data-end-ns`` in wall ns, ``data-seq``...), so a test or a script can
check the picture against the journal.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from recorder.journal import iter_records
from recorder.records import Record
from recorder.verify import verify_directory


def escape(text: str) -> str:
    """xml.sax.saxutils.escape, imported when a report is drawn: the module pulls in urllib,
    http, email and ssl (about 4 MB), which every ``bodycam`` command would carry otherwise
    (the recorder included: the command line builds every subcommand's parser)."""
    from xml.sax.saxutils import escape as sax_escape
    return sax_escape(text)


def quoteattr(text: str) -> str:
    """xml.sax.saxutils.quoteattr, imported late (see escape)."""
    from xml.sax.saxutils import quoteattr as sax_quoteattr
    return sax_quoteattr(text)

NS = 1_000_000_000

_P = TypeVar("_P", bound=argparse.ArgumentParser)

STATE_COLOURS = {"recording": "#d62728", "ready": "#2ca02c", "paused": "#ff7f0e", "self-check": "#9467bd",
                 "interrupted": "#8c564b", "docked": "#1f77b4", "off": "#7f7f7f"}
QUALITY_COLOURS = {"GPS": "#2ca02c", "NTP": "#1f77b4", "RTC": "#ffbf00", "UNSYNCED": "#d62728"}


# ---------------------------------------------------------------------------------------------
# What the journal says, as plain facts

@dataclass
class Span:
    kind: str
    start_ns: int
    end_ns: int
    label: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Owed:
    """A reason the device asked for (``reason-pending``) and what became of it."""
    cause: str
    at_ns: int          # wall ns of the reason-pending record
    seq: int
    status: str = "open"           # given / missing / open
    reason: str | None = None      # the reason given (its English name)
    answered_ns: int | None = None
    answered_seq: int | None = None


@dataclass
class Shift:
    records: list[Record]
    states: list[Span]
    recordings: list[Span]
    segments: list[Span]
    owed: list[Owed]
    interruptions: list[Record]
    not_recording: list[Record]
    events: list[Record]
    battery: list[tuple[int, int, int]]        # (wall ns, permille, seq)
    storage: list[tuple[int, int, int]]        # (wall ns, free bytes, seq)
    quality: list[Span]
    dockings: list[Span]
    boots: list[Record]
    start_ns: int
    end_ns: int


def _wall(rec: Record) -> int:
    return int(rec.message["wall_ns"])


def _reason_name(payload: dict[str, Any]) -> str:
    reason = payload.get("reason")
    if isinstance(reason, dict):
        return str(reason.get("en") or reason.get("code") or "?")
    return str(reason) if reason is not None else "?"


def _permille(payload: dict[str, Any]) -> int | None:
    if isinstance(payload.get("permille"), int):
        return int(payload["permille"])
    if isinstance(payload.get("percent"), (int, float)):   # v1 records
        return int(round(payload["percent"] * 10))
    return None


def read_shift(records: list[Record]) -> Shift:
    """Turn journal records into timeline facts (no check of signatures here)."""
    if not records:
        return Shift(records, [], [], [], [], [], [], [], [], [], [], [], [], 0, 1)
    states: list[Span] = []
    recordings: dict[str, Span] = {}
    segments: list[Span] = []
    owed: list[Owed] = []
    battery: list[tuple[int, int, int]] = []
    storage: list[tuple[int, int, int]] = []
    quality: list[Span] = []
    dockings: list[Span] = []
    open_state: Span | None = None
    open_dock: Span | None = None
    last_ns = _wall(records[0])
    end = max(_wall(r) for r in records)
    for rec in records:
        p, t, seq = rec.payload, _wall(rec), rec.seq
        tq = str(rec.message["time_quality"])
        err = rec.message["time_error_ns"]
        if quality and quality[-1].label == tq:
            quality[-1].end_ns = t
            if isinstance(err, int):
                quality[-1].attrs["max_error_ns"] = max(quality[-1].attrs.get("max_error_ns") or 0, err)
        else:
            if quality:
                quality[-1].end_ns = t
            quality.append(Span("time-quality", t, t, tq, {"max_error_ns": err if isinstance(err, int) else None}))
        if rec.type == "boot" and open_state is not None:   # a session ended without a state record:
            open_state.end_ns = last_ns                       # nothing is known after its last record
            open_state = None
        last_ns = t
        if rec.type == "state":
            if open_state is not None:
                open_state.end_ns = t
            to = str(p.get("to", "?"))
            open_state = Span("state", t, t, to, {"seq": seq, "cause": p.get("cause")})
            states.append(open_state)
            if to == "docked" and open_dock is None:
                open_dock = Span("docked", t, t, "docked", {"seq": seq})
                dockings.append(open_dock)
            elif to != "docked" and open_dock is not None:
                open_dock.end_ns = t
                open_dock = None
        elif rec.type == "recording-start":
            rid = str(p.get("recording_id"))
            # pre-buffered segments may be journaled before their recording-start record
            span = recordings.setdefault(rid, Span("recording", t, t, rid, {"segments": 0, "stop_record_ns": None,
                                                                            "stop_cause": None}))
            span.attrs.update(start_record_ns=t, how=p.get("how"), seq=seq)
        elif rec.type == "recording-stop":
            rid = str(p.get("recording_id"))
            span = recordings.setdefault(rid, Span("recording", t, t, rid, {"segments": 0, "seq": seq}))
            span.attrs["stop_record_ns"] = t
            span.attrs["stop_cause"] = p.get("cause")
        elif rec.type == "segment":
            rid = str(p.get("recording_id"))
            ws = p.get("wall_start") or {}
            we = p.get("wall_end") or {}
            s_ns = int(ws.get("wall_ns", t))
            e_ns = int(we.get("wall_ns", t))
            segments.append(Span("segment", s_ns, e_ns, str(p.get("path")),
                                 {"recording_id": rid, "index": p.get("index"), "seq": seq,
                                  "final": bool(p.get("final")), "recovered": bool(p.get("recovered"))}))
            span = recordings.setdefault(rid, Span("recording", s_ns, e_ns, rid,
                                                   {"segments": 0, "start_record_ns": None,
                                                    "stop_record_ns": None, "seq": seq}))
            span.attrs["segments"] += 1
        elif rec.type == "reason-pending":
            owed.append(Owed(str(p.get("cause", "?")), t, seq))
        elif rec.type in ("reason-given", "reason-missing"):
            cause = str(p.get("cause", "?"))
            match = next((o for o in owed if o.status == "open" and o.cause == cause), None)
            if match is None:   # an answer to a reason owed before this journal's start
                match = Owed(cause, t, seq)
                owed.append(match)
            match.status = "given" if rec.type == "reason-given" else "missing"
            match.reason = _reason_name(p) if rec.type == "reason-given" else None
            match.answered_ns, match.answered_seq = t, seq
        if rec.type in ("battery-low", "battery-critical", "state"):
            pm = _permille(p)
            if pm is not None:
                battery.append((t, pm, seq))
        if rec.type == "self-check":
            for item in p.get("items") or []:
                measured = item.get("measured") or {}
                if item.get("name") == "battery":
                    pm = _permille(measured)
                    if pm is not None:
                        battery.append((t, pm, seq))
                if item.get("name") == "storage" and isinstance(measured.get("free_bytes"), int):
                    storage.append((t, measured["free_bytes"], seq))
        if rec.type.startswith("storage") and isinstance(p.get("free_bytes"), int):
            storage.append((t, p["free_bytes"], seq))
    if open_state is not None:
        open_state.end_ns = end
    if open_dock is not None:
        open_dock.end_ns = end
    if quality:
        quality[-1].end_ns = end
    # a recording covers its media: from its first segment's first frame to its last's end
    by_rec: dict[str, list[Span]] = {}
    for seg in segments:
        by_rec.setdefault(seg.attrs["recording_id"], []).append(seg)
    for rid, span in recordings.items():
        segs = by_rec.get(rid, [])
        if segs:
            span.start_ns = min(s.start_ns for s in segs)
            span.end_ns = max(s.end_ns for s in segs)
        else:
            span.start_ns = span.attrs.get("start_record_ns") or span.start_ns
            span.end_ns = span.attrs.get("stop_record_ns") or span.start_ns
    start = min([_wall(records[0])] + [s.start_ns for s in segments])
    end = max([end] + [s.end_ns for s in segments])
    return Shift(
        records=records, states=states, recordings=list(recordings.values()), segments=segments,
        owed=owed, interruptions=[r for r in records if r.type == "interruption"],
        not_recording=[r for r in records if r.type == "not-recording"],
        events=[r for r in records if r.type in ("mark", "voice-note", "self-check", "clock-step",
                                                 "pause-requested", "tamper-attempt")],
        battery=battery, storage=storage, quality=quality, dockings=dockings,
        boots=[r for r in records if r.type == "boot"], start_ns=start, end_ns=max(end, start + 1))


# ---------------------------------------------------------------------------------------------
# The summary: what the journal proves

def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _hms(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, timezone.utc).strftime("%H:%M:%S")


def summarise(root: Path, public_key_pem: bytes) -> tuple[dict[str, Any], Shift]:
    result = verify_directory(root, public_key_pem)
    journal = Path(root) / "journal.log"
    records = list(iter_records(journal)) if journal.exists() else []
    shift = read_shift(records)
    types = Counter(r.type for r in records)
    rec_ns = sum(s.end_ns - s.start_ns for s in shift.segments)
    qualities = Counter(str(r.message["time_quality"]) for r in records)
    errors = [r.message["time_error_ns"] for r in records if isinstance(r.message["time_error_ns"], int)]
    boots = [{"seq": b.seq, "at": _iso(_wall(b)),
              "previous_session": (b.payload.get("previous_session") or {}).get("ended")} for b in shift.boots]
    summary: dict[str, Any] = {
        "evidence": str(root),
        "verification": {"ok": result.ok, "failure": None if result.failure is None else str(result.failure),
                         "file_failures": [str(f) for f in result.file_failures],
                         "records": result.records, "files": result.files,
                         "head": None if result.head is None else f"{result.head[0]}:{result.head[1]}"},
        "device": records[0].device if records else result.device_id,
        "span": {"first": _iso(shift.start_ns) if records else None,
                 "last": _iso(shift.end_ns) if records else None,
                 "seconds": (shift.end_ns - shift.start_ns) // NS if records else 0},
        "sessions": len({r.message["session"] for r in records}),
        "boots": boots,
        "abnormal_restarts": sum(1 for b in boots if b["previous_session"] == "abnormally"),
        "records": len(records),
        "record_types": dict(sorted(types.items())),
        "recordings": [{"id": s.label, "start": _iso(s.start_ns), "end": _iso(s.end_ns),
                        "seconds": (s.end_ns - s.start_ns) // NS, "segments": s.attrs["segments"],
                        "how": s.attrs.get("how"), "stop_cause": s.attrs.get("stop_cause")}
                       for s in shift.recordings],
        "segments": len(shift.segments),
        "recovered_segments": sum(1 for s in shift.segments if s.attrs["recovered"]),
        "recorded_seconds": rec_ns // NS,
        "interruptions": [{"seq": r.seq, "at": _iso(_wall(r)), "cause": r.payload.get("cause"),
                           "recording_id": r.payload.get("recording_id")} for r in shift.interruptions],
        "reasons_owed": [{"seq": o.seq, "at": _iso(o.at_ns), "cause": o.cause, "status": o.status,
                          "reason": o.reason, "answered_seq": o.answered_seq} for o in shift.owed],
        "reasons": {"owed": len(shift.owed), "given": sum(o.status == "given" for o in shift.owed),
                    "missing": sum(o.status == "missing" for o in shift.owed),
                    "open": sum(o.status == "open" for o in shift.owed)},
        "not_recording": [{"seq": r.seq, "at": _iso(_wall(r)), "reason": _reason_name(r.payload)}
                          for r in shift.not_recording],
        "time_quality": {"records": dict(sorted(qualities.items())),
                         "clock_steps": types.get("clock-step", 0),
                         "max_error_ns": max(errors) if errors else None},
        "battery_min_permille": min((b[1] for b in shift.battery), default=None),
        "storage_min_free_bytes": min((s[1] for s in shift.storage), default=None),
        "dockings": len(shift.dockings),
        "dock_records": sum(n for t, n in types.items() if t.startswith("dock-")),
        "purges": types.get("purge", 0),
        "marks": types.get("mark", 0),
        "voice_notes": types.get("voice-note", 0),
        "self_checks": {"go": sum(1 for r in records if r.type == "self-check" and r.payload.get("go")),
                        "no_go": sum(1 for r in records if r.type == "self-check" and not r.payload.get("go"))},
    }
    return summary, shift


def summary_text(s: dict[str, Any]) -> str:
    v = s["verification"]
    verdict = "PASS" if v["ok"] else f"FAIL {v['failure'] or '; '.join(v['file_failures'])}"
    lines = [f"evidence {s['evidence']}  device {s['device']}",
             f"verification: {verdict} ({v['records']} records, {v['files']} files; head {v['head']})",
             (f"span: {s['span']['first']} .. {s['span']['last']} ({s['span']['seconds']} s), "
              f"{s['sessions']} session(s), {s['abnormal_restarts']} abnormal restart(s)") if s["records"]
             else "span: empty journal",
             f"records: {s['records']}  " + ", ".join(f"{t} {n}" for t, n in s["record_types"].items()),
             f"recordings: {len(s['recordings'])}, segments: {s['segments']} "
             f"({s['recovered_segments']} recovered), recorded {s['recorded_seconds']} s"]
    for r in s["recordings"]:
        lines.append(f"  {r['id']}  {r['start'][11:19]}..{r['end'][11:19]}  {r['seconds']:>5} s  "
                     f"{r['segments']:>3} segments  started {r['how']}, "
                     + (f"stopped {r['stop_cause']}" if r["stop_cause"] else "NO STOP RECORD (session ended)"))
    lines.append(f"interruptions: {len(s['interruptions'])}; reasons owed {s['reasons']['owed']}: "
                 f"given {s['reasons']['given']}, missing {s['reasons']['missing']}, open {s['reasons']['open']}")
    for o in s["reasons_owed"]:
        answer = f"given: {o['reason']}" if o["status"] == "given" else o["status"].upper()
        lines.append(f"  {o['at'][11:19]}  {o['cause']}  -> {answer}")
    for n in s["not_recording"]:
        lines.append(f"  {n['at'][11:19]}  not recording: {n['reason']}")
    tq = s["time_quality"]
    lines.append("time quality: " + ", ".join(f"{q} {n}" for q, n in tq["records"].items())
                 + f"; clock steps {tq['clock_steps']}; max error "
                 + ("unknown" if tq["max_error_ns"] is None else f"{tq['max_error_ns'] / 1e6:.1f} ms"))
    bat = s["battery_min_permille"]
    sto = s["storage_min_free_bytes"]
    lines.append(f"battery min: {'-' if bat is None else f'{bat / 10:.0f} %'}; storage min free: "
                 f"{'-' if sto is None else f'{sto / 1e9:.2f} GB'}; dockings {s['dockings']} "
                 f"(dock records {s['dock_records']}, purges {s['purges']}); marks {s['marks']}; "
                 f"voice notes {s['voice_notes']}; self-checks go {s['self_checks']['go']} "
                 f"no-go {s['self_checks']['no_go']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The picture

WIDTH, LEFT, RIGHT, TOP = 1500, 170, 30, 60
LANES = [("states", "device state", 34), ("recordings", "recordings", 34), ("segments", "segments", 24),
         ("interruptions", "interruptions / reasons", 70), ("events", "marks, notes, checks", 30),
         ("battery", "battery %", 60), ("storage", "storage free", 50), ("time-quality", "time quality", 28),
         ("docking", "docking", 28)]
LANE_GAP = 10


def _a(**attrs: Any) -> str:
    return "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items()
                   if v is not None)


class _Canvas:
    def __init__(self, shift: Shift) -> None:
        self.s = shift
        self.plot_w = WIDTH - LEFT - RIGHT
        self.out: list[str] = []

    def x(self, ns: int) -> float:
        return round(LEFT + (ns - self.s.start_ns) * self.plot_w / (self.s.end_ns - self.s.start_ns), 2)

    def add(self, text: str) -> None:
        self.out.append(text)

    def rect(self, x0: float, y: float, w: float, h: float, fill: str, title: str = "", **data: Any) -> None:
        t = f"<title>{escape(title)}</title>" if title else ""
        self.add(f"<rect{_a(x=x0, y=y, width=max(w, 1.0), height=h, fill=fill, **data)}>{t}</rect>")

    def text(self, x0: float, y: float, s: str, size: int = 10, anchor: str = "start", fill: str = "#222",
             **data: Any) -> None:
        self.add(f"<text{_a(x=x0, y=y, font_size=size, text_anchor=anchor, fill=fill, **data)}>"
                 f"{escape(s)}</text>")


def _wrap(line: str, width: int) -> list[str]:
    """Long summary lines broken after a comma, the rest indented."""
    parts: list[str] = []
    while len(line) > width:
        cut = line.rfind(", ", 0, width)
        if cut <= 0:
            break
        parts.append(line[:cut + 1])
        line = "    " + line[cut + 2:]
    return parts + [line]


def _tick_step(span_s: float) -> int:
    for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600):
        if span_s / step <= 14:
            return step
    return 43200


def render_svg(shift: Shift, summary: dict[str, Any]) -> str:
    c = _Canvas(shift)
    lanes: dict[str, tuple[float, float]] = {}
    y = TOP
    for key, _, h in LANES:
        lanes[key] = (y, h)
        y += h + LANE_GAP
    chart_bottom = y
    summary_lines = [part for line in summary_text(summary).splitlines() for part in _wrap(line, 190)]
    height = int(chart_bottom + 76 + 15 * len(summary_lines) + 10)
    ns_per_px = (shift.end_ns - shift.start_ns) / c.plot_w
    c.add(f'<svg xmlns="http://www.w3.org/2000/svg"{_a(width=WIDTH, height=height)}'
          f'{_a(viewBox=f"0 0 {WIDTH} {height}")}'
          f'{_a(data_start_ns=shift.start_ns, data_end_ns=shift.end_ns, data_left=LEFT, data_plot_width=c.plot_w)}'
          ' font-family="DejaVu Sans, Arial, sans-serif">')
    c.add(f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    v = summary["verification"]
    verdict = "journal verified" if v["ok"] else f"VERIFICATION FAILED: {v['failure']}"
    c.text(LEFT, 24, f"Shift report - device {summary['device']} - {summary['span']['first'] or 'empty journal'}",
           size=16, id="title")
    c.text(LEFT, 44, f"{verdict} ({v['records']} records, {v['files']} files)", size=12,
           fill="#2ca02c" if v["ok"] else "#d62728", id="verdict")
    # lanes: background, label; time grid
    for key, label, h in LANES:
        ly, _ = lanes[key]
        c.add(f'<g{_a(id=f"lane-{key}", class_="lane", data_kind=key)}>')
        c.rect(LEFT, ly, c.plot_w, h, "#f4f4f4", class_="lane-bg")
        c.text(LEFT - 8, ly + h / 2 + 4, label, size=11, anchor="end", class_="lane-label")
        c.add("</g>")
    step = _tick_step((shift.end_ns - shift.start_ns) / NS)
    first_tick = -(-shift.start_ns // (step * NS)) * step * NS
    c.add('<g id="grid">')
    t = first_tick
    while t <= shift.end_ns:
        x = c.x(t)
        c.add(f'<line{_a(x1=x, y1=TOP - 4, x2=x, y2=chart_bottom - LANE_GAP, stroke="#cccccc")}'
              ' stroke-width="0.5"/>')
        c.text(x, chart_bottom + 6, _hms(t), size=10, anchor="middle", class_="tick")
        t += step * NS
    c.text(LEFT + c.plot_w, chart_bottom + 20, "wall time (UTC, as journaled)", size=10, anchor="end")
    c.add("</g>")
    # boots: a dashed line across every lane
    for b in shift.boots:
        ended = (b.payload.get("previous_session") or {}).get("ended")
        colour = "#d62728" if ended == "abnormally" else "#555555"
        x = c.x(_wall(b))
        c.add(f'<line{_a(x1=x, y1=TOP - 6, x2=x, y2=chart_bottom - LANE_GAP, stroke=colour, class_="boot")}'
              f'{_a(data_seq=b.seq, data_previous=ended)} stroke-dasharray="4 3"/>')
        c.text(x + 2, TOP - 8, "boot" + (" after power loss" if ended == "abnormally" else ""), size=9,
               fill=colour)
    _draw_states(c, lanes["states"])
    _draw_recordings(c, lanes["recordings"], lanes["segments"])
    _draw_interruptions(c, lanes["interruptions"])
    _draw_events(c, lanes["events"])
    _draw_levels(c, lanes["battery"], [(t, v, s) for t, v, s in shift.battery], 1000, "battery", "#e377c2",
                 lambda v: f"{v / 10:.0f}%")
    _draw_levels(c, lanes["storage"], shift.storage, max([s[1] for s in shift.storage], default=1), "storage",
                 "#17becf", lambda v: f"{v / 1e9:.1f} GB")
    _draw_quality(c, lanes["time-quality"])
    _draw_docking(c, lanes["docking"])
    if not v["ok"]:   # what is drawn is only what the journal claims
        c.text(LEFT + c.plot_w / 2, (TOP + chart_bottom) / 2, "NOT VERIFIED - content unproven", size=48,
               anchor="middle", fill="#d62728", fill_opacity="0.25", id="not-verified")
    # legend of states
    lx = LEFT
    for state, colour in STATE_COLOURS.items():
        c.rect(lx, chart_bottom + 26, 10, 10, colour, class_="legend")
        c.text(lx + 14, chart_bottom + 35, state, size=10)
        lx += 24 + 7 * len(state)
    for q, colour in QUALITY_COLOURS.items():
        c.rect(lx, chart_bottom + 26, 10, 10, colour, class_="legend")
        c.text(lx + 14, chart_bottom + 35, q, size=10)
        lx += 24 + 7 * len(q)
    lx = LEFT
    for glyph_type, (colour, glyph) in _EVENT_GLYPHS.items():
        c.add(f'<circle{_a(cx=lx + 5, cy=chart_bottom + 47, r=6, fill=colour)}/>')
        c.text(lx + 5, chart_bottom + 50, glyph, size=8, anchor="middle", fill="#ffffff")
        c.text(lx + 14, chart_bottom + 51, glyph_type, size=10)
        lx += 24 + 7 * len(glyph_type)
    c.add(f'<line{_a(x1=lx + 4, y1=chart_bottom + 40, x2=lx + 4, y2=chart_bottom + 54, stroke="#222222")}'
          ' stroke-width="1.5"/>')
    c.text(lx + 10, chart_bottom + 51, "recording-start record (media before it: pre-buffer)", size=10)
    lx += 330
    c.add(f'<path{_a(d=f"M{lx},{chart_bottom + 42} L{lx + 10},{chart_bottom + 42} L{lx + 5},{chart_bottom + 51} Z")}'
          ' fill="#d62728"/>')
    c.text(lx + 14, chart_bottom + 51, "interruption record", size=10)
    lx += 130
    c.text(lx, chart_bottom + 51, "battery/storage: dots are journaled readings", size=10)
    # the summary under the chart
    c.add('<g id="summary" font-family="DejaVu Sans Mono, monospace" xml:space="preserve">')
    for i, line in enumerate(summary_lines):
        c.text(20, chart_bottom + 76 + 15 * i, line, size=11, class_="summary-line")
    c.add("</g>")
    c.add(f"<!-- ns per px: {ns_per_px:.0f} -->")
    c.add("</svg>")
    return "\n".join(c.out) + "\n"


def _draw_states(c: _Canvas, lane: tuple[float, float]) -> None:
    y, h = lane
    for s in c.s.states:
        x0, x1 = c.x(s.start_ns), c.x(s.end_ns)
        colour = STATE_COLOURS.get(s.label, "#bbbbbb")
        c.rect(x0, y + 3, x1 - x0, h - 6, colour, f"{s.label} {_hms(s.start_ns)}-{_hms(s.end_ns)} ({s.attrs['cause']})",
               class_="state", data_state=s.label, data_start_ns=s.start_ns, data_end_ns=s.end_ns,
               data_seq=s.attrs["seq"])
        if x1 - x0 > 7 * len(s.label) + 6:
            c.text((x0 + x1) / 2, y + h / 2 + 4, s.label, size=10, anchor="middle", fill="#ffffff")


def _draw_recordings(c: _Canvas, lane: tuple[float, float], seg_lane: tuple[float, float]) -> None:
    y, h = lane
    for r in c.s.recordings:
        x0, x1 = c.x(r.start_ns), c.x(r.end_ns)
        title = (f"{r.label}: {_hms(r.start_ns)}-{_hms(r.end_ns)}, {r.attrs['segments']} segments, "
                 f"started {r.attrs.get('how')}, stopped {r.attrs.get('stop_cause')}")
        c.rect(x0, y + 4, x1 - x0, h - 8, "#d62728", title, class_="recording", data_recording_id=r.label,
               data_start_ns=r.start_ns, data_end_ns=r.end_ns, data_segments=r.attrs["segments"],
               data_stop_cause=r.attrs.get("stop_cause"), fill_opacity="0.85")
        start_rec = r.attrs.get("start_record_ns")
        if start_rec is not None and start_rec > r.start_ns:   # the button press; before it: pre-buffer
            xs = c.x(start_rec)
            c.add(f'<line{_a(x1=xs, y1=y + 1, x2=xs, y2=y + h - 1, stroke="#222222", class_="recording-start")}'
                  ' stroke-width="1.5"/>')
        label = f"{(r.end_ns - r.start_ns) // NS} s"
        if x1 - x0 > 7 * len(label) + 4:
            c.text((x0 + x1) / 2, y + h / 2 + 4, label, size=10, anchor="middle", fill="#ffffff")
    sy, sh = seg_lane
    for s in c.s.segments:
        x0, x1 = c.x(s.start_ns), c.x(s.end_ns)
        colour = "#ff9896" if s.attrs["index"] % 2 else "#c0392b"
        if s.attrs["recovered"]:
            colour = "#8c564b"
        c.rect(x0, sy + 3, x1 - x0, sh - 6, colour, f"{s.label} ({_hms(s.start_ns)}-{_hms(s.end_ns)})",
               class_="segment", data_path=s.label, data_recording_id=s.attrs["recording_id"],
               data_index=s.attrs["index"], data_start_ns=s.start_ns, data_end_ns=s.end_ns, data_seq=s.attrs["seq"])


class _Rows:
    """Label rows that do not overlap: each label takes the first row free at its x."""

    def __init__(self, n: int) -> None:
        self.ends = [-1e9] * n

    def take(self, x0: float, width: float) -> int:
        for i, end in enumerate(self.ends):
            if x0 >= end + 4:
                self.ends[i] = x0 + width
                return i
        i = min(range(len(self.ends)), key=lambda k: self.ends[k])
        self.ends[i] = x0 + width
        return i


def _draw_interruptions(c: _Canvas, lane: tuple[float, float]) -> None:
    y, h = lane
    rows = _Rows(3)
    base = y + 16
    for r in c.s.interruptions:   # a journaled interruption: a red triangle on the lane's top edge
        x = c.x(_wall(r))
        title = f"interruption: {r.payload.get('cause')} at {_hms(_wall(r))}"
        c.add(f'<path{_a(d=f"M{x - 5},{y} L{x + 5},{y} L{x},{y + 9} Z", fill="#d62728", class_="interruption")}'
              f'{_a(data_seq=r.seq, data_cause=r.payload.get("cause"), data_at_ns=_wall(r))}>'
              f'<title>{escape(title)}</title></path>')
    items: list[tuple[int, str, str, dict[str, Any], int | None]] = []
    for o in c.s.owed:
        answer = {"given": f"-> {o.reason}", "missing": "-> reason MISSING", "open": "-> reason still owed"}[o.status]
        colour = {"given": "#2ca02c", "missing": "#d62728", "open": "#ff7f0e"}[o.status]
        items.append((o.at_ns, f"{o.cause} {answer}", colour,
                      {"class_": "reason-owed", "data_cause": o.cause, "data_status": o.status,
                       "data_reason": o.reason or "", "data_seq": o.seq, "data_at_ns": o.at_ns,
                       "data_answered_ns": o.answered_ns}, o.answered_ns))
    for r in c.s.not_recording:
        reason = _reason_name(r.payload)
        items.append((_wall(r), f"not recording: {reason}", "#ff7f0e",
                      {"class_": "not-recording", "data_reason": reason, "data_seq": r.seq,
                       "data_at_ns": _wall(r)}, None))
    for at, label, colour, data, answered in sorted(items, key=lambda i: i[0]):
        x = c.x(at)
        width = 6.0 * len(label) + 10
        row = rows.take(x, width)
        ly = base + row * 18
        if answered is not None and answered > at:   # how long the reason was owed, under the label
            xa = c.x(answered)
            c.add(f'<polyline{_a(points=f"{x},{ly} {x},{ly + 8} {xa},{ly + 8}", fill="none", stroke=colour)}'
                  f'{_a(class_="owed-span")} stroke-width="2" stroke-opacity="0.6"/>')
            c.add(f'<circle{_a(cx=xa, cy=ly + 8, r=2.5, fill=colour, class_="answer")}/>')
        c.add(f'<g{_a(**data)}>')
        c.add(f'<circle{_a(cx=x, cy=ly, r=4.5, fill=colour, stroke="#ffffff")} stroke-width="1"/>')
        c.text(x + 7, ly + 4, label, size=10, fill=colour, class_="reason-label")
        c.add("</g>")


_EVENT_GLYPHS = {"mark": ("#1f77b4", "M"), "voice-note": ("#9467bd", "V"), "self-check": ("#2ca02c", "C"),
                 "clock-step": ("#d62728", "T"), "pause-requested": ("#ff7f0e", "P"),
                 "tamper-attempt": ("#d62728", "!")}


def _draw_events(c: _Canvas, lane: tuple[float, float]) -> None:
    y, h = lane
    for r in c.s.events:
        colour, glyph = _EVENT_GLYPHS[r.type]
        if r.type == "self-check" and not r.payload.get("go"):
            colour = "#d62728"
        x = c.x(_wall(r))
        c.add(f'<g{_a(class_="event", data_type=r.type, data_seq=r.seq, data_at_ns=_wall(r))}>'
              f'<title>{escape(f"{r.type} at {_hms(_wall(r))} (seq {r.seq})")}</title>')
        c.add(f'<circle{_a(cx=x, cy=y + h / 2, r=7, fill=colour)}/>')
        c.text(x, y + h / 2 + 3.5, glyph, size=9, anchor="middle", fill="#ffffff")
        c.add("</g>")


def _draw_levels(c: _Canvas, lane: tuple[float, float], points: list[tuple[int, int, int]], top: int,
                 kind: str, colour: str, fmt: Any) -> None:
    y, h = lane
    if not points:
        c.text(LEFT + 6, y + h / 2 + 4, "nothing journaled", size=10, fill="#888888")
        return
    top = max(top, 1)

    def py(v: int) -> float:
        return round(y + h - 4 - (h - 8) * min(v, top) / top, 2)

    pts = sorted(points)
    path = " ".join(f"{c.x(t)},{py(v)}" for t, v, _ in pts)
    # only the dots are journaled; the dashed line between them is no measurement
    c.add(f'<polyline{_a(points=path, fill="none", stroke=colour, class_=f"{kind}-line")}'
          ' stroke-width="1" stroke-dasharray="3 3" stroke-opacity="0.7"/>')
    last_label_x = -1e9
    for t, v, seq in pts:
        x = c.x(t)
        c.add(f'<circle{_a(cx=x, cy=py(v), r=3, fill=colour, class_=f"{kind}-point")}'
              f'{_a(data_seq=seq, data_at_ns=t, data_value=v)}><title>{escape(fmt(v))} at {_hms(t)}</title></circle>')
        if x - last_label_x > 50:
            c.text(x + 4, max(py(v) - 3, y + 10), fmt(v), size=9, fill="#333333")
            last_label_x = x


def _draw_quality(c: _Canvas, lane: tuple[float, float]) -> None:
    y, h = lane
    for s in c.s.quality:
        x0, x1 = c.x(s.start_ns), c.x(s.end_ns)
        err = s.attrs.get("max_error_ns")
        label = s.label + ("" if err is None else f" (max error {err / 1e6:.1f} ms)")
        c.rect(x0, y + 4, x1 - x0, h - 8, QUALITY_COLOURS.get(s.label, "#bbbbbb"), label, class_="time-quality",
               data_quality=s.label, data_start_ns=s.start_ns, data_end_ns=s.end_ns, fill_opacity="0.8")
        if x1 - x0 > 6.5 * len(label) + 6:
            c.text(x0 + 6, y + h / 2 + 4, label, size=10, fill="#ffffff")


def _draw_docking(c: _Canvas, lane: tuple[float, float]) -> None:
    y, h = lane
    for d in c.s.dockings:
        x0, x1 = c.x(d.start_ns), c.x(d.end_ns)
        c.rect(x0, y + 4, x1 - x0, h - 8, "#1f77b4", f"docked {_hms(d.start_ns)}-{_hms(d.end_ns)}",
               class_="docked", data_start_ns=d.start_ns, data_end_ns=d.end_ns)
        if x1 - x0 > 50:
            c.text((x0 + x1) / 2, y + h / 2 + 4, "docked", size=10, anchor="middle", fill="#ffffff")
    for r in c.s.records:
        if r.type.startswith("dock-") or r.type == "purge":
            x = c.x(_wall(r))
            c.add(f'<path{_a(d=f"M{x},{y + 2} L{x + 5},{y + h / 2} L{x},{y + h - 2} L{x - 5},{y + h / 2} Z")}'
                  f'{_a(fill="#ff7f0e", class_="dock-record", data_type=r.type, data_seq=r.seq)}>'
                  f"<title>{escape(r.type)} at {_hms(_wall(r))}</title></path>")


# ---------------------------------------------------------------------------------------------
# Files and the command line

def write_report(root: Path, pubkey: Path, svg_out: Path) -> dict[str, Any]:
    """Verify ``root``, write the timeline picture to ``svg_out``; returns the summary.

    ``svg_out`` may not lie inside the evidence directory: an unattested file there would
    itself fail verification (SegmentExtra).
    """
    if Path(svg_out).resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"{svg_out} is inside the evidence directory {root}; write the report elsewhere")
    summary, shift = summarise(root, pubkey.read_bytes())
    svg_out.write_text(render_svg(shift, summary), encoding="utf-8")
    return summary


def _report(args: argparse.Namespace) -> int:
    from recorder.identity import BadPublicKey
    try:
        summary = write_report(args.directory, args.pubkey, args.out)
    except (OSError, BadPublicKey, ValueError) as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(summary_text(summary))
        print(f"picture: {args.out}")
    return 0 if summary["verification"]["ok"] else 1


def add_subcommands(subparsers: argparse._SubParsersAction[_P]) -> None:
    rep = subparsers.add_parser("report", help="a shift at a glance: timeline picture and summary",
                                description="Verify an evidence directory and draw its journal as a "
                                            "timeline (SVG); print what the journal proves.")
    rep.add_argument("directory", type=Path, help="evidence directory (holds journal.log)")
    rep.add_argument("--pubkey", required=True, type=Path, help="device public key (PEM)")
    rep.add_argument("--out", required=True, type=Path, help="SVG file to write (not inside the evidence)")
    rep.add_argument("--json", action="store_true", help="print the summary as JSON")
    rep.set_defaults(func=_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bodycam-report")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
