"""D1 self-check: every threshold edge, broken probes, rendering for status and journal."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from common.clock import TimeQuality, TimeSample
from firmware.selfcheck import Probes, SelfCheckThresholds, Status, rms_dbfs, run_self_check

T = SelfCheckThresholds()
BITRATE = 8_000_000                      # 1 MB/s: 3.6 GB per hour
GB_PER_H = BITRATE // 8 * 3600


def good(**override) -> Probes:
    probes = Probes(battery=lambda: (90.0, 7.0), storage=lambda: 20 * GB_PER_H,
                    time=lambda: TimeQuality.GPS, camera=lambda: True,
                    microphone=lambda: -55.0, journal=lambda: True)
    return replace(probes, **override)


def status(name, **override):
    return run_self_check(good(**override), T, BITRATE).item(name).status


def test_all_good_is_go():
    result = run_self_check(good(), T, BITRATE)
    assert result.go and {i.status for i in result.items} == {Status.PASS}
    assert [i.name for i in result.items] == ["battery", "storage", "time", "camera", "microphone", "journal"]


@pytest.mark.parametrize("percent, expected", [
    (19.99, Status.FAIL), (20.0, Status.WARN), (49.99, Status.WARN), (50.0, Status.PASS), (100, Status.PASS)])
def test_battery_percent_edges(percent, expected):
    assert status("battery", battery=lambda: (percent, None)) is expected


@pytest.mark.parametrize("hours, expected", [
    (0.99, Status.FAIL), (1.0, Status.WARN), (3.99, Status.WARN), (4.0, Status.PASS)])
def test_battery_hours_edges(hours, expected):
    assert status("battery", battery=lambda: (95.0, hours)) is expected


def test_battery_worst_of_percent_and_hours():
    assert status("battery", battery=lambda: (30.0, 10.0)) is Status.WARN
    assert status("battery", battery=lambda: (95.0, 0.5)) is Status.FAIL


@pytest.mark.parametrize("hours, expected", [
    (0.999, Status.FAIL), (1.0, Status.WARN), (7.999, Status.WARN), (8.0, Status.PASS)])
def test_storage_edges(hours, expected):
    free = round(hours * GB_PER_H)
    assert status("storage", storage=lambda: free) is expected


def test_storage_hours_follow_the_bitrate():
    result = run_self_check(good(storage=lambda: 8 * GB_PER_H), T, BITRATE * 2)
    assert result.item("storage").status is Status.WARN
    assert result.item("storage").measured["hours"] == pytest.approx(4.0)


@pytest.mark.parametrize("answer, expected", [
    (TimeQuality.GPS, Status.PASS),
    (TimeQuality.NTP, Status.PASS),
    (TimeQuality.RTC, Status.WARN),
    (TimeQuality.UNSYNCED, Status.FAIL),
    (TimeSample(0, 0, TimeQuality.RTC, since_sync_s=7 * 86400.0), Status.WARN),
    (TimeSample(0, 0, TimeQuality.RTC, since_sync_s=7 * 86400.0 + 1), Status.FAIL),
    (TimeSample(0, 0, TimeQuality.NTP, error_s=0.01), Status.PASS),
    (TimeSample(0, 0, TimeQuality.UNSYNCED), Status.FAIL),
])
def test_time_quality(answer, expected):
    assert status("time", time=lambda: answer) is expected


@pytest.mark.parametrize("level, expected", [
    (-math.inf, Status.FAIL), (-90.0, Status.FAIL), (-89.99, Status.PASS),
    (-1.01, Status.PASS), (-1.0, Status.WARN), (0.0, Status.WARN)])
def test_microphone_edges(level, expected):
    assert status("microphone", microphone=lambda: level) is expected


def test_camera_and_journal_flags():
    assert status("camera", camera=lambda: False) is Status.FAIL
    assert status("journal", journal=lambda: False) is Status.FAIL
    assert status("camera", camera=lambda: np.bool_(True)) is Status.PASS


def test_fail_is_no_go_warn_is_go():
    assert not run_self_check(good(camera=lambda: False), T, BITRATE).go
    assert run_self_check(good(time=lambda: TimeQuality.RTC), T, BITRATE).go


def raiser():
    raise OSError("I2C bus stuck")


@pytest.mark.parametrize("name, probe, words", [
    ("battery", raiser, "probe failed: OSError: I2C bus stuck"),
    ("battery", lambda: 90.0, "not (percent, hours_left)"),
    ("battery", lambda: (float("nan"), 3.0), "NaN"),
    ("battery", lambda: (140.0, 3.0), "outside 0-100"),
    ("battery", lambda: (True, 3.0), "not a number"),
    ("battery", lambda: (50.0, -2.0), "negative"),
    ("storage", lambda: -5, "not a byte count"),
    ("storage", lambda: 1.5e9, "not a byte count"),
    ("time", lambda: "NTP", "not a TimeSample"),
    ("camera", lambda: 1, "not true/false"),
    ("microphone", lambda: 3.0, "above full scale"),
    ("microphone", lambda: None, "not a number"),
    ("journal", lambda: "yes", "not true/false"),
])
def test_broken_or_garbage_probes_fail_their_item_only(name, probe, words):
    result = run_self_check(good(**{name: probe}), T, BITRATE)
    item = result.item(name)
    assert item.status is Status.FAIL and words in item.detail
    assert not result.go
    assert all(i.status is Status.PASS for i in result.items if i.name != name)


def test_missing_probe_is_not_a_pass():
    result = run_self_check(good(journal=None), T, BITRATE)
    assert result.item("journal").status is Status.FAIL and "no probe" in result.item("journal").detail


def test_bad_bitrate_is_refused():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            run_self_check(good(), T, bad)


def test_renders_as_text_and_json_safe_dict():
    result = run_self_check(good(microphone=lambda: -math.inf, time=lambda: TimeQuality.RTC), T, BITRATE)
    text = result.to_text()
    assert text.splitlines()[0] == "self-check: NO-GO (1 failed, 1 warning)"
    assert "FAIL  microphone" in text and "digital silence" in text and "WARN  time" in text
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["go"] is False and record["bitrate_bps"] == BITRATE
    assert record["thresholds"]["battery_fail_permille"] == 200
    mic = next(i for i in record["items"] if i["name"] == "microphone")
    assert mic == {"name": "microphone", "status": "fail", "detail": mic["detail"], "measured": {"rms_millidbfs": None}}


def test_rms_dbfs_of_real_pcm():
    t = np.arange(48_000) / 48_000
    full_sine = (np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16)
    assert rms_dbfs(full_sine) == pytest.approx(-3.01, abs=0.02)
    assert rms_dbfs((full_sine // 100).astype(np.int16)) == pytest.approx(-43.0, abs=0.1)
    assert rms_dbfs(np.zeros(100, np.int16)) == -math.inf
    with pytest.raises(ValueError):
        rms_dbfs(np.zeros(0, np.int16))


@pytest.mark.parametrize("bad, match", [
    ({"battery_fail_percent": 60}, "must not exceed"),
    ({"storage_warn_hours": float("nan")}, "storage_warn_hours"),
    ({"mic_clip_dbfs": 3}, "mic_clip_dbfs"),
    ({"battery_warn_percent": 150}, "0-100"),
    ({"battery": 5}, "unknown"),
])
def test_bad_thresholds(bad, match):
    with pytest.raises(ValueError, match=match):
        SelfCheckThresholds.from_mapping(bad)


# ---- swap with encryption on (docs/encryption.md: nothing in clear on storage) -------------
PROC_SWAPS = ("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
              "/var/swap                               file\t\t102396\t\t0\t\t-2\n"
              "/dev/zram0                              partition\t511996\t\t1024\t\t100\n")


def test_active_swaps_reads_the_kernels_list(tmp_path):
    from firmware.selfcheck import active_swaps
    swaps = tmp_path / "swaps"
    swaps.write_text(PROC_SWAPS)
    assert active_swaps(str(swaps)) == ["/var/swap", "/dev/zram0"]
    swaps.write_text(PROC_SWAPS.splitlines(keepends=True)[0])          # header only: no swap
    assert active_swaps(str(swaps)) == []
    assert active_swaps(str(tmp_path / "no-procfs")) == []


def test_encryption_on_with_swap_active_warns(tmp_path, monkeypatch):
    swaps = tmp_path / "swaps"
    swaps.write_text(PROC_SWAPS)
    monkeypatch.setenv("BODYCAM_PROC_SWAPS", str(swaps))     # the kernel's list, as the device reads it
    result = run_self_check(good(encryption=lambda: ("auto", 1)), T, BITRATE)
    item = result.item("encryption")
    assert item.status is Status.WARN and result.go
    assert "swap is active (/var/swap, /dev/zram0)" in item.detail
    assert item.measured == {"recipients": 1, "swaps": ["/var/swap", "/dev/zram0"]}
    swaps.write_text(PROC_SWAPS.splitlines(keepends=True)[0])
    item = run_self_check(good(encryption=lambda: ("auto", 1)), T, BITRATE).item("encryption")
    assert item.status is Status.PASS and item.detail == "on: 1 recipient key(s), no swap"


def test_swap_does_not_matter_with_encryption_off():
    item = run_self_check(good(encryption=lambda: ("off", 0), swaps=lambda: ["/var/swap"]), T,
                          BITRATE).item("encryption")
    assert item.status is Status.WARN and "off by configuration" in item.detail and "swaps" not in item.measured


@pytest.mark.parametrize("answer", [None, "/var/swap", [1]])
def test_an_unusable_swaps_answer_fails(answer):
    item = run_self_check(good(encryption=lambda: ("auto", 1), swaps=lambda: answer), T,
                          BITRATE).item("encryption")
    assert item.status is Status.FAIL and "swaps probe" in item.detail
