"""A simulated camera: moving test pattern with a frame counter, at 1080p30 by default.

It implements :class:`recorder.capture.Camera`. Faults for bench scenarios: a stall
(no frames for a while, as a camera whose CSI link drops out) and dropped
single frames.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.media import Frame
from hw.camera import FramePool
from recorder.stamp import default_font_path
from sim.clock import SimTime

log = logging.getLogger(__name__)

_PERIOD = 256  # pixels after which the moving pattern repeats


@dataclass
class CameraFaults:
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start s, length s)
    dropped_frames: set[int] = field(default_factory=set)             # frame indices never delivered

    def stalled(self, t_s: float) -> bool:
        return any(start <= t_s < start + length for start, length in self.stalls)


class SimCamera:
    """Delivers I420 frames on a fixed grid of capture instants from ``SimTime``."""

    def __init__(self, width: int = 1920, height: int = 1080, fps: int = 30,
                 time_source: SimTime | None = None, faults: CameraFaults | None = None) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.time = time_source or SimTime(realtime=True)
        self.faults = faults or CameraFaults()
        self._t0: int | None = None
        self._next = 0
        self._luma_strip = self._make_luma_strip()
        self._chroma = self._make_chroma()
        self._digits = self._make_digits()
        self._pool = FramePool(width, height)

    # -- pattern, built once -------------------------------------------------
    def _make_luma_strip(self) -> np.ndarray:
        """A diagonal luma ramp wider than the frame; each frame is a shifted window of it.

        Its rows repeat every ``_PERIOD`` rows, so only one period of rows is kept (0.6 MB
        rather than 2.4 MB at 1080p) and :meth:`_render` stacks it down the frame. Built row
        by row from one period-long lookup, so making it never needs more memory than the
        strip itself (a simulator should not inflate the recorder's measured RSS)."""
        w, h = self.width + _PERIOD, min(self.height, _PERIOD)
        x = np.arange(w)
        level = (np.arange(2 * _PERIOD) % _PERIOD * 219 // _PERIOD + 16).astype(np.int16)
        bars = ((x // 64) % 2 * 20).astype(np.int16)
        strip = np.empty((h, w), dtype=np.uint8)
        for y in range(h):
            row = np.resize(level[y % _PERIOD:y % _PERIOD + _PERIOD], w)
            strip[y] = (row - bars).clip(16, 235)
        return strip

    def _make_chroma(self) -> tuple[np.ndarray, np.ndarray]:
        """U varies along a row, V down a column: one row and one column, broadcast on copy."""
        cw, ch = self.width // 2, self.height // 2
        return (np.linspace(64, 192, cw).astype(np.uint8),
                np.linspace(192, 64, ch).astype(np.uint8)[:, None])

    def _make_digits(self) -> list[np.ndarray]:
        size = max(12, self.height // 20)
        font = ImageFont.truetype(str(default_font_path()), size)
        glyphs = []
        cell_w = int(font.getlength("0")) + 2
        for d in "0123456789":
            img = Image.new("L", (cell_w, size + 4), 16)
            ImageDraw.Draw(img).text((1, 0), d, font=font, fill=235)
            glyphs.append(np.asarray(img))
        return glyphs

    def _render(self, index: int) -> np.ndarray:
        """Draw frame ``index`` into the next pool buffer (valid until ``FramePool.SAFE_NEWER``
        newer frames have been drawn)."""
        w, h = self.width, self.height
        out = self._pool.take()
        off = (index * 4) % _PERIOD
        strip = self._luma_strip
        for y in range(0, h, len(strip)):
            rows = min(len(strip), h - y)
            out[y:y + rows] = strip[:rows, off:off + w]
        u, v = self._chroma
        n = (h // 2) * (w // 2)
        chroma = out[h:].reshape(-1)
        chroma[:n].reshape(h // 2, w // 2)[:] = u
        chroma[n:2 * n].reshape(h // 2, w // 2)[:] = v
        # frame counter, bottom right, so a viewer can see every frame is there
        text = f"{index:07d}"
        gh, gw = self._digits[0].shape
        y0 = h - gh - 8
        x0 = w - gw * len(text) - 8
        for i, ch in enumerate(text):
            out[y0:y0 + gh, x0 + i * gw:x0 + (i + 1) * gw] = self._digits[ord(ch) - 48]
        return out

    # -- Camera interface ----------------------------------------------------
    def start(self) -> None:
        self._t0 = self.time.now_ns()
        self._next = 0

    def stop(self) -> None:
        pass

    def _capture_ns(self, index: int) -> int:
        return cast(int, self._t0) + index * 1_000_000_000 // self.fps   # started: read() checked _t0

    def read(self, timeout: float) -> Frame | None:
        if self._t0 is None:
            raise RuntimeError("camera not started")
        # skip frames the faults swallow
        f = self.faults
        if f.dropped_frames or f.stalls:
            while (self._next in f.dropped_frames
                   or f.stalled((self._capture_ns(self._next) - self._t0) / 1e9)):
                self._next += 1
        due = self._capture_ns(self._next)
        deadline = self.time.now_ns() + int(timeout * 1e9)
        if due > deadline:
            self.time.sleep_until(deadline)
            return None
        self.time.sleep_until(due)
        index = self._next
        self._next += 1
        return Frame(self._render(index), due, index)
