"""The device service driven through real gpiozero MockFactory pins on the virtual clock.

Each test scripts a short shift (sim/scenario.py), then reads the signed journal and the
recordings the way the dock would: the verifier must pass and every transition be there.
"""
import itertools

import av
import pytest

from recorder.journal import iter_records
from recorder.verify import verify_directory
from sim.scenario import ScenarioError, parse, run
from tests.media import ffmpeg_errors

HEADER = """
set video.width 160
set video.height 120
set video.fps 10
set audio.sample_rate 16000
set segment.seconds 10
set service.prebuffer_s 5.0
set service.warmup_s 0.5
"""
SPEECH = "sim/scenarios/speech.wav"


def shift(tmp_path, body, name="ev", **kw):
    from pathlib import Path
    sc = parse(HEADER + body, Path(__file__).resolve().parent.parent)
    out = tmp_path / name
    result = run(sc, out, key_dir=tmp_path / "key", **kw)
    recs = list(iter_records(out / "journal.log"))
    assert result.verification.ok, result.verification.failure
    return result, recs


def of(recs, kind):
    return [r.payload for r in recs if r.type == kind]


def states(recs):
    return [(p["from"], p["to"], p["cause"]) for p in of(recs, "state")]


def test_single_press_bounce_and_short_hold_do_nothing(tmp_path):
    body = """
00:03 press record
00:05 press record
00:08 hold record 1s
00:12 press mark x1
end 00:15
"""
    result, recs = shift(tmp_path, body)
    assert of(recs, "recording-start") == []
    assert ("ready", "recording", "officer-start") not in states(recs)
    assert not list((tmp_path / "ev" / "recordings").rglob("*.ts"))
    assert [m["state"] for m in of(recs, "mark")] == ["ready"], "the mark still counts as a bookmark"


def test_contact_bounce_is_not_a_double_press(tmp_path):
    from gpiozero.pins.mock import MockFactory

    from common.clock import ManualClock
    from hw.buttons import ControlsConfig, GestureButtons, GestureKind
    clock, got, factory = ManualClock(10**9), [], MockFactory()
    buttons = GestureButtons(ControlsConfig(), got.append, clock=clock.monotonic_ns, pin_factory=factory)
    pin = factory.pin(5)
    t = 10**9
    for dt_ms, low in [(0, True), (3, False), (6, True), (9, False), (12, True)]:   # one bouncy press
        clock.advance_to(t + dt_ms * 10**6)
        pin.drive_low() if low else pin.drive_high()
    clock.advance_to(t + 200 * 10**6)
    buttons.poll()
    pin.drive_high()
    clock.advance_to(t + 2 * 10**9)
    buttons.poll()
    buttons.close()
    assert not [g for g in got if g.kind is GestureKind.RECORD_START]


def test_double_press_starts_with_the_pre_event_buffer_and_hold_stops(tmp_path):
    body = """
00:20 double-press record
00:40 hold record 3s
end 00:50
"""
    result, recs = shift(tmp_path, body)
    [start] = of(recs, "recording-start")
    before_s = (start["press_mono_ns"] - start["first_frame_mono_ns"]) / 1e9
    assert 4.0 <= before_s <= 5.0, before_s
    segs = of(recs, "segment")
    assert segs[0]["wall_start"]["mono_ns"] == start["first_frame_mono_ns"]
    for a, b in itertools.pairwise(segs):
        assert b["first_pts"] == a["last_pts"] + a["frame_duration"]
    [stop] = of(recs, "recording-stop")
    assert stop["cause"] == "stop"
    assert states(recs)[-2:] == [("recording", "ready", "officer-stop"), ("ready", "off", "shutdown")]
    assert result.cues.count("recording-started") == 1 and "recording-stopped" in result.cues
    # 23 s of recording + up to 5 s of pre-event video, all in sealed segments
    frames = sum(s["video_frames"] for s in segs)
    assert abs(frames / 10 - (23 + before_s)) < 0.5


