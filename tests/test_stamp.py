"""D2: every frame shows the recording time, legibly, and it changes with the second."""
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from common.clock import TimeQuality, TimeSample
from recorder.stamp import Stamper, format_time
from sim.camera import SimCamera
from tests.conftest import WALL_START_NS
from tests.media import decode_frame, segments


def test_time_format_has_seconds_and_utc_offset():
    from zoneinfo import ZoneInfo
    s = TimeSample(0, WALL_START_NS + 5_500_000_000, TimeQuality.RTC)
    assert format_time(s, ZoneInfo("Asia/Shanghai")) == "2026-11-23 08:00:05 +08:00"
    assert format_time(s, ZoneInfo("UTC")) == "2026-11-23 00:00:05 +00:00"


def test_text_is_rendered_once_per_second_not_per_frame():
    st = Stamper(640, 360, "BWC-1", "007", "UTC")
    frame = np.zeros((540, 640), np.uint8)
    for i in range(90):  # three seconds at 30 fps
        st.apply(frame, TimeSample(0, WALL_START_NS + i * 33_333_333, TimeQuality.UNSYNCED))
    assert st.renders == 3


def test_stamp_shows_quality_device_and_officer():
    st = Stamper(640, 360, "BWC-9", "4711", "UTC")
    lines = st.lines(TimeSample(0, WALL_START_NS, TimeQuality.RTC), "no fix")
    assert lines == ["2026-11-23 00:00:00 +00:00 [RTC]", "DEV BWC-9  OFC 4711", "no fix"]


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    from tests.conftest import sim_pipeline
    out = tmp_path_factory.mktemp("stamped")
    p = sim_pipeline(out, width=1280, height=720, segment_seconds=2, bitrate_kbps=6000)
    p.run(2)
    return segments(out)[0], p.stamper


def test_stamped_region_differs_from_the_unstamped_source(stamped):
    seg, stamper = stamped
    decoded = decode_frame(seg, 0).astype(int)
    source = SimCamera(1280, 720, 30)._render(0)[:720].astype(int)
    box = stamper._patch.shape
    m = stamper.margin
    region = (slice(m, m + box[0]), slice(m, m + box[1]))
    assert np.abs(decoded[region] - source[region]).mean() > 30      # the stamp is there
    outside = (slice(400, 600), slice(300, 900))
    assert np.abs(decoded[outside] - source[outside]).mean() < 6     # and only there


def test_stamped_region_changes_when_the_second_changes(stamped):
    seg, stamper = stamped
    box = stamper._patch.shape
    m = stamper.margin
    region = (slice(m, m + box[0] // 3), slice(m, m + box[1]))   # the time line
    a, b, c = (decode_frame(seg, n)[region].astype(int) for n in (0, 29, 30))
    def strokes_changed(x, y):  # pixels that flipped between text and background
        return int((np.abs(x - y) > 100).sum())
    assert strokes_changed(a, b) < 20     # same second: same text (only coding noise)
    assert strokes_changed(b, c) > 60     # next second: a digit changed


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed")
def test_ocr_reads_the_burned_in_time(stamped, tmp_path):
    seg, stamper = stamped
    box = stamper._patch.shape
    m = stamper.margin
    luma = decode_frame(seg, 45)[m:m + box[0], m:m + box[1]]
    img = Image.fromarray(255 - luma).resize((box[1] * 2, box[0] * 2))  # dark text on light
    png = tmp_path / "stamp.png"
    img.save(png)
    text = subprocess.run(["tesseract", str(png), "-", "--psm", "6"], capture_output=True,
                          text=True, check=True).stdout
    assert "2026-11-23 08:00:01 +08:00" in text, text
    assert "BWC-0042" in text and "031337" in text, text
