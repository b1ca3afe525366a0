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
    """One picture in planar YUV 4:2:0 (I420): ``data`` has shape (h*3//2, w), uint8."""

    data: np.ndarray
    mono_ns: int      # capture instant on the monotonic clock
    index: int        # sequence number from the camera (gaps mean dropped frames)

    @property
    def width(self) -> int:
        return self.data.shape[1]

    @property
    def height(self) -> int:
        return self.data.shape[0] * 2 // 3


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