def test_bookmark_reminder_and_announcement(tmp_path):
    from firmware.service_config import ServiceConfig
    body = """
set reminder.interval_s 10.0
00:05 double-press record
00:09 press mark
00:38 hold record 3s
end 00:45
"""
    result, recs = shift(tmp_path, body, service_cfg=ServiceConfig(prebuffer_s=5.0, warmup_s=0.5,
                                                                     announce=True))
    [mark] = of(recs, "mark")
    [start] = of(recs, "recording-start")
    assert mark["count"] == 1 and mark["state"] == "recording" and mark["recording_id"] == start["recording_id"]
    assert result.cues.count("reminder") == 3   # at 10, 20, 30 s of a 36 s recording
    [ann] = of(recs, "announcement")
    assert ann["file"] == "notice-zh.wav" and len(ann["sha256"]) == 64


def test_pause_with_reason_and_resume_are_journaled_for_sign_off(tmp_path):
    body = """
00:05 double-press record
00:10 double-press record
00:12 press mark x3
00:30 double-press record
00:40 double-press record
01:05 hold record 3s
end 01:15
"""
    result, recs = shift(tmp_path, body)
    [pause] = of(recs, "not-recording")
    assert pause["reason"]["code"] == "personal-privacy" and pause["needs_signoff"] is True
    trans = states(recs)
    assert ("recording", "paused", "not-recording") in trans
    assert ("paused", "recording", "resume") in trans
    assert len(of(recs, "pause-requested")) == 2
    [expired] = of(recs, "pause-request-expired")   # the second request was never answered
    assert expired["note_id"] is None
    stops = [s["cause"] for s in of(recs, "recording-stop")]
    assert stops == ["pause", "stop"]
    # nothing recorded or buffered while paused: the resumed recording starts after the resume press
    starts = of(recs, "recording-start")
    assert "first_frame_mono_ns" not in starts[1]
    assert starts[1]["how"] == "resume"


def test_camera_stall_asks_a_reason_and_it_goes_missing_when_ignored(tmp_path):
    body = """
set service.reason_timeout_s 10.0
00:05 double-press record
00:15 camera stall 3s
00:50 hold record 3s
end 01:00
"""
    result, recs = shift(tmp_path, body)
    assert [i["cause"] for i in of(recs, "interruption")] == ["camera-stall"]
    [pending] = of(recs, "reason-pending")
    assert pending["cause"] == "camera-stall" and pending["suggested_reason"] == "device-fault"
    [missing] = of(recs, "reason-missing")
    assert missing["why"] == "timeout" and missing["cause"] == "camera-stall"
    assert of(recs, "reason-given") == []
    assert [s["how"] for s in of(recs, "recording-start")] == ["officer", "auto-resume"]
    assert "reason-missing" in result.cues


def test_voice_note_is_sealed_verifiable_and_linked_to_the_interruption(tmp_path):
    body = f"""
00:05 double-press record
00:15 camera stall 3s
00:22 hold mark 4s speak {SPEECH}
00:27 press mark x6
00:40 hold record 3s
end 00:50
"""
    result, recs = shift(tmp_path, body)
    [note] = of(recs, "voice-note")
    [given] = of(recs, "reason-given")
    assert given["note_id"] == note["note_id"]
    assert given["reason"]["code"] == "change-of-site" and given["cause"] == "camera-stall"
    assert note["link"]["answers"] == "interruption" and note["link"]["cause"] == "camera-stall"
    [att] = note["attachments"]
    path = tmp_path / "ev" / att["path"]
    assert att["role"] == "voice-note" and path.stat().st_size == att["size"]
    assert ffmpeg_errors(path) == ""
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples / 16000 - 4.0) < 0.2, "the note covers the whole hold, from the press"
    assert abs(note["duration_ms"] - 4000) <= 100
    # the verifier checks it like a segment
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-10] + b"0" * 10)
    from recorder.identity import FileSigner
    pem = FileSigner.load(tmp_path / "key").public_key_pem()
    failure = verify_directory(tmp_path / "ev", pem).failure
    assert failure is not None and failure.reason == "SegmentHashMismatch" and failure.file == att["path"]


def test_voice_note_alone_answers_a_reason(tmp_path):
    body = f"""
00:05 double-press record
00:15 camera stall 3s
00:22 hold mark 3s speak {SPEECH}
00:40 hold record 3s
end 00:45
"""
    result, recs = shift(tmp_path, body)
    [note] = of(recs, "voice-note")
    [given] = of(recs, "reason-given")
    assert given["reason"] is None and given["note_id"] == note["note_id"]
    assert "reason-accepted" in result.cues


