"""A scripted one-hour shift, faster than real time: the verifier passes and the journal
lists every reason, mark and check."""
from pathlib import Path

import pytest

from recorder.journal import iter_records
from recorder.verify import verify_directory
from sim.scenario import parse, run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shift(shift_1h):
    """The session's one-hour shift (tests/shift_fixture.py), verified again here with its key."""
    verification = verify_directory(shift_1h.evidence, shift_1h.public_key.read_bytes())
    return verification, list(iter_records(shift_1h.evidence / "journal.log"))


def of(recs, kind):
    return [r.payload for r in recs if r.type == kind]


def test_the_shift_verifies(shift):
    verification, recs = shift
    assert verification.ok, verification.failure
    assert verification.files == len(of(recs, "segment")) + len(of(recs, "voice-note"))


def test_every_check_reason_and_mark_is_in_the_journal(shift):
    _, recs = shift
    checks = of(recs, "self-check")
    assert len(checks) == 3 and all(c["go"] for c in checks)           # boot, 00:05, 45:00
    assert [m["count"] for m in of(recs, "mark")] == [1, 2]
    [pause] = of(recs, "not-recording")
    assert pause["reason"]["code"] == "personal-privacy" and pause["note_id"]
    notes = of(recs, "voice-note")
    assert len(notes) == 2 and pause["note_id"] == notes[0]["note_id"]
    assert [p["cause"] for p in of(recs, "reason-pending")] == ["camera-stall", "low-battery"]
    [given] = of(recs, "reason-given")
    assert given["reason"]["code"] == "device-fault" and given["note_id"] == notes[1]["note_id"]
    [missing] = of(recs, "reason-missing")
    assert missing["cause"] == "low-battery"
    assert of(recs, "battery-low") and of(recs, "battery-critical") and of(recs, "storage-low")


def test_recordings_start_stop_and_cover_the_shift(shift):
    _, recs = shift
    starts, stops = of(recs, "recording-start"), of(recs, "recording-stop")
    assert len(starts) == len(stops) == 8
    assert [s["cause"] for s in stops] == ["stop", "pause", "camera-stall", "stop", "low-battery",
                                           "stop", "stop", "stop"]
    first = starts[0]
    # the start is the second press (~0.3 s after the first); at most 30 s and one GOP less
    assert 28.5 <= (first["press_mono_ns"] - first["first_frame_mono_ns"]) / 1e9 <= 30
    trans = [(p["from"], p["to"]) for p in of(recs, "state")]
    assert ("ready", "docked") in trans and ("docked", "ready") in trans
    assert trans[-1] == ("ready", "off")


# -- a power cut mid-recording and the restart on the same evidence (sim/scenarios/power-cut.txt)
@pytest.fixture(scope="module")
def power_cut(tmp_path_factory):
    base = tmp_path_factory.mktemp("power-cut")
    sc = parse((REPO / "sim/scenarios/power-cut.txt").read_text(), REPO)
    result = run(sc, base / "evidence", key_dir=base / "key")
    return result, list(iter_records(base / "evidence" / "journal.log"))


def test_power_cut_and_restart_verify_on_the_same_directory(power_cut):
    from recorder import identity
    from recorder.verify import verify_directory

    result, recs = power_cut
    again = verify_directory(result.out, identity.FileSigner.load(result.key_dir).public_key_pem())
    assert result.verification.ok and again.ok, again.failure
    first, second = of(recs, "boot")
    assert first["previous_session"]["ended"] == "none"
    assert second["previous_session"]["ended"] == "abnormally"     # killed: no shutdown record
    assert [r.type for r in recs].count("shutdown") == 1 and recs[-1].type == "shutdown"
    assert len({r.message["session"] for r in recs}) == 2          # one journal, two boots
    assert not list(result.out.rglob("*.part"))


def test_power_cut_is_salvaged_as_power_loss(power_cut):
    _, recs = power_cut
    [interruption] = of(recs, "interruption")
    assert interruption["cause"] == "power-loss"
    recovered = [s for s in of(recs, "segment") if s.get("recovered")]
    assert len(recovered) == 1 and recovered[0]["recording_id"] == interruption["recording_id"]
    starts = of(recs, "recording-start")
    assert len(starts) == 2 and len(of(recs, "recording-stop")) == 1   # the cut one never stopped


