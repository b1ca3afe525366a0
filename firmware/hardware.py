"""Choosing the devices the service runs on: the Pi's real ones, or the simulation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.clock import MonotonicTime, SimulatedWallClock, SystemWallClock, WallClock


@dataclass
class Devices:
    camera: Any
    microphone: Any
    timebase: Any
    wall_clock: WallClock


def simulated(cfg: dict, realtime: bool = True, wav: Path | None = None,
              camera_stalls: list[tuple[float, float]] | None = None,
              mic_dead_from: float | None = None, wall_start_ns: int | None = None,
              time_quality=None) -> Devices:
    """``time_quality``: a recorder.clock.TimeQuality the simulated wall clock reports (default
    unsynced; the device service's self-check fails an unsynced clock, so scenarios pass NTP)."""
    from sim.camera import CameraFaults, SimCamera
    from sim.clock import SimTime
    from sim.microphone import MicFaults, SimMicrophone

    v, a = cfg["video"], cfg["audio"]
    t = SimTime(realtime=realtime)
    cam = SimCamera(v["width"], v["height"], v["fps"], t, CameraFaults(stalls=camera_stalls or []))
    mic = SimMicrophone(a["sample_rate"], wav=wav, time_source=t,
                        faults=MicFaults(dead_from_s=mic_dead_from))
    if realtime and wall_start_ns is None:
        from recorder.clock import FixedQuality
        wall: WallClock = SystemWallClock(FixedQuality(time_quality) if time_quality else None)
    else:
        import time
        from recorder.clock import FixedQuality
        wall = SimulatedWallClock(wall_start_ns or time.time_ns(), t.now_ns(),
                                  FixedQuality(time_quality) if time_quality else None)
    return Devices(cam, mic, t, wall)


def raspberry_pi(cfg: dict) -> Devices:
    """The real camera and microphone (imported here so other machines never need them)."""
    from hw.picamera import PiCamera
    from hw.sounddevice_mic import SoundDeviceMicrophone

    v, a = cfg["video"], cfg["audio"]
    return Devices(PiCamera(v["width"], v["height"], v["fps"]),
                   SoundDeviceMicrophone(a["sample_rate"]), MonotonicTime(), SystemWallClock())
