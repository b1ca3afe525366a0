"""Choosing the devices the service runs on: the Pi's real ones, or the simulation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recorder.clock import (FixedQuality, MonotonicTime, SimulatedWallClock, SystemWallClock,
                            WallClock)

log = logging.getLogger(__name__)


@dataclass
class Devices:
    camera: Any
    microphone: Any
    timebase: Any
    wall_clock: WallClock
    position: Callable[[], str | None] | None = None   # text for the stamp, e.g. "no fix"
    closers: list[Callable[[], None]] = field(default_factory=list)  # run at the end, in order

    def close(self) -> None:
        while self.closers:
            self.closers.pop(0)()


def _sim_gps_position(scenario: str, gps_cfg, closers: list) -> Callable[[], str]:
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


def simulated(cfg: dict, realtime: bool = True, wav: Path | None = None,
              camera_stalls: list[tuple[float, float]] | None = None,
              mic_dead_from: float | None = None, wall_start_ns: int | None = None,
              time_quality=None, gps_scenario: str | None = None) -> Devices:
    """``time_quality``: a recorder.clock.TimeQuality the simulated wall clock reports (default
    unsynced; the device service's self-check fails an unsynced clock, so scenarios pass NTP).
    ``gps_scenario``: a ``sim.gps`` scenario fed through a pty into the real GPS reader, whose
    position goes on the stamp (real time: the simulated receiver talks at 1 Hz)."""
    from sim.camera import CameraFaults, SimCamera
    from sim.clock import SimTime
    from sim.microphone import MicFaults, SimMicrophone

    v, a = cfg["video"], cfg["audio"]
    t = SimTime(realtime=realtime)
    cam = SimCamera(v["width"], v["height"], v["fps"], t, CameraFaults(stalls=camera_stalls or []))
    mic = SimMicrophone(a["sample_rate"], wav=wav, time_source=t,
                        faults=MicFaults(dead_from_s=mic_dead_from))
    if realtime and wall_start_ns is None:
        wall: WallClock = SystemWallClock(FixedQuality(time_quality) if time_quality else None)
    else:
        import time
        wall = SimulatedWallClock(wall_start_ns or time.time_ns(), t.now_ns(),
                                  FixedQuality(time_quality) if time_quality else None)
    devices = Devices(cam, mic, t, wall)
    if gps_scenario:
        from firmware import config as config_mod

        devices.position = _sim_gps_position(gps_scenario, config_mod.section(cfg, "gps"),
                                             devices.closers)
    return devices


def raspberry_pi(cfg: dict) -> Devices:
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
