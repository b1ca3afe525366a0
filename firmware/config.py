"""The device's one configuration file (TOML): schema, documented defaults, strict validation.

Every key has a default and a one-line meaning; ``bodycam config defaults``
prints them as a commented TOML file. Unknown keys, wrong types and
impossible values are refused with the file and the key named, because a
camera that silently ignores a typo records the wrong thing all shift.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recorder.encode import AudioSettings, VideoSettings
from recorder.pipeline import PipelineSettings
from recorder.settings import read_toml


class ConfigError(ValueError):
    """A configuration problem, naming the file and the key."""


@dataclass(frozen=True)
class Key:
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None if fine


def _range(lo, hi):
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def _timezone(v):
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (e.g. Asia/Shanghai, UTC)"
    return None


def _nonempty(v):
    return None if v.strip() else "must not be empty"


SCHEMA: dict[str, dict[str, Key]] = {
    "device": {
        "id": Key("BWC-0000", "device ID, burned into every frame and every record (D12)", _nonempty),
        "officer_id": Key("000000", "badge number of the officer the device is issued to (D12)", _nonempty),
        "unit": Key("", "agency unit name, used in evidence file names at the dock (S3)"),
    },
    "video": {
        "width": Key(1920, "frame width in pixels (even)", _range(160, 3840)),
        "height": Key(1080, "frame height in pixels (multiple of 4)", _range(120, 2160)),
        "fps": Key(30, "frames per second", _range(1, 60)),
        "keyframe_interval_s": Key(1, "seconds between keyframes; at most this much is lost to a power cut",
                                   _range(1, 10)),
        "bitrate_kbps": Key(4000, "H.264 target bitrate (also sets storage hours)", _range(200, 50000)),
        "preset": Key("superfast", "x264 speed preset for software encoding",
                      _one_of("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")),
        "threads": Key(0, "encoder threads (0: automatic)", _range(0, 16)),
        "encoder": Key("libx264", "libx264 (software: sim, Pi 5) or h264_v4l2m2m (Pi 4 / Zero 2 W "
                       "hardware encoder)", _one_of("libx264", "h264_v4l2m2m")),
    },
    "audio": {
        "sample_rate": Key(48000, "microphone sample rate in Hz", _one_of(16000, 32000, 44100, 48000)),
        "bitrate_kbps": Key(64, "AAC bitrate", _range(16, 320)),
    },
    "segment": {
        "seconds": Key(10, "length of each sealed segment; a multiple of the keyframe interval",
                       _range(1, 600)),
    },
    "stamp": {
        "timezone": Key("Asia/Shanghai", "time zone of the on-screen time (its UTC offset is shown)",
                        _timezone),
    },
    "storage": {
        "dir": Key("/var/lib/bodycam/evidence", "where segments and the journal are kept", _nonempty),
        "reserve_mb": Key(256, "recording stops cleanly when free space falls below this; "
                          "evidence is never overwritten", _range(0, 1_000_000)),
    },
    "identity": {
        "key_dir": Key("/var/lib/bodycam/identity", "the device's Ed25519 key (private part mode "
                       "0600); kept outside the evidence directory", _nonempty),
    },
    "capture": {
        "stall_timeout_s": Key(1.0, "no camera frame for this long ends the recording as camera-stall",
                               _range(0.2, 30.0)),
        "max_bridge_s": Key(0.5, "shorter camera gaps are bridged by repeating the last frame (counted)",
                            _range(0.0, 5.0)),
        "mic_timeout_s": Key(2.0, "no sound for this long is logged as an error and filled with silence",
                             _range(0.2, 60.0)),
    },
}


# Sections owned by the module that uses them: a dataclass with defaults and a
# ``from_mapping(table)`` that refuses unknown keys and impossible values.
SECTION_MODELS: dict[str, str] = {
    "controls": "hw.buttons:ControlsConfig",
    "indicators": "hw.indicators:IndicatorConfig",
    "battery": "hw.battery:BatteryConfig",
    "selfcheck": "firmware.selfcheck:SelfCheckThresholds",
    "reminder": "firmware.reminder:ReminderConfig",
    "gps": "hw.gps:GpsConfig",
    "time": "firmware.timesync:TimeConfig",
    "service": "firmware.service_config:ServiceConfig",
    "gadget": "hw.usb_gadget:GadgetSettings",   # also read by the root gadget unit
    "dock": "firmware.dock_link:DockSettings",
}


def _model(section: str):
    module, _, name = SECTION_MODELS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def _model_defaults(section: str) -> dict[str, Any]:
    """Defaults as they are written in TOML (paths as strings)."""
    return {f.name: str(f.default) if isinstance(f.default, os.PathLike) else f.default
            for f in dataclasses.fields(_model(section)) if f.default is not dataclasses.MISSING}


def defaults() -> dict[str, dict[str, Any]]:
    out = {sec: {k: key.default for k, key in keys.items()} for sec, keys in SCHEMA.items()}
    out.update({sec: _model_defaults(sec) for sec in SECTION_MODELS})
    return out


def section(cfg: dict[str, dict[str, Any]], name: str):
    """The validated settings object of a delegated section (e.g. ``section(cfg, "controls")``)."""
    model = _model(name)
    if "device_id" in inspect.signature(model.from_mapping).parameters:
        return model.from_mapping(cfg[name], device_id=cfg["device"]["id"])
    return model.from_mapping(cfg[name])


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def validate(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Merge ``data`` over the defaults, refusing anything unknown or impossible."""
    merged = defaults()
    for sec, table in data.items():
        if sec not in SCHEMA and sec not in SECTION_MODELS:
            raise ConfigError(f"{source}: unknown section [{sec}] (known: "
                              f"{', '.join([*SCHEMA, *SECTION_MODELS])})")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table")
        if sec in SECTION_MODELS:
            model = _model(sec)
            extra = {}
            if "device_id" in inspect.signature(model.from_mapping).parameters:
                extra["device_id"] = data.get("device", {}).get("id", SCHEMA["device"]["id"].default)
            try:
                model.from_mapping(table, **extra)
            except (ValueError, TypeError) as exc:
                where = "" if f"[{sec}]" in str(exc) else f"[{sec}] "
                raise ConfigError(f"{source}: {where}{exc}") from None
            merged[sec].update(table)
            continue
        for k, value in table.items():
            key = SCHEMA[sec].get(k)
            if key is None:
                raise ConfigError(f"{source}: unknown key {sec}.{k} (known in [{sec}]: "
                                  f"{', '.join(SCHEMA[sec])})")
            if not _same_type(key.default, value):
                raise ConfigError(f"{source}: {sec}.{k} must be {type(key.default).__name__}, "
                                  f"got {value!r}")
            if isinstance(key.default, float):
                value = float(value)
            problem = key.check(value) if key.check else None
            if problem:
                raise ConfigError(f"{source}: {sec}.{k} = {value!r} {problem}")
            merged[sec][k] = value
    _cross_checks(merged, source)
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
        raise ConfigError(f"{source}: cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{source}: output directory {path} is not writable")
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
        mic_timeout_s=cap["mic_timeout_s"])


def render_defaults() -> str:
    """The defaults as a commented TOML file (what deploy/bodycam.toml ships)."""
    out = ["# Body-worn camera configuration. Every key is optional; shown are the defaults.", ""]
    for sec, keys in SCHEMA.items():
        out.append(f"[{sec}]")
        for k, key in keys.items():
            out.append(f"# {key.doc}")
            out.append(f"{k} = {_toml_value(key.default)}")
        out.append("")
    for sec in SECTION_MODELS:
        model = _model(sec)
        out.append(f"# {(model.__doc__ or '').strip().splitlines()[0]} (see {SECTION_MODELS[sec]})")
        out.append(f"[{sec}]")
        for k, v in _model_defaults(sec).items():
            out.append(f"{k} = {_toml_value(v)}" if v is not None else f"# {k} = (unset)")
        out.append("")
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
