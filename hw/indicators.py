"""State lamps, vibration motor and buzzer, driven from one injected clock.

GA/T 947 asks for green/yellow/red state lamps and sound or vibration
prompts; D7 asks that the recording state be obvious to everyone present.
Lamps follow a per-state table (:data:`STATE_LAMPS`); short named cues
(:data:`CUES`) play on the motor and buzzer. Blinking and cue steps advance
only in :meth:`Indicators.poll`, so tests step a fake clock and read gpiozero
MockFactory pin states instead of sleeping.

Lamp meaning: green = ready, yellow = audio is being recorded, red = video is
being recorded (so recording lights red and yellow), red blinking = fault.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from common.settings import Section

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)
_D = TypeVar("_D")   # a gpiozero device

NS = 1_000_000_000
LAMPS = ("green", "yellow", "red")


@dataclass(frozen=True)
class LampMode:
    """Steady on, or blinking with ``blink_s`` period (half on, half off)."""

    on: bool = False
    blink_s: float | None = None


OFF = LampMode()
ON = LampMode(on=True)


def blink(period_s: float) -> LampMode:
    return LampMode(on=True, blink_s=period_s)


# Keyed by the state names of firmware.states.State (hw/ does not import firmware/).
STATE_LAMPS: dict[str, dict[str, LampMode]] = {
    "off": {},
    "self-check": {"green": ON, "yellow": ON, "red": ON},   # lamp test while checking
    "ready": {"green": ON},
    "recording": {"red": ON, "yellow": ON},                 # video + audio
    "paused": {"green": blink(1.0)},                        # lawfully not recording (D6)
    "interrupted": {"yellow": blink(0.5)},                  # reason will be asked (D5)
    "docked": {"green": blink(2.0)},
    "fault": {"red": blink(0.25)},
}


@dataclass(frozen=True)
class Step:
    """One step of a cue: ``tone`` is a multiple of the buzzer's mid frequency (0.5-2), None = silent."""

    duration_s: float
    vibrate: bool = False
    tone: float | None = None


def _beeps(n: int, on_s: float, off_s: float, tone: float | None, vibrate: bool = True) -> tuple[Step, ...]:
    steps: list[Step] = []
    for i in range(n):
        steps.append(Step(on_s, vibrate, tone))
        if i < n - 1:
            steps.append(Step(off_s))
    return tuple(steps)


CUES: dict[str, tuple[Step, ...]] = {
    "recording-started": _beeps(1, 0.4, 0, 1.0),
    "recording-stopped": _beeps(2, 0.15, 0.1, 0.75),
    "reason-required": _beeps(3, 0.15, 0.1, 1.5),
    "reason-accepted": (Step(0.1, True, 1.25), Step(0.05), Step(0.1, True, 1.5)),
    "reason-missing": _beeps(2, 0.3, 0.2, 0.6),
    "bookmark": _beeps(1, 0.1, 0, 1.0),
    "voice-note-start": _beeps(1, 0.1, 0, 1.25),
    "voice-note-end": _beeps(1, 0.1, 0, 0.75),
    "reminder": _beeps(1, 0.2, 0, 1.0),
    "low-battery": _beeps(2, 0.5, 0.2, 0.75),
    "self-check-go": _beeps(1, 0.2, 0, 1.25),
    "self-check-no-go": _beeps(3, 0.3, 0.2, 0.6),
    "fault": _beeps(3, 0.3, 0.2, 0.6),
}
PREEMPTING_CUES = frozenset({"fault"})   # cut the current cue and the queue
MAX_QUEUED_CUES = 4


@dataclass(frozen=True)
class IndicatorConfig(Section):
    """The ``[indicators]`` settings (BCM pins)."""

    SECTION = "indicators"

    led_green_pin: int = 16
    led_yellow_pin: int = 25
    led_red_pin: int = 24
    vibration_pin: int = 23
    buzzer_pin: int = 12
    buzzer_tonal: bool = True        # passive piezo on PWM (TonalBuzzer); False: active buzzer
    buzzer_mid_hz: float = 2000.0    # cue tones are 0.5x-2x of this
    sound: bool = True               # buzzer used for cues
    vibration: bool = True           # motor used for cues

    def __post_init__(self) -> None:
        pins = [self.led_green_pin, self.led_yellow_pin, self.led_red_pin, self.vibration_pin, self.buzzer_pin]
        for pin in pins:
            if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 27:
                raise ValueError(f"[indicators] pins must be BCM numbers 0-27, got {pin!r}")
        if len(set(pins)) != len(pins):
            raise ValueError(f"[indicators] pins must all differ, got {pins}")
        for name in ("buzzer_tonal", "sound", "vibration"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"[indicators] {name} must be true or false")
        hz = self.buzzer_mid_hz
        if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not math.isfinite(hz) or not 100 <= hz <= 8000:
            raise ValueError(f"[indicators] buzzer_mid_hz must be 100-8000, got {hz!r}")



