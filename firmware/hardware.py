"""Building a device: the one place that assembles it, real (the Pi) or simulated.

``bodycam record``/``run``/``status``, the scenario runner (``sim/scenario.py``) and the
benchmarks (``bench/``) all get their device here:

- :func:`build_devices` (and its two pure forms :func:`simulated` / :func:`raspberry_pi`):
  camera, microphone, clocks and GPS (:class:`Devices`), each part real or simulated as a
  :class:`DeviceSelection` says (``--sim``, a ``[devices]`` file, ``BODYCAM_<PART>``), in
  the spirit of gpiozero's pin factories; the simulated parts are also handed to the bench
  console (``Devices.sim``, a ``sim.controls.SimControls``);
- :func:`board`: battery gauge, GPIO pins and audio out (``firmware.service.Board``);
- :func:`open_device_evidence`: key, journal (boot record, salvage), the config in force;
- :func:`build_service`: all of it as a ``firmware.service.Service``.

It is also the one production module that imports ``sim/`` (and only when a simulated
device is asked for).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
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
from firmware import config as config_mod
from recorder.capture import Camera, Microphone, Timebase

if TYPE_CHECKING:
    from firmware.evidence import Evidence
    from firmware.service import Board, Service
    from firmware.service_config import ServiceConfig
    from sim.controls import SimControls
    from sim.gps import SimulatedGps

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
    sim: SimControls | None = None          # the bench's hands on the simulated parts
    selection: DeviceSelection | None = None   # which parts are real, which simulated

    def close(self) -> None:
        while self.closers:
            self.closers.pop(0)()


# -- which part is real, which simulated (gpiozero's pin factories, one level up) ------------
PARTS: dict[str, tuple[str, ...]] = {
    "camera": ("real", "sim"),
    "microphone": ("real", "sim"),
    "gps": ("real", "sim", "none"),     # none: no receiver, the stamp shows no position
    "battery": ("real", "sim"),         # MAX17048 fuel gauge / sim.battery
    "gpio": ("real", "sim"),            # buttons, lamps, motor, buzzer: gpiozero default / MockFactory
    "audio": ("real", "sim"),           # the speaker: aplay / a list of what would have played
    "clock": ("real", "sim"),           # wall clock: system + chronyd / simulated (steppable)
}
ENV_PREFIX = "BODYCAM_"                 # BODYCAM_CAMERA=real, BODYCAM_GPS=sim, ...
DEVICES_FILE_ENV = "BODYCAM_DEVICES"    # a TOML file with a [devices] table


# the library each real part needs, and where it comes from on Raspberry Pi OS
_REAL_NEEDS = {"camera": ("picamera2", "apt install python3-picamera2"),
               "microphone": ("sounddevice", "pip install the [pi] extra"),
               "battery": ("smbus2", "pip install the [pi] extra")}


class DeviceSelectionError(config_mod.ConfigError):
    """A device selection that cannot be built: an unknown part or kind, a real part whose
    library is missing, a real part on the virtual clock (exit code 3, like any config error)."""


@dataclass(frozen=True)
class DeviceSelection:
    """Real or simulated, part by part: the base (``--sim`` or the Pi), then a ``[devices]``
    table in the file ``--devices``/``$BODYCAM_DEVICES`` names, then ``BODYCAM_<PART>``
    variables, each overriding the one before; ``how`` says where each part's answer came from
    (for error messages; the boot record journals ``kinds`` when the parts are mixed)."""

    kinds: dict[str, str]
    how: dict[str, str]

    @classmethod
    def resolve(cls, sim: bool, environ: Mapping[str, str] | None = None, file: Path | None = None,
                gps_default: str | None = None) -> DeviceSelection:
        env = os.environ if environ is None else environ
        base = "sim" if sim else "real"
        kinds = {part: base for part in PARTS}
        how = {part: "--sim" if sim else "the device" for part in PARTS}
        if sim:
            kinds["gps"] = gps_default or "none"
        elif gps_default:
            kinds["gps"] = gps_default
        file = file or (Path(env[DEVICES_FILE_ENV]) if env.get(DEVICES_FILE_ENV) else None)
        if file is not None:
            for part, kind in cls._read_file(file).items():
                kinds[part], how[part] = kind, str(file)
        for part in PARTS:
            value = env.get(ENV_PREFIX + part.upper())
            if value is not None and value != "":
                kinds[part] = cls._check(part, value.strip(), ENV_PREFIX + part.upper())
                how[part] = f"{ENV_PREFIX}{part.upper()}={value.strip()}"
        return cls(kinds, how)

    @staticmethod
    def _check(part: str, kind: object, where: str) -> str:
        if part not in PARTS:
            raise DeviceSelectionError(f"{where}: no device {part!r} (devices: {', '.join(PARTS)})")
        if kind not in PARTS[part]:
            raise DeviceSelectionError(f"{where}: the {part} must be {' or '.join(PARTS[part])}, "
                                       f"not {kind!r}")
        return str(kind)

    @classmethod
    def _read_file(cls, path: Path) -> dict[str, str]:
        from common.settings import read_toml
        data = read_toml(path, DeviceSelectionError)
        extra = set(data) - {"devices"}
        if extra or not isinstance(data.get("devices"), dict):
            raise DeviceSelectionError(f"{path}: expected one [devices] table "
                                       f"(e.g. camera = \"sim\"), found {sorted(data) or 'nothing'}")
        return {part: cls._check(part, kind, f"{path}: [devices] {part}")
                for part, kind in data["devices"].items()}

    def check_libraries(self) -> None:
        """Refuse at once, before the evidence is opened, a real part whose library is missing
        (e.g. a real camera asked for on a machine without picamera2)."""
        import importlib.util
        for part, (module, remedy) in _REAL_NEEDS.items():
            if self.kinds[part] == "real" and importlib.util.find_spec(module) is None:
                raise DeviceSelectionError(f"the {part} is real ({self.how[part]}) but {module} is not "
                                           f"installed here ({remedy}); or simulate it: "
                                           f"{ENV_PREFIX}{part.upper()}=sim")

    def __getitem__(self, part: str) -> str:
        return self.kinds[part]

    def is_sim(self, part: str) -> bool:
        return self.kinds[part] == "sim"

    @property
    def mixed(self) -> bool:
        return len({k for p, k in self.kinds.items() if p != "gps" or k != "none"}) > 1

    def as_dict(self) -> dict[str, str]:
        return dict(self.kinds)


def _sim_gps(scenario: str, gps_cfg: Any, closers: list[Callable[[], None]]
             ) -> tuple[Callable[[], str | None], SimulatedGps]:
    """A simulated receiver on a pty, read by the real GPS reader; its position text."""
    import dataclasses

    from firmware.timesync import TimeSyncService
    from sim.gps import SimulatedGps

    receiver = SimulatedGps(scenario).start()
    svc = TimeSyncService(dataclasses.replace(gps_cfg, port=receiver.path).reader(), None,
                          fix_max_age_s=gps_cfg.position_max_age_s)
    svc.start()
    closers += [svc.stop, receiver.close]
    return svc.position_text, receiver


def _real_gps(cfg: dict[str, dict[str, Any]], closers: list[Callable[[], None]]
              ) -> Callable[[], str | None] | None:
    """The receiver on ``[gps] port`` (also feeding chronyd's SOCK refclock); None if disabled."""
    from firmware.timesync import build_timesync

    timesync = build_timesync(config_mod.section(cfg, "gps"), config_mod.section(cfg, "time"))
    if timesync is None:
        log.warning("no GPS receiver configured ([gps] enabled = false): the stamp shows no position")
        return None
    timesync.start()
    closers.append(timesync.stop)
    return timesync.position_text


def build_devices(cfg: dict[str, dict[str, Any]], selection: DeviceSelection, realtime: bool = True,
                  wav: Path | None = None, camera_stalls: list[tuple[float, float]] | None = None,
                  mic_dead_from: float | None = None, wall_start_ns: int | None = None,
                  time_quality: TimeQuality = SIM_TIME_QUALITY, gps_scenario: str | None = None,
                  start_ns: int | None = None,
                  speech: list[tuple[float, Path]] | None = None) -> Devices:
    """Camera, microphone, clocks and GPS, each real or simulated as ``selection`` says; the
    simulated ones are also handed to ``Devices.sim`` for the bench. Pi-only libraries are
    imported only for a real part. The other arguments shape the simulated parts (see
    :func:`simulated`); a real camera or microphone needs ``realtime``."""
    a = cfg["audio"]
    selection.check_libraries()
    controls = None
    if any(kind == "sim" for kind in selection.kinds.values()):
        from sim.controls import SimControls
        controls = SimControls(how={p: f"{k}, {selection.how[p]}" for p, k in selection.kinds.items()})
    real_media = not (selection.is_sim("camera") and selection.is_sim("microphone"))
    timebase: Timebase
    if real_media:
        if not realtime:
            raise DeviceSelectionError("a real camera or microphone cannot run on the virtual clock "
                                       "(--fast and scenarios are simulated-only)")
        timebase = MonotonicTime()
    else:
        from sim.clock import SimTime
        timebase = SimTime(realtime=realtime, start_ns=start_ns)
    closers: list[Callable[[], None]] = []
    try:
        camera = _camera(cfg, selection, timebase, camera_stalls, controls)
        microphone = _microphone(a["sample_rate"], selection, timebase, wav, mic_dead_from, speech, controls)
        wall: WallClock
        if selection.is_sim("clock"):
            import time
            sim_wall = SimulatedWallClock(wall_start_ns or time.time_ns(), timebase.now_ns(),
                                          FixedQuality(time_quality))
            if controls is not None:
                controls.wall = sim_wall
            wall = sim_wall
        else:
            wall = SystemWallClock(config_mod.section(cfg, "time").quality_source())
        devices = Devices(camera, microphone, timebase, wall, sim=controls, selection=selection,
                          closers=closers)
        if selection["gps"] == "sim":
            devices.position, receiver = _sim_gps(gps_scenario or "fix_acquired",
                                                  config_mod.section(cfg, "gps"), closers)
            if controls is not None:
                controls.gps = receiver
        elif selection["gps"] == "real":
            devices.position = _real_gps(cfg, closers)
    except BaseException:
        for close in closers:
            close()
        raise
    return devices


def _camera(cfg: dict[str, dict[str, Any]], selection: DeviceSelection, timebase: Timebase,
            stalls: list[tuple[float, float]] | None, controls: SimControls | None) -> Camera:
    v = cfg["video"]
    if not selection.is_sim("camera"):
        from hw.picamera import PiCamera
        return PiCamera(v["width"], v["height"], v["fps"])
    from sim.camera import CameraFaults, SimCamera
    from sim.clock import SimTime
    t = timebase if isinstance(timebase, SimTime) else SimTime(realtime=True)
    camera = SimCamera(v["width"], v["height"], v["fps"], t, CameraFaults(stalls=stalls or []))
    if controls is not None:
        controls.camera = camera
    return camera


def _microphone(rate: int, selection: DeviceSelection, timebase: Timebase, wav: Path | None,
                dead_from: float | None, speech: list[tuple[float, Path]] | None,
                controls: SimControls | None) -> Microphone:
    if not selection.is_sim("microphone"):
        from hw.sounddevice_mic import SoundDeviceMicrophone
        return SoundDeviceMicrophone(rate)
    from sim.clock import SimTime
    from sim.microphone import MicFaults, ScriptedMicrophone, SimMicrophone
    t = timebase if isinstance(timebase, SimTime) else SimTime(realtime=True)
    mic: SimMicrophone
    if speech is not None:
        mic = ScriptedMicrophone(rate, t)
        for at_s, speech_wav in speech:
            mic.speak(at_s, speech_wav)
    else:
        mic = SimMicrophone(rate, wav=wav, time_source=t, faults=MicFaults(dead_from_s=dead_from))
    if controls is not None:
        controls.microphone = mic
    return mic


def simulated(cfg: dict[str, dict[str, Any]], realtime: bool = True, wav: Path | None = None,
              camera_stalls: list[tuple[float, float]] | None = None,
              mic_dead_from: float | None = None, wall_start_ns: int | None = None,
              time_quality: TimeQuality = SIM_TIME_QUALITY,
              gps_scenario: str | None = None, start_ns: int | None = None,
              speech: list[tuple[float, Path]] | None = None,
              selection: DeviceSelection | None = None) -> Devices:
    """Every part simulated (unless ``selection`` makes some real).

    ``time_quality``: the common.clock.TimeQuality the simulated wall clock reports
    (default ``SIM_TIME_QUALITY``, what status, run and record all use; a test may pass another).
    ``gps_scenario``: a ``sim.gps`` scenario fed through a pty into the real GPS reader, whose
    position goes on the stamp (real time: the simulated receiver talks at 1 Hz).
    ``start_ns``: where the simulated monotonic clock starts (default: the host's now).
    ``speech``: (at seconds, WAV) said into a quiet room (``sim.microphone.ScriptedMicrophone``)
    instead of the test tone."""
    if selection is None:
        selection = DeviceSelection.resolve(True, environ={}, gps_default="sim" if gps_scenario else None)
    return build_devices(cfg, selection, realtime=realtime, wav=wav, camera_stalls=camera_stalls,
                         mic_dead_from=mic_dead_from, wall_start_ns=wall_start_ns,
                         time_quality=time_quality, gps_scenario=gps_scenario, start_ns=start_ns,
                         speech=speech)


def raspberry_pi(cfg: dict[str, dict[str, Any]], selection: DeviceSelection | None = None) -> Devices:
    """The real camera, microphone and GPS; wall-time quality from chronyd (unless ``selection``
    simulates some of them)."""
    return build_devices(cfg, selection or DeviceSelection.resolve(False, environ={}))


def board(cfg: dict[str, dict[str, Any]], devices: Devices, sim: bool,
          storage_free: Callable[[], int] | None = None) -> Board:
    """Battery gauge, GPIO pins and audio out: simulated (a draining battery on the device's
    timebase, gpiozero's MockFactory, logged cues) or the Pi's (MAX17048, real pins, aplay),
    part by part as ``devices.selection`` says (all of one kind by ``sim`` without one).
    Without ``storage_free``, a simulated device's free space can be scripted by the bench."""
    from firmware.service import Board
    from hw.audio_out import AplayAudioOut, AudioOut, LoggedAudioOut
    from hw.battery import BatteryGauge

    selection = devices.selection or DeviceSelection.resolve(sim, environ={})
    controls = devices.sim
    battery: BatteryGauge
    if selection.is_sim("battery"):
        from sim.battery import SimulatedBattery
        battery = SimulatedBattery(devices.timebase.now_ns)
        if controls is not None:
            controls.battery = battery
    else:
        from hw.battery import Max17048
        battery = Max17048.from_config(config_mod.section(cfg, "battery"))
    factory = None
    if selection.is_sim("gpio"):
        from gpiozero.pins.mock import MockFactory, MockPWMPin
        factory = MockFactory(pin_class=MockPWMPin)
        if controls is not None:
            controls.pins = factory
    audio: AudioOut = LoggedAudioOut() if selection.is_sim("audio") else AplayAudioOut()
    if storage_free is None and controls is not None:
        storage_free = controls.storage
    return Board(battery, factory, audio, storage_free=storage_free)


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
    from firmware.service import Service, ServiceSettings

    board_ = board_ or board(cfg, devices, sim)
    try:
        evidence = open_device_evidence(cfg, devices, out, key_dir, provision=provision,
                                        simulated=sim, boot_extra=boot_extra,
                                        journal_config=journal_config)
    except BaseException:
        devices.close()
        raise
    if devices.sim is not None:   # scripted free space falls back to the real filesystem's
        devices.sim.storage.fallback = evidence.store.free_bytes
    settings = ServiceSettings.from_config(cfg, service_cfg or config_mod.section(cfg, "service"))
    return Service(settings, evidence, devices, board_)


def run_scenario_file(path: Path, out: Path, config_path: Path | None = None) -> int:
    """``bodycam scenario``: a scripted shift on a simulated device (``sim.scenario``), which
    builds that device with the functions above."""
    from sim.scenario import run_file
    return run_file(path, out, config_path)
