"""Officer buttons: gestures recognised from debounced press/release edges.

A body camera must never start or stop on a knock, a single accidental press
or contact bounce, and the timing of a gesture must be testable without
waiting real seconds. So the recognisers here see only ``(pressed, now_ns)``
edges and ``poll(now_ns)`` calls from an injected monotonic clock;
:class:`GestureButtons` wires them to gpiozero :class:`~gpiozero.Button`
devices (any pin factory, including ``MockFactory``).

Record button (defaults): two presses whose starts lie within 0.6 s start
recording; holding 3 s stops it. One press does nothing.

Mark button: short presses are counted; when no further press follows within
the count gap, one ``MARK`` gesture reports the count (1 = bookmark, N = reason
number N while a reason is asked for; the firmware decides which). Holding
>= 1 s reports ``MARK_HOLD_START`` at the threshold and ``MARK_HOLD_END`` on
release, both with the press instant, so a voice note can cover the whole hold.

Debouncing is a settled-level filter: a level change counts only once the raw
level has stayed put for ``bounce_s``, and it is dated at the last raw edge.
Timers never run past an unconfirmed raw edge, so a late poll cannot fire a
hold or close a count window that a bouncing edge was about to change.
"""
from __future__ import annotations

import enum
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from common.settings import Section

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

NS = 1_000_000_000


class GestureKind(str, enum.Enum):
    RECORD_START = "record-start"        # record button: N presses within the window
    RECORD_STOP = "record-stop"          # record button: held for stop_hold_s
    MARK = "mark"                        # mark button: ``count`` short presses
    MARK_HOLD_START = "mark-hold-start"  # mark button: held for mark_long_press_s (still held)
    MARK_HOLD_END = "mark-hold-end"      # mark button: released after a long press


@dataclass(frozen=True)
class Gesture:
    """One recognised gesture; all instants are on the injected monotonic clock (ns)."""

    kind: GestureKind
    at_ns: int                       # when the gesture became certain
    count: int = 0                   # presses (RECORD_START, MARK)
    pressed_ns: int | None = None    # first press of the gesture
    released_ns: int | None = None   # MARK_HOLD_END only

    @property
    def is_bookmark(self) -> bool:
        return self.kind is GestureKind.MARK and self.count == 1


