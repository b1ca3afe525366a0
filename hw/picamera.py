"""The Raspberry Pi camera (Camera Module 3 etc.) through picamera2.

Frames come out as I420 arrays with the sensor's monotonic timestamp; the
recorder stamps and encodes them (in software with libx264, or with the Pi
4 / Zero 2 W hardware encoder through FFmpeg's ``h264_v4l2m2m``, chosen by
``video.encoder``), so the time is burned in the same way on every model.
picamera2 is imported only when a camera is opened.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, cast

import numpy as np

from common.media import Frame
from hw.camera import CameraError, FramePool

if TYPE_CHECKING:   # Pi-only and untyped: Any to the checker where it is not installed
    from picamera2 import Picamera2

log = logging.getLogger(__name__)


def i420_from_strided(arr: np.ndarray, width: int, height: int, out: np.ndarray) -> np.ndarray:
    """Copy a picamera2 YUV420 array, whose rows may be padded to a stride, into tight I420
    ``out`` (shape (h*3//2, w)); returns ``out``."""
    stride = arr.shape[1]
    if stride == width:
        np.copyto(out, arr[:height * 3 // 2])
        return out
    flat = arr.reshape(-1)
    cs, cw, ch = stride // 2, width // 2, height // 2
    out[:height] = arr[:height, :width]
    u = flat[height * stride:height * stride + ch * cs].reshape(ch, cs)[:, :cw]
    v_off = height * stride + ch * cs
    v = flat[v_off:v_off + ch * cs].reshape(ch, cs)[:, :cw]
    planes = out[height:].reshape(-1)
    planes[:ch * cw] = u.reshape(-1)
    planes[ch * cw:] = v.reshape(-1)
    return out


class PiCamera:
    """Captures on a thread into a short queue, like the hardware does; ``read`` waits on it."""

    def __init__(self, width: int, height: int, fps: int, buffers: int = 6) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._buffers = buffers
        self._q: queue.Queue[Frame] = queue.Queue(maxsize=buffers)
        self._pool = FramePool(width, height, queued=buffers)
        self._running = threading.Event()
        self._cam: Picamera2 | None = None
        self._thread: threading.Thread | None = None
        self._index = 0

    def start(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError("picamera2 is not installed (apt install python3-picamera2)") from exc
        period_us = 1_000_000 // self.fps
        cam = Picamera2()
        cfg = cam.create_video_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (period_us, period_us)},
            buffer_count=self._buffers)
        cam.configure(cfg)
        cam.start()
        self._cam = cam
        self._running.set()
        self._thread = threading.Thread(target=self._capture, name="picamera", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        while self._running.is_set():
            try:
                # set by start() before this thread runs; None once stop() closed it (fails here too)
                request = cast("Picamera2", self._cam).capture_request()
            except Exception as exc:  # the camera died: read() will time out and report a stall
                log.error("camera capture failed: %s", exc)
                return
            try:
                if self._q.full():   # only this thread adds, so it stays full until we put
                    log.warning("recorder is behind: camera frame %d dropped", self._index)
                    continue         # and no pool buffer is taken: those queued stay intact
                data = i420_from_strided(request.make_array("main"), self.width, self.height,
                                         self._pool.take())
                ts = request.get_metadata()["SensorTimestamp"]  # ns, CLOCK_MONOTONIC (kernel)
            finally:
                request.release()
                self._index += 1
            self._q.put_nowait(Frame(data, ts, self._index - 1))

    def read(self, timeout: float) -> Frame | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._running.clear()
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None
