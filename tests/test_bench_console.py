"""The bench console (``bodycam run --sim --bench-socket``/``--console``), driven as a rig would.

A real ``bodycam run --sim`` process; the test talks to it only through its Unix socket (one
command per line, one JSON reply per line, an ``events`` subscription) or its terminal, and
checks the device's own reactions: journal records, states, lamps, cues, logged warnings.
Every wait is bounded; nothing is timed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware import cli
from firmware.bench.client import BenchClient
from firmware.bench.commands import COMMANDS, BenchUsageError, parse
from recorder.journal import iter_records
from recorder.verify import verify_directory

REPO = Path(__file__).resolve().parents[1]
START_S = 90      # boot on a busy CI core: key, journal, self-check, warm-up
WAIT_S = 30       # any one reaction


def bodycam(*args) -> list[str]:
    return [sys.executable, "-m", "firmware", *map(str, args)]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "bodycam.toml"
    cfg.write_text("[video]\nwidth = 160\nheight = 120\nfps = 10\nbitrate_kbps = 300\n"
                   "[audio]\nsample_rate = 16000\n[segment]\nseconds = 2\n[storage]\nreserve_mb = 0\n"
                   f"[service]\nruntime_dir = \"{tmp_path / 'run'}\"\nwarmup_s = 0.2\n")
    return cfg


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC") and not k.startswith("BODYCAM_")}


def _wait_socket(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_S
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"service exited {proc.returncode}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"no bench socket after {START_S} s"
        time.sleep(0.2)


class Events:
    """The test's subscription: everything seen is kept, so a check can look back."""

    def __init__(self, path: Path) -> None:
        self.client = BenchClient(path, WAIT_S)
        assert self.client.send("events") == {"ok": True, "command": "events", "subscribed": True}
        self.seen: list[dict] = []

    def wait(self, what: str, pred, timeout_s: float = WAIT_S) -> dict:
        for e in self.seen:
            if pred(e):
                return e
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {timeout_s} s; last events: {self.seen[-15:]}"
            e = self.client.next_event(left)
            assert e is not None, f"the service closed the connection before {what}"
            self.seen.append(e)
            if pred(e):
                return e

    def mark(self) -> None:
        """Forget what was seen (the next wait looks only at what comes after)."""
        self.seen = []


def journal(kind):
    return lambda e: e["event"] == "journal" and e["type"] == kind


