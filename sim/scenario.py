"""Scripted shifts on simulated hardware, faster than real time (``bodycam scenario FILE --out DIR``).

A script is one event per line, at a time from power-on (``MM:SS`` or ``HH:MM:SS``, fractions allowed)::

    # comment
    set video.width 160            # config overrides (TOML values), before the first event
    00:05 double-press record
    00:09 press record             # one press: must do nothing
    03:10 hold mark 4s speak sim/scenarios/speech.wav
    04:00 battery 5%
    05:00 camera stall 3s
    06:00 press mark x3
    07:00 hold record 3s
    08:00 storage free 100MB       # or: storage free normal
    09:00 status                   # on-demand self-check
    09:30 dock / 09:40 undock
    end 60:00

The service runs on the virtual clock (``SimTime(realtime=False)``) with
gpiozero MockFactory pins that this runner drives at the scripted instants
(at the loop's frame granularity, one edge per button per frame), so the journal and recordings are exactly
what the device would produce. Bad lines are refused with their line number.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware.service_config import ServiceConfig
    from recorder.verify import VerificationResult

log = logging.getLogger(__name__)

NS = 1_000_000_000
WALL_START_NS = 1_795_392_000 * NS   # 2026-11-23 08:00 +08:00, fixed so runs compare
PRESS_S, GAP_S = 0.15, 0.15


class ScenarioError(ValueError):
    """A script line that cannot be understood (message names the line)."""


@dataclass(frozen=True)
class Event:
    at_s: float
    action: str
    args: tuple[Any, ...]   # the action's arguments, as parsed (see _event)
    line: int


@dataclass
class Scenario:
    events: list[Event]
    end_s: float
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)   # section -> key -> value
    base_dir: Path = Path(".")


_TIME = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def parse_time(text: str, line: int) -> float:
    m = _TIME.match(text)
    if not m:
        raise ScenarioError(f"line {line}: {text!r} is not a time (MM:SS or HH:MM:SS)")
    h, mnt, s = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
    if s >= 60 or (m.group(1) and mnt >= 60):
        raise ScenarioError(f"line {line}: {text!r}: minutes and seconds must be below 60")
    return h * 3600 + mnt * 60 + s


def _seconds(text: str, line: int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", text)
    if not m:
        raise ScenarioError(f"line {line}: {text!r} is not a duration like 3s")
    return float(m.group(1))


def _button(text: str, line: int) -> str:
    if text not in ("record", "mark"):
        raise ScenarioError(f"line {line}: no button {text!r} (record or mark)")
    return text


def parse(text: str, base_dir: Path = Path(".")) -> Scenario:
    events: list[Event] = []
    overrides: dict[str, dict[str, Any]] = {}
    end = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "set":
            if events or len(words) < 3 or "." not in words[1]:
                raise ScenarioError(f"line {n}: 'set SECTION.KEY VALUE' goes before the first event")
            sec, key = words[1].split(".", 1)
            try:
                value = tomllib.loads(f"v = {' '.join(words[2:])}")["v"]
            except tomllib.TOMLDecodeError as exc:
                raise ScenarioError(f"line {n}: bad value: {exc}") from None
            overrides.setdefault(sec, {})[key] = value
            continue
        if words[0] == "end":
            if len(words) != 2:
                raise ScenarioError(f"line {n}: 'end MM:SS'")
            end = parse_time(words[1], n)
            continue
        if end is not None:
            raise ScenarioError(f"line {n}: event after 'end'")
        at = parse_time(words[0], n)
        if events and at < events[-1].at_s:
            raise ScenarioError(f"line {n}: events must be in time order")
        events.append(_event(at, words[1:], n, base_dir))
    if end is None:
        raise ScenarioError("script has no 'end MM:SS' line")
    if events and events[-1].at_s > end:
        raise ScenarioError(f"line {events[-1].line}: event after the end time")
    return Scenario(events, end, overrides, base_dir)


def _event(at: float, w: list[str], n: int, base: Path) -> Event:
    if not w:
        raise ScenarioError(f"line {n}: time without an event")
    verb = w[0]
    if verb in ("press", "double-press") and len(w) in (2, 3):
        count = 2 if verb == "double-press" else 1
        if len(w) == 3:
            m = re.fullmatch(r"x(\d+)", w[2])
            if not m or verb != "press" or not 1 <= int(m.group(1)) <= 20:
                raise ScenarioError(f"line {n}: press count like x3 (1-20)")
            count = int(m.group(1))
        return Event(at, "press", (_button(w[1], n), count), n)
    if verb == "hold" and len(w) in (3, 5):
        speech = None
        if len(w) == 5:
            if w[3] != "speak":
                raise ScenarioError(f"line {n}: 'hold mark 4s speak FILE.wav'")
            speech = Path(w[4]) if Path(w[4]).is_absolute() else base / w[4]
            if not speech.is_file():
                raise ScenarioError(f"line {n}: no such WAV {speech}")
        return Event(at, "hold", (_button(w[1], n), _seconds(w[2], n), speech), n)
    if verb == "battery" and len(w) == 2:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", w[1])
        if not m or float(m.group(1)) > 100:
            raise ScenarioError(f"line {n}: battery percent like 5%")
        return Event(at, "battery", (float(m.group(1)),), n)
    if verb == "camera" and len(w) == 3 and w[1] == "stall":
        return Event(at, "camera-stall", (_seconds(w[2], n),), n)
    if verb == "storage" and len(w) == 3 and w[1] == "free":
        if w[2] == "normal":
            return Event(at, "storage", (None,), n)
        m = re.fullmatch(r"(\d+)MB", w[2])
        if not m:
            raise ScenarioError(f"line {n}: storage free like 100MB, or normal")
        return Event(at, "storage", (int(m.group(1)) * 1024 * 1024,), n)
    if verb in ("status", "dock", "undock") and len(w) == 1:
        return Event(at, verb, (), n)
    raise ScenarioError(f"line {n}: cannot understand {' '.join(w)!r}")


@dataclass
class ScenarioResult:
    out: Path
    key_dir: Path
    verification: VerificationResult
    counts: Counter[str]
    cues: list[str]

    def summary(self) -> str:
        lines = [f"evidence: {self.out}", f"verify: {'OK' if self.verification.ok else self.verification.failure}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        return "\n".join(lines)


def run(scenario: Scenario, out: Path, key_dir: Path | None = None,
        base_cfg: dict[str, dict[str, Any]] | None = None,
        service_cfg: ServiceConfig | None = None) -> ScenarioResult:
    """Run a parsed scenario into the evidence directory ``out`` (the device key goes beside it)."""
    from gpiozero.pins.mock import MockFactory

    from firmware import config as config_mod
    from firmware import hardware
    from firmware.service_config import ServiceConfig
    from recorder.journal import iter_records
    from recorder.verify import verify_directory
    from sim.battery import SimulatedBattery

    data = {k: dict(v) for k, v in (base_cfg or {}).items()}
    svc_over = dict(scenario.overrides.pop("service", {})) if "service" in scenario.overrides else {}
    for sec, table in scenario.overrides.items():
        data.setdefault(sec, {}).update(table)
    cfg = config_mod.validate(data, "scenario")
    sc = service_cfg or ServiceConfig.from_mapping(svc_over)
    key_dir = key_dir or out.parent / (out.name + "-key")
    devices = hardware.simulated(
        cfg, realtime=False, start_ns=10 * NS, wall_start_ns=WALL_START_NS,
        camera_stalls=[(e.at_s, e.args[0]) for e in scenario.events if e.action == "camera-stall"],
        speech=[(e.at_s, e.args[2]) for e in scenario.events
                if e.action == "hold" and e.args[2] is not None])
    origin = devices.timebase.now_ns()
    storage: dict[str, int | None] = {"free": None}
    board = hardware.board(cfg, devices, sim=True,
                           storage_free=lambda: storage["free"] if storage["free"] is not None
                           else service.ev.store.free_bytes())
    factory, battery = board.pin_factory, board.battery
    assert isinstance(factory, MockFactory) and isinstance(battery, SimulatedBattery)
    service = hardware.build_service(cfg, devices, out, key_dir, sim=True, provision=True,
                                     board_=board, service_cfg=sc, boot_extra={"scenario": True},
                                     journal_config=False)
    evidence = service.ev
    controls = config_mod.section(cfg, "controls")
    pins = {"record": factory.pin(controls.record_pin), "mark": factory.pin(controls.mark_pin)}
    edges = _edges(scenario.events)
    others = [e for e in scenario.events if e.action not in ("press", "hold", "camera-stall")]

    def tick(now: int) -> None:
        # at most one edge per button per loop turn: two edges of one button in the same turn
        # would share one instant and cancel out, as a too-fast finger would
        moved = set()
        for edge in [e for e in edges if origin + int(e[0] * NS) <= now]:
            _, button, down = edge
            if button in moved:
                continue
            moved.add(button)
            edges.remove(edge)
            pins[button].drive_low() if down else pins[button].drive_high()
        while others and origin + int(others[0].at_s * NS) <= now:
            e = others.pop(0)
            log.info("scenario line %d: %s %s", e.line, e.action, e.args)
            if e.action == "battery":
                battery.set_percent(e.args[0])
            elif e.action == "storage":
                storage["free"] = e.args[0]
            elif e.action == "status":
                service.check_requested.set()
            elif e.action == "dock":
                service.dock()
            elif e.action == "undock":
                service.undock()

    service.tick_hooks.append(tick)
    try:
        service.boot()
        service.run(until_ns=origin + int(scenario.end_s * NS))
    finally:
        service.shutdown("stop")
        factory.reset()
    result = verify_directory(out, evidence.signer.public_key_pem())
    counts = Counter(r.type for r in iter_records(out / "journal.log"))
    return ScenarioResult(out, key_dir, result, counts, service.cues)


def _edges(events: list[Event]) -> list[tuple[float, str, bool]]:
    edges = []
    for e in events:
        if e.action == "press":
            button, count = e.args
            for i in range(count):
                t = e.at_s + i * (PRESS_S + GAP_S)
                edges += [(t, button, True), (t + PRESS_S, button, False)]
        elif e.action == "hold":
            button, seconds, _ = e.args
            edges += [(e.at_s, button, True), (e.at_s + seconds, button, False)]
    return sorted(edges, key=lambda x: x[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bodycam scenario", description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--out", type=Path, required=True, help="evidence directory to create")
    p.add_argument("--config", type=Path, help="TOML configuration (scenario 'set' lines override it)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=max(logging.WARNING - 10 * args.verbose, logging.DEBUG), stream=sys.stderr)
    return run_file(args.file, args.out, args.config)


def run_file(path: Path, out: Path, config_path: Path | None = None) -> int:
    from common.settings import read_toml
    from firmware import config as config_mod
    try:
        scenario = parse(path.read_text(), Path.cwd())
    except (OSError, ScenarioError, UnicodeDecodeError) as exc:
        print(f"bodycam: error: {path}: {exc}", file=sys.stderr)
        return 2
    base = None
    if config_path is not None:
        base = read_toml(config_path, config_mod.ConfigError)   # ConfigError: exit 3, file named
        config_mod.validate(base, str(config_path))
    if out.exists() and any(out.iterdir()):
        print(f"bodycam: error: {out} is not empty; choose a new directory", file=sys.stderr)
        return 2
    result = run(scenario, out, base_cfg=base)
    print(result.summary())
    return 0 if result.verification.ok else 1


if __name__ == "__main__":
    sys.exit(main())
