"""Journal format version 2: every signed message is integer-only (issue 9, item A).

Real journals (a sim recording, a scripted shift) hold no float anywhere; the writer refuses
to sign one; the verifier rejects a float in a v2 record with a named reason (FloatInRecord),
still accepts version-1 journals (floats allowed there), and refuses a version that falls.
"""
import hashlib
import json
import logging
from pathlib import Path

import pytest

from common.clock import TimeQuality, TimeSample
from firmware import cli, config, evidence_cli
from recorder import records, verify
from recorder.journal import JOURNAL_NAME
from sim.scenario import parse, run
from tests.media_fixture import new_device, record_session
from tests.test_service_controls import HEADER  # the same small, fast device

REPO = Path(__file__).resolve().parent.parent


def floats_in(obj, path="$"):
    """Every float in a JSON value, with where it is."""
    if isinstance(obj, float):
        return [(path, obj)]
    if isinstance(obj, dict):
        return [f for k, v in obj.items() for f in floats_in(v, f"{path}.{k}")]
    if isinstance(obj, list):
        return [f for i, v in enumerate(obj) for f in floats_in(v, f"{path}[{i}]")]
    return []


def journal_messages(root):
    """Each line's message as parsed from the raw bytes (json parses '1.0' as a float)."""
    return [json.loads(line.split(b"\t")[0]) for line in (root / JOURNAL_NAME).read_bytes().splitlines()]


def lines(root):
    return (root / JOURNAL_NAME).read_bytes().splitlines(keepends=True)


def append_signed(dev, message: dict) -> bytes:
    """Append a line signed with the device's own key, chained after the current last line."""
    ls = lines(dev.root)
    last = json.loads(ls[-1].split(b"\t")[0])
    message = {**last, **message, "seq": last["seq"] + 1, "prev": records.line_hash(ls[-1])}
    msg = records.canonical_json(message)
    line = records.format_line(msg, dev.signer.sign(msg))
    with open(dev.root / JOURNAL_NAME, "ab") as f:
        f.write(line)
    return line


# ---- real journals -----------------------------------------------------------------------------
def test_sim_recording_journal_is_integer_only(tmp_path):
    out = tmp_path / "ev"
    status = cli.main(["record", "--sim", "--fast", "--duration", "3", "--camera-stall", "1:1.5",
                       "--out", str(out), "--key-dir", str(tmp_path / "key"), "--provision"])
    assert status == 0
    msgs = journal_messages(out)
    types = {m["type"] for m in msgs}
    assert {"boot", "config-change", "recording-start", "segment", "interruption",
            "recording-stop", "shutdown"} <= types
    assert [f for m in msgs for f in floats_in(m, m["type"])] == []
    assert {m["v"] for m in msgs} == {2}

    [stall] = [m["payload"] for m in msgs if m["type"] == "interruption"]
    assert stall["cause"] == "camera-stall" and stall["stall_timeout_ms"] == 1000
    assert "stall_timeout_s" not in stall
    [cfg] = [m["payload"] for m in msgs if m["type"] == "config-change"]
    c = cfg["config"]
    assert c["capture"] == {"stall_timeout_ms": 1000, "max_bridge_ms": 500, "mic_timeout_ms": 2000}
    assert c["battery"]["critical_permille"] == 50 and c["battery"]["low_permille"] == 150
    assert c["battery"]["nominal_drain_permille_per_h"] == 125
    assert c["controls"]["bounce_ms"] == 30 and c["controls"]["gpio_bounce_ms"] is None
    assert c["selfcheck"]["mic_noise_floor_millidbfs"] == -90000
    assert c["selfcheck"]["battery_fail_ms"] == 3_600_000
    assert c["indicators"]["buzzer_mid_millihz"] == 2_000_000
    assert cfg["sha256"] == hashlib.sha256(records.canonical_json(c)).hexdigest()
    assert verify.verify_directory(out, (tmp_path / "key" / "device-key.pub.pem").read_bytes()).ok


SHIFT = HEADER + """00:02 status
00:05 double-press record
00:08 press mark
00:12 camera stall 3s
00:20 hold mark 3s speak sim/scenarios/speech.wav
00:25 press mark x1
00:30 status
00:35 battery 12%
00:45 battery 4%
00:50 battery 80%
00:52 storage free 1000MB
01:02 storage free normal
01:04 double-press record
01:08 hold record 3s
end 01:15
"""


