"""D2 + two clocks never mixed: a wall-clock step mid-recording moves the stamp, not the media."""
import shutil
import subprocess

import pytest
from PIL import Image

from common.clock import SimulatedWallClock
from tests.conftest import WALL_START_NS, sim_pipeline
from tests.media import decode_frame, ffprobe_packets, segments

STEP_AT_S, STEP_S = 3.0, 3600 + 7


class SteppingClock(SimulatedWallClock):
    """A wall clock that is stepped once (as chronyd's makestep would) at a chosen instant."""

    def __init__(self, wall_start_ns, mono_start_ns, step_at_ns, step_ns):
        super().__init__(wall_start_ns, mono_start_ns)
        self.step_at, self.step_ns, self.stepped = step_at_ns, step_ns, False

    def at(self, mono_ns):
        if not self.stepped and mono_ns >= self.step_at:
            self.step(self.step_ns)
            self.stepped = True
        return super().at(mono_ns)


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    out = tmp_path_factory.mktemp("step")
    mono0 = 5_000_000_000  # conftest's SimTime start
    clock = SteppingClock(WALL_START_NS, mono0, mono0 + int(STEP_AT_S * 1e9), int(STEP_S * 1e9))
    p = sim_pipeline(out, width=1280, height=720, segment_seconds=2, bitrate_kbps=6000, wall=clock)
    events = []
    p.on_event = lambda kind, payload: events.append((kind, payload))
    results = p.run(6)
    p.events = events
    return out, p, results


def test_the_step_is_reported_with_old_and_new_time(stepped):
    _, p, results = stepped
    steps = [payload for kind, payload in p.events if kind == "clock-step"]
    assert len(steps) == 1
    (step,) = steps
    assert step["recording_id"] == results[0].recording_id
    assert step["slot"] == 90                       # the first frame at or after 3 s
    assert step["delta_ns"] == int(STEP_S * 1e9)
    assert step["new_wall_ns"] - step["old_wall_ns"] == step["delta_ns"]
    assert step["old_wall_ns"] - WALL_START_NS == pytest.approx(3e9, abs=1e6)


def test_media_timestamps_run_on_across_the_step(stepped):
    out, _, results = stepped
    assert [r.cause for r in results] == ["stop"]
    pts = []
    for f in segments(out):
        pts += sorted(int(x["pts"]) for x in ffprobe_packets(f, "v"))
    assert pts == list(range(pts[0], pts[0] + 6 * 30 * 3000, 3000))


def test_segment_wall_times_show_the_step(stepped):
    _, _, results = stepped
    segs = results[0].segments
    # segment 1 spans 2..4 s: it starts before the step and ends after it
    assert segs[1].wall_end.wall_ns - segs[1].wall_start.wall_ns == pytest.approx(
        (59 / 30 + STEP_S) * 1e9, abs=2e6)
    assert segs[2].wall_start.wall_ns - WALL_START_NS == pytest.approx((4 + STEP_S) * 1e9, abs=2e6)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed")
def test_stamp_shows_the_new_time_after_the_step(stepped, tmp_path):
    out, p, _ = stepped
    seg = segments(out)[1]                      # frames 60..119, step at frame 90
    box, m = p.stamper._patch.shape, p.stamper.margin

    def ocr(n):
        luma = decode_frame(seg, n)[m:m + box[0], m:m + box[1]]
        png = tmp_path / f"f{n}.png"
        Image.fromarray(255 - luma).resize((box[1] * 2, box[0] * 2)).save(png)
        return subprocess.run(["tesseract", str(png), "-", "--psm", "6"], capture_output=True,
                              text=True, check=True).stdout

    assert "08:00:02 +08:00" in ocr(15)         # 2.5 s: before the step
    assert "09:00:10 +08:00" in ocr(45)         # 3.5 s + 3607 s: after it
