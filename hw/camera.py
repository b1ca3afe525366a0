"""What every camera adapter shares: the frame ring and the error it raises.

Camera adapters (``hw/picamera.py``, ``sim/camera.py``) implement the recorder's
``recorder.capture.Camera`` interface and deliver ``common.media.Frame`` objects, so the
recording pipeline never knows which one it is fed by.
"""
from __future__ import annotations

import numpy as np


class FramePool:
    """A ring of preallocated frame buffers, so capture allocates nothing per frame.

    A fresh 3 MB array per 1080p frame means a malloc/free (and, with the pinned
    mmap threshold of ``firmware/memory.py``, an mmap and its page faults) 30 times
    a second; a ring of a few buffers costs nothing after start-up.

    Reuse rule: a frame's buffer stays intact while the next ``queued + SAFE_NEWER`` frames
    are taken, and is rewritten by the one after (``queued``: frames waiting between capture
    and recorder). The recorder needs the
    current frame and, while it places that one, the previous (to repeat it over missed
    slots); a picture it keeps any longer it copies (``recorder/recording.py``,
    ``recorder/prebuffer.py``). So one newer frame is enough: the sim camera has a ring of
    two 1080p buffers (3 MB less than three).
    """

    SAFE_NEWER = 1   # a buffer is reused only after this many newer frames (and the queue)

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
