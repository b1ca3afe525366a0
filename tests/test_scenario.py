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
