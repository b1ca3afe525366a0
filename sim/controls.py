"""The bench's hands on the simulated parts of a device: buttons, faults, battery, GPS, clock.

``firmware.hardware`` builds one of these beside every device it assembles, holding the
simulated parts it used (``None`` for a part that is real), and the bench console
(``firmware.bench``) acts through it without importing ``sim/``. Asking a real part for a
simulated fault is refused with :class:`NotSimulated`, naming the part and how it was chosen,
so a rig script that assumed a simulated part fails loudly instead of testing nothing.

Every method is called from the device service's loop thread (the console queues commands
into the loop), so none of them needs a lock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from hw.battery import BatteryError

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory

    from common.clock import SimulatedWallClock
    from sim.battery import SimulatedBattery
    from sim.camera import SimCamera
    from sim.gps import SimulatedGps
    from sim.microphone import SimMicrophone

log = logging.getLogger(__name__)

NS = 1_000_000_000
GPS_MODES = {"fix": "fix", "nofix": "tunnel", "cold": "cold", "jump": "jump"}   # console word -> sim.gps phase


class NotSimulated(ValueError):
    """The part asked for is real on this device (or absent), so it cannot be driven."""

    def __init__(self, part: str, how: str) -> None:
        super().__init__(f"the {part} is not simulated on this device ({how}): "
                         f"nothing to inject; use a simulated {part} (see docs/bench-console.md)")
        self.part = part


class StoragePressure:
    """The free-space figure the service sees: the real filesystem's, or a scripted one."""

    def __init__(self) -> None:
        self.free_bytes: int | None = None                 # None: the real figure
        self.fallback: Callable[[], int] | None = None      # set once the evidence store is open

    def __call__(self) -> int:
        if self.free_bytes is not None:
            return self.free_bytes
        if self.fallback is None:
            raise RuntimeError("storage pressure read before the evidence store was opened")
        return self.fallback()


@dataclass
class SimControls:
    camera: SimCamera | None = None
    microphone: SimMicrophone | None = None
    gps: SimulatedGps | None = None
    wall: SimulatedWallClock | None = None
    battery: SimulatedBattery | None = None
    pins: MockFactory | None = None
    storage: StoragePressure = field(default_factory=StoragePressure)
    how: dict[str, str] = field(default_factory=dict)   # part -> "real" / "sim" and where chosen

    def _need(self, part: str, value: object) -> None:
        if value is None:
            raise NotSimulated(part, self.how.get(part, "not simulated"))

    def require(self, part: str) -> None:
        """NotSimulated unless ``part`` (camera, microphone, gps, clock, battery, gpio) is simulated."""
        held = {"camera": self.camera, "microphone": self.microphone, "gps": self.gps,
                "clock": self.wall, "battery": self.battery, "gpio": self.pins}
        self._need(part, held[part])

    # -- buttons -------------------------------------------------------------------------
    def drive_button(self, pin: int, down: bool) -> None:
        """Press (``down``) or release a button wired active-low on BCM ``pin``."""
        self._need("gpio", self.pins)
        assert self.pins is not None
        p = self.pins.pin(pin)
        p.drive_low() if down else p.drive_high()

    # -- camera and microphone -------------------------------------------------------------
    def camera_stall(self, seconds: float) -> None:
        """No frames from now for ``seconds`` (a CSI link dropping out)."""
        self._need("camera", self.camera)
        cam = self.camera
        assert cam is not None
        start = cam._t0 if cam._t0 is not None else cam.time.now_ns()
        cam.faults.stalls.append(((cam.time.now_ns() - start) / NS, seconds))

    def microphone_dead(self, dead: bool) -> None:
        """The microphone delivers nothing from now (``dead``), or sound again."""
        self._need("microphone", self.microphone)
        mic = self.microphone
        assert mic is not None
        start = mic._t0 if mic._t0 is not None else mic.time.now_ns()
        now_s = (mic.time.now_ns() - start) / NS
        if dead:
            mic.faults.dead_from_s, mic.faults.dead_until_s = now_s, None
        elif mic.faults.dead_from_s is not None and mic.faults.dead_until_s is None:
            mic.faults.dead_until_s = now_s

    def microphone_is_dead(self) -> bool | None:
        if self.microphone is None:
            return None
        f = self.microphone.faults
        return f.dead_from_s is not None and f.dead_until_s is None

    # -- power and storage -----------------------------------------------------------------
    def battery_percent(self, percent: float) -> None:
        self._need("battery", self.battery)
        assert self.battery is not None
        self.battery.set_percent(percent)

    def battery_gauge_fails(self, failing: bool) -> None:
        """The fuel gauge stops answering (as an I2C fault would), or answers again."""
        self._need("battery", self.battery)
        assert self.battery is not None
        self.battery.set_failure(BatteryError("simulated gauge fault (bench)") if failing else None)

    def battery_reading(self) -> float | None:
        return None if self.battery is None else round(self.battery.percent(), 1)

    def storage_free(self, free_bytes: int | None) -> None:
        """Report this many bytes free from now on; None: the real filesystem again."""
        self.storage.free_bytes = free_bytes

    # -- time and position ------------------------------------------------------------------
    def gps_mode(self, mode: str, offset_s: float = 0.0) -> None:
        """``fix``, ``nofix`` (fix lost, receiver keeps time), ``cold`` (no fix, no time) or
        ``jump`` (the receiver's time off by ``offset_s``), from the next epoch on."""
        if mode not in GPS_MODES:
            raise ValueError(f"no GPS mode {mode!r} (one of {', '.join(GPS_MODES)})")
        self._need("gps", self.gps)
        assert self.gps is not None
        self.gps.switch(GPS_MODES[mode], offset_s)

    def clock_step(self, seconds: float) -> None:
        """Step the wall clock (as an NTP step or a manual set); monotonic time is untouched."""
        self._need("clock", self.wall)
        assert self.wall is not None
        self.wall.step(int(seconds * NS))