def test_power_loss_found_at_boot_asks_a_reason(tmp_path):
    body = """
00:05 double-press record
00:30 hold record 3s
end 00:35
"""
    shift(tmp_path, body)
    # a recorder killed mid-segment leaves a part file: plant one (a real segment cut short)
    seg = sorted((tmp_path / "ev" / "recordings").rglob("*_00000.ts"))[0]
    rid = "20261123T010000Z-dead00"
    (tmp_path / "ev" / "recordings" / rid).mkdir()
    part = tmp_path / "ev" / "recordings" / rid / f"{rid}_00000.ts.part"
    part.write_bytes(seg.read_bytes()[: seg.stat().st_size * 2 // 3])
    body2 = """
00:05 double-press record
00:08 press mark x1
00:20 hold record 3s
end 00:25
"""
    result, recs = shift(tmp_path, body2)
    boot2 = max(i for i, r in enumerate(recs) if r.type == "boot")
    later = recs[boot2:]
    assert [p["cause"] for p in of(later, "interruption")] == ["power-loss"]
    [pending] = of(later, "reason-pending")
    assert pending["how"] == "found-at-boot" and pending["cause"] == "power-loss"
    [given] = of(later, "reason-given")
    assert given["reason"]["code"] == "device-fault" and given["while_recording"] is True
    assert "reason-required" in result.cues


def test_battery_low_warns_and_critical_seals_and_stops(tmp_path):
    body = """
00:05 double-press record
00:10 battery 12%
00:20 battery 4%
end 00:40
"""
    result, recs = shift(tmp_path, body)
    assert of(recs, "battery-low")[0]["permille"] == pytest.approx(120, abs=1)
    assert of(recs, "battery-critical")
    [stop] = of(recs, "recording-stop")
    assert stop["cause"] == "low-battery"
    assert [i for i in of(recs, "state") if i["to"] == "interrupted"][0]["cause"] == "low-battery"
    assert of(recs, "reason-pending")[0]["cause"] == "low-battery"
    assert "low-battery" in result.cues
    assert of(recs, "segment")[-1]["final"] is True


def test_storage_warns_then_stops_cleanly_at_the_reserve(tmp_path):
    body = """
00:05 double-press record
00:10 storage free 1000MB
00:20 storage free 100MB
00:30 storage free normal
end 00:40
"""
    result, recs = shift(tmp_path, body)
    assert len(of(recs, "storage-low")) == 1
    stops = of(recs, "recording-stop")
    assert [s["cause"] for s in stops] == ["storage-full"]
    assert of(recs, "reason-pending")[0]["cause"] == "storage-full"
    assert of(recs, "segment")[-1]["final"] is True


def test_status_on_demand_is_journaled(tmp_path):
    body = """
00:05 status
00:08 double-press record
00:12 status
00:20 hold record 3s
end 00:25
"""
    result, recs = shift(tmp_path, body)
    checks = of(recs, "self-check")
    assert len(checks) == 3 and all(c["go"] for c in checks)
    assert checks[2]["state"] == "recording"
    assert {i["name"] for i in checks[0]["items"]} == {"battery", "storage", "time", "camera",
                                                       "microphone", "journal", "encryption"}
    enc = [i for i in checks[0]["items"] if i["name"] == "encryption"][0]     # no key on this bench
    assert enc["status"] == "warn" and enc["detail"] == "no agency key provisioned: recordings in clear"
    mic = [i for i in checks[0]["items"] if i["name"] == "microphone"][0]
    assert mic["status"] == "pass" and mic["measured"]["rms_millidbfs"] > -60_000


@pytest.mark.parametrize("text,words", [
    ("00:05 press record\n", "no 'end"),
    ("00:05 jump record\nend 00:10\n", "line 1"),
    ("00:05 press lever\nend 00:10\n", "no button"),
    ("00:65 press record\nend 01:10\n", "below 60"),
    ("00:09 press record\n00:05 press record\nend 00:10\n", "time order"),
    ("00:05 hold mark 4s speak nowhere.wav\nend 00:10\n", "no such WAV"),
    ("00:05 battery 120%\nend 00:10\n", "battery percent"),
    ("end 00:10\n00:20 press record\n", "after 'end'"),
    ("00:01 press record\nset video.fps 10\nend 00:10\n", "before the first event"),
])
def test_bad_scripts_are_refused_with_the_line(text, words):
    with pytest.raises(ScenarioError, match=words):
        parse(text)