def test_the_bench_socket_drives_the_device(tmp_path):
    cfg, ev, key = _config(tmp_path), tmp_path / "ev", tmp_path / "key"
    sock = tmp_path / "bench.sock"
    proc = subprocess.Popen(bodycam("run", "--sim", "--config", cfg, "--out", ev, "--key-dir", key,
                                    "--provision", "--bench-socket", sock, "--duration", 600),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=_env())
    try:
        _wait_socket(sock, proc)
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        events = Events(sock)
        rig = BenchClient(sock, WAIT_S)
        show = rig.send("show")["show"]
        assert show["state"] == "ready" and show["lamps"] == {"green": "on", "yellow": "off", "red": "off"}
        assert show["lit"] == {"green": True, "yellow": False, "red": False}
        assert set(show["devices"].values()) == {"sim"}

        # the record button, pressed twice: recording starts, lamps and cue show it
        assert rig.send("double-press record")["ok"]
        events.wait("recording state", lambda e: e["event"] == "state" and e["to"] == "recording")
        start = events.wait("recording-start record", journal("recording-start"))
        events.wait("recording lamps", lambda e: e["event"] == "lamps" and e["red"] == "on" and e["yellow"] == "on")
        cue = events.wait("recording cue", lambda e: e["event"] == "cue" and e["name"] == "recording-started")
        assert cue["vibrate"] and cue["tones_hz"] == [2000.0]
        events.wait("the motor running", lambda e: e["event"] == "output" and e["vibrating"])
        recording_id = start["payload"]["recording_id"]

        # malformed commands: a clear error each, and the device keeps recording
        for line, error in [("frobnicate", "unknown command 'frobnicate'"),
                            ("press record x99", "count like x3"),
                            ("hold record", "wrong number of arguments (usage: hold record|mark SECONDS)"),
                            ("battery 150", "out of range"),
                            ("press elbow", "no button 'elbow'"),
                            ("clock step soon", "expected a number")]:
            reply = rig.send(line)
            assert reply["ok"] is False and error in reply["error"], (line, reply)
        rig.sock.sendall(b"\xff\xfe\n")
        assert rig.reply() == {"ok": False, "error": "a command line must be UTF-8 text"}
        show = rig.send("show")["show"]
        assert show["state"] == "recording" and show["recording_id"] == recording_id

        # a wall-clock step: journaled against the recording, media time unmoved
        events.mark()
        assert rig.send("clock step +3600")["ok"]
        step = events.wait("clock-step", journal("clock-step"))
        assert step["payload"]["delta_ns"] == 3600 * 10**9 and step["payload"]["recording_id"] == recording_id

        # storage pressure: the watch journals it and cues a fault; then the real figure again
        assert rig.send("storage free 100MB")["ok"]
        low = events.wait("storage-low", journal("storage-low"))
        assert low["payload"]["free_bytes"] == 100 * 2**20
        assert rig.send("storage normal")["ok"]
        assert rig.send("show")["show"]["storage_free_mb"] > 100

        # an on-demand self-check while recording
        assert rig.send("status")["ok"]
        check = events.wait("self-check", journal("self-check"))
        assert check["payload"]["state"] == "recording"

        # a dead microphone: the device logs it and records on with silence
        events.mark()
        assert rig.send("mic dead")["ok"]
        warning = events.wait("the dead-microphone error",
                              lambda e: e["event"] == "log" and "microphone delivered no audio" in e["message"])
        assert warning["level"] == "ERROR" and recording_id in warning["message"]
        assert rig.send("show")["show"]["microphone_dead"] is True
        assert rig.send("mic ok")["ok"]

        # battery low: journaled with the level, the low-battery cue plays
        assert rig.send("battery 12")["ok"]
        low = events.wait("battery-low", journal("battery-low"))
        assert 115 <= low["payload"]["permille"] <= 120
        events.wait("low-battery cue", lambda e: e["event"] == "cue" and e["name"] == "low-battery")
        assert rig.send("show")["show"]["state"] == "recording"
        # the fuel gauge stops answering: journaled once, the recording goes on; then it answers again
        assert rig.send("battery fail")["ok"]
        gauge = events.wait("battery-gauge-error", journal("battery-gauge-error"))
        assert "simulated gauge fault" in gauge["payload"]["error"]
        assert rig.send("battery ok")["state"] == "recording"

        # a camera stall ends the recording with a reason owed; it resumes when frames return
        events.mark()
        assert rig.send("camera stall 2")["ok"]
        stall = events.wait("camera-stall interruption", journal("interruption"))
        assert stall["payload"]["cause"] == "camera-stall" and stall["payload"]["recording_id"] == recording_id
        events.wait("reason-pending", journal("reason-pending"))
        resumed = events.wait("auto-resume", journal("recording-start"))
        assert resumed["payload"]["recording_id"] != recording_id

        # dock and undock: the recording stops normally, the lamps blink green while docked
        events.mark()
        assert rig.send("dock")["state"] == "docked"
        events.wait("recording-stop", lambda e: journal("recording-stop")(e) and e["payload"]["cause"] == "stop")
        events.wait("docked lamps", lambda e: e["event"] == "lamps" and e["green"] == "blink 2s")
        assert rig.send("undock")["state"] == "ready"
        events.wait("undocked", lambda e: e["event"] == "state" and e == {**e, "from": "docked", "to": "ready"})
        again = rig.send("undock")
        assert again["ok"] is False and "not docked" in again["error"]

        # a clean quit: the service shuts down, says so, and removes its socket
        assert rig.send("quit") == {"ok": True, "command": "quit", "detail": "shutting down"}
        events.wait("shutdown record", journal("shutdown"))
        events.wait("closed", lambda e: e["event"] == "closed")
        out, err = proc.communicate(timeout=WAIT_S)
        rig.close()
        events.client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == f"{ev}\n" and "Traceback" not in err
    assert not sock.exists()
    recs = list(iter_records(ev / "journal.log"))
    types = [r.type for r in recs]
    assert types.count("recording-start") == types.count("recording-stop") == 2
    assert {"battery-low", "storage-low", "clock-step", "interruption"} <= set(types)
    assert types[-1] == "shutdown"
    docked = [(r.payload["from"], r.payload["to"]) for r in recs if r.type == "state"]
    assert ("recording", "ready") in docked or ("ready", "docked") in docked
    assert ("docked", "ready") in docked
    result = verify_directory(ev, (key / "device-key.pub.pem").read_bytes())
    assert result.ok, result.failure