@dataclass(frozen=True)
class ControlsConfig(Section):
    """The ``[controls]`` settings (BCM pin numbers, durations in seconds)."""

    SECTION = "controls"

    record_pin: int = 5
    mark_pin: int = 6
    bounce_s: float = 0.03          # level must be stable this long to count
    gpio_bounce_s: float | None = None  # passed to gpiozero; None: our filter only
    start_presses: int = 2          # presses that start recording
    press_window_s: float = 0.6     # first to last press start, for start_presses
    stop_hold_s: float = 3.0        # hold that stops recording
    mark_long_press_s: float = 1.0  # hold that starts a reason voice note
    mark_count_gap_s: float = 0.7   # release-to-press gap that ends a press count
    poll_interval_s: float = 0.02   # how often the firmware should call poll()

    def __post_init__(self) -> None:
        for name in ("record_pin", "mark_pin", "start_presses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"[controls] {name} must be an integer, got {value!r}")
        if not 0 <= self.record_pin <= 27 or not 0 <= self.mark_pin <= 27:
            raise ValueError("[controls] record_pin and mark_pin must be BCM pins 0-27")
        if self.record_pin == self.mark_pin:
            raise ValueError("[controls] record_pin and mark_pin must differ")
        if not 2 <= self.start_presses <= 5:
            raise ValueError("[controls] start_presses must be 2-5 (one press is too easy to make by accident)")
        for name in ("bounce_s", "press_window_s", "stop_hold_s", "mark_long_press_s",
                     "mark_count_gap_s", "poll_interval_s"):
            _check_seconds(name, getattr(self, name), allow_zero=(name == "bounce_s"))
        if self.gpio_bounce_s is not None:
            _check_seconds("gpio_bounce_s", self.gpio_bounce_s, allow_zero=False)
        if self.press_window_s <= self.bounce_s or self.mark_count_gap_s <= self.bounce_s:
            raise ValueError("[controls] press_window_s and mark_count_gap_s must exceed bounce_s")
        if self.stop_hold_s <= self.press_window_s:
            raise ValueError("[controls] stop_hold_s must exceed press_window_s")
        if self.mark_long_press_s <= self.bounce_s:
            raise ValueError("[controls] mark_long_press_s must exceed bounce_s")



def _check_seconds(name: str, value: object, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"[controls] {name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"[controls] {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")



class _Debouncer:
    """Settled-level filter over raw edges."""

    def __init__(self, bounce_ns: int) -> None:
        self._bounce_ns = bounce_ns
        self.stable = False
        self.raw = False
        self._raw_ns = 0

    @property
    def pending_since(self) -> int | None:
        """Instant of an unconfirmed raw change, or None when raw equals stable."""
        return self._raw_ns if self.raw != self.stable else None

    def raw_edge(self, pressed: bool, now_ns: int) -> None:
        if pressed != self.raw:
            self.raw = pressed
            self._raw_ns = now_ns

    def settle(self, now_ns: int) -> tuple[bool, int] | None:
        if self.raw != self.stable and now_ns - self._raw_ns >= self._bounce_ns:
            self.stable = self.raw
            return self.stable, self._raw_ns
        return None


class _Recogniser:
    """Common edge/poll plumbing; subclasses define press, release and timers."""

    def __init__(self, bounce_s: float) -> None:
        self._debounce = _Debouncer(round(bounce_s * NS))
        self._last_ns: int | None = None

    def edge(self, pressed: bool, now_ns: int) -> list[Gesture]:
        """A raw level change seen at ``now_ns`` (bounces included)."""
        out = self._advance(now_ns)
        self._debounce.raw_edge(bool(pressed), now_ns)
        out += self._advance(now_ns)
        return out

    def poll(self, now_ns: int, pressed: bool | None = None) -> list[Gesture]:
        """Run timers up to ``now_ns``; ``pressed`` (the read level) resyncs a missed edge."""
        if pressed is not None and bool(pressed) != self._debounce.raw:
            log.debug("%s: level %s without an edge; resynced", type(self).__name__, pressed)
            return self.edge(pressed, now_ns)
        return self._advance(now_ns)

    def _advance(self, now_ns: int) -> list[Gesture]:
        if isinstance(now_ns, bool) or not isinstance(now_ns, int):
            raise TypeError(f"time must be integer nanoseconds, got {now_ns!r}")
        if self._last_ns is not None and now_ns < self._last_ns:
            raise ValueError(f"time went backwards: {now_ns} < {self._last_ns}")
        self._last_ns = now_ns
        out: list[Gesture] = []
        committed = self._debounce.settle(now_ns)
        if committed is not None:
            level, at = committed
            out += self._timers(at)
            out += self._press(at) if level else self._release(at)
        pending = self._debounce.pending_since
        out += self._timers(now_ns if pending is None else min(now_ns, pending))
        return out

    def _press(self, t: int) -> list[Gesture]:
        raise NotImplementedError

    def _release(self, t: int) -> list[Gesture]:
        raise NotImplementedError

    def _timers(self, t: int) -> list[Gesture]:
        raise NotImplementedError


class RecordRecogniser(_Recogniser):
    """Record button: ``start_presses`` presses within the window start, a long hold stops."""

    def __init__(self, config: ControlsConfig) -> None:
        super().__init__(config.bounce_s)
        self._need = config.start_presses
        self._window_ns = round(config.press_window_s * NS)
        self._hold_ns = round(config.stop_hold_s * NS)
        self._presses: list[int] = []
        self._pressed_at: int | None = None
        self._consumed = False   # current press already used (start or stop); no hold from it

    def _press(self, t: int) -> list[Gesture]:
        if self._presses and t - self._presses[0] > self._window_ns:
            self._presses = []
        self._presses.append(t)
        self._pressed_at, self._consumed = t, False
        if len(self._presses) >= self._need:
            first = self._presses[0]
            self._presses, self._consumed = [], True
            return [Gesture(GestureKind.RECORD_START, t, count=self._need, pressed_ns=first)]
        return []

    def _release(self, t: int) -> list[Gesture]:
        self._pressed_at = None
        return []

    def _timers(self, t: int) -> list[Gesture]:
        if self._pressed_at is not None and not self._consumed and t - self._pressed_at >= self._hold_ns:
            self._consumed, self._presses = True, []
            return [Gesture(GestureKind.RECORD_STOP, self._pressed_at + self._hold_ns,
                            pressed_ns=self._pressed_at)]
        if self._presses and self._pressed_at is None and t - self._presses[0] > self._window_ns:
            log.debug("record button: %d press(es) ignored (need %d)", len(self._presses), self._need)
            self._presses = []
        return []


class MarkRecogniser(_Recogniser):
    """Mark button: counted short presses, and long presses with press and release instants."""

    def __init__(self, config: ControlsConfig) -> None:
        super().__init__(config.bounce_s)
        self._long_ns = round(config.mark_long_press_s * NS)
        self._gap_ns = round(config.mark_count_gap_s * NS)
        self._count = 0
        self._first_ns = 0
        self._last_release_ns = 0
        self._pressed_at: int | None = None
        self._long = False

    def _press(self, t: int) -> list[Gesture]:
        self._pressed_at, self._long = t, False
        if self._count == 0:
            self._first_ns = t
        return []

    def _release(self, t: int) -> list[Gesture]:
        pressed, self._pressed_at = self._pressed_at, None
        if self._long:
            self._long = False
            return [Gesture(GestureKind.MARK_HOLD_END, t, pressed_ns=pressed, released_ns=t)]
        self._count += 1
        self._last_release_ns = t
        return []

    def _flush_count(self, at: int) -> list[Gesture]:
        gesture = Gesture(GestureKind.MARK, at, count=self._count, pressed_ns=self._first_ns)
        self._count = 0
        return [gesture]

    def _timers(self, t: int) -> list[Gesture]:
        out: list[Gesture] = []
        if self._pressed_at is not None and not self._long and t - self._pressed_at >= self._long_ns:
            if self._count:   # short presses before this hold still count: never lose a bookmark
                out += self._flush_count(self._pressed_at)
            self._long = True
            out.append(Gesture(GestureKind.MARK_HOLD_START, self._pressed_at + self._long_ns,
                               pressed_ns=self._pressed_at))
        elif self._pressed_at is None and self._count and t - self._last_release_ns >= self._gap_ns:
            out += self._flush_count(self._last_release_ns + self._gap_ns)
        return out


class GestureButtons:
    """The two officer buttons on gpiozero pins, reporting gestures to ``on_gesture``.

    Edges arrive from gpiozero callbacks; holds and count windows need
    :meth:`poll`, which the firmware calls every ``poll_interval_s``. Both take
    one lock, and ``on_gesture`` runs under it, so it must be quick (queue the
    work). Exceptions from ``on_gesture`` are logged, never raised into gpiozero.
    """

    def __init__(self, config: ControlsConfig, on_gesture: Callable[[Gesture], None],
                 clock: Callable[[], int] = time.monotonic_ns, pin_factory: Factory | None = None) -> None:
        from gpiozero import Button

        self._on_gesture = on_gesture
        self._clock = clock
        self._lock = threading.RLock()
        self._recognisers = {"record": RecordRecogniser(config), "mark": MarkRecogniser(config)}
        self._buttons = {}
        try:
            for name, pin in (("record", config.record_pin), ("mark", config.mark_pin)):
                button = Button(pin, pull_up=True, bounce_time=config.gpio_bounce_s,
                                pin_factory=pin_factory)
                self._buttons[name] = button
                button.when_pressed = lambda n=name: self._edge(n, True)
                button.when_released = lambda n=name: self._edge(n, False)
        except Exception:
            self.close()
            raise

    def _edge(self, name: str, pressed: bool) -> None:
        with self._lock:
            self._emit(self._recognisers[name].edge(pressed, self._clock()))

    def poll(self) -> None:
        with self._lock:
            if not self._buttons:
                raise RuntimeError("GestureButtons is closed")
            now = self._clock()
            for name, recogniser in self._recognisers.items():
                self._emit(recogniser.poll(now, self._buttons[name].is_pressed))

    def _emit(self, gestures: list[Gesture]) -> None:
        for gesture in gestures:
            log.debug("gesture %s", gesture)
            try:
                self._on_gesture(gesture)
            except Exception:
                log.exception("on_gesture failed for %s", gesture)

    def close(self) -> None:
        for button in self._buttons.values():
            button.close()
        self._buttons = {}
