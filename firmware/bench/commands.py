"""The bench command language: one command per line, parsed before it reaches the device.

Parsing happens in the caller's thread, so a malformed line is answered at once with what
was wrong and the usage, and never reaches (or disturbs) the running service.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any


class BenchUsageError(ValueError):
    """A line the bench does not understand; the message says why and how to write it."""


@dataclass(frozen=True)
class Spec:
    usage: str
    help: str


BUTTONS = ("record", "mark")

COMMANDS: dict[str, Spec] = {
    "press": Spec("press record|mark [xN]", "short press(es), 0.15 s down / 0.15 s up (N: 1-20)"),
    "double-press": Spec("double-press record|mark", "two short presses (record: start, pause request)"),
    "hold": Spec("hold record|mark SECONDS", "hold down, then release (record 3 s: stop; mark: voice note)"),
    "down": Spec("down record|mark", "press and keep holding until 'up'"),
    "up": Spec("up record|mark", "release a button held with 'down'"),
    "camera": Spec("camera stall SECONDS", "the camera delivers no frames for SECONDS"),
    "mic": Spec("mic dead|ok", "the microphone stops delivering sound / delivers again"),
    "battery": Spec("battery PERCENT | battery fail|ok", "set the charge (0-100), or make the gauge fail"),
    "storage": Spec("storage free MB | storage normal", "report MB free (storage pressure), or the real figure"),
    "gps": Spec("gps fix|nofix|cold | gps jump SECONDS", "the receiver: fix, fix lost, cold start, time off"),
    "clock": Spec("clock step [+-]SECONDS", "step the wall clock (as an NTP step); monotonic time is not moved"),
    "dock": Spec("dock", "the device is docked (stops recording, stops buffering)"),
    "undock": Spec("undock", "the device is taken off the dock"),
    "status": Spec("status", "run the self-check now (result as a journal event)"),
    "show": Spec("show", "state, lamps, vibration, tone, battery, storage, devices"),
    "events": Spec("events", "(socket) from now on also stream indicator and journal events"),
    "help": Spec("help [COMMAND]", "list the commands, or one command's usage"),
    "quit": Spec("quit", "shut the service down cleanly (the evidence is closed and sealed)"),
}


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Any, ...] = ()
    text: str = ""


def _number(word: str, what: str, usage: str, lo: float | None = None, hi: float | None = None) -> float:
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(?:s|%|MB)?", word)
    if not m:
        raise BenchUsageError(f"{what}: expected a number, got {word!r} (usage: {usage})")
    value = float(m.group(1))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" from {lo:g}" if lo is not None else ""
        bounds += f" to {hi:g}" if hi is not None else ""
        raise BenchUsageError(f"{what}: {word!r} is out of range{bounds} (usage: {usage})")
    return value


def _button(word: str, usage: str) -> str:
    if word not in BUTTONS:
        raise BenchUsageError(f"no button {word!r}: record or mark (usage: {usage})")
    return word


def parse(line: str) -> Command:
    """A command from one line; BenchUsageError says what is wrong with it."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise BenchUsageError(f"cannot read the line: {exc}") from None
    if not words:
        raise BenchUsageError("empty command; 'help' lists the commands")
    name, rest = words[0].lower(), words[1:]
    spec = COMMANDS.get(name)
    if spec is None:
        raise BenchUsageError(f"unknown command {words[0]!r}; 'help' lists the commands")
    text = " ".join(words)

    def need(n: int | tuple[int, ...]) -> None:
        counts = (n,) if isinstance(n, int) else n
        if len(rest) not in counts:
            raise BenchUsageError(f"{name}: wrong number of arguments (usage: {spec.usage})")

    if name == "press":
        need((1, 2))
        count = 1
        if len(rest) == 2:
            m = re.fullmatch(r"x(\d+)", rest[1])
            if not m or not 1 <= int(m.group(1)) <= 20:
                raise BenchUsageError(f"press: count like x3, 1-20 (usage: {spec.usage})")
            count = int(m.group(1))
        return Command("press", (_button(rest[0], spec.usage), count), text)
    if name == "double-press":
        need(1)
        return Command("press", (_button(rest[0], spec.usage), 2), text)
    if name == "hold":
        need(2)
        return Command("hold", (_button(rest[0], spec.usage),
                                _number(rest[1], "hold", spec.usage, 0.05, 600)), text)
    if name in ("down", "up"):
        need(1)
        return Command(name, (_button(rest[0], spec.usage),), text)
    if name == "camera":
        need(2)
        if rest[0] != "stall":
            raise BenchUsageError(f"camera: only 'stall' (usage: {spec.usage})")
        return Command("camera-stall", (_number(rest[1], "camera stall", spec.usage, 0.1, 3600),), text)
    if name == "mic":
        need(1)
        if rest[0] not in ("dead", "ok"):
            raise BenchUsageError(f"mic: dead or ok, not {rest[0]!r} (usage: {spec.usage})")
        return Command("mic", (rest[0] == "dead",), text)
    if name == "battery":
        need(1)
        if rest[0] in ("fail", "ok"):
            return Command("battery-gauge", (rest[0] == "fail",), text)
        return Command("battery", (_number(rest[0], "battery", spec.usage, 0, 100),), text)
    if name == "storage":
        if rest == ["normal"]:
            return Command("storage", (None,), text)
        need(2)
        if rest[0] != "free":
            raise BenchUsageError(f"storage: 'free MB' or 'normal' (usage: {spec.usage})")
        return Command("storage", (int(_number(rest[1], "storage free", spec.usage, 0, 1e9) * 1024 * 1024),), text)
    if name == "gps":
        if rest and rest[0] == "jump":
            need(2)
            return Command("gps", ("jump", _number(rest[1], "gps jump", spec.usage, -1e6, 1e6)), text)
        need(1)
        if rest[0] not in ("fix", "nofix", "cold"):
            raise BenchUsageError(f"gps: fix, nofix, cold or jump SECONDS, not {rest[0]!r} "
                                  f"(usage: {spec.usage})")
        return Command("gps", (rest[0], 0.0), text)
    if name == "clock":
        need(2)
        if rest[0] != "step":
            raise BenchUsageError(f"clock: only 'step' (usage: {spec.usage})")
        seconds = _number(rest[1], "clock step", spec.usage, -1e9, 1e9)
        if seconds == 0:
            raise BenchUsageError(f"clock step: a step of 0 s changes nothing (usage: {spec.usage})")
        return Command("clock-step", (seconds,), text)
    if name == "help":
        need((0, 1))
        if rest and rest[0] not in COMMANDS:
            raise BenchUsageError(f"help: no command {rest[0]!r}")
        return Command("help", tuple(rest), text)
    need(0)
    return Command(name, (), text)


def help_text(name: str | None = None) -> str:
    if name is not None:
        spec = COMMANDS[name]
        return f"{spec.usage}\n    {spec.help}"
    width = max(len(s.usage) for s in COMMANDS.values())
    return "\n".join(f"{s.usage:<{width}}  {s.help}" for s in COMMANDS.values())
