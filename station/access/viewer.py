"""Serving a recording's bytes after ``authorize``: the CLI viewer and the controlled copy (S8, D10).

* ``view``: authorize *view*, then list the verified original segments (the device mirror,
  in order), each re-hashed against the catalogue's SHA-256 before it is listed. A segment
  that differs or is gone is an ``integrity-alert`` audit record and the view is refused
  (``EvidenceDamaged``, exit 1): a damaged original is never shown as if it were evidence.
* ``copy``: authorize *copy*, then copy the original segments byte for byte (hashed while
  copied, checked against the catalogue) with a ``manifest.json`` of their hashes into
  ``DEST/<S3 name>/``. The copy is built in a hidden staging directory and renamed into
  place only when complete: a full disk (``Unavailable``, exit 7), a damaged segment or any
  other failure removes the staging directory, so no half file and no half copy is left.
  The outcome is audited (``copy-written`` with the manifest's SHA-256, or ``copy-failed``).
"""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from recorder.journal import JOURNAL_NAME
from station.access.policy import authorize
from station.app import Station
from station.db import models as m
from station.errors import EXIT_FAILED, Conflict, InvalidInput, NotFound, StationError, Unavailable
from station.keys import opening
from station.keys.keyring import FileKeyring, key_path

CHUNK = 1 << 20
MANIFEST = "manifest.json"
_FULL = (errno.ENOSPC, errno.EDQUOT)


class EvidenceDamaged(StationError):
    """A stored original is not what the catalogue (the device journal) says: alert, refuse."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class SegmentFile:
    index: int
    path: Path          # the verified original in the device mirror
    sha256: str
    size: int
    device_path: str    # its path on the device, as the device journal attests it


def original_path(st: Station, rec: m.Recording, seg: m.Segment) -> Path:
    return st.store / "devices" / rec.device_id / "mirror" / seg.path


def _segments(st: Station, recording_id: int) -> tuple[m.Recording, list[SegmentFile]]:
    with st.db.session() as s:
        rec = s.get(m.Recording, recording_id)
        if rec is None:
            raise NotFound(f"no recording number {recording_id}")
        segs = s.scalars(select(m.Segment).where(m.Segment.recording == rec.id, m.Segment.present.is_(True))
                         .order_by(m.Segment.index)).all()
    return rec, [SegmentFile(g.index, original_path(st, rec, g), g.sha256, g.size, g.path) for g in segs]


def _hash_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def integrity_alert(st: Station, username: str, rec: m.Recording, seg: SegmentFile, found_sha: str | None,
                    found_size: int | None, during: str) -> EvidenceDamaged:
    """Write an ``integrity-alert`` audit record (``found_sha`` None: the file is gone) and return the
    ``EvidenceDamaged`` for the caller to raise. Every server of original bytes calls it on a mismatch."""
    # a voice note is checked the same way; it has no segment number (index < 0): named by its path
    which = f"segment {seg.index}" if seg.index >= 0 else f"voice note {seg.device_path}"
    where = {"segment": seg.index} if seg.index >= 0 else {"voice_note": seg.device_path}
    st.trail.event("integrity-alert", actor=username, subject=f"recording:{rec.id}",
                   reason=f"stored original {which} differs from what was attested",
                   during=during, **where, path=str(seg.path), expected_sha256=seg.sha256,
                   expected_size=seg.size, found_sha256=found_sha, found_size=found_size)
    what = "is missing" if found_sha is None else "differs from its attested SHA-256"
    return EvidenceDamaged(f"recording {rec.id} {which} ({seg.path}) {what}: {during} refused, "
                           "an integrity alert is in the audit journal; run `station verify --files`")


def agency_keys(st: Station) -> FileKeyring:
    """The agency's private keys (station/keys): ``$STATION_AGENCY_KEYS`` or ``<store>/keys/``."""
    return FileKeyring(key_path(st.store))


def segment_plaintext(st: Station, username: str, rec: m.Recording, seg: SegmentFile, data: bytes,
                      journal_seq: int, during: str) -> bytes:
    """What to show of an original whose bytes (``data``) were just checked against the
    catalogue: the bytes themselves, or, for a segment encrypted on the device, its plaintext
    decrypted with the agency key and checked against the journal's plaintext SHA-256 (an
    altered chunk or a wrong plaintext is an integrity alert, as a wrong hash is). A segment
    or voice note salvaged after a power cut is cut back to whole packets (TS) or frames (ADTS)
    for players (``opening.playable``)."""
    if not opening.is_encrypted(data):
        return data
    journal = st.store / "devices" / rec.device_id / "mirror" / JOURNAL_NAME
    enc = opening.attested_encryption(journal, journal_seq, seg.device_path)
    try:
        plain = opening.plaintext(data, agency_keys(st), enc, f"recording {rec.id} segment {seg.index}")
    except opening.DecryptionFailed as exc:
        st.trail.event("integrity-alert", actor=username, subject=f"recording:{rec.id}",
                       reason=f"segment {seg.index} does not decrypt to what the device attested",
                       during=during, segment=seg.index, path=str(seg.path), error=str(exc)[:500])
        raise EvidenceDamaged(f"{exc}: {during} refused, an integrity alert is in the audit journal") from None
    return opening.playable(plain, enc, seg.device_path)


@dataclass(frozen=True)
class Viewing:
    access: m.Access
    recording: m.Recording
    segments: list[SegmentFile]

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording.id, "name": self.recording.name, "access": self.access.id,
                "request": self.access.request_id, "approver": self.access.approver,
                "reason": self.access.reason,
                "segments": [{"index": g.index, "path": str(g.path), "sha256": g.sha256, "size": g.size}
                             for g in self.segments]}


