"""Journal record types and their exact byte form.

One record is one line of the journal file::

    <canonical JSON message> TAB <base64 Ed25519 signature over the message bytes> LF

The JSON bytes are exactly the signed message: a third party can cut the line
at the tab and check it with ``openssl pkeyutl -verify -rawin``. ``prev`` is
the SHA-256 of the previous line's full bytes including its LF (what
``sed -n Np journal.log | sha256sum`` prints); the first record has 64 zeros.

Canonical JSON = ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)``: ASCII only, so a record can never
contain a raw tab or newline, and the verifier can insist on it byte for byte.

Format version 2 (``FORMAT_VERSION``) is integer-only: no JSON number with a
fraction or exponent anywhere in the message (durations are ``*_ms``/``*_ns``,
fractions ``*_permille``), so the signed bytes never depend on how a float is
printed. ``build_message`` refuses a float (``FloatInRecord``); the parser
rejects one in a version-2 line. Version-1 lines (floats allowed) still parse.
Versions along one journal may only stay equal or rise (checked by the verifier).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, cast

from common.clock import TimeQuality, TimeSample
from recorder.segment_info import SegmentInfo

FORMAT_VERSION = 2              # what new records are written as
SUPPORTED_VERSIONS = (1, 2)     # what the parser accepts; 1 = floats allowed, 2 = integers only
INTEGER_ONLY_SINCE = 2
GENESIS_PREV = "0" * 64
SEPARATOR = b"\t"
MAX_LINE_BYTES = 1 << 20  # a record is small; anything larger is not one of ours

# Record types the evidence layer writes. Other issues add their own (reason,
# self-check, dock-receipt, ...): any name matching TYPE_PATTERN is accepted.
BOOT = "boot"
SHUTDOWN = "shutdown"
RECORDING_START = "recording-start"
RECORDING_STOP = "recording-stop"
SEGMENT = "segment"
CONFIG_CHANGE = "config-change"
INTERRUPTION = "interruption"
JOURNAL_RECOVERED = "journal-recovered"
TAMPER_ATTEMPT = "tamper-attempt"
UNREADABLE_PART = "unreadable-part"

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,47}$")
MESSAGE_KEYS = frozenset({
    "v", "seq", "prev", "device", "session", "mono_ns", "wall_ns", "time_quality",
    "time_error_ns", "time_since_sync_ns", "type", "payload",
})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class MalformedLine(ValueError):
    """A journal line that is not a well-formed record (the reason is in the message)."""


class FloatInRecord(MalformedLine):
    """A version-2 message holds a float (a JSON number with a fraction or exponent).

    Raised by ``build_message`` (the writer never signs one) and by ``parse_line``
    for a version-2 line. ``path`` names where, e.g. ``payload.config.capture.x``.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def find_float(obj: Any, path: str = "") -> str | None:
    """The path of the first float in a JSON value (keys in sorted order), or None."""
    if isinstance(obj, float):
        return path or "(top)"
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            found = find_float(obj[key], f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            found = find_float(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def check_integer_only(obj: Any, what: str = "message") -> None:
    """Raise FloatInRecord if ``obj`` holds a float anywhere."""
    where = find_float(obj)
    if where is not None:
        raise FloatInRecord(f"{what} holds a float at {where} (format version {INTEGER_ONLY_SINCE}+ "
                            "is integer-only: use *_ms/*_ns, *_permille)", where)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def line_hash(line: bytes) -> str:
    """The chain hash of a full line (including its LF)."""
    return hashlib.sha256(line).hexdigest()


def _seconds_to_ns(value: float | None) -> int | None:
    return None if value is None else int(round(value * 1e9))


def time_fields(sample: TimeSample) -> dict[str, Any]:
    """The time part of a record, all integers (no floats in the signed bytes)."""
    return {
        "mono_ns": int(sample.mono_ns),
        "wall_ns": int(sample.wall_ns),
        "time_quality": TimeQuality(sample.quality).value,
        "time_error_ns": _seconds_to_ns(sample.error_s),
        "time_since_sync_ns": _seconds_to_ns(sample.since_sync_s),
    }


def time_sample_payload(sample: TimeSample) -> dict[str, Any]:
    return time_fields(sample)


@dataclass(frozen=True)
class Record:
    """A parsed journal line. ``line`` holds the exact bytes it was read from."""

    message: dict[str, Any]
    message_bytes: bytes
    signature: bytes
    line: bytes

    @property
    def seq(self) -> int:
        return cast(int, self.message["seq"])

    @property
    def prev(self) -> str:
        return cast(str, self.message["prev"])

    @property
    def type(self) -> str:
        return cast(str, self.message["type"])

    @property
    def device(self) -> str:
        return cast(str, self.message["device"])

    @property
    def payload(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self.message["payload"])

    @property
    def hash(self) -> str:
        return line_hash(self.line)


def build_message(*, seq: int, prev: str, device: str, session: str, sample: TimeSample,
                  type: str, payload: dict[str, Any]) -> bytes:
    """The canonical bytes to sign for a new record (raises ValueError on bad input).

    A float anywhere in the message raises FloatInRecord (a ValueError): format version 2
    is integer-only.
    """
    if not TYPE_PATTERN.match(type):
        raise ValueError(f"bad record type {type!r}: lower-case letters, digits and '-'")
    if not isinstance(payload, dict):
        raise ValueError("a record payload must be a JSON object (dict)")
    message = {"v": FORMAT_VERSION, "seq": seq, "prev": prev, "device": device,
               "session": session, "type": type, "payload": payload, **time_fields(sample)}
    if FORMAT_VERSION >= INTEGER_ONLY_SINCE:
        check_integer_only(message, f"{type} record")   # FloatInRecord: never signed
    try:
        data = canonical_json(message)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload is not plain JSON: {exc}") from exc
    if len(data) > MAX_LINE_BYTES - 200:
        raise ValueError(f"record too large ({len(data)} bytes)")
    return data


def format_line(message_bytes: bytes, signature: bytes) -> bytes:
    return message_bytes + SEPARATOR + base64.b64encode(signature) + b"\n"


def parse_line(line: bytes) -> Record:
    """Parse and structurally check one full line (with its LF). No signature check here."""
    if not line.endswith(b"\n"):
        raise MalformedLine("line does not end with LF (torn write?)")
    if len(line) > MAX_LINE_BYTES:
        raise MalformedLine(f"line of {len(line)} bytes exceeds {MAX_LINE_BYTES}")
    body = line[:-1]
    if body.count(SEPARATOR) != 1:
        raise MalformedLine("expected exactly one TAB between message and signature")
    message_bytes, sig_b64 = body.split(SEPARATOR)
    try:
        signature = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedLine(f"signature is not base64: {exc}") from None
    if len(signature) != 64 or base64.b64encode(signature) != sig_b64:
        raise MalformedLine("signature is not 64 bytes in canonical base64")
    try:
        message = json.loads(message_bytes.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedLine(f"message is not ASCII JSON: {exc}") from None
    if not isinstance(message, dict):
        raise MalformedLine("message is not a JSON object")
    try:
        canonical = canonical_json(message)
    except ValueError as exc:
        raise MalformedLine(f"message has non-JSON values: {exc}") from None
    if canonical != message_bytes:
        raise MalformedLine("message is not in canonical JSON form")
    _check_message(message)
    return Record(message, message_bytes, signature, line)


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_message(m: dict[str, Any]) -> None:
    keys = set(m)
    if keys != MESSAGE_KEYS:
        raise MalformedLine(f"fields differ from the format: missing {sorted(MESSAGE_KEYS - keys)},"
                            f" unexpected {sorted(keys - MESSAGE_KEYS)}")
    if not _is_int(m["v"]) or m["v"] not in SUPPORTED_VERSIONS:
        raise MalformedLine(f"format version {m['v']!r}, expected one of {SUPPORTED_VERSIONS}")
    if m["v"] >= INTEGER_ONLY_SINCE:
        check_integer_only(m, f"version-{m['v']} record")
    if not _is_int(m["seq"]) or m["seq"] < 0:
        raise MalformedLine("seq is not a non-negative integer")
    if not isinstance(m["prev"], str) or not _HEX64.match(m["prev"]):
        raise MalformedLine("prev is not 64 lower-case hex digits")
    for k in ("device", "session", "type"):
        if not isinstance(m[k], str) or not m[k]:
            raise MalformedLine(f"{k} is not a non-empty string")
    if not TYPE_PATTERN.match(m["type"]):
        raise MalformedLine(f"bad record type {m['type']!r}")
    for k in ("mono_ns", "wall_ns"):
        if not _is_int(m[k]):
            raise MalformedLine(f"{k} is not an integer")
    for k in ("time_error_ns", "time_since_sync_ns"):
        if m[k] is not None and not _is_int(m[k]):
            raise MalformedLine(f"{k} is not an integer or null")
    try:
        TimeQuality(m["time_quality"])
    except ValueError:
        raise MalformedLine(f"unknown time quality {m['time_quality']!r}") from None
    if not isinstance(m["payload"], dict):
        raise MalformedLine("payload is not a JSON object")


def file_attestation(path: str, sha256: str, size: int, role: str) -> dict[str, Any]:
    """How a record names a file it vouches for (besides a segment's own file)."""
    return {"path": path, "sha256": sha256, "size": size, "role": role}


def segment_payload(info: SegmentInfo, relpath: str, sha256: str, size: int) -> dict[str, Any]:
    """The payload of a ``segment`` record, from the pipeline's SegmentInfo.

    ``sha256``/``size`` are what the sealer measured on disk. ``extra`` keys
    ``salvage`` and ``attachments`` (set by recorder.salvage) are lifted to the top.
    """
    extra = dict(info.extra or {})
    payload = {
        "path": relpath,
        "sha256": sha256,
        "size": size,
        "recording_id": info.recording_id,
        "index": info.index,
        "time_base": info.time_base,
        "first_pts": info.first_pts,
        "last_pts": info.last_pts,
        "frame_duration": info.frame_duration,
        "video_frames": info.video_frames,
        "first_sample": info.first_sample,
        "audio_samples": info.audio_samples,
        "frames_repeated": info.frames_repeated,
        "silence_samples": info.silence_samples,
        "final": bool(info.final),
        "recovered": bool(info.recovered),
        "wall_start": time_sample_payload(info.wall_start),
        "wall_end": time_sample_payload(info.wall_end),
        "attachments": list(extra.pop("attachments", [])),
    }
    if "salvage" in extra:
        payload["salvage"] = extra.pop("salvage")
    if "encryption" in extra:       # an encrypted segment: the plaintext it holds (docs/encryption.md)
        payload["encryption"] = extra.pop("encryption")
    if info.sha256 and info.sha256 != sha256:
        payload["writer_sha256"] = info.sha256
    if extra:
        payload["extra"] = extra
    return payload


def attested_files(record: Record) -> list[dict[str, Any]]:
    """Every file a record vouches for: a segment's own file plus any attachments.

    Raises MalformedLine if the record names files in a malformed way.
    """
    p = record.payload
    files = []
    if record.type == SEGMENT:
        files.append({"path": p.get("path"), "sha256": p.get("sha256"), "size": p.get("size"),
                      "role": "segment"})
    atts = p.get("attachments", [])
    if not isinstance(atts, list):
        raise MalformedLine("attachments is not a list")
    files.extend(atts)
    for f in files:
        if not isinstance(f, dict):
            raise MalformedLine("an attested file is not an object")
        if not safe_relpath(f.get("path")):
            raise MalformedLine(f"attested path {f.get('path')!r} is not a safe relative path")
        if not isinstance(f.get("sha256"), str) or not _HEX64.match(f["sha256"]):
            raise MalformedLine(f"attested file {f['path']} has no valid sha256")
        if not _is_int(f.get("size")) or f["size"] < 0:
            raise MalformedLine(f"attested file {f['path']} has no valid size")
    return files


def safe_relpath(path: Any) -> bool:
    """A POSIX relative path that stays inside the evidence directory."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def relpath_in(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string; ValueError if outside."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return rel.as_posix()
