"""Pre-duty self-check (D1): battery, storage, clock, camera, microphone, journal.

Each item is measured by a probe (a callable the firmware wires to hardware
or simulation) and judged against :class:`SelfCheckThresholds`. A probe that
is missing, raises, or returns something unusable FAILS its item with the
reason in words: a check that cannot be made is not a pass. Any FAIL makes
the result NO-GO; WARNs are shown but allow duty.

Threshold edges, exactly: for "fail below / warn below" numbers, a value
equal to the threshold passes that threshold (``value < threshold`` fails or
warns). The microphone fails when its RMS is at or below the noise floor
(no signal), and warns at or above the clip level (saturated or stuck).
"""
from __future__ import annotations

import enum
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np

from common.clock import TimeQuality, TimeSample
from common.settings import Section

log = logging.getLogger(__name__)

PROC_SWAPS = "/proc/swaps"
"""The kernel's list of active swap areas; ``BODYCAM_PROC_SWAPS`` names a stand-in (tests)."""


def active_swaps(path: str | None = None) -> list[str]:
    """The swap areas the kernel uses now (``/proc/swaps``: a header line, then one line per
    area, its name first with spaces escaped as ``\\040``). No such file (no procfs): none."""
    path = path or os.environ.get("BODYCAM_PROC_SWAPS") or PROC_SWAPS
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [line.split()[0] for line in lines[1:] if line.split()]


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class SelfCheckThresholds(Section):
    """The ``[selfcheck]`` settings."""

    SECTION = "selfcheck"

    battery_fail_percent: float = 20.0
    battery_warn_percent: float = 50.0
    battery_fail_hours: float = 1.0        # estimated hours left
    battery_warn_hours: float = 4.0
    storage_fail_hours: float = 1.0        # recording hours that fit at the configured bitrate
    storage_warn_hours: float = 8.0        # one shift
    rtc_fail_after_s: float = 7 * 86400.0  # clock free-running longer than this fails
    mic_noise_floor_dbfs: float = -90.0    # RMS at or below: no signal
    mic_clip_dbfs: float = -1.0            # RMS at or above: saturated or stuck

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"[selfcheck] {f.name} must be a number, got {value!r}")
        pairs = [("battery_fail_percent", "battery_warn_percent"), ("battery_fail_hours", "battery_warn_hours"),
                 ("storage_fail_hours", "storage_warn_hours"), ("mic_noise_floor_dbfs", "mic_clip_dbfs")]
        for low, high in pairs:
            if not getattr(self, low) <= getattr(self, high):
                raise ValueError(f"[selfcheck] {low} must not exceed {high}")
        if not 0 <= self.battery_fail_percent <= 100 or not 0 <= self.battery_warn_percent <= 100:
            raise ValueError("[selfcheck] battery percents must be 0-100")
        if self.rtc_fail_after_s < 0 or self.battery_fail_hours < 0 or self.storage_fail_hours < 0:
            raise ValueError("[selfcheck] durations must be >= 0")
        if self.mic_clip_dbfs > 0:
            raise ValueError("[selfcheck] mic_clip_dbfs must be <= 0 dBFS")



@dataclass
class Probes:
    """What each item measures; None means not wired (that item fails)."""

    battery: Callable[[], tuple[float, float | None]] | None = None  # (percent, hours left or None)
    storage: Callable[[], int] | None = None                          # free bytes
    time: Callable[[], TimeSample | TimeQuality] | None = None
    camera: Callable[[], bool] | None = None                          # frames delivered?
    microphone: Callable[[], float] | None = None                     # RMS in dBFS (-inf = silence)
    journal: Callable[[], bool] | None = None                         # journal verified?
    # (mode, recipients) of [encryption]; raises when a required or installed key is unusable.
    # Optional: a service built before encryption existed has no such item (not a pass either)
    encryption: Callable[[], tuple[str, int]] | None = None
    # the active swap areas (judged with encryption on); None: the kernel's, active_swaps()
    swaps: Callable[[], list[str]] | None = None


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: Status
    detail: str
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SelfCheckResult:
    items: tuple[CheckItem, ...]
    thresholds: SelfCheckThresholds
    bitrate_bps: int

    @property
    def go(self) -> bool:
        return all(item.status is not Status.FAIL for item in self.items)

    def item(self, name: str) -> CheckItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """For the journal: integers only (format version 2), no NaN or infinity.

        Measured values and thresholds are in integer units named in the key
        (``percent`` -> ``permille``, ``hours_left`` -> ``time_left_ms``, ``*_dbfs`` ->
        ``*_millidbfs``...; the thresholds as the config-change record names them).
        """
        from firmware.config import journal_table
        return {
            "go": self.go,
            "items": [{"name": i.name, "status": i.status.value, "detail": i.detail,
                       "measured": _journal_measured(i.measured)} for i in self.items],
            "thresholds": journal_table(asdict(self.thresholds), SelfCheckThresholds.SECTION),
            "bitrate_bps": self.bitrate_bps,
        }

    def to_text(self) -> str:
        """For ``status`` and the officer."""
        warns = sum(i.status is Status.WARN for i in self.items)
        fails = sum(i.status is Status.FAIL for i in self.items)
        head = f"self-check: {'GO' if self.go else 'NO-GO'}"
        if fails or warns:
            head += f" ({fails} failed, {warns} warning{'s' if warns != 1 else ''})"
        lines = [head] + [f"  {i.status.value.upper():4}  {i.name:<10} {i.detail}" for i in self.items]
        return "\n".join(lines)


