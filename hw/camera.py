"""What a camera gives the recorder: raw frames with monotonic timestamps.

Real adapters (``hw/picamera.py``) and the simulation (``sim/camera.py``)
both implement :class:`Camera`, so the recording pipeline never knows which
one it is fed by.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Frame:
    """One picture in planar YUV 4:2:0 (I420): ``data`` has shape (h*3//2, w), uint8.

    ``data`` lives in the camera's :class:`FramePool`: it stays valid until the camera has
    delivered ``FramePool.SAFE_NEWER`` more frames. The recorder holds at most the current
    and the previous frame; anything that keeps a picture longer must copy it.
    """

    data: np.ndarray
    mono_ns: int      # capture instant on the monotonic clock
    index: int        # sequence number from the camera (gaps mean dropped frames)

    @property
    def width(self) -> int:
        return self.data.shape[1]

    @property
    def height(self) -> int:
        return self.data.shape[0] * 2 // 3


class FramePool:
    """A ring of preallocated frame buffers, so capture allocates nothing per frame.

    A fresh 3 MB array per 1080p frame means a malloc/free (and, with the pinned
    mmap threshold of ``firmware/memory.py``, an mmap and its page faults) 30 times
    a second; a ring of a few buffers costs nothing after start-up.
    """

    SAFE_NEWER = 2   # a buffer is reused only after this many newer frames (and the queue)

    def __init__(self, width: int, height: int, queued: int = 0) -> None:
        self._buffers = [np.empty((height * 3 // 2, width), dtype=np.uint8)
                         for _ in range(queued + self.SAFE_NEWER + 1)]
        self._next = 0

    def take(self) -> np.ndarray:
        buf = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        return buf


class CameraError(RuntimeError):
    """The camera failed in a way the officer must be told about."""


class Camera(Protocol):
    width: int
    height: int
    fps: int

    def start(self) -> None: ...

    def read(self, timeout: float) -> Frame | None:
        """Next frame, or None if none arrived within ``timeout`` seconds."""

    def stop(self) -> None: ...
