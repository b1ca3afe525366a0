"""Real and simulated parts mixed device by device (``firmware.hardware.DeviceSelection``).

The "real" GPS here is the real reader on a real pty that the test feeds NMEA by hand (the
thinnest seam: the serial port), with the camera, microphone, battery and buttons simulated;
the service runs as ``bodycam run --sim`` with ``BODYCAM_GPS=real`` and is driven through the
bench socket. The real-button path is gpiozero's default pin factory, stood in for by its
own MockFactory (``GPIOZERO_PIN_FACTORY=mock``), as gpiozero intends.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from firmware import cli, config, hardware
from firmware.bench.client import BenchClient
from recorder.journal import iter_records
from recorder.verify import verify_directory
from sim.gps import epoch_lines

REPO = Path(__file__).resolve().parents[1]
BEIJING = (39.9042, 116.4074)          # not the simulator's default position (Shanghai)
START_S, WAIT_S = 90, 30


def _sim_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC") and not k.startswith("BODYCAM_")}
    return {**env, **extra}


# -- choosing, part by part -------------------------------------------------------------------

def test_the_base_then_the_file_then_the_environment(tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices]\ngps = "real"\nbattery = "real"\n')
    sel = hardware.DeviceSelection.resolve(True, environ={"BODYCAM_BATTERY": "sim"}, file=devices)
    assert sel.as_dict() == {"camera": "sim", "microphone": "sim", "gps": "real", "battery": "sim",
                             "gpio": "sim", "audio": "sim", "clock": "sim"}
    assert sel.how["gps"] == str(devices) and sel.how["battery"] == "BODYCAM_BATTERY=sim"
    assert sel.how["camera"] == "--sim" and sel.mixed
    pi = hardware.DeviceSelection.resolve(False, environ={"BODYCAM_DEVICES": str(devices), "BODYCAM_CAMERA": "sim"})
    assert pi["camera"] == "sim" and pi["gps"] == "real" and pi["microphone"] == "real"
    assert not hardware.DeviceSelection.resolve(True, environ={}).mixed     # gps "none" is no mix


@pytest.mark.parametrize("environ, text, error", [
    ({"BODYCAM_CAMERA": "fake"}, None, "BODYCAM_CAMERA: the camera must be real or sim, not 'fake'"),
    ({"BODYCAM_GPS": "maybe"}, None, "the gps must be real or sim or none, not 'maybe'"),
    ({}, '[devices]\nlens = "sim"\n', "[devices] lens: no device 'lens' (devices: camera, microphone"),
    ({}, '[devices]\nbattery = 1\n', "[devices] battery: the battery must be real or sim, not 1"),
    ({}, 'camera = "sim"\n', "expected one [devices] table"),
    ({}, '[devices\n', "not valid TOML"),
])
def test_a_bad_selection_is_refused_with_what_and_where(tmp_path, environ, text, error):
    file = None
    if text is not None:
        file = tmp_path / "devices.toml"
        file.write_text(text)
    with pytest.raises(hardware.DeviceSelectionError) as info:
        hardware.DeviceSelection.resolve(True, environ=environ, file=file)
    assert error in str(info.value)
    assert isinstance(info.value, config.ConfigError)      # exit code 3, like any configuration error


def test_bodycam_refuses_an_unknown_kind_before_touching_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BODYCAM_CAMERA", "fake")
    for command in (["run", "--sim", "--provision"], ["record", "--sim", "--fast", "--duration", "1", "--provision"]):
        out = tmp_path / command[0]
        status = cli.main([*command, "--out", str(out), "--key-dir", str(tmp_path / "key")])
        assert status == cli.EXIT_CONFIG
        assert capsys.readouterr().err.strip() == ("bodycam: error: BODYCAM_CAMERA: the camera must be "
                                                   "real or sim, not 'fake'")
        assert not out.exists() and not (tmp_path / "key").exists()


def test_a_real_microphone_is_refused_on_the_virtual_clock(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BODYCAM_MICROPHONE", "real")
    status = cli.main(["record", "--sim", "--fast", "--duration", "1", "--provision",
                       "--out", str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key")])
    assert status == cli.EXIT_CONFIG
    assert "a real camera or microphone cannot run on the virtual clock" in capsys.readouterr().err
    assert not (tmp_path / "key").exists()


def test_a_real_part_without_its_library_is_refused_before_anything_opens(tmp_path, monkeypatch, capsys):
    import importlib.util
    if importlib.util.find_spec("picamera2") is not None:   # a Pi: the camera library is there
        pytest.skip("picamera2 is installed here; the refusal is for machines without it")
    monkeypatch.setenv("BODYCAM_CAMERA", "real")
    status = cli.main(["run", "--sim", "--provision", "--duration", "1",
                       "--out", str(tmp_path / "ev"), "--key-dir", str(tmp_path / "key")])
    assert status == cli.EXIT_CONFIG
    assert capsys.readouterr().err.strip() == (
        "bodycam: error: the camera is real (BODYCAM_CAMERA=real) but picamera2 is not installed here "
        "(apt install python3-picamera2); or simulate it: BODYCAM_CAMERA=sim")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "key").exists()


def test_real_gpio_battery_and_speaker_with_a_simulated_camera(monkeypatch):
    """gpio/battery/audio real: gpiozero's default factory (here its MockFactory, chosen the
    gpiozero way), the MAX17048 driver, aplay; the bench refuses to press a real button."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from hw.audio_out import AplayAudioOut
    from hw.battery import Max17048
    from hw.buttons import GestureButtons, GestureKind
    from sim.controls import NotSimulated

    cfg = config.defaults()
    sel = hardware.DeviceSelection.resolve(True, environ={"BODYCAM_GPIO": "real", "BODYCAM_BATTERY": "real",
                                                          "BODYCAM_AUDIO": "real"})
    devices = hardware.simulated(cfg, realtime=False, selection=sel)
    try:
        board = hardware.board(cfg, devices, sim=True)
        assert board.pin_factory is None and isinstance(board.battery, Max17048)
        assert isinstance(board.audio_out, AplayAudioOut)
        assert devices.sim is not None and devices.sim.pins is None and devices.sim.battery is None
        with pytest.raises(NotSimulated, match=r"the gpio is not simulated on this device \(real, BODYCAM_GPIO=real\)"):
            devices.sim.drive_button(5, True)
        with pytest.raises(NotSimulated, match="the battery is not simulated"):
            devices.sim.battery_percent(10)
        # the real-button code path, on gpiozero's default factory = its MockFactory stand-in
        monkeypatch.setattr(Device, "pin_factory", MockFactory())
        seen = []
        controls = config.section(cfg, "controls")
        buttons = GestureButtons(controls, seen.append, clock=devices.timebase.now_ns,
                                 pin_factory=board.pin_factory)
        try:
            pin = Device.pin_factory.pin(controls.record_pin)
            for _ in range(2):
                pin.drive_low()
                devices.timebase.sleep_until(devices.timebase.now_ns() + 150_000_000)
                buttons.poll()
                pin.drive_high()
                devices.timebase.sleep_until(devices.timebase.now_ns() + 150_000_000)
                buttons.poll()
        finally:
            buttons.close()
        assert [g.kind for g in seen] == [GestureKind.RECORD_START]
    finally:
        devices.close()