# A measured value's journaled name and factor (the journal holds integers only).
_MEASURED_UNITS = {
    "percent": ("permille", 10),
    "hours_left": ("time_left_ms", 3_600_000),
    "hours": ("recording_time_ms", 3_600_000),
    "since_sync_s": ("since_sync_ms", 1000),
    "rms_dbfs": ("rms_millidbfs", 1000),
}


def _journal_measured(measured: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in measured.items():
        if key in _MEASURED_UNITS:
            key, factor = _MEASURED_UNITS[key]
            if value is not None and not isinstance(value, bool):
                value = round(value * factor)
        if isinstance(value, float):
            raise ValueError(f"self-check measured {key} = {value!r} has no integer unit for the journal")
        out[key] = value
    return out


# a probe as a judge below sees it: its answer is checked, not trusted (else _Unusable)
_Probe = Callable[[], object]


class _Unusable(Exception):
    """A probe answered with something that cannot be judged."""


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _Unusable(f"{what} is {value!r}, not a number")
    value = float(value)
    if math.isnan(value):
        raise _Unusable(f"{what} is NaN")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _Unusable(f"{what} is {value!r}, not true/false")
    return bool(value)


def _grade(value: float, fail_below: float, warn_below: float) -> Status:
    if value < fail_below:
        return Status.FAIL
    if value < warn_below:
        return Status.WARN
    return Status.PASS


def _worse(a: Status, b: Status) -> Status:
    order = [Status.PASS, Status.WARN, Status.FAIL]
    return max(a, b, key=order.index)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS of int16 PCM in dBFS (full-scale sine = -3 dBFS); -inf for digital silence."""
    samples = np.asarray(samples)
    if samples.size == 0:
        raise ValueError("no samples")
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64) / 32768.0))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _battery(probe: _Probe, t: SelfCheckThresholds, _bitrate: int) -> CheckItem:
    answer = probe()
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise _Unusable(f"battery probe gave {answer!r}, not (percent, hours_left)")
    percent = _number(answer[0], "battery percent")
    if not 0 <= percent <= 100:
        raise _Unusable(f"battery percent {percent} is outside 0-100")
    hours = None if answer[1] is None else _number(answer[1], "battery hours left")
    if hours is not None and hours < 0:
        raise _Unusable(f"battery hours left {hours} is negative")
    status = _grade(percent, t.battery_fail_percent, t.battery_warn_percent)
    detail = f"{percent:.0f} %"
    if hours is None:
        detail += ", hours left unknown (charging or no rate)"
    else:
        status = _worse(status, _grade(hours, t.battery_fail_hours, t.battery_warn_hours))
        detail += f", ~{hours:.1f} h left"
    return CheckItem("battery", status, detail, {"percent": percent, "hours_left": hours})


def _storage(probe: _Probe, t: SelfCheckThresholds, bitrate: int) -> CheckItem:
    free = probe()
    if isinstance(free, bool) or not isinstance(free, (int, np.integer)) or free < 0:
        raise _Unusable(f"free storage is {free!r}, not a byte count")
    hours = int(free) * 8 / bitrate / 3600
    status = _grade(hours, t.storage_fail_hours, t.storage_warn_hours)
    detail = f"{int(free) / 1e9:.1f} GB free = {hours:.1f} h at {bitrate / 1e6:.1f} Mbit/s"
    return CheckItem("storage", status, detail, {"free_bytes": int(free), "hours": round(hours, 3)})


def _time(probe: _Probe, t: SelfCheckThresholds, _bitrate: int) -> CheckItem:
    answer = probe()
    since = None
    if isinstance(answer, TimeSample):
        quality, since = answer.quality, answer.since_sync_s
    elif isinstance(answer, TimeQuality):
        quality = answer
    else:
        raise _Unusable(f"time probe gave {answer!r}, not a TimeSample or TimeQuality")
    measured = {"quality": quality.value, "since_sync_s": since}
    if quality in (TimeQuality.GPS, TimeQuality.NTP):
        return CheckItem("time", Status.PASS, f"synced ({quality.value})", measured)
    if quality is TimeQuality.UNSYNCED:
        return CheckItem("time", Status.FAIL, "clock never synced since boot: set the time", measured)
    if since is None:
        return CheckItem("time", Status.WARN, "RTC only, time since last sync unknown", measured)
    since = _number(since, "seconds since sync")
    if since > t.rtc_fail_after_s:
        return CheckItem("time", Status.FAIL, f"RTC only, last synced {since / 86400:.1f} days ago", measured)
    return CheckItem("time", Status.WARN, f"RTC only, last synced {since / 3600:.1f} h ago", measured)


def _camera(probe: _Probe, _t: SelfCheckThresholds, _bitrate: int) -> CheckItem:
    ok = _flag(probe(), "camera probe")
    return CheckItem("camera", Status.PASS if ok else Status.FAIL,
                     "frames delivered" if ok else "no frames from the camera", {"frames": ok})


def _microphone(probe: _Probe, t: SelfCheckThresholds, _bitrate: int) -> CheckItem:
    level = _number(probe(), "microphone RMS")
    if level > 0:
        raise _Unusable(f"microphone RMS {level} dBFS is above full scale")
    measured = {"rms_dbfs": round(level, 2) if math.isfinite(level) else None}
    if level <= t.mic_noise_floor_dbfs:
        shown = "digital silence" if not math.isfinite(level) else f"{level:.1f} dBFS"
        return CheckItem("microphone", Status.FAIL,
                         f"no signal ({shown} <= floor {t.mic_noise_floor_dbfs:.0f} dBFS)", measured)
    if level >= t.mic_clip_dbfs:
        return CheckItem("microphone", Status.WARN, f"saturated ({level:.1f} dBFS)", measured)
    return CheckItem("microphone", Status.PASS, f"{level:.1f} dBFS", measured)


def _journal(probe: _Probe, _t: SelfCheckThresholds, _bitrate: int) -> CheckItem:
    ok = _flag(probe(), "journal probe")
    return CheckItem("journal", Status.PASS if ok else Status.FAIL,
                     "verified" if ok else "journal does not verify", {"verified": ok})


def _encryption(probe: _Probe, _t: SelfCheckThresholds, _bitrate: int,
                swaps: Callable[[], list[str]] = active_swaps) -> CheckItem:
    """D1 and D13: encryption configured but its agency key missing is a FAIL (the recorder
    refuses to record in clear then); a device not provisioned yet (mode auto, no key) WARNs.
    Encryption on with swap active WARNs: the plaintext the recorder holds in RAM (pre-event
    buffer, open chunk, a voice note) could be paged to the SD card in clear (deploy/install.sh
    turns swap off; docs/encryption.md). A warning, not a failure: recording encrypted with a
    risk of a clear page in swap is still better evidence than not recording."""
    try:
        answer = probe()
    except ValueError as exc:    # firmware.config.EncryptionKeyMissing
        return CheckItem("encryption", Status.FAIL, str(exc), {"recipients": 0})
    if (not isinstance(answer, tuple) or len(answer) != 2 or not isinstance(answer[1], int)
            or isinstance(answer[1], bool)):
        raise _Unusable(f"encryption probe: expected (mode, recipients), got {answer!r}")
    mode, n = str(answer[0]), answer[1]
    if n:
        active = swaps()
        if not isinstance(active, list) or not all(isinstance(x, str) for x in active):
            raise _Unusable(f"swaps probe: expected a list of swap areas, got {active!r}")
        if active:
            return CheckItem("encryption", Status.WARN,
                             f"on: {n} recipient key(s), but swap is active ({', '.join(active)}): "
                             "clear media in RAM may be written to storage", {"recipients": n, "swaps": active})
        return CheckItem("encryption", Status.PASS, f"on: {n} recipient key(s), no swap",
                         {"recipients": n, "swaps": []})
    if mode == "off":
        return CheckItem("encryption", Status.WARN, "off by configuration: recordings in clear",
                         {"recipients": 0})
    return CheckItem("encryption", Status.WARN, "no agency key provisioned: recordings in clear",
                     {"recipients": 0})


_ITEMS = (("battery", _battery), ("storage", _storage), ("time", _time),
          ("camera", _camera), ("microphone", _microphone), ("journal", _journal))


def run_self_check(probes: Probes, thresholds: SelfCheckThresholds, bitrate_bps: int) -> SelfCheckResult:
    """Run every item; never raises for a probe's failure, it is reported as FAIL."""
    if isinstance(bitrate_bps, bool) or not isinstance(bitrate_bps, int) or bitrate_bps <= 0:
        raise ValueError(f"bitrate_bps must be a positive integer, got {bitrate_bps!r}")
    items = []
    swaps = probes.swaps or active_swaps

    def encryption(probe: _Probe, t: SelfCheckThresholds, bitrate: int) -> CheckItem:
        return _encryption(probe, t, bitrate, swaps)

    optional = (("encryption", encryption),) if probes.encryption is not None else ()
    for name, judge in _ITEMS + optional:
        probe = getattr(probes, name)
        if probe is None:
            items.append(CheckItem(name, Status.FAIL, "not checked: no probe wired"))
            continue
        try:
            items.append(judge(probe, thresholds, bitrate_bps))
        except _Unusable as exc:
            items.append(CheckItem(name, Status.FAIL, f"unusable answer: {exc}"))
        except Exception as exc:   # a broken probe must not stop the other checks
            log.warning("self-check probe %s failed", name, exc_info=True)
            items.append(CheckItem(name, Status.FAIL, f"probe failed: {type(exc).__name__}: {exc}"))
    return SelfCheckResult(tuple(items), thresholds, bitrate_bps)