class Indicators:
    """Lamps, motor and buzzer on gpiozero devices; call :meth:`poll` every ~20 ms."""

    def __init__(self, config: IndicatorConfig, clock: Callable[[], int] = time.monotonic_ns,
                 pin_factory: Factory | None = None) -> None:
        from gpiozero import LED, Buzzer, DigitalOutputDevice, TonalBuzzer
        from gpiozero.tones import Tone

        self._config = config
        self._clock = clock
        self._Tone = Tone
        self._devices: list[Any] = []   # gpiozero devices, closed in close()
        try:
            self._lamps = {
                name: self._own(LED(pin, pin_factory=pin_factory))
                for name, pin in zip(LAMPS, (config.led_green_pin, config.led_yellow_pin, config.led_red_pin),
                                     strict=True)
            }
            self._motor = self._own(DigitalOutputDevice(config.vibration_pin, pin_factory=pin_factory))
            if config.buzzer_tonal:
                self._buzzer = self._own(TonalBuzzer(
                    config.buzzer_pin, mid_tone=Tone(frequency=config.buzzer_mid_hz), octaves=1,
                    pin_factory=pin_factory))
            else:
                self._buzzer = self._own(Buzzer(config.buzzer_pin, pin_factory=pin_factory))
        except Exception:
            self.close()
            raise
        self._modes: dict[str, LampMode] = {name: OFF for name in LAMPS}
        self._modes_since = clock()
        self._applied_lamps: dict[str, bool] = {}
        self._queue: deque[str] = deque()
        self._cue: tuple[str, tuple[Step, ...], int] | None = None   # name, steps, start_ns
        self._applied_out: tuple[bool, float | None] | None = None
        self.state: str | None = None

    def _own(self, device: _D) -> _D:
        self._devices.append(device)
        return device

    # -- lamps ---------------------------------------------------------------
    def show_state(self, state: str) -> None:
        """Set the lamps for a device state name (see :data:`STATE_LAMPS`)."""
        key = getattr(state, "value", state)
        if key not in STATE_LAMPS:
            raise ValueError(f"no lamp pattern for state {state!r}; known: {', '.join(STATE_LAMPS)}")
        self.state = key
        self.set_lamps(**STATE_LAMPS[key])

    def set_lamps(self, green: LampMode = OFF, yellow: LampMode = OFF, red: LampMode = OFF) -> None:
        """Set all three lamps at once; blink phases restart now."""
        for mode in (green, yellow, red):
            if not isinstance(mode, LampMode):
                raise TypeError(f"lamp modes must be LampMode, got {mode!r}")
            if mode.blink_s is not None and not (math.isfinite(mode.blink_s) and mode.blink_s > 0):
                raise ValueError(f"blink period must be > 0 s, got {mode.blink_s!r}")
        self._modes = {"green": green, "yellow": yellow, "red": red}
        self._modes_since = self._clock()
        self.poll()

    # -- cues ----------------------------------------------------------------
    def cue(self, name: str) -> None:
        """Queue a named cue (plays at once if nothing else is playing)."""
        if name not in CUES:
            raise ValueError(f"unknown cue {name!r}; known: {', '.join(CUES)}")
        if name in PREEMPTING_CUES:
            self._queue.clear()
            self._cue = None
        if len(self._queue) >= MAX_QUEUED_CUES:
            dropped = self._queue.popleft()
            log.warning("cue queue full: dropped %r for %r", dropped, name)
        self._queue.append(name)
        self.poll()

    @property
    def playing(self) -> str | None:
        return self._cue[0] if self._cue else None

    # -- output --------------------------------------------------------------
    def poll(self) -> None:
        now = self._clock()
        self._apply_lamps(now)
        self._apply_cue(now)

    def _apply_lamps(self, now: int) -> None:
        for name, mode in self._modes.items():
            lit = mode.on
            if mode.on and mode.blink_s is not None:
                period = round(mode.blink_s * NS)
                lit = (now - self._modes_since) % period < period // 2
            if self._applied_lamps.get(name) != lit:
                self._lamps[name].value = lit
                self._applied_lamps[name] = lit

    def _current_step(self, now: int) -> Step | None:
        while True:
            if self._cue is None:
                if not self._queue:
                    return None
                name = self._queue.popleft()
                self._cue = (name, CUES[name], now)
            name, steps, start = self._cue
            elapsed = now - start
            for step in steps:
                step_ns = round(step.duration_s * NS)
                if elapsed < step_ns:
                    return step
                elapsed -= step_ns
            self._cue = None   # finished; the next queued cue starts now

    def _apply_cue(self, now: int) -> None:
        step = self._current_step(now)
        vibrate = bool(step and step.vibrate and self._config.vibration)
        tone = step.tone if step and self._config.sound else None
        if self._applied_out == (vibrate, tone):
            return
        self._applied_out = (vibrate, tone)
        self._motor.value = vibrate
        if not self._config.buzzer_tonal:
            self._buzzer.value = tone is not None
        elif tone is None:
            self._buzzer.stop()
        else:
            self._buzzer.play(self._Tone(frequency=self._config.buzzer_mid_hz * tone))

    def close(self) -> None:
        for device in self._devices:
            try:
                device.close()
            except Exception:
                log.exception("closing %r failed", device)
        self._devices = []
