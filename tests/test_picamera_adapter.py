"""The Pi camera adapter through the thinnest possible stand-in for picamera2 (no camera here).

Only the ``Picamera2`` object is faked: it hands out requests whose arrays are laid out
like the real YUV420 buffers (rows padded to a stride). Everything after that seam, the
repacking, the frame pool and the queue, is the code that runs on the Pi.
"""
import sys
import threading
import time
import types

import numpy as np
import pytest

from hw.camera import FramePool
from hw.picamera import PiCamera, i420_from_strided

W, H, STRIDE = 64, 48, 96


def strided_frame(n: int) -> np.ndarray:
    """A padded YUV420 buffer whose every tight pixel says which frame it is from."""
    buf = np.full(STRIDE * H * 3 // 2, 255, dtype=np.uint8)   # padding = 255
    y = buf[:STRIDE * H].reshape(H, STRIDE)
    y[:, :W] = n % 200
    chroma = buf[STRIDE * H:].reshape(H, STRIDE // 2)          # U rows then V rows
    chroma[:, :W // 2] = (n + 1) % 200
    return buf.reshape(H * 3 // 2, STRIDE)


class FakeRequest:
    def __init__(self, n):
        self.n, self.released = n, False

    def make_array(self, name):
        return strided_frame(self.n)

    def get_metadata(self):
        return {"SensorTimestamp": 1_000_000_000 + self.n * 33_333_333}

    def release(self):
        self.released = True


class FakePicamera2:
    made: list = []

    def __init__(self):
        self.n, self.started = 0, threading.Event()
        FakePicamera2.made.append(self)

    def create_video_configuration(self, main, controls, buffer_count):
        assert main == {"size": (W, H), "format": "YUV420"}
        return {"main": main, "controls": controls}

    def configure(self, cfg):
        self.cfg = cfg

    def start(self):
        self.started.set()

    def capture_request(self):
        time.sleep(0.001)                       # pacing (a real camera blocks per frame)
        self.n += 1
        return FakeRequest(self.n - 1)

    def stop(self):
        pass

    def close(self):
        pass


@pytest.fixture
def picamera2(monkeypatch):
    FakePicamera2.made.clear()
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))


def test_repacking_a_padded_buffer_into_tight_i420():
    out = np.zeros((H * 3 // 2, W), np.uint8)
    i420_from_strided(strided_frame(7), W, H, out)
    assert (out[:H] == 7).all()
    assert (out[H:] == 8).all()                 # U and V planes, no padding bytes
    assert not (out == 255).any()


def test_frames_arrive_in_order_with_sensor_timestamps(picamera2):
    cam = PiCamera(W, H, 30, buffers=4)
    cam.start()
    try:
        frames = [cam.read(timeout=2) for _ in range(5)]
    finally:
        cam.stop()
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.mono_ns for f in frames] == [1_000_000_000 + i * 33_333_333 for i in range(5)]
    for f in frames[-1:]:
        assert (f.data[:H] == f.index % 200).all()


def test_a_slow_recorder_drops_new_frames_without_touching_queued_ones(picamera2, caplog):
    cam = PiCamera(W, H, 30, buffers=3)
    cam.start()
    try:
        # Nobody reads: wait (bounded) for the camera to have captured many more frames than
        # the queue holds, and for a drop to be reported, instead of sleeping and hoping.
        deadline = time.monotonic() + 10
        while not (FakePicamera2.made and FakePicamera2.made[0].n >= 30 and dropped(caplog)):
            assert time.monotonic() < deadline, "camera never captured past a full queue"
            time.sleep(0.005)
        frames = [cam.read(timeout=2) for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2]
        for f in frames:                       # the queued pictures were not overwritten
            assert (f.data[:H] == f.index % 200).all()
        assert dropped(caplog)
    finally:
        cam.stop()


def dropped(caplog) -> bool:
    return any("frame" in r.getMessage() and "dropped" in r.getMessage()
               for r in list(caplog.records))


def test_pool_reuses_buffers_only_after_newer_frames():
    pool = FramePool(W, H, queued=2)
    seen = [id(pool.take()) for _ in range(10)]
    ring = 2 + FramePool.SAFE_NEWER + 1
    assert len(set(seen)) == ring
    assert seen[:ring] == seen[ring:2 * ring]
