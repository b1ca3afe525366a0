"""Server-drawn inline SVG: the supervision charts and a recording's segment timeline.

No JavaScript and no chart library: the page's CSP (``default-src 'self'``) forbids inline
scripts and inline styles, so every colour is an SVG presentation attribute (``fill=``) and
every text is escaped here. Each chart says what it shows in its ``aria-label`` and each
mark carries a ``<title>`` (the browser's tooltip) with its exact figure.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = ("#1d3557", "#e76f51", "#2a9d8f", "#e9c46a", "#6a4c93", "#457b9d", "#f4a261", "#8ab17d")
QUALITY_FILL = {"GPS": "#2a9d8f", "NTP": "#2a9d8f", "RTC": "#e9c46a", "UNSYNCED": "#e76f51"}
GAP_NS = 1_000_000_000      # more than 1 s between two segments is drawn as a gap
MARK_WINDOW_NS = 600 * 1_000_000_000   # interruptions drawn up to 10 min (or half the span) around it


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def bar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, float]], unit: str = "") -> Markup:
    """Horizontal bars, one per (label, value); an empty chart says so."""
    width, label_w, bar_h, gap = 560, 170, 18, 6
    height = max(1, len(rows)) * (bar_h + gap) + 28
    top = max((v for _, v in rows), default=0) or 1
    parts = [f'<svg id="{_t(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="{_t(title)}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{_t(title)}</text>']
    if not rows:
        parts.append('<text x="0" y="40" font-size="12" fill="#666">本期间无数据</text>')
    for i, (label, value) in enumerate(rows):
        y = 24 + i * (bar_h + gap)
        w = (width - label_w - 60) * value / top
        parts.append(f'<g class="bar" data-label="{_t(label)}" data-value="{_t(_num(value))}">'
                     f'<title>{_t(label)}：{_t(_num(value))}{_t(unit)}</title>'
                     f'<text x="{label_w - 6}" y="{y + 13}" font-size="12" text-anchor="end">{_t(label)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                     f'fill="{"#e76f51" if value else "#ccc"}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="12">{_t(_num(value))}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def short(category: str) -> str:
    """An ISO week ``2026-W38`` as ``W38`` under its bars (the whole name in the tooltip)."""
    return category.split("-", 1)[1] if "-W" in category else category


def grouped_bars(chart_id: str, title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                 unit: str = "") -> Markup:
    """Vertical bars per category (e.g. ISO week), one bar per series (e.g. officer), with a legend."""
    n_cat, n_ser = max(1, len(categories)), max(1, len(series))
    group_w = max(40, min(120, 16 * n_ser + 14))
    left, plot_h, top_pad = 44, 180, 26
    legend_h = 18 * len(series) + 8
    width = left + n_cat * group_w + 20
    height = top_pad + plot_h + 40 + legend_h
    top = max((v for _, vals in series for v in vals), default=0) or 1
    bar_w = (group_w - 10) / n_ser
    parts = [f'<svg id="{_t(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="{_t(title)}">',
             f'<text x="0" y="14" font-size="13" font-weight="bold">{_t(title)}</text>',
             f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - 10}" y2="{top_pad + plot_h}" stroke="#333"/>',
             f'<text x="{left - 4}" y="{top_pad + 10}" font-size="11" text-anchor="end">'
             f'{_t(_num(round(top, 2)))}</text>',
             f'<text x="{left - 4}" y="{top_pad + plot_h}" font-size="11" text-anchor="end">0</text>']
    if not series:
        parts.append(f'<text x="{left}" y="{top_pad + 40}" font-size="12" fill="#666">本期间无数据</text>')
    for c, cat in enumerate(categories):
        x0 = left + c * group_w + 5
        parts.append(f'<text x="{x0 + (group_w - 10) / 2:.1f}" y="{top_pad + plot_h + 14}" font-size="11" '
                     f'text-anchor="middle"><title>{_t(cat)}</title>{_t(short(cat))}</text>')
        for s, (name, vals) in enumerate(series):
            v = vals[c] if c < len(vals) else 0
            h = plot_h * v / top
            parts.append(f'<rect class="bar" data-series="{_t(name)}" data-category="{_t(cat)}" '
                         f'data-value="{_t(_num(v))}" x="{x0 + s * bar_w:.1f}" y="{top_pad + plot_h - h:.1f}" '
                         f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                         f'<title>{_t(name)} {_t(cat)}：{_t(_num(v))}{_t(unit)}</title></rect>')
    for s, (name, _) in enumerate(series):
        y = top_pad + plot_h + 28 + s * 18
        parts.append(f'<rect x="{left}" y="{y}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>'
                     f'<text x="{left + 18}" y="{y + 11}" font-size="12">{_t(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Span:
    """One segment on the timeline (wall-clock ns, as the device journal attests them)."""

    index: int
    start_ns: int
    end_ns: int
    quality: str
    present: bool


@dataclass(frozen=True)
class Mark:
    """One interruption / reason record on the timeline."""

    at_ns: int
    kind: str
    cause: str
    reason: str | None


def timeline(spans: Sequence[Span], marks: Sequence[Mark], fmt: Callable[[int], str]) -> Markup:
    """A recording's segments in order over wall-clock time: each segment a block coloured by its
    time quality (grey when not in the store), gaps between segments in red with their length,
    interruptions within ``MARK_WINDOW_NS`` (or half the span) of it as flags with their reasons
    (``fmt`` renders a time)."""
    if not spans:
        return Markup('<p class="note">没有分段。</p>')
    width, left, right, bar_y, bar_h = 860, 10, 10, 34, 30
    first, last = min(s.start_ns for s in spans), max(s.end_ns for s in spans)
    # a record far from the segments (another clock, another shift) would squash them: left out here
    pad = max((last - first) // 2, MARK_WINDOW_NS)
    marks = [mk for mk in marks if first - pad <= mk.at_ns <= last + pad]
    t0, t1 = min([first] + [mk.at_ns for mk in marks]), max([last] + [mk.at_ns for mk in marks])
    span = max(t1 - t0, 1)
    height = bar_y + bar_h + 36 + 16 * len(marks)

    def x(ns: int) -> float:
        return left + (width - left - right) * (ns - t0) / span

    parts = [f'<svg id="timeline" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" aria-label="分段时间轴：{len(spans)} 个分段，'
             f'{len(marks)} 个中断">',
             f'<text x="{left}" y="14" font-size="12">{_t(fmt(t0))}</text>',
             f'<text x="{width - right}" y="14" font-size="12" text-anchor="end">{_t(fmt(t1))}</text>']
    ordered = sorted(spans, key=lambda s: s.index)
    for i, s in enumerate(ordered):
        x0, x1 = x(s.start_ns), x(s.end_ns)
        fill = QUALITY_FILL.get(s.quality, "#999") if s.present else "#bbb"
        secs = (s.end_ns - s.start_ns) / 1e9
        parts.append(f'<g class="segment" data-index="{s.index}" data-quality="{_t(s.quality)}">'
                     f'<title>分段 {s.index}：{_t(fmt(s.start_ns))} 至 {_t(fmt(s.end_ns))}（{secs:.1f} 秒），'
                     f'时间质量 {_t(s.quality)}{"" if s.present else "，不在库（隔离或已销毁）"}</title>'
                     f'<rect x="{x0:.1f}" y="{bar_y}" width="{max(x1 - x0, 1.5):.1f}" height="{bar_h}" fill="{fill}" '
                     f'stroke="#fff" stroke-width="1"/>'
                     f'<text x="{(x0 + x1) / 2:.1f}" y="{bar_y + 19}" font-size="11" text-anchor="middle" '
                     f'fill="#fff">{s.index}</text></g>')
        if i + 1 < len(ordered):
            nxt = ordered[i + 1]
            missing = nxt.index != s.index + 1
            if nxt.start_ns - s.end_ns > GAP_NS or missing:
                gx0, gx1 = x(s.end_ns), x(nxt.start_ns)
                secs = (nxt.start_ns - s.end_ns) / 1e9
                what = f"缺分段 {s.index + 1}–{nxt.index - 1}" if missing else "间隔"
                parts.append(f'<g class="gap"><title>{what}：{secs:.1f} 秒（{_t(fmt(s.end_ns))} 至 '
                             f'{_t(fmt(nxt.start_ns))}）</title>'
                             f'<rect x="{gx0:.1f}" y="{bar_y + bar_h / 2 - 2}" width="{max(gx1 - gx0, 2):.1f}" '
                             f'height="4" fill="#b00020"/>'
                             f'<text x="{(gx0 + gx1) / 2:.1f}" y="{bar_y - 4}" font-size="10" text-anchor="middle" '
                             f'fill="#b00020">{what} {secs:.0f}s</text></g>')
    for j, mk in enumerate(sorted(marks, key=lambda m: m.at_ns)):
        mx = x(mk.at_ns)
        reason = mk.reason or "未说明原因"
        ty = bar_y + bar_h + 26 + 16 * j
        anchor = "end" if mx > width * 0.6 else "start"
        parts.append(f'<g class="interruption" data-kind="{_t(mk.kind)}"><title>{_t(fmt(mk.at_ns))} {_t(mk.kind)}'
                     f'（{_t(mk.cause)}）：{_t(reason)}</title>'
                     f'<line x1="{mx:.1f}" y1="{bar_y - 6}" x2="{mx:.1f}" y2="{ty - 10}" stroke="#b00020" '
                     f'stroke-dasharray="3,2"/>'
                     f'<text x="{mx:.1f}" y="{ty}" font-size="11" text-anchor="{anchor}" '
                     f'fill="{"#b00020" if not mk.reason else "#333"}">⚑ {_t(mk.cause)}：{_t(reason)}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
