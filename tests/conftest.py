from pathlib import Path

import pytest

from recorder.clock import SimulatedWallClock
from recorder.encode import VideoSettings
from recorder.pipeline import Pipeline, PipelineSettings
from sim.camera import CameraFaults, SimCamera
from sim.clock import SimTime
from sim.microphone import MicFaults, SimMicrophone

# 2026-11-23 08:00:00 +08:00, a fixed wall time so stamps are predictable
WALL_START_NS = 1_795_392_000 * 1_000_000_000


def sim_pipeline(out: Path, width=320, height=240, fps=30, segment_seconds=10, bitrate_kbps=800,
                 camera_faults=None, mic_faults=None, wav=None, wall=None, **settings):
    t = SimTime(realtime=False, start_ns=5_000_000_000)
    cam = SimCamera(width, height, fps, t, camera_faults or CameraFaults())
    mic = SimMicrophone(48000, time_source=t, faults=mic_faults or MicFaults(), wav=wav)
    wall = wall or SimulatedWallClock(WALL_START_NS, t.now_ns())
    s = PipelineSettings(video=VideoSettings(width, height, fps, bitrate_kbps=bitrate_kbps),
                         segment_seconds=segment_seconds, device_id="BWC-0042",
                         officer_id="031337", timezone="Asia/Shanghai", **settings)
    return Pipeline(s, cam, mic, t, wall, out)


@pytest.fixture
def record(tmp_path):
    """Record on the simulator, as fast as possible; returns (pipeline, results)."""
    def _record(duration, **kw):
        p = sim_pipeline(tmp_path / "evidence", **kw)
        return p, p.run(duration)
    return _record
