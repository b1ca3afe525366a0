"""Evidence names per S3: unit name + counterpart + date + inspection content (单位名称+相对人+日期+检查内容).

At ingest the counterpart and content are not known yet (labelling, S2, comes
later), so placeholders stand in (``未标注``). The recording id is appended so
two recordings of one day never collide; ``_`` separates the parts and is
removed from the parts themselves.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from zoneinfo import ZoneInfo

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|_]+')
MAX_PART = 48


def clean_part(text: str) -> str:
    """A name part safe on any file system: no separators, control or reserved characters."""
    text = unicodedata.normalize("NFC", str(text)).strip()
    text = _UNSAFE.sub("-", text).strip(" .-")
    return text[:MAX_PART] or "-"


def evidence_date(wall_ns: int, timezone: str) -> str:
    return dt.datetime.fromtimestamp(wall_ns / 1e9, ZoneInfo(timezone)).strftime("%Y%m%d")


def evidence_name(unit: str, counterpart: str, date: str, content: str, recording_id: str) -> str:
    """``unit_counterpart_date_content_recordingid``."""
    return "_".join(clean_part(p) for p in (unit, counterpart, date, content, recording_id))


def segment_file_name(name: str, index: int) -> str:
    """A segment's file in the named view: ``<name>_<index:05d>.ts`` (a hard link into the mirror)."""
    return f"{name}_{index:05d}.ts"


def damaged_note_name(name: str, index: int) -> str:
    """The note left in the view for a segment that failed verification at docking."""
    return f"{name}_{index:05d}.DAMAGED.txt"


def labelled_name(unit: str, counterpart: str, date: str, content: str, recording_id: str,
                  device_id: str | None = None) -> str:
    """The S3 name after labelling (``evidence_name``); ``device_id`` given, its first 8 characters
    follow the recording id (``<rid>-<dev8>``): only when another device's recording of the same
    id would otherwise get the very same name."""
    rid = f"{recording_id}-{device_id[:8]}" if device_id else recording_id
    return evidence_name(unit, counterpart, date, content, rid)