# -- a real GPS receiver on a serial port, everything else simulated ---------------------------

class NmeaFeeder:
    """The GPS module's side of a real pty: a fix at BEIJING, one epoch a second."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import datetime as dt
        while not self._stop.is_set():
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            for line, _ in epoch_lines("fix", now, position=BEIJING):
                try:
                    os.write(self.master, line)
                except OSError:
                    return
            self._stop.wait(1.0)

    def __enter__(self) -> NmeaFeeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


def test_a_real_gps_port_with_simulated_camera_and_battery(tmp_path):
    ev, key, sock = tmp_path / "ev", tmp_path / "key", tmp_path / "bench.sock"
    with NmeaFeeder() as gps:
        cfg = tmp_path / "bodycam.toml"
        cfg.write_text("[video]\nwidth = 160\nheight = 120\nfps = 10\nbitrate_kbps = 300\n"
                       "[audio]\nsample_rate = 16000\n[segment]\nseconds = 2\n[storage]\nreserve_mb = 0\n"
                       f"[service]\nruntime_dir = \"{tmp_path / 'run'}\"\nwarmup_s = 0.2\n"
                       f"[gps]\nport = \"{gps.path}\"\n[time]\nrefclock_socket = \"\"\n")
        proc = subprocess.Popen([sys.executable, "-m", "firmware", "run", "--sim", "--config", str(cfg),
                                 "--out", str(ev), "--key-dir", str(key), "--provision",
                                 "--bench-socket", str(sock), "--duration", "600"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env=_sim_env(BODYCAM_GPS="real"))
        try:
            deadline = time.monotonic() + START_S
            while not sock.exists():
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "no bench socket"
                time.sleep(0.2)
            rig = BenchClient(sock, WAIT_S)
            deadline = time.monotonic() + WAIT_S
            while (show := rig.send("show")["show"])["position"] != "39.9042N 116.4074E":
                assert time.monotonic() < deadline, f"no fix from the real port: {show}"
                time.sleep(0.5)
            assert show["devices"] == {"camera": "sim", "microphone": "sim", "gps": "real", "battery": "sim",
                                       "gpio": "sim", "audio": "sim", "clock": "sim"}
            refused = rig.send("gps nofix")
            assert refused["ok"] is False
            assert refused["error"].startswith("the gps is not simulated on this device (real, BODYCAM_GPS=real)")
            assert rig.send("battery 50")["ok"] and rig.send("show")["show"]["battery_percent"] == 50.0
            assert rig.send("double-press record")["ok"]
            deadline = time.monotonic() + WAIT_S
            while rig.send("show")["show"]["state"] != "recording":
                assert time.monotonic() < deadline, "the simulated button did not start a recording"
                time.sleep(0.3)
            time.sleep(2)
            assert rig.send("quit")["ok"]
            out, err = proc.communicate(timeout=WAIT_S)
            rig.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    recs = list(iter_records(ev / "journal.log"))
    boot = next(r for r in recs if r.type == "boot")
    assert boot.payload["simulated"] is True and boot.payload["devices"]["gps"] == "real"
    assert any(r.type == "segment" for r in recs)
    result = verify_directory(ev, (key / "device-key.pub.pem").read_bytes())
    assert result.ok, result.failure
