"""A scripted one-hour shift, faster than real time: the verifier passes and the journal
lists every reason, mark and check."""
from pathlib import Path

import pytest

from recorder.journal import iter_records
from sim.scenario import parse, run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    base = tmp_path_factory.mktemp("shift")
    sc = parse((REPO / "sim/scenarios/shift-1h.txt").read_text(), REPO)
    result = run(sc, base / "evidence", key_dir=base / "key")
    return result, list(iter_records(base / "evidence" / "journal.log"))


def of(recs, kind):
    return [r.payload for r in recs if r.type == kind]


def test_the_shift_verifies(shift):
    result, recs = shift
    assert result.verification.ok, result.verification.failure
    assert result.verification.files == len(of(recs, "segment")) + len(of(recs, "voice-note"))


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
])
def test_power_lines_are_checked(text, error):
    from sim.scenario import ScenarioError
    with pytest.raises(ScenarioError, match=error):
        parse(text)
