"""What a camera and a microphone deliver: pictures and sound with monotonic timestamps.

These are the data the recorder consumes (``recorder.capture`` names the interfaces that
deliver them) and the adapters produce (``hw/``, ``sim/``); both import them from here,
so neither side reaches into the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One picture in planar YUV 4:2:0 (I420): ``data`` has shape (h*3//2, w), uint8.

    ``data`` lives in the camera's ``hw.camera.FramePool``: it stays valid until the camera
    has delivered ``FramePool.SAFE_NEWER`` more frames. The recorder holds at most the
    current and the previous frame; anything that keeps a picture longer must copy it.
    """

    data: np.ndarray
    mono_ns: int      # capture instant on the monotonic clock
    index: int        # sequence number from the camera (gaps mean dropped frames)

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0] * 2 // 3)


@dataclass
class AudioBlock:
    """Mono 16-bit PCM; ``mono_ns`` is the capture instant of the first sample."""

    samples: np.ndarray   # shape (n,), int16
    mono_ns: int
    sample_rate: int
