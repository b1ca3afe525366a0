"""The bench inside the device: commands run in the service loop, what the device shows goes out.

The service is single-threaded (``firmware.service``), so the console and socket threads never
touch it: :meth:`Bench.submit` parses the line where it was typed, queues the command, and the
loop runs it at its next turn (a tick hook) and hands the reply back. Button presses become
pin edges at loop instants, as ``sim/scenario.py`` drives them, so a press from the bench
goes through the same gpiozero pins and gesture code as a finger on the device.

Each turn the bench also looks at what an officer would see and hear, and publishes every
change to its subscribers as an event: the state, the lamp pattern, each cue with its
vibration and tones, the motor and buzzer outputs themselves (read back from the pins), every
journal record as it is appended, and every warning the device logs.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from firmware.bench.commands import BenchUsageError, Command, help_text, parse
from hw.indicators import CUES, LAMPS, STATE_LAMPS, LampMode
from recorder import records

if TYPE_CHECKING:
    from firmware.service import Service

log = logging.getLogger(__name__)

NS = 1_000_000_000
PRESS_S, GAP_S = 0.15, 0.15     # one short press, as sim/scenario.py presses
REPLY_TIMEOUT_S = 15.0          # a loop turn is one frame; this is only a backstop
MAX_QUEUED_EVENTS = 10_000      # a subscriber that stops reading loses the oldest
# bench commands that only set a simulated part: the command's name -> the sim.controls.Controls
# method its parsed arguments (firmware/bench/commands.py) are passed to
SIMULATOR_CONTROLS = {"camera-stall": "camera_stall", "mic": "microphone_dead", "battery": "battery_percent",
                      "battery-gauge": "battery_gauge_fails", "storage": "storage_free", "gps": "gps_mode",
                      "clock-step": "clock_step"}


def _mode_text(mode: LampMode) -> str:
    if not mode.on:
        return "off"
    return "on" if mode.blink_s is None else f"blink {mode.blink_s:g}s"


class Bench:
    def __init__(self, service: Service, reply_timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self.service = service
        self.controls = service.dev.sim
        self.reply_timeout_s = reply_timeout_s
        self._inbox: queue.Queue[tuple[Command, concurrent.futures.Future[dict[str, Any]]]] = queue.Queue()
        # per button: the pin levels still to drive, each (ns after the previous one, down);
        # timed from when the previous edge was really driven, so a 3 s hold is >= 3 s
        self._steps: dict[str, collections.deque[tuple[int, bool]]] = {}
        self._due: dict[str, int] = {}      # when each button's next step is due (loop ns)
        self._subscribers: list[queue.Queue[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._t0 = service.clock()
        self._seen: dict[str, Any] = {}
        self._cues_seen = len(service.cues)
        self._tail = open(service.ev.journal.path, "rb")
        self._tail.seek(0, 2)
        self._partial = b""
        self._log = _EventLog(self)
        logging.getLogger().addHandler(self._log)
        self.closed = False
        service.tick_hooks.append(self.tick)
        self._look()     # the first look is the baseline, not news

    # -- from any thread -----------------------------------------------------------------
    def submit(self, line: str) -> dict[str, Any]:
        """Run one command line; the reply (``ok`` true/false) once the loop has done it."""
        try:
            cmd = parse(line)
        except BenchUsageError as exc:
            return {"ok": False, "error": str(exc)}
        if cmd.name == "help":
            return {"ok": True, "command": cmd.text, "help": help_text(*cmd.args)}
        if cmd.name == "events":
            return {"ok": False, "error": "events: only over the bench socket (the console shows them)"}
        if self.closed or self.service.stop_event.is_set():
            return {"ok": False, "command": cmd.text, "error": "the device is shutting down"}
        if cmd.name == "quit":
            self.service.stop()
            return {"ok": True, "command": cmd.text, "detail": "shutting down"}
        done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._inbox.put((cmd, done))
        try:
            return done.result(timeout=self.reply_timeout_s)
        except concurrent.futures.TimeoutError:
            done.cancel()
            return {"ok": False, "command": cmd.text,
                    "error": f"the device loop did not take the command within {self.reply_timeout_s:g} s"}

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        q: queue.Queue[dict[str, Any]] = queue.Queue(MAX_QUEUED_EVENTS)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def publish(self, event: dict[str, Any]) -> None:
        event = {"event": event.pop("event"), "t": self._t(), **event}
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            while True:
                try:
                    q.put_nowait(event)
                    break
                except queue.Full:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    def close(self) -> None:
        """After the loop has stopped: refuse further commands, end every subscription."""
        self.closed = True
        logging.getLogger().removeHandler(self._log)
        while True:
            try:
                _, done = self._inbox.get_nowait()
            except queue.Empty:
                break
            done.set_result({"ok": False, "error": "the device is shutting down"})
        self._read_journal()
        self.publish({"event": "closed"})
        self._tail.close()

    def _t(self) -> float:
        return round((self.service.clock() - self._t0) / NS, 3)

    # -- in the loop ---------------------------------------------------------------------
    def tick(self, now: int) -> None:
        while True:
            try:
                cmd, done = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not done.set_running_or_notify_cancel():
                continue
            try:
                reply = self._execute(cmd, now)
            except (ValueError, RuntimeError) as exc:   # NotSimulated is a ValueError
                reply = {"ok": False, "command": cmd.text, "error": str(exc)}
            done.set_result(reply)
        self._drive(now)
        self._look()

    def _execute(self, cmd: Command, now: int) -> dict[str, Any]:
        c = self.controls
        if c is None and cmd.name not in ("dock", "undock", "status", "show"):
            raise ValueError("nothing on this device is simulated: there is nothing to drive "
                             "(see docs/bench-console.md, mixing real and simulated parts)")
        reply: dict[str, Any] = {"ok": True, "command": cmd.text}
        if cmd.name in ("press", "hold", "down", "up"):
            assert c is not None
            button = cmd.args[0]
            c.require("gpio")
            press, gap = int(PRESS_S * NS), int(GAP_S * NS)
            if cmd.name == "press":
                steps = [(gap, True), (press, False)] * cmd.args[1]
            elif cmd.name == "hold":
                steps = [(gap, True), (int(cmd.args[1] * NS), False)]
            else:
                steps = [(0, cmd.name == "down")]
            queued = self._steps.setdefault(button, collections.deque())
            if not queued:
                self._due[button] = now
                steps[0] = (0, steps[0][1])
            queued.extend(steps)
            reply["done_in_s"] = round((max(self._due[button], now) - now
                                        + sum(d for d, _ in list(queued)[1:])) / NS, 3)
        elif cmd.name in SIMULATOR_CONTROLS:
            assert c is not None
            getattr(c, SIMULATOR_CONTROLS[cmd.name])(*cmd.args)
        elif cmd.name == "dock":
            self.service.dock()
        elif cmd.name == "undock":
            if self.service.states.state.value != "docked":
                raise ValueError(f"undock: the device is not docked (it is {self.service.states.state.value})")
            self.service.undock()
        elif cmd.name == "status":
            self.service.check_requested.set()
            reply["detail"] = "self-check requested: its result follows as a journal event"
        elif cmd.name == "show":
            reply["show"] = self.view()
        else:
            raise ValueError(f"{cmd.name}: not a device command")
        reply["state"] = self.service.states.state.value
        return reply

    def _pin(self, button: str) -> int:
        controls = self.service.settings.controls
        return int(controls.record_pin if button == "record" else controls.mark_pin)

    def _drive(self, now: int) -> None:
        """Due pin edges, at most one per button per turn (two in one instant would cancel)."""
        if self.controls is None:
            return
        for button, queued in self._steps.items():
            if queued and self._due[button] <= now:
                _, down = queued.popleft()
                self.controls.drive_button(self._pin(button), down)
                if queued:
                    self._due[button] = now + queued[0][0]

    # -- what the device shows -------------------------------------------------------------
    def _outputs(self) -> dict[str, Any]:
        """The lamps, motor and buzzer as their pins are driven now (None: cannot be read)."""
        from gpiozero import Device
        cfg = self.service.settings.indicators
        factory = self.service.board.pin_factory or Device.pin_factory
        out: dict[str, Any] = {}
        try:
            assert factory is not None
            pins = dict(zip(LAMPS, (cfg.led_green_pin, cfg.led_yellow_pin, cfg.led_red_pin), strict=True))
            out["lit"] = {name: bool(factory.pin(n).state) for name, n in pins.items()}
            out["vibrating"] = bool(factory.pin(cfg.vibration_pin).state)
            buzzer = factory.pin(cfg.buzzer_pin)
            sounding = bool(buzzer.state)
            freq = buzzer.frequency if cfg.buzzer_tonal else None
            out["tone_hz"] = (round(float(freq), 1) if freq else 0.0) if sounding else None
        except Exception as exc:   # a real pin factory that cannot read back an output
            log.debug("cannot read the indicator pins back: %s", exc)
            out = {"lit": None, "vibrating": None, "tone_hz": None}
        return out

    def view(self) -> dict[str, Any]:
        s = self.service
        lamp_state = s.indicators.state or "off"
        modes = STATE_LAMPS.get(lamp_state, {})
        c = self.controls
        view: dict[str, Any] = {
            "state": s.states.state.value,
            "lamps": {name: _mode_text(modes.get(name, LampMode())) for name in LAMPS},
            **self._outputs(),
            "cue": s.indicators.playing,
            "recording_id": s.pipeline.current_recording_id,
            "battery_percent": c.battery_reading() if c is not None else None,
            "storage_free_mb": None,
            "microphone_dead": c.microphone_is_dead() if c is not None else None,
            "position": None,
            "devices": s.dev.selection.as_dict() if s.dev.selection else None,
        }
        try:
            view["storage_free_mb"] = round(s.storage.usable_bytes() / 2**20, 1)
        except Exception as exc:
            view["storage_free_mb"] = f"unreadable: {exc}"
        if s.dev.position is not None:
            view["position"] = s.dev.position()
        return view

    def _look(self) -> None:
        s = self.service
        now = {"state": s.states.state.value,
               "lamps": {name: _mode_text(STATE_LAMPS.get(s.indicators.state or "off", {}).get(name, LampMode()))
                         for name in LAMPS},
               **{k: v for k, v in self._outputs().items() if k in ("vibrating", "tone_hz")}}
        first = not self._seen
        if not first and now["state"] != self._seen["state"]:
            self.publish({"event": "state", "from": self._seen["state"], "to": now["state"]})
        if not first and now["lamps"] != self._seen["lamps"]:
            self.publish({"event": "lamps", **now["lamps"]})
        for name in s.cues[self._cues_seen:]:
            steps = CUES.get(name, ())
            self.publish({"event": "cue", "name": name,
                          "vibrate": any(st.vibrate for st in steps),
                          "tones_hz": [round(st.tone * s.settings.indicators.buzzer_mid_hz, 1)
                                       for st in steps if st.tone is not None],
                          "seconds": round(sum(st.duration_s for st in steps), 3)})
        self._cues_seen = len(s.cues)
        if not first and (now["vibrating"], now["tone_hz"]) != (self._seen["vibrating"], self._seen["tone_hz"]):
            self.publish({"event": "output", "vibrating": now["vibrating"], "tone_hz": now["tone_hz"]})
        self._seen = now
        self._read_journal()

    def _read_journal(self) -> None:
        data = self._partial + self._tail.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            try:
                rec = records.parse_line(line + b"\n")
            except ValueError as exc:
                self.publish({"event": "log", "level": "ERROR", "logger": __name__,
                              "message": f"unreadable journal line: {exc}"})
                continue
            self.publish({"event": "journal", "type": rec.type, "seq": rec.seq, "payload": rec.payload})


class _EventLog(logging.Handler):
    """Warnings and errors the device logs (any thread), as ``log`` events."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(logging.WARNING)
        self.bench = bench

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bench.publish({"event": "log", "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()})
        except Exception:
            self.handleError(record)