def test_the_console_on_a_terminal_lists_commands_refuses_nonsense_and_quits(tmp_path):
    cfg = _config(tmp_path)
    typed = "help\nhelp gps\nshow\nfrobnicate\npress record x2\nquit\n"
    r = subprocess.run(bodycam("run", "--sim", "--console", "--config", cfg, "--out", tmp_path / "ev",
                               "--key-dir", tmp_path / "key", "--provision", "--duration", 600),
                       input=typed, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=START_S + 60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    lines = [ln.removeprefix("bench> ") for ln in out.splitlines()]
    for spec in COMMANDS.values():
        assert any(ln.startswith(spec.usage + "  ") and spec.help in ln for ln in lines), spec
    assert "gps fix|nofix|cold | gps jump SECONDS\n    the receiver" in out
    assert "state: ready" in out and "lamps: {'green': 'on'" in out
    assert "error: unknown command 'frobnicate'; 'help' lists the commands" in out
    assert "ok: quit (shutting down)" in out
    assert r.stdout.rstrip().endswith(str(tmp_path / "ev"))
    recs = list(iter_records(tmp_path / "ev" / "journal.log"))
    assert recs[-1].type == "shutdown"


@pytest.mark.parametrize("line, error", [
    ("", "empty command"),
    ("press", "wrong number of arguments"),
    ("double-press mark x2", "wrong number of arguments"),
    ("camera wobble 3", "only 'stall'"),
    ("camera stall 0", "out of range"),
    ("mic quiet", "dead or ok"),
    ("storage free lots", "expected a number"),
    ("storage empty 5", "'free MB' or 'normal'"),
    ("gps maybe", "fix, nofix, cold or jump"),
    ("gps jump", "wrong number of arguments"),
    ("clock step 0", "changes nothing"),
    ("clock jump 5", "only 'step'"),
    ("help nothing", "no command 'nothing'"),
    ("dock now", "wrong number of arguments"),
    ("press 'record", "cannot read the line"),
])
def test_malformed_lines_are_refused_with_their_usage(line, error):
    with pytest.raises(BenchUsageError, match=error):
        parse(line)


def test_lines_parse_to_device_actions():
    assert parse("double-press record").args == ("record", 2)
    assert parse("press mark x3").args == ("mark", 3)
    assert parse("hold record 3s").args == ("record", 3.0)
    assert parse("battery 12%").args == (12.0,)
    assert parse("storage free 100MB").args == (100 * 2**20,)
    assert parse("storage normal").args == (None,)
    assert parse("gps jump -37").args == ("jump", -37.0)
    assert parse("clock step +3600  # an NTP step").args == (3600.0,)


def test_bench_send_without_a_running_service_says_so(tmp_path, capsys):
    assert cli.main(["bench", "send", "--socket", str(tmp_path / "none.sock"), "show"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the bench console at {tmp_path / 'none.sock'}" in err
    assert "bodycam run --sim --bench-socket" in err


def test_the_socket_path_is_claimed_only_from_a_dead_service(tmp_path):
    import socket

    from firmware.bench.server import SocketInUse, _claim

    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()                       # what a killed service leaves behind
    _claim(stale)
    assert not stale.exists()
    live = tmp_path / "live.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(live))
    listener.listen(1)
    try:
        with pytest.raises(SocketInUse, match="another bench console is listening"):
            _claim(live)
        assert live.exists()
    finally:
        listener.close()
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(SocketInUse, match="is not a socket"):
        _claim(plain)
    assert plain.read_text() == "keep me"


def test_events_read_as_log_lines_on_the_console():
    from firmware.bench.console import format_event, format_reply

    lines = [format_event(e) for e in [
        {"event": "state", "t": 1.5, "from": "ready", "to": "recording"},
        {"event": "lamps", "t": 1.5, "green": "off", "yellow": "on", "red": "blink 0.25s"},
        {"event": "cue", "t": 1.5, "name": "reason-required", "vibrate": True,
         "tones_hz": [3000.0, 3000.0, 3000.0], "seconds": 0.65},
        {"event": "output", "t": 1.6, "vibrating": False, "tone_hz": None},
        {"event": "journal", "t": 2.0, "type": "self-check", "seq": 9,
         "payload": {"go": False, "items": [{"name": "microphone", "status": "fail"}]}},
        {"event": "journal", "t": 2.0, "type": "battery-low", "seq": 10, "payload": {"permille": 118}},
        {"event": "log", "t": 3.0, "level": "ERROR", "logger": "recorder.recording", "message": "no audio"},
    ]]
    assert lines == [
        "[    1.500] state    ready -> recording",
        "[    1.500] lamps    green off  yellow on  red blink 0.25s",
        "[    1.500] cue      reason-required: 0.65 s, vibration, tones 3000 Hz",
        "[    1.600] output   motor off, buzzer off",
        "[    2.000] journal  #9 self-check NO-GO (microphone)",
        "[    2.000] journal  #10 battery-low (11.8 %)",
        "[    3.000] log      ERROR recorder.recording: no audio",
    ]
    assert format_reply({"ok": False, "error": "unknown command 'x'"}) == "error: unknown command 'x'"
    assert format_reply({"ok": True, "command": "dock", "state": "docked"}) == "ok: dock -> docked"


def test_a_taken_socket_path_is_refused_and_the_device_shuts_down_cleanly(tmp_path):
    cfg, ev, key = _config(tmp_path), tmp_path / "ev", tmp_path / "key"
    taken = tmp_path / "taken"
    taken.write_text("not a socket")
    r = subprocess.run(bodycam("run", "--sim", "--config", cfg, "--out", ev, "--key-dir", key, "--provision",
                               "--bench-socket", taken, "--duration", 600),
                       capture_output=True, text=True, cwd=REPO, env=_env(), timeout=START_S + 60)
    assert r.returncode == 1, r.stderr
    assert (f"bodycam: error: bench console: {taken} exists and is not a socket; "
            "choose another --bench-socket path") in r.stderr
    assert taken.read_text() == "not a socket" and "Traceback" not in r.stderr
    recs = list(iter_records(ev / "journal.log"))
    assert recs[-1].type == "shutdown"
    assert verify_directory(ev, (key / "device-key.pub.pem").read_bytes()).ok
