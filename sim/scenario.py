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
    12:00 power cut                # the power goes: the device process is killed there
                                   # (or: power cut lose-unsynced, see below)
    12:30 power on                 # boots again on the same evidence directory and key
    end 60:00

The service runs on the virtual clock (``SimTime(realtime=False)``) with
gpiozero MockFactory pins that this runner drives at the scripted instants
(at the loop's frame granularity, one edge per button per frame), so the journal and recordings are exactly
what the device would produce. Bad lines are refused with their line number.

``power cut`` / ``power on``: every power-on until a cut runs the service in a child
process, which the runner SIGKILLs when the virtual clock reaches the cut (at loop
granularity): no shutdown record, no closing or flushing of files, whatever the process had
not yet written to the kernel is lost and open segments stay ``.part`` files. (A SIGKILL
keeps what the kernel had already been given; a real cut can lose that too unless it was
fsynced: ``power cut lose-unsynced`` models that worst case as far as it can, by truncating
every file the device had not fsynced, its open ``.part`` segments, to nothing, as a
filesystem with delayed allocation may leave them.) ``power on`` then builds the service again
on the same evidence directory and key: a fresh monotonic clock (a reboot), the wall clock
at the script time, a full battery, the storage as last scripted; salvage
(``recorder.salvage``) and the reason prompt happen as on the device. Every cut needs a
``power on`` after it, and nothing but ``power on`` may come while the power is off.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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
    _check_power(events)
    return Scenario(events, end, overrides, base_dir)


def _check_power(events: list[Event]) -> None:
    off: Event | None = None
    for e in events:
        if e.action == "power-on":
            if off is None:
                raise ScenarioError(f"line {e.line}: 'power on' without a 'power cut' before it")
            off = None
        elif off is not None:
            raise ScenarioError(f"line {e.line}: the power is off (cut on line {off.line}); "
                                "'power on' first")
        elif e.action == "power-cut":
            off = e
    if off is not None:
        raise ScenarioError(f"line {off.line}: 'power cut' needs a 'power on' after it")


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
    if verb == "power" and len(w) == 2 and w[1] in ("cut", "on"):
        return Event(at, f"power-{w[1]}", (False,) if w[1] == "cut" else (), n)
    if verb == "power" and w[1:] == ["cut", "lose-unsynced"]:
        return Event(at, "power-cut", (True,), n)
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
    """Run a parsed scenario into the evidence directory ``out`` (the device key goes beside it).

    Each power-on up to a ``power cut`` runs in a child process that is killed at the cut;
    the last one runs here and shuts down cleanly at the end."""
    from firmware import config as config_mod
    from firmware.service_config import ServiceConfig
    from recorder import identity
    from recorder.journal import iter_records
    from recorder.verify import verify_directory

    data = {k: dict(v) for k, v in (base_cfg or {}).items()}
    svc_over = dict(scenario.overrides.get("service", {}))
    for sec, table in scenario.overrides.items():
        if sec != "service":
            data.setdefault(sec, {}).update(table)
    cfg = config_mod.validate(data, "scenario")
    sc = service_cfg or ServiceConfig.from_mapping(svc_over)
    key_dir = key_dir or out.parent / (out.name + "-key")
    cues: list[str] = []
    for boot in _boots(scenario):
        if boot.cut:
            cues += _power_cut_boot(boot, cfg, sc, out, key_dir)
        else:
            cues += _power_on(boot, cfg, sc, out, key_dir, None)
    public_pem = identity.FileSigner.load(key_dir).public_key_pem()
    result = verify_directory(out, public_pem)
    counts = Counter(r.type for r in iter_records(out / "journal.log"))
    return ScenarioResult(out, key_dir, result, counts, cues)


@dataclass(frozen=True)
class _Boot:
    """One power-on: from ``start_s`` (script time) to a power cut or the end at ``stop_s``."""
    start_s: float
    stop_s: float
    cut: bool
    lose_unsynced: bool            # the cut also loses what was never fsynced (open .part files)
    events: tuple[Event, ...]      # the events scripted while it is on
    storage_free: int | None       # the storage as last scripted before it


def _boots(scenario: Scenario) -> list[_Boot]:
    boots: list[_Boot] = []
    mine: list[Event] = []
    start = 0.0
    storage: int | None = None
    first_storage: int | None = None
    for e in scenario.events:
        if e.action == "power-cut":
            boots.append(_Boot(start, e.at_s, True, e.args[0], tuple(mine), first_storage))
            mine = []
        elif e.action == "power-on":
            start, first_storage = e.at_s, storage
        else:
            mine.append(e)
            if e.action == "storage":
                storage = e.args[0]
    boots.append(_Boot(start, scenario.end_s, False, False, tuple(mine), first_storage))
    return boots


def _power_on(boot: _Boot, cfg: dict[str, dict[str, Any]], sc: ServiceConfig, out: Path,
              key_dir: Path, cut: Callable[[list[str]], None] | None) -> list[str]:
    """Boot the service on ``out`` and run it to ``boot.stop_s``; the cues it played.

    With ``cut``, the run is not ended: ``cut(cues)`` is called from inside the loop at the
    cut instant and must not return (the process is killed there)."""
    from gpiozero.pins.mock import MockFactory

    from firmware import config as config_mod
    from firmware import hardware
    from sim.battery import SimulatedBattery

    at0 = boot.start_s
    devices = hardware.simulated(
        cfg, realtime=False, start_ns=10 * NS, wall_start_ns=WALL_START_NS + int(at0 * NS),
        camera_stalls=[(e.at_s - at0, e.args[0]) for e in boot.events if e.action == "camera-stall"],
        speech=[(e.at_s - at0, e.args[2]) for e in boot.events
                if e.action == "hold" and e.args[2] is not None])
    origin = devices.timebase.now_ns() - int(at0 * NS)   # script time 0, on this boot's clock
    storage: dict[str, int | None] = {"free": boot.storage_free}
    board = hardware.board(cfg, devices, sim=True,
                           storage_free=lambda: storage["free"] if storage["free"] is not None
                           else service.ev.store.free_bytes())
    factory, battery = board.pin_factory, board.battery
    assert isinstance(factory, MockFactory) and isinstance(battery, SimulatedBattery)
    service = hardware.build_service(cfg, devices, out, key_dir, sim=True, provision=True,
                                     board_=board, service_cfg=sc, boot_extra={"scenario": True},
                                     journal_config=False)
    controls = config_mod.section(cfg, "controls")
    pins = {"record": factory.pin(controls.record_pin), "mark": factory.pin(controls.mark_pin)}
    edges = _edges(list(boot.events))
    others = [e for e in boot.events if e.action not in ("press", "hold", "camera-stall")]
    stop_ns = origin + int(boot.stop_s * NS)

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
        if cut is not None and now >= stop_ns:
            log.warning("scenario: power cut at %.1f s", boot.stop_s)
            cut(list(service.cues))
            raise RuntimeError("the power cut returned")

    service.tick_hooks.append(tick)
    if cut is not None:
        service.boot()
        service.run()   # ends only in tick(): the process is killed at the cut
        raise RuntimeError("the service stopped before the power cut")
    try:
        service.boot()
        service.run(until_ns=stop_ns)
    finally:
        service.shutdown("stop")
        factory.reset()
    return service.cues


def _power_cut_boot(boot: _Boot, cfg: dict[str, dict[str, Any]], sc: ServiceConfig, out: Path,
                    key_dir: Path) -> list[str]:
    """Run ``boot`` in a child process and SIGKILL it at the cut; the cues it played."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")   # a fresh interpreter: nothing shared to tidy up
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_device_process, name="bodycam-scenario-device",
                        args=(send, boot, cfg, sc, out, key_dir, logging.getLogger().level,
                              next((h.formatter._fmt for h in logging.getLogger().handlers
                                    if h.formatter is not None), None)))
    child.start()
    send.close()
    try:
        try:
            cues: list[str] = receive.recv()   # the child is at the cut instant
        except EOFError:
            child.join()
            raise RuntimeError(f"the simulated device died before its power cut at {boot.stop_s:.1f} s "
                               f"(exit code {child.exitcode})") from None
        child.kill()   # SIGKILL: no shutdown, no finally, no flush, no atexit
        child.join()
        log.info("scenario: device process %d killed at the power cut", child.pid)
        if boot.lose_unsynced:
            _lose_unsynced(out)
        return cues
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
            child.join()


def _lose_unsynced(out: Path) -> None:
    """What the page cache held and the disk never got: the open segments (``*.part``, fsynced
    only when closed) are cut to nothing. The journal is fsynced on every record and keeps all."""
    for part in sorted(out.rglob("*.part")):
        log.warning("scenario: power cut loses %s (%d unsynced bytes)", part.relative_to(out),
                    part.stat().st_size)
        os.truncate(part, 0)


def _device_process(conn: Any, boot: _Boot, cfg: dict[str, dict[str, Any]], sc: ServiceConfig,
                    out: Path, key_dir: Path, log_level: int, log_format: str | None) -> None:
    """The child: the device, running until its power is cut (then it waits to be killed)."""
    logging.basicConfig(level=log_level or logging.WARNING, stream=sys.stderr,
                        format=log_format or logging.BASIC_FORMAT)

    def cut(cues: list[str]) -> None:
        conn.send(cues)
        while True:          # frozen at the cut instant until the runner kills the process
            time.sleep(3600)

    _power_on(boot, cfg, sc, out, key_dir, cut)


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
    print(f"report: {write_report(result)}")
    return 0 if result.verification.ok else 1


def write_report(result: ScenarioResult) -> Path:
    """The shift report beside the evidence directory (never in it): ``OUT-report.svg`` (timeline)
    and ``OUT-report.txt`` (what the journal proves), see ``firmware.shift_report``."""
    from firmware import shift_report
    from recorder.identity import PUBLIC_KEY_NAME
    svg = result.out.parent / (result.out.name + "-report.svg")
    summary = shift_report.write_report(result.out, result.key_dir / PUBLIC_KEY_NAME, svg)
    svg.with_suffix(".txt").write_text(shift_report.summary_text(summary) + "\n")
    return svg


if __name__ == "__main__":
    sys.exit(main())