def test_scripted_shift_journal_is_integer_only(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    result = run(parse(SHIFT, REPO), tmp_path / "ev", key_dir=tmp_path / "key")
    assert result.verification.ok, result.verification.failure
    assert not [r for r in caplog.records if "could not journal" in r.getMessage()]
    msgs = journal_messages(tmp_path / "ev")
    assert [f for m in msgs for f in floats_in(m, m["type"])] == []
    by = lambda kind: [m["payload"] for m in msgs if m["type"] == kind]  # noqa: E731
    for kind in ("self-check", "interruption", "battery-low", "battery-critical", "voice-note",
                 "state", "mark", "storage-low", "reason-pending"):
        assert by(kind), f"no {kind} record: the scenario no longer covers it"
    assert by("battery-low")[0]["permille"] == pytest.approx(120, abs=1)
    assert by("battery-critical")[0]["permille"] == pytest.approx(40, abs=1)
    assert [s for s in by("state") if s["cause"] == "low-battery"][0]["permille"] == pytest.approx(40, abs=1)
    check = by("self-check")[0]
    items = {i["name"]: i["measured"] for i in check["items"]}
    assert set(items["battery"]) == {"permille", "time_left_ms"}
    assert set(items["storage"]) == {"free_bytes", "recording_time_ms"}
    assert isinstance(items["microphone"]["rms_millidbfs"], int)
    assert check["thresholds"]["battery_fail_permille"] == 200
    assert check["thresholds"]["rtc_fail_after_ms"] == 7 * 86400 * 1000


# ---- the writer ------------------------------------------------------------------------------------
def test_writer_refuses_a_float_anywhere(tmp_path):
    dev = new_device(tmp_path)
    before = (dev.root / JOURNAL_NAME).read_bytes()
    for payload in ({"x": 0.5}, {"a": {"b": [1, 2, {"c": 1.0}]}}, {"n": float("inf")}):
        with pytest.raises(records.FloatInRecord):
            dev.journal.append("test", payload)
    assert (dev.root / JOURNAL_NAME).read_bytes() == before   # nothing half-written, head unchanged
    with pytest.raises(records.FloatInRecord) as exc:
        records.build_message(seq=0, prev=records.GENESIS_PREV, device="d", session="s",
                              sample=TimeSample(0, 0, TimeQuality.NTP), type="t",
                              payload={"ok": 1, "deep": [{"x": 2.5}]})
    assert exc.value.path == "payload.deep[0].x"
    rec = dev.journal.append("test", {"big": 2**63 + 1, "neg": -(2**70)})
    assert rec.message["v"] == 2 == records.FORMAT_VERSION
    assert b'"big":9223372036854775809' in rec.line
    dev.journal.close()
    assert verify.verify_directory(dev.root, dev.pem).ok


def test_config_journal_form_is_total_and_exact():
    with pytest.raises(config.ConfigError, match="whole number of ms"):
        config.validate({"controls": {"bounce_s": 0.0305}}, "t.toml")
    with pytest.raises(config.ConfigError, match="JOURNAL_UNITS"):
        config.journal_form({"x": {"ratio": 0.5}})
    assert config.journal_form({"x": {"a_s": 1, "b_percent": 12.5, "c_hours": 0.5}}) == \
        {"x": {"a_ms": 1000, "b_permille": 125, "c_ms": 1_800_000}}
    assert floats_in(config.journal_form(config.defaults())) == []


# ---- the verifier ----------------------------------------------------------------------------------
def test_v2_record_with_a_float_signed_by_the_device_fails_with_a_named_reason(tmp_path, capsys):
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 1})
    dev.journal.close()
    n = len(lines(dev.root))
    append_signed(dev, {"v": 2, "type": "battery-low", "payload": {"percent": 12.5}})
    result = verify.verify_directory(dev.root, dev.pem)
    assert isinstance(result.failure, verify.FloatInRecord), result.failure
    assert isinstance(result.failure, verify.MalformedRecord)
    assert result.failure.reason == "FloatInRecord" and result.failure.line_no == n + 1
    assert "payload.percent" in str(result.failure)
    key = tmp_path / "pub.pem"
    key.write_bytes(dev.pem)
    assert evidence_cli.main(["verify", str(dev.root), "--pubkey", str(key)]) == 1
    assert "FloatInRecord" in capsys.readouterr().err


def test_v2_float_in_the_envelope_also_fails(tmp_path):
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 1})
    dev.journal.close()
    append_signed(dev, {"v": 2, "mono_ns": 1.5, "payload": {}})
    assert isinstance(verify.verify_directory(dev.root, dev.pem).failure, verify.FloatInRecord)


def test_v1_journal_with_floats_still_verifies_and_continues_as_v2(tmp_path, monkeypatch):
    """Written by the real signing code at version 1 (old firmware), then upgraded."""
    monkeypatch.setattr(records, "FORMAT_VERSION", 1)
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 2})
    dev.journal.append("interruption", {"cause": "camera-stall", "recording_id": "r1",
                                        "stall_timeout_s": 1.0})
    dev.journal.append("config-change", {"config": {"battery": {"critical_percent": 5.0}}})
    monkeypatch.undo()
    dev = dev.reopen()                      # new firmware: appends version-2 records
    dev.journal.append("battery-low", {"permille": 120})
    dev.journal.close()
    msgs = journal_messages(dev.root)
    assert {m["v"] for m in msgs[:-1]} == {1} and msgs[-1]["v"] == 2
    assert ("$.payload.stall_timeout_s", 1.0) in floats_in(msgs[-3])
    result = verify.verify_directory(dev.root, dev.pem)
    assert result.ok, result.failure
    assert result.records == len(msgs)


def test_version_may_not_fall_along_the_journal(tmp_path):
    dev = new_device(tmp_path)
    record_session(dev, {"r1": 1})          # version 2
    dev.journal.close()
    n = len(lines(dev.root))
    append_signed(dev, {"v": 1, "type": "battery-low", "payload": {"percent": 12.5}})
    failure = verify.verify_directory(dev.root, dev.pem).failure
    assert type(failure) is verify.MalformedRecord, failure
    assert failure.line_no == n + 1 and "may only stay equal or rise" in str(failure)
    assert (failure.expected, failure.found) == (">= 2", 1)

