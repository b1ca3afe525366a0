"""Building a device: the one place that assembles it, real (the Pi) or simulated.

``bodycam record``/``run``/``status``, the scenario runner (``sim/scenario.py``) and the
benchmarks (``bench/``) all get their device here:

- :func:`simulated` / :func:`raspberry_pi`: camera, microphone, clocks and GPS (:class:`Devices`);
- :func:`board`: battery gauge, GPIO pins and audio out (``firmware.service.Board``);
- :func:`open_device_evidence`: key, journal (boot record, salvage), the config in force;
- :func:`build_service`: all of it as a ``firmware.service.Service``.

It is also the one production module that imports ``sim/`` (and only when a simulated
device is asked for).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from common.clock import (
    FixedQuality,
    MonotonicTime,
    SimulatedWallClock,
    SystemWallClock,
    TimeQuality,
    WallClock,
)
from recorder.capture import Camera, Microphone, Timebase

if TYPE_CHECKING:
    from firmware.evidence import Evidence
    from firmware.service import Board, Service
    from firmware.service_config import ServiceConfig

log = logging.getLogger(__name__)

# The one quality the simulator's wall clock reports, for every command that runs on it
# (status, run, record, scenario): its clock is the host's, taken as network-synced. One
# answer, so ``status --sim`` never says "synced" while ``record --sim`` stamps [UNSYNCED].
SIM_TIME_QUALITY = TimeQuality.NTP


@dataclass
class Devices:
    camera: Camera
    microphone: Microphone
    timebase: Timebase
    wall_clock: WallClock
    position: Callable[[], str | None] | None = None   # text for the stamp, e.g. "no fix"
    closers: list[Callable[[], None]] = field(default_factory=list)  # run at the end, in order

    def close(self) -> None:
        while self.closers:
            self.closers.pop(0)()


def _sim_gps_position(scenario: str, gps_cfg: Any, closers: list[Callable[[], None]]
                      ) -> Callable[[], str | None]:
    """A simulated receiver on a pty, read by the real GPS reader; its position text."""
    import dataclasses

    from firmware.timesync import TimeSyncService
    from sim.gps import SimulatedGps

    receiver = SimulatedGps(scenario).start()
    svc = TimeSyncService(dataclasses.replace(gps_cfg, port=receiver.path).reader(), None,
                          fix_max_age_s=gps_cfg.position_max_age_s)
    svc.start()
    closers += [svc.stop, receiver.close]
    return svc.position_text


def simulated(cfg: dict[str, dict[str, Any]], realtime: bool = True, wav: Path | None = None,
              camera_stalls: list[tuple[float, float]] | None = None,
              mic_dead_from: float | None = None, wall_start_ns: int | None = None,
              time_quality: TimeQuality = SIM_TIME_QUALITY,
              gps_scenario: str | None = None, start_ns: int | None = None,
              speech: list[tuple[float, Path]] | None = None) -> Devices:
    """``time_quality``: the common.clock.TimeQuality the simulated wall clock reports
    (default ``SIM_TIME_QUALITY``, what status, run and record all use; a test may pass another).
    ``gps_scenario``: a ``sim.gps`` scenario fed through a pty into the real GPS reader, whose
    position goes on the stamp (real time: the simulated receiver talks at 1 Hz).
    ``start_ns``: where the simulated monotonic clock starts (default: the host's now).
    ``speech``: (at seconds, WAV) said into a quiet room (``sim.microphone.ScriptedMicrophone``)
    instead of the test tone."""
    from sim.camera import CameraFaults, SimCamera
    from sim.clock import SimTime
    from sim.microphone import MicFaults, ScriptedMicrophone, SimMicrophone

    v, a = cfg["video"], cfg["audio"]
    t = SimTime(realtime=realtime, start_ns=start_ns)
    cam = SimCamera(v["width"], v["height"], v["fps"], t, CameraFaults(stalls=camera_stalls or []))
    mic: SimMicrophone
    if speech is not None:
        mic = ScriptedMicrophone(a["sample_rate"], t)
        for at_s, speech_wav in speech:
            mic.speak(at_s, speech_wav)
    else:
        mic = SimMicrophone(a["sample_rate"], wav=wav, time_source=t,
                            faults=MicFaults(dead_from_s=mic_dead_from))
    if realtime and wall_start_ns is None:
        wall: WallClock = SystemWallClock(FixedQuality(time_quality))
    else:
        import time
        wall = SimulatedWallClock(wall_start_ns or time.time_ns(), t.now_ns(), FixedQuality(time_quality))
    devices = Devices(cam, mic, t, wall)
    if gps_scenario:
        from firmware import config as config_mod

        devices.position = _sim_gps_position(gps_scenario, config_mod.section(cfg, "gps"),
                                             devices.closers)
    return devices


def raspberry_pi(cfg: dict[str, dict[str, Any]]) -> Devices:
    """The real camera, microphone and GPS; wall-time quality from chronyd. Pi-only libraries
    are imported here so other machines never need them."""
    from firmware import config as config_mod
    from firmware.timesync import build_timesync
    from hw.picamera import PiCamera
    from hw.sounddevice_mic import SoundDeviceMicrophone

    v, a = cfg["video"], cfg["audio"]
    time_cfg, gps_cfg = config_mod.section(cfg, "time"), config_mod.section(cfg, "gps")
    devices = Devices(PiCamera(v["width"], v["height"], v["fps"]),
                      SoundDeviceMicrophone(a["sample_rate"]), MonotonicTime(),
                      SystemWallClock(time_cfg.quality_source()))
    timesync = build_timesync(gps_cfg, time_cfg)  # feeds chronyd's SOCK refclock too
    if timesync is not None:
        timesync.start()
        devices.closers.append(timesync.stop)
        devices.position = timesync.position_text
    else:
        log.warning("no GPS receiver configured: the stamp shows no position")
    return devices


def board(cfg: dict[str, dict[str, Any]], devices: Devices, sim: bool,
          storage_free: Callable[[], int] | None = None) -> Board:
    """Battery gauge, GPIO pins and audio out: simulated (a draining battery on the device's
    timebase, gpiozero's MockFactory, logged cues) or the Pi's (MAX17048, real pins, aplay)."""
    from firmware import config as config_mod
    from firmware.service import Board
    from hw.audio_out import AplayAudioOut, LoggedAudioOut

    if sim:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        from sim.battery import SimulatedBattery
        return Board(SimulatedBattery(devices.timebase.now_ns), MockFactory(pin_class=MockPWMPin),
                     LoggedAudioOut(), storage_free=storage_free)
    from hw.battery import Max17048
    return Board(Max17048.from_config(config_mod.section(cfg, "battery")), None, AplayAudioOut(),
                 storage_free=storage_free)


def open_device_evidence(cfg: dict[str, dict[str, Any]], devices: Devices, out: Path, key_dir: Path, *,
                         provision: bool, simulated: bool, boot_extra: dict[str, Any] | None = None,
                         journal_config: bool = True) -> Evidence:
    """Key, journal (boot record, salvage of what a crash left) and, unless told otherwise,
    the config in force (a ``config-change`` record when it differs from the last one)."""
    from firmware.evidence import open_evidence

    evidence = open_evidence(out, key_dir, devices.wall_clock, devices.timebase.now_ns,
                             provision=provision,
                             boot_payload={"device_id": cfg["device"]["id"],
                                           "officer_id": cfg["device"]["officer_id"],
                                           "simulated": simulated, **(boot_extra or {})})
    if journal_config:
        evidence.note_config(cfg)
    return evidence


def build_service(cfg: dict[str, dict[str, Any]], devices: Devices, out: Path, key_dir: Path, *, sim: bool,
                  provision: bool, board_: Board | None = None,
                  service_cfg: ServiceConfig | None = None, boot_extra: dict[str, Any] | None = None,
                  journal_config: bool = True) -> Service:
    """The device service on ``devices``: evidence opened in ``out``, the board (default:
    :func:`board`), ``[service]`` from ``cfg`` unless ``service_cfg`` is given. ``devices`` are
    closed if the evidence cannot be opened."""
    from firmware import config as config_mod
    from firmware.service import Service, ServiceSettings

    board_ = board_ or board(cfg, devices, sim)
    try:
        evidence = open_device_evidence(cfg, devices, out, key_dir, provision=provision,
                                        simulated=sim, boot_extra=boot_extra,
                                        journal_config=journal_config)
    except BaseException:
        devices.close()
        raise
    settings = ServiceSettings.from_config(cfg, service_cfg or config_mod.section(cfg, "service"))
    return Service(settings, evidence, devices, board_)


def run_scenario_file(path: Path, out: Path, config_path: Path | None = None) -> int:
    """``bodycam scenario``: a scripted shift on a simulated device (``sim.scenario``), which
    builds that device with the functions above."""
    from sim.scenario import run_file
    return run_file(path, out, config_path)
