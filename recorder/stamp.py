"""The on-screen stamp: recording time, its quality, device and officer, burned into every frame.

Rule D2 wants every frame to show a calibrated time. Text is rendered with
Pillow only when it changes (once a second) into a ready-made luma patch;
each frame then gets a plain array copy, so the stamp costs almost nothing
per frame. White text on a black box is legible on any scene, to a person
and to OCR.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.clock import TimeQuality, TimeSample

_BLACK, _WHITE = 16, 235  # video-range luma


def default_font_path() -> Path:
    """DejaVu Sans Mono Bold, shipped with the package so every device draws the same text."""
    return Path(__file__).with_name("fonts") / "DejaVuSansMono-Bold.ttf"


def format_time(sample: TimeSample, tz: ZoneInfo) -> str:
    """'2026-11-23 08:31:52 +08:00' for the stamp's wall time in the configured zone."""
    t = dt.datetime.fromtimestamp(sample.wall_ns // 1_000_000_000, tz)
    off = t.strftime("%z")
    return f"{t:%Y-%m-%d %H:%M:%S} {off[:3]}:{off[3:]}"


class Stamper:
    """Burns the stamp into the top-left corner of I420 frames of one size."""

    def __init__(self, width: int, height: int, device_id: str, officer_id: str,
                 timezone: str = "UTC", font_path: Path | None = None,
                 font_px: int | None = None) -> None:
        self.width, self.height = width, height
        self.tz = ZoneInfo(timezone)
        self.ident = f"DEV {device_id}  OFC {officer_id}"
        size = font_px or max(16, height // 30)
        self.font = ImageFont.truetype(str(font_path or default_font_path()), size)
        self.line_h = size + size // 4
        self.margin = max(4, size // 3) & ~1
        self._key: tuple[int, TimeQuality, str | None] | None = None
        self._patch: np.ndarray | None = None
        # the patch and where it goes: luma rows/columns, chroma (plane, rows, columns)
        self._where: tuple[np.ndarray, tuple[slice, slice], tuple[slice, slice, slice]] | None = None
        self.renders = 0  # how many times text was drawn (for the 'once per second' check)
        # The lines under the time (identity, position) change rarely: they are drawn once into
        # a box that only the time line is drawn over each second, which halves the drawing.
        # Exact because a line's glyphs stay in its own band (ascent + descent <= line_h).
        ascent, descent = self.font.getmetrics()
        self._bands_apart = ascent + descent <= self.line_h
        self._lower: tuple[tuple[tuple[str, ...], int, int], np.ndarray] | None = None   # ((lines[1:], w, h), box)
        self._widths: dict[str, int] = {}
        # The time line itself, redrawn once a second, is composed from cached single-glyph
        # images: only the columns of the characters that changed are recomposed (see _time_band)
        self._glyphs: dict[tuple[int, int, str], tuple[int, int, np.ndarray] | None] = {}
        self._band: tuple[tuple[int, int], str, np.ndarray] | None = None   # ((w, h), text, image)
        self._compose = True   # False once a composed band ever differed from a drawn one

    def lines(self, sample: TimeSample, position: str | None) -> list[str]:
        lines = [f"{format_time(sample, self.tz)} [{sample.quality.value}]", self.ident]
        if position is not None:
            lines.append(position)
        return lines

    def _width(self, line: str) -> int:
        w = self._widths.get(line)
        if w is None:
            if len(self._widths) > 64:
                self._widths.clear()
            w = self._widths[line] = int(self.font.getlength(line))
        return w

    def _draw(self, w: int, h: int, lines: list[str], first: int = 0) -> np.ndarray:
        img = Image.new("L", (w, h), _BLACK)
        draw = ImageDraw.Draw(img)
        for i, s in enumerate(lines[first:], first):
            draw.text((self.margin, self.margin // 2 + i * self.line_h), s, font=self.font, fill=_WHITE)
        return np.asarray(img)

    def _render(self, lines: list[str]) -> np.ndarray:
        text_w = max(self._width(s) for s in lines)
        w = min(self.width - 2 * self.margin, (text_w + 2 * self.margin + 1) & ~1)
        h = min(self.height - 2 * self.margin, (self.line_h * len(lines) + self.margin + 1) & ~1)
        self.renders += 1
        band = self.margin // 2 + self.line_h   # rows of the time line (line 0)
        if not self._bands_apart or len(lines) < 2 or band >= h:
            return self._draw(w, h, lines)
        key = (tuple(lines[1:]), w, h)
        if self._lower is None or self._lower[0] != key:
            self._lower = (key, self._draw(w, h, lines, first=1))
        patch = self._lower[1].copy()
        patch[:band] = self._time_band(w, band, lines[0])
        return patch

    def _glyph(self, w: int, h: int, pos: int, ch: str) -> tuple[int, int, np.ndarray] | None:
        """Character ``ch`` drawn alone at character position ``pos`` of a line (the others
        blank, so it lands where it does in the whole line: a monospaced font, no kerning),
        cut to the rows and columns it inks: (first row, first column, pixels); None if it
        inks nothing. About 0.7 KB each at 1080p; a day of time lines needs ~250."""
        key = (w, pos, ch)
        if key in self._glyphs:
            return self._glyphs[key]
        if len(self._glyphs) >= 1024:
            self._glyphs.clear()
        img = self._draw(w, h, [" " * pos + ch])
        ink = img != _BLACK
        cols, rows = np.flatnonzero(ink.any(axis=0)), np.flatnonzero(ink.any(axis=1))
        g = None
        if len(cols):
            g = (int(rows[0]), int(cols[0]), img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy())
        self._glyphs[key] = g
        return g

    def _compose_columns(self, out: np.ndarray, text: str, x0: int, x1: int) -> None:
        """Recompose columns [x0, x1) of ``out`` from the glyphs of ``text``. Pillow draws a
        line by taking, per pixel, the strongest coverage of any glyph over it, and white on
        black is monotonic in coverage: so the line is the per-pixel maximum of its glyphs."""
        h, w = out.shape
        region = out[:, x0:x1]
        region[:] = _BLACK
        for pos, ch in enumerate(text):
            g = self._glyph(w, h, pos, ch)
            if g is None:
                continue
            gy, gx, pixels = g
            a, b = max(x0, gx), min(x1, gx + pixels.shape[1])
            if a < b:
                dst = region[gy:gy + pixels.shape[0], a - x0:b - x0]
                np.maximum(dst, pixels[:, a - gx:b - gx], out=dst)

    def _time_band(self, w: int, h: int, text: str) -> np.ndarray:
        """The time line drawn into a (h, w) black band, pixel for pixel what :meth:`_draw`
        gives: recomposed from cached glyphs in the columns of the characters that changed
        since the last second (usually one digit) rather than drawn whole."""
        prev = self._band
        if not self._compose or prev is None or prev[0] != (w, h) or len(prev[1]) != len(text):
            img = self._draw(w, h, [text])
            if self._compose:
                # a new layout: compose it whole once and check it against the drawing; any
                # difference (a font that kerns or overlaps) turns composing off for good
                composed = np.full((h, w), _BLACK, dtype=np.uint8)
                self._compose_columns(composed, text, 0, w)
                self._compose = bool(np.array_equal(composed, img))
            self._band = ((w, h), text, img)
            return img
        img = prev[2].copy()
        spans = []
        for pos, (old, new) in enumerate(zip(prev[1], text, strict=True)):
            if old != new:
                for ch in (old, new):
                    g = self._glyph(w, h, pos, ch)
                    if g is not None:
                        spans.append((g[1], g[1] + g[2].shape[1]))
        if spans:
            self._compose_columns(img, text, min(a for a, _ in spans), max(b for _, b in spans))
        self._band = ((w, h), text, img)
        return img

    def apply(self, data: np.ndarray, sample: TimeSample, position: str | None = None) -> None:
        """Draw the stamp for ``sample`` into ``data`` (I420, shape (h*3//2, w)) in place."""
        key = (sample.wall_ns // 1_000_000_000, sample.quality, position)
        if key != self._key:
            patch = self._patch = self._render(self.lines(sample, position))
            ph, pw = patch.shape
            m = self.margin
            cy, cx, ch, cw = m // 2, m // 2, ph // 2, pw // 2
            # where it goes, worked out once per patch rather than per frame
            self._where = (patch, (slice(m, m + ph), slice(m, m + pw)),
                           (slice(None), slice(cy, cy + ch), slice(cx, cx + cw)))
            self._key = key
        assert self._where is not None   # set on the first call (self._key starts as None)
        patch, luma, chroma = self._where
        data[luma] = patch
        # neutral chroma under the box so the text is white/black, not tinted by the scene:
        # the U and V planes follow the luma as two (h/2, w/2) planes, set in one assignment
        h, w = self.height, self.width
        data[h:].reshape(2, h // 2, w // 2)[chroma] = 128
