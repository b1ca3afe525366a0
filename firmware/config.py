"""The device's one configuration file (TOML): schema, documented defaults, strict validation.

Every key has a default and a one-line meaning; ``bodycam config defaults``
prints them as a commented TOML file. Unknown keys, wrong types and
impossible values are refused with the file and the key named, because a
camera that silently ignores a typo records the wrong thing all shift.
"""
from __future__ import annotations

import dataclasses
import errno
import importlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.settings import Section, read_toml, setting
from recorder import age, records
from recorder.encode import AudioSettings, VideoSettings
from recorder.pipeline import PipelineSettings


class ConfigError(ValueError):
    """A configuration problem, naming the file and the key."""


class OutputDirUnusable(ConfigError):
    """The output directory exists (or could exist) but the storage refuses writing: read-only,
    no permission, full or failing. A storage problem (exit 4), not a configuration one."""


# mkdir failures that are the storage's fault, not the configured path's
_STORAGE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EIO}


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _one_of(*choices: object) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def _timezone(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (e.g. Asia/Shanghai, UTC)"
    return None


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


class _Documented(Section):
    """A section whose every key carries its meaning and check (``setting(...)``): the value
    must have the default's type (an integer is taken for a float) and pass the check."""

    ERROR = ConfigError

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            where = f"{self.SECTION}.{f.name}"
            if not _same_type(f.default, value):
                raise ConfigError(f"{where} must be {type(f.default).__name__}, got {value!r}")
            if isinstance(f.default, float):
                value = float(value)
                object.__setattr__(self, f.name, value)
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{where} = {value!r} {problem}")


@dataclass(frozen=True)
class DeviceSection(_Documented):
    SECTION = "device"
    id: str = setting("BWC-0000", "device ID, burned into every frame and every record (D12)",
                      _nonempty)
    officer_id: str = setting("000000", "badge number of the officer the device is issued to (D12)",
                              _nonempty)
    unit: str = setting("", "agency unit name, used in evidence file names at the dock (S3)")


@dataclass(frozen=True)
class VideoSection(_Documented):
    SECTION = "video"
    width: int = setting(1920, "frame width in pixels (even)", _range(160, 3840))
    height: int = setting(1080, "frame height in pixels (multiple of 4)", _range(120, 2160))
    fps: int = setting(30, "frames per second", _range(1, 60))
    keyframe_interval_s: int = setting(1, "seconds between keyframes; at most this much is lost to "
                                       "a power cut", _range(1, 10))
    bitrate_kbps: int = setting(4000, "H.264 target bitrate (also sets storage hours)",
                                _range(200, 50000))
    preset: str = setting("superfast", "x264 speed preset for software encoding",
                          _one_of("ultrafast", "superfast", "veryfast", "faster", "fast", "medium"))
    threads: int = setting(0, "encoder threads (0: automatic)", _range(0, 16))
    encoder: str = setting("libx264", "libx264 (software: sim, Pi 5) or h264_v4l2m2m (Pi 4 / Zero 2 W "
                           "hardware encoder)", _one_of("libx264", "h264_v4l2m2m"))


@dataclass(frozen=True)
class AudioSection(_Documented):
    SECTION = "audio"
    sample_rate: int = setting(48000, "microphone sample rate in Hz",
                               _one_of(16000, 32000, 44100, 48000))
    bitrate_kbps: int = setting(64, "AAC bitrate", _range(16, 320))


@dataclass(frozen=True)
class SegmentSection(_Documented):
    SECTION = "segment"
    seconds: int = setting(10, "length of each sealed segment; a multiple of the keyframe interval",
                           _range(1, 600))


@dataclass(frozen=True)
class StampSection(_Documented):
    SECTION = "stamp"
    timezone: str = setting("Asia/Shanghai", "time zone of the on-screen time (its UTC offset is "
                            "shown)", _timezone)


@dataclass(frozen=True)
class StorageSection(_Documented):
    SECTION = "storage"
    dir: str = setting("/var/lib/bodycam/evidence", "where segments and the journal are kept",
                       _nonempty)
    reserve_mb: int = setting(256, "recording stops cleanly when free space falls below this; "
                              "evidence is never overwritten", _range(0, 1_000_000))


@dataclass(frozen=True)
class IdentitySection(_Documented):
    SECTION = "identity"
    key_dir: str = setting("/var/lib/bodycam/identity", "the device's Ed25519 key (private part "
                           "mode 0600); kept outside the evidence directory", _nonempty)


@dataclass(frozen=True)
class CaptureSection(_Documented):
    SECTION = "capture"
    stall_timeout_s: float = setting(1.0, "no camera frame for this long ends the recording as "
                                     "camera-stall", _range(0.2, 30.0))
    max_bridge_s: float = setting(0.5, "shorter camera gaps are bridged by repeating the last frame "
                                  "(counted)", _range(0.0, 5.0))
    mic_timeout_s: float = setting(2.0, "no sound for this long is logged as an error and filled "
                                   "with silence", _range(0.2, 60.0))


ENCRYPTION_MODES = ("auto", "required", "off")


@dataclass(frozen=True)
class EncryptionSection(_Documented):
    """Encryption at rest of segments and voice notes to the agency's age key (docs/encryption.md)."""
    SECTION = "encryption"
    mode: str = setting("auto", "auto: encrypt once an agency key is provisioned (recipients_file "
                        "exists); required: no recording and a failed self-check without it; off: "
                        "never (a lab device)", _one_of(*ENCRYPTION_MODES))
    recipients_file: str = setting("/etc/bodycam/encryption/recipients.txt",
                                   "the agency's age public key (age1...) and an optional escrow key, "
                                   "one per line; installed by `bodycam encryption install`", _nonempty)


class EncryptionKeyMissing(ConfigError):
    """Encryption is required (or a key file is there) but no usable agency key is installed."""


def encryption_recipients(c: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The age recipients every segment and voice note is encrypted to; () to record in clear.

    ``auto`` with no recipients file records in clear (a device not provisioned yet); a file
    that is there but unreadable, empty or holding a bad key is refused in any mode but
    ``off``: a device meant to encrypt never falls back to clear text silently."""
    e = c.get("encryption", {})
    mode, path = e.get("mode", "auto"), Path(e.get("recipients_file", ""))
    if mode == "off":
        return ()
    if not path.exists():
        if mode == "required":
            raise EncryptionKeyMissing(f"encryption.mode = 'required' but the agency key {path} is "
                                       "missing: provision it with `bodycam encryption install`")
        return ()
    try:
        found = age.parse_recipients(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, age.AgeError) as exc:
        raise EncryptionKeyMissing(f"agency key file {path} is unusable: {exc}") from None
    if not found:
        raise EncryptionKeyMissing(f"agency key file {path} holds no age recipient")
    return tuple(found)


def encryption_probe(c: dict[str, dict[str, Any]]) -> Callable[[], tuple[str, int]]:
    """The self-check's encryption probe (firmware.selfcheck.Probes.encryption): (mode, number
    of recipients), EncryptionKeyMissing when the key is required or installed but unusable.
    Read afresh at each check: a key removed after start is noticed."""
    def probe() -> tuple[str, int]:
        return c.get("encryption", {}).get("mode", "auto"), len(encryption_recipients(c))
    return probe


# Every section of the file, in the order ``config defaults`` prints them: a ``Section``
# dataclass (common.settings) kept next to the code that uses it, loaded by
# ``from_mapping(table, device_id=...)``. Named as "module:Class" so that reading a config
# does not import every adapter.
SECTIONS: dict[str, str] = {
    "device": "firmware.config:DeviceSection",
    "video": "firmware.config:VideoSection",
    "audio": "firmware.config:AudioSection",
    "segment": "firmware.config:SegmentSection",
    "stamp": "firmware.config:StampSection",
    "storage": "firmware.config:StorageSection",
    "identity": "firmware.config:IdentitySection",
    "capture": "firmware.config:CaptureSection",
    "encryption": "firmware.config:EncryptionSection",
    "controls": "hw.buttons:ControlsConfig",
    "indicators": "hw.indicators:IndicatorConfig",
    "battery": "hw.battery:BatteryConfig",
    "selfcheck": "firmware.selfcheck:SelfCheckThresholds",
    "reminder": "firmware.reminder:ReminderConfig",
    "gps": "hw.gps:GpsConfig",
    "time": "firmware.timesync:TimeConfig",
    "service": "firmware.service_config:ServiceConfig",
    "gadget": "hw.usb_gadget:GadgetSettings",   # also read by the root gadget unit
    "dock": "firmware.dock_settings:DockSettings",
}


def _model(section: str) -> type[Section]:
    module, _, name = SECTIONS[section].partition(":")
    return cast("type[Section]", getattr(importlib.import_module(module), name))


def _model_defaults(section: str) -> dict[str, Any]:
    """Defaults as they are written in TOML (paths as strings)."""
    return {f.name: str(f.default) if isinstance(f.default, os.PathLike) else f.default
            for f in dataclasses.fields(_model(section)) if f.default is not dataclasses.MISSING}


def defaults() -> dict[str, dict[str, Any]]:
    return {sec: _model_defaults(sec) for sec in SECTIONS}


def section(cfg: dict[str, dict[str, Any]], name: str) -> Any:
    """The validated settings object of a section (e.g. ``section(cfg, "controls")``)."""
    return _model(name).from_mapping(cfg[name], device_id=cfg["device"]["id"])


def _int_for_float(default: Any, value: Any) -> bool:
    return isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def validate(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Merge ``data`` over the defaults, refusing anything unknown or impossible."""
    merged = defaults()
    device_id = data.get("device", {}).get("id", merged["device"]["id"])
    for sec, table in data.items():
        if sec not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{sec}] (known: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table")
        model = _model(sec)
        known = {f.name: f for f in dataclasses.fields(model)}
        for k in table:
            if k not in known:
                raise ConfigError(f"{source}: unknown key {sec}.{k} (known in [{sec}]: "
                                  f"{', '.join(known)})")
        try:
            model.from_mapping(table, device_id=device_id)
        except (ValueError, TypeError) as exc:
            named = f"[{sec}]" in str(exc) or str(exc).startswith(f"{sec}.")
            raise ConfigError(f"{source}: {'' if named else f'[{sec}] '}{exc}") from None
        merged[sec].update({k: float(v) if _int_for_float(known[k].default, v) else v
                            for k, v in table.items()})
    _cross_checks(merged, source)
    try:
        journal_form(merged)   # every setting must have an exact integer form for the journal
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return merged


def _cross_checks(c: dict[str, dict[str, Any]], source: str) -> None:
    v = c["video"]
    if v["width"] % 2:
        raise ConfigError(f"{source}: video.width = {v['width']} must be even (YUV 4:2:0)")
    if v["height"] % 4:
        raise ConfigError(f"{source}: video.height = {v['height']} must be a multiple of 4")
    if 90000 % v["fps"]:
        raise ConfigError(f"{source}: video.fps = {v['fps']} must divide 90000 (whole 90 kHz ticks "
                          "per frame)")
    if c["segment"]["seconds"] % v["keyframe_interval_s"]:
        raise ConfigError(f"{source}: segment.seconds = {c['segment']['seconds']} must be a multiple "
                          f"of video.keyframe_interval_s = {v['keyframe_interval_s']}")


# How the configuration is journaled (config-change record, format version 2: integers only).
# Key suffix -> (journaled suffix, factor): seconds and hours become milliseconds, percent
# becomes per-mille, dBFS milli-dBFS, Hz milli-Hz. The TOML keys themselves are unchanged.
JOURNAL_UNITS: tuple[tuple[str, str, int], ...] = (
    ("_pct_per_h", "_permille_per_h", 10),
    ("_percent", "_permille", 10),
    ("_hours", "_ms", 3_600_000),
    ("_dbfs", "_millidbfs", 1000),
    ("_hz", "_millihz", 1000),
    ("_s", "_ms", 1000),
)


def _journal_number(value: Any, factor: int, where: str, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} = {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} is not finite")
    exact = Decimal(repr(value)) * factor if isinstance(value, float) else Decimal(value) * factor
    if exact != exact.to_integral_value():
        raise ConfigError(f"{where} = {value!r} is not a whole number of {unit.lstrip('_')} "
                          "(the journal holds integers only)")
    return int(exact)


def journal_form(cfg: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The configuration as the ``config-change`` record holds it: integers only.

    ``capture.stall_timeout_s = 1.0`` becomes ``capture.stall_timeout_ms: 1000``,
    ``battery.critical_percent = 5.0`` becomes ``battery.critical_permille: 50`` (see
    JOURNAL_UNITS); an unset (None) value keeps null. Total: raises ConfigError for any
    value that would still be a float, or not a whole number of the journaled unit.
    """
    out: dict[str, dict[str, Any]] = {}
    for sec, table in cfg.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{sec}] is not a table")
        out[sec] = journal_table(table, sec)
    return out


def journal_table(table: dict[str, Any], sec: str) -> dict[str, Any]:
    """One section in its journaled form (see ``journal_form``)."""
    conv: dict[str, Any] = {}
    for key, value in table.items():
        name = key
        for suffix, journaled, factor in JOURNAL_UNITS:
            if key.endswith(suffix):
                name = key[: -len(suffix)] + journaled
                if value is not None:
                    value = _journal_number(value, factor, f"{sec}.{key}", journaled)
                break
        if name in conv or (name != key and name in table):
            raise ConfigError(f"{sec}.{key}: journaled name {name} is taken twice")
        if records.find_float(value) is not None:
            raise ConfigError(f"{sec}.{key} holds a float ({value!r}) with no integer unit "
                              "for the journal: add it to config.JOURNAL_UNITS")
        conv[name] = value
    return conv


def load(path: Path | None) -> dict[str, dict[str, Any]]:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return defaults()
    return validate(read_toml(path, ConfigError), str(path))


def check_output_dir(path: Path, source: str = "storage.dir") -> Path:
    """Make sure recordings can be written there before the first frame is lost; returns the
    absolute path (journal records name files relative to it, whatever the working directory)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        kind = OutputDirUnusable if exc.errno in _STORAGE_ERRNOS else ConfigError
        raise kind(f"{source}: cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputDirUnusable(f"{source}: output directory {path} is not writable")
    return path.resolve()


def pipeline_settings(c: dict[str, dict[str, Any]]) -> PipelineSettings:
    v, a, cap = c["video"], c["audio"], c["capture"]
    return PipelineSettings(
        video=VideoSettings(v["width"], v["height"], v["fps"], v["keyframe_interval_s"],
                            v["bitrate_kbps"], v["preset"], v["threads"], v["encoder"]),
        audio=AudioSettings(a["sample_rate"], a["bitrate_kbps"]),
        segment_seconds=c["segment"]["seconds"],
        device_id=c["device"]["id"], officer_id=c["device"]["officer_id"],
        timezone=c["stamp"]["timezone"],
        stall_timeout_s=cap["stall_timeout_s"], max_bridge_s=cap["max_bridge_s"],
        mic_timeout_s=cap["mic_timeout_s"], recipients=encryption_recipients(c))


def render_defaults() -> str:
    """The defaults as a commented TOML file (what deploy/bodycam.toml ships)."""
    out = ["# Body-worn camera configuration. Every key is optional; shown are the defaults.", ""]
    for sec in SECTIONS:
        model = _model(sec)
        documented = issubclass(model, _Documented)
        if not documented:   # keys explained next to the code: name the class
            out.append(f"# {(model.__doc__ or '').strip().splitlines()[0]} (see {SECTIONS[sec]})")
        out.append(f"[{sec}]")
        docs = {f.name: f.metadata.get("doc") for f in dataclasses.fields(model)}
        for k, v in _model_defaults(sec).items():
            if docs.get(k):
                out.append(f"# {docs[k]}")
            out.append(f"{k} = {_toml_value(v)}" if v is not None else f"# {k} = (unset)")
        out.append("")
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