def view(st: Station, user: m.User, recording_id: int, reason: str | None = None, *,
         hash_now: bool = True) -> Viewing:
    """Authorize (S8, audited) and hand over the recording's original segments. ``hash_now``:
    hash every segment against the catalogue before returning (``station view``); a player that
    checks each segment as it serves it (the web's HLS playback) passes False, so pressing play
    on an hour-long recording does not wait for gigabytes to be hashed first."""
    access = authorize(st, user, recording_id, "view", reason)
    rec, segs = _segments(st, recording_id)
    for g in segs if hash_now else ():
        try:
            sha, size = _hash_file(g.path)
        except FileNotFoundError:
            raise integrity_alert(st, user.username, rec, g, None, None, "view") from None
        if sha != g.sha256 or size != g.size:
            raise integrity_alert(st, user.username, rec, g, sha, size, "view")
    return Viewing(access, rec, segs)


@dataclass(frozen=True)
class CopyResult:
    access: m.Access
    recording: m.Recording
    directory: Path
    files: list[dict[str, Any]]
    manifest_sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"recording": self.recording.id, "name": self.recording.name, "access": self.access.id,
                "request": self.access.request_id, "approver": self.access.approver,
                "directory": str(self.directory), "files": self.files, "bytes": self.bytes,
                "manifest": str(self.directory / MANIFEST), "manifest_sha256": self.manifest_sha256}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_one(src: Path, dst: Path) -> tuple[str, int]:
    """Copy byte for byte, hashing what is written; fsync; read-only. Returns (sha256, size)."""
    h, n = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            h.update(chunk)
            n += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, 0o444)
    return h.hexdigest(), n


def _manifest(st: Station, user: m.User, rec: m.Recording, access: m.Access, files: list[dict[str, Any]]) -> bytes:
    tz = ZoneInfo(st.cfg.timezone)

    def iso(ns: int | None, tz: ZoneInfo) -> str | None:
        return None if ns is None else dt.datetime.fromtimestamp(ns // 10**9, tz).isoformat()
    doc = {"format": "station-copy/1", "station": st.name, "unit": st.cfg.unit,
           "recording": {"id": rec.id, "name": rec.name, "device_id": rec.device_id,
                         "recording_id": rec.recording_id, "officer_id": rec.officer_id,
                         "start": iso(rec.start_wall_ns, tz), "end": iso(rec.end_wall_ns, tz)},
           "copied_by": user.username, "copied_at": iso(access.at_ns, tz), "copied_ns": access.at_ns,
           "reason": access.reason, "approver": access.approver, "request": access.request_id,
           "access": access.id, "files": files,
           "note": "each file is a byte-for-byte copy of the original segment the device journal attests; "
                   "check with sha256sum against the sha256 given here"}
    return (json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def copy(st: Station, user: m.User, recording_id: int, dest: Path, reason: str) -> CopyResult:
    why = (reason or "").strip()
    if not why:
        raise InvalidInput("a reason (--reason, 事由) is required to copy")
    dest = Path(dest)
    if not dest.is_dir():
        raise InvalidInput(f"{dest} is not a directory")
    with st.db.session() as s:
        rec0 = s.get(m.Recording, recording_id)
    if rec0 is not None and (dest / rec0.name).exists():
        raise Conflict(f"{dest / rec0.name} exists: choose another directory")
    access = authorize(st, user, recording_id, "copy", why)
    rec, segs = _segments(st, recording_id)
    target = dest / rec.name
    staging = dest / f".{rec.name}.partial-{os.getpid()}"
    files: list[dict[str, Any]] = []
    written = 0
    try:
        staging.mkdir()
        for g in segs:
            name = f"{rec.name}_{g.index:05d}.ts"
            try:
                sha, size = _copy_one(g.path, staging / name)
            except FileNotFoundError as exc:
                if exc.filename == str(g.path):
                    raise integrity_alert(st, user.username, rec, g, None, None, "copy") from None
                raise
            written += size
            if sha != g.sha256 or size != g.size:
                raise integrity_alert(st, user.username, rec, g, sha, size, "copy")
            files.append({"file": name, "index": g.index, "sha256": sha, "size": size,
                          "device_path": g.device_path})
        body = _manifest(st, user, rec, access, files)
        with open(staging / MANIFEST, "xb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(staging)
        if target.exists():
            raise Conflict(f"{target} appeared meanwhile: choose another directory")
        os.rename(staging, target)
        _fsync_dir(dest)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            full = exc.errno in _FULL
            st.trail.event("copy-failed", actor=user.username, subject=f"recording:{rec.id}", reason=why,
                           access=access.id, directory=str(dest), written=written,
                           error=f"{type(exc).__name__}: {exc.strerror or exc}")
            if full:
                raise Unavailable(f"{dest}: the disk is full after {written} of {rec.bytes or 0} bytes; "
                                  "nothing was left behind (free space and copy again)") from exc
            raise Unavailable(f"copying to {dest} failed: {exc.strerror or exc}; nothing was left behind") from exc
        raise
    total = sum(f["size"] for f in files)
    manifest_sha = hashlib.sha256(body).hexdigest()
    st.trail.event("copy-written", actor=user.username, subject=f"recording:{rec.id}", reason=why,
                   access=access.id, request=access.request_id, approver=access.approver,
                   directory=str(target), files=len(files), bytes=total, manifest_sha256=manifest_sha)
    return CopyResult(access, rec, target, files, manifest_sha, total)