def test_power_cut_reason_is_asked_at_boot_and_answered(power_cut):
    result, recs = power_cut
    types = [r.type for r in recs]
    [pending] = of(recs, "reason-pending")
    assert pending["cause"] == "power-loss" and pending["how"] == "found-at-boot"
    [given] = of(recs, "reason-given")
    assert given["cause"] == "power-loss" and given["reason"]["code"] == "low-battery"
    assert not given["late"] and not of(recs, "reason-missing")
    assert types.index("interruption") < types.index("reason-pending") < types.index("reason-given")
    assert "reason-required" in result.cues and "reason-accepted" in result.cues


@pytest.mark.parametrize("text, error", [
    ("00:05 power on\nend 00:10", "without a 'power cut'"),
    ("00:05 power cut\nend 00:10", "needs a 'power on'"),
    ("00:05 power cut\n00:06 press record\n00:07 power on\nend 00:10", "the power is off"),
    ("00:05 power off\nend 00:10", "cannot understand"),
    ("00:05 power cut sometimes\n00:06 power on\nend 00:10", "cannot understand"),
])
def test_power_lines_are_checked(text, error):
    from sim.scenario import ScenarioError
    with pytest.raises(ScenarioError, match=error):
        parse(text)


def test_the_power_cut_report_shows_the_restart_and_the_answered_prompt(power_cut):
    """The shift report for the power-cut script: two sessions, one abnormal restart, the
    power-loss interruption with the reason prompt marked answered, with the officer's reason."""
    import json
    import xml.etree.ElementTree as ET

    from sim.scenario import write_report

    result, recs = power_cut
    svg = write_report(result)
    root = ET.parse(svg).getroot()
    owed = [e for e in root.iter() if "reason-owed" in (e.get("class") or "").split()]
    [given] = of(recs, "reason-given")
    [group] = owed
    assert group.get("data-cause") == "power-loss" and group.get("data-status") == "given"
    assert group.get("data-reason") == given["reason"]["en"]
    assert given["reason"]["en"] in "".join(group.itertext())
    [cut] = [e for e in root.iter() if "interruption" in (e.get("class") or "").split()]
    assert cut.get("data-cause") == "power-loss"
    text = svg.with_suffix(".txt").read_text()
    assert f"power-loss  -> given: {given['reason']['en']}" in text
    from firmware.shift_report import summarise
    from recorder import identity
    summary, _ = summarise(result.out, identity.FileSigner.load(result.key_dir).public_key_pem())
    assert summary["sessions"] == 2 and summary["abnormal_restarts"] == 1
    assert summary["reasons"] == {"owed": 1, "given": 1, "missing": 0, "open": 0}
    assert json.loads(json.dumps(summary))["verification"]["ok"]


LOSE_UNSYNCED = """
set video.width 160
set video.height 120
set video.fps 5
set audio.sample_rate 16000
set segment.seconds 10
set service.prebuffer_s 2.0
set service.reason_timeout_s 60.0
00:05 double-press record
00:17 power cut lose-unsynced     # the open segment was never fsynced: the disk has none of it
00:25 power on
00:35 press mark x4               # the reason asked at boot: low battery
end 00:40
"""


def test_a_cut_that_loses_unsynced_data_is_salvaged_kept_and_explained(tmp_path):
    from recorder import identity
    from recorder.verify import verify_directory

    result = run(parse(LOSE_UNSYNCED), tmp_path / "ev", key_dir=tmp_path / "key")
    recs = list(iter_records(tmp_path / "ev" / "journal.log"))
    assert result.verification.ok, result.verification.failure
    [lost] = of(recs, "unreadable-part")
    [kept] = lost["attachments"]
    assert kept["path"].endswith(".ts.unreadable") and kept["size"] == 0    # attested, never deleted
    assert (tmp_path / "ev" / kept["path"]).stat().st_size == 0
    [start] = of(recs, "recording-start")
    assert lost["recording_id"] == start["recording_id"] and lost["source"].endswith(".ts.part")
    segments = of(recs, "segment")
    assert segments and all(s["recording_id"] == start["recording_id"] for s in segments)
    assert not any(s.get("recovered") for s in segments) and not of(recs, "recording-stop")
    [interruption] = of(recs, "interruption")
    assert interruption["cause"] == "power-loss" and interruption["recording_id"] == start["recording_id"]
    [given] = of(recs, "reason-given")
    assert given["cause"] == "power-loss" and given["reason"]["code"] == "low-battery"
    assert not list(result.out.rglob("*.part"))
    again = verify_directory(result.out, identity.FileSigner.load(result.key_dir).public_key_pem())
    assert again.ok, again.failure
