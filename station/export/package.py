"""S7: export recordings for the case file — a package that verifies on a machine without this project.

``export(st, user, case_no=..., refs=..., out=DIR, maker=..., extractor=..., copies=N)``
writes ``DIR/<export name>-副本1/`` (… ``-副本N/``), each copy holding:

    README.txt                  how to verify (Chinese and English)
    manifest.json, 清单.txt      the manifest (maker, extractor, time, case, unit, copy, files) and its listing
    说明.pdf                     the printed note with signature lines (制作人, 提取人)
    SHA256SUMS                  ``sha256sum -c`` over every listed file and the manifest
    check-evidence.sh           the documented recipe (docs/evidence-format.md), cut out at export time
    device-certificate.sh       the documented certificate check (when the agency CA is known)
    agency-ca.pem               the agency CA certificate (``[dock] ca_file``)
    devices/<device id>/
        evidence/journal.log    the device's whole journal, as stored (the chain needs all of it)
        evidence/recordings/…   the ORIGINAL segments of the exported recordings, byte for byte
        selected-files.txt      the attested files in evidence/ (the recipe's ``-s``)
        device-key.pub.pem      the device public key (catalogue), agency-ca.pem, device-cert.pem if stored
    playable/<device>/<rid>.mp4 (--playable) an MP4 remux of the originals, its derivation in the manifest

Why a selection: the journal attests every file the device ever recorded; the package holds
only the exported recordings (others may belong to other cases, or be purged), so the recipe
checks the whole journal and exactly the selected files (docs/evidence-format.md, "Selected
files"), as strictly as a full check.

Access (S8): the user needs the clerk role and, for every recording, an approved copy
request: ``station.access.policy.authorize(..., "copy", ...)`` registers each attempt.

Faults. Everything is written under ``DIR/.station-export-partial.<pid>.<token>/`` (fsynced),
each copy is checked with ``recorder.verify`` (selection, anchor = the device's last docking
head), and only then renamed into place inside the ``export`` audited action that adds the
``Export`` row: a failure before the commit moves the copies back and removes them. A full
disk is ``Unavailable`` (exit 7) and leaves nothing. After a kill -9 the next export into
DIR (it holds ``DIR/.station-export.lock``) removes any partial directory, and any copy whose
manifest names this station but which no ``Export`` row records (killed between the rename
and the commit): nothing half-made is ever taken for a package.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.crashpoints import crashpoint
from recorder.journal import JOURNAL_NAME
from recorder.verify import verify_directory
from station import naming
from station.access.accounts import require_role
from station.access.policy import authorize
from station.app import Station
from station.db import models as m
from station.dock.ledger import Ledger
from station.errors import Conflict, InvalidInput, NotFound, Unavailable
from station.export import manifest as mf
from station.export import note, playable
from station.export.recipe import doc_block
from station.keys.keyring import FileKeyring, key_path
from station.recordings import find_recording

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".station-export-partial."
LOCK_NAME = ".station-export.lock"
COPY_WORD = "副本"
MAX_COPIES = 5
EXPORT_ROLES = ("clerk",)
_COPY_DIR = re.compile(rf"^(?P<name>.+)-{COPY_WORD}(?P<n>[0-9]+)$")


@dataclass
class SegmentInfo:
    index: int
    path: str            # in the device evidence directory (mirror), e.g. recordings/r1/r1_00000.ts
    sha256: str
    size: int


@dataclass
class RecordingInfo:
    id: int
    device_id: str
    recording_id: str
    name: str
    officer_id: str | None
    officer_name: str | None
    start_ns: int | None
    end_ns: int | None
    segments: list[SegmentInfo]


@dataclass
class Selection:
    case: dict[str, Any] | None
    activity: str | None
    recordings: list[RecordingInfo]
    unnamed: str | None = None     # why no case or activity names the export (raised after the S8 check)


@dataclass
class ExportResult:
    export_id: int
    name: str
    directory: Path                      # DIR/<name>; the copies are <directory>-副本n
    copies: list[Path]
    manifest_sha256: list[str]
    recordings: list[int]
    files: int
    bytes: int
    extracted_ns: int
    audit_seq: int | None = None
    cleaned: list[str] = field(default_factory=list)   # leftovers of killed exports removed first

    def to_dict(self) -> dict[str, Any]:
        return {"export": self.export_id, "name": self.name, "directory": str(self.directory),
                "copies": [str(p) for p in self.copies], "manifest_sha256": self.manifest_sha256,
                "recordings": self.recordings, "files": self.files, "bytes": self.bytes,
                "extracted_ns": self.extracted_ns, "audit_seq": self.audit_seq, "cleaned": self.cleaned}


# ---- what to export -------------------------------------------------------------------------------
def _case_row(s: Session, case_no: str) -> m.Case:
    case = s.scalars(select(m.Case).where(m.Case.case_no == case_no)).first()
    if case is None:
        raise NotFound(f"no case {case_no}")
    return case


def _case_dict(case: m.Case) -> dict[str, Any]:
    return {"case_no": case.case_no, "name": case.name, "category": case.category,
            "department": case.department, "status": case.status}


def _current_labels(s: Session, rec_id: int) -> list[m.Label]:
    return list(s.scalars(select(m.Label).where(m.Label.recording == rec_id, m.Label.current.is_(True))))


def select_recordings(st: Station, case_no: str | None, refs: list[str]) -> Selection:
    """The recordings to export and the case (or activity) that names the export."""
    if not case_no and not refs:
        raise InvalidInput("what to export? give --case NO or --recording ID (repeatable)")
    with st.db.session() as s:
        case = _case_row(s, case_no) if case_no else None
        if case is not None:
            in_case = {lab.recording for lab in s.scalars(select(m.Label).where(
                m.Label.case_id == case.id, m.Label.current.is_(True)))}
        rows: list[m.Recording] = []
        for ref in refs:
            rec = find_recording(s, ref)
            if case is not None and rec.id not in in_case:
                raise InvalidInput(f"recording {rec.id} ({rec.name}) is not linked to case {case.case_no}: "
                                   "label it with the case first (station label)")
            rows.append(rec)
        if case is not None and not refs:
            rows = list(s.scalars(select(m.Recording).where(m.Recording.id.in_(in_case))))
            if not rows:
                raise NotFound(f"case {case.case_no} has no recordings linked to it")
        rows = sorted({r.id: r for r in rows}.values(), key=lambda r: (r.start_wall_ns or 0, r.id))
        activity, unnamed = None, None
        if case is None:      # name the export after the one case (or activity) the labels name
            labels = [lab for r in rows for lab in _current_labels(s, r.id)]
            case_ids = {lab.case_id for lab in labels if lab.case_id is not None}
            linked = {lab.recording for lab in labels if lab.case_id is not None}
            if len(case_ids) == 1 and linked == {r.id for r in rows}:
                case = s.get(m.Case, case_ids.pop())
            elif case_ids:
                raise InvalidInput("these recordings are linked to different cases (or not all to one): "
                                   "export per case with --case NO")
            else:
                activity = next((lab.activity for lab in labels if lab.activity), None)
                if activity is None:
                    unnamed = ("these recordings are not labelled with a case or activity: label them first "
                               "(S2), or give --case NO; an export is labelled with its case")
        officers = {u.officer_no: u.display_name for u in s.scalars(
            select(m.User).where(m.User.officer_no.in_([r.officer_id for r in rows if r.officer_id])))}
        infos = []
        for r in rows:
            segs = list(s.scalars(select(m.Segment).where(m.Segment.recording == r.id).order_by(m.Segment.index)))
            infos.append(RecordingInfo(r.id, r.device_id, r.recording_id, r.name, r.officer_id,
                                       officers.get(r.officer_id or ""), r.start_wall_ns, r.end_wall_ns,
                                       [SegmentInfo(g.index, g.path, g.sha256, g.size) for g in segs
                                        if g.present]))
            if r.status == "stored":
                missing = [g.index for g in segs if not g.present]
                if missing or not segs:
                    raise Conflict(f"recording {r.id} ({r.name}) is incomplete in the store (segments "
                                   f"{missing or 'none'} not stored: quarantined at docking); it cannot be "
                                   "exported as a whole recording")
        return Selection(_case_dict(case) if case else None, activity, infos, unnamed)


def authorize_copies(st: Station, user: m.User, sel: Selection, reason: str | None) -> None:
    """S8, the single place an export asks for access: a registered ``copy`` of every recording,
    under an approved copy request (``authorize`` raises NotAllowed / Conflict after recording it)."""
    for r in sel.recordings:
        authorize(st, user, r.id, "copy", reason)


def export_name(sel: Selection, extracted_ns: int, tz: str) -> str:
    stamp = (mf.iso(extracted_ns, tz) or "")[:19].replace("-", "").replace(":", "")
    if sel.case:
        parts = [sel.case["case_no"], sel.case["name"]]
    else:
        parts = [sel.activity or "导出"]
    return "_".join(naming.clean_part(p) for p in parts) + f"_{stamp}"


# ---- files -----------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


def _copy(src: Path, dst: Path, expect: tuple[int, str] | None = None, mode: int = 0o444) -> tuple[int, str]:
    """Copy byte for byte (fsynced), hashing on the way; ``expect`` (size, sha256) must match."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    h, n = hashlib.sha256(), 0
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while chunk := fi.read(1 << 20):
            fo.write(chunk)
            h.update(chunk)
            n += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    os.chmod(dst, mode)
    if expect is not None and (n, h.hexdigest()) != expect:
        raise Unavailable(f"the stored file {src} is not what the catalogue says ({n} bytes, sha256 "
                          f"{h.hexdigest()}; expected {expect[0]} bytes, {expect[1]}): run `station verify --files`")
    return n, h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(Path(dirpath))


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)      # one export at a time into DIR: leftovers are really left over
        yield
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):     # read-only originals in read-only dirs: open them up
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
    shutil.rmtree(path)


def clean_leftovers(st: Station, out: Path) -> list[str]:
    """Remove what killed exports left in ``out`` (call with the DIR lock held): partial
    directories, and copies no ``Export`` row records (killed between rename and commit)."""
    removed = []
    for entry in sorted(out.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(PARTIAL_PREFIX):
            _remove(entry)
            removed.append(entry.name)
            continue
        match = _COPY_DIR.match(entry.name)
        if match is None or not (entry / mf.MANIFEST).is_file():
            continue
        try:
            man = json.loads((entry / mf.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (not isinstance(man, dict) or man.get("format") != mf.FORMAT or man.get("station") != st.name
                or man.get("export_name") != match.group("name")):
            continue
        with st.db.session() as s:
            recorded = s.scalars(select(m.Export.id).where(
                m.Export.directory == str(out / match.group("name")))).first()
        if recorded is None:
            doomed = out / f"{PARTIAL_PREFIX}orphan.{secrets.token_hex(4)}"
            os.rename(entry, doomed)          # first out of sight, then gone
            _remove(doomed)
            removed.append(entry.name)
    if removed:
        log.warning("removed leftovers of interrupted exports in %s: %s", out, ", ".join(removed))
    return removed


def _check_space(out: Path, sel: Selection, copies: int) -> None:
    block = os.statvfs(out).f_frsize or 4096
    need = copies * sum(-(-g.size // block) * block for r in sel.recordings for g in r.segments)
    free = shutil.disk_usage(out).free
    if need > free:
        raise Unavailable(f"not enough space in {out}: the original segments alone need {need} bytes for "
                          f"{copies} cop{'y' if copies == 1 else 'ies'}, {free} bytes are free")


def _ca_fingerprint(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


# ---- building one package --------------------------------------------------------------------------
@dataclass
class _Built:
    devices: list[dict[str, Any]]
    playable: list[dict[str, Any]]
    ca: dict[str, Any] | None


def _build_first(st: Station, copy: Path, sel: Selection, want_playable: bool) -> _Built:
    """Copy 1's content (everything but the per-copy documents), checked with recorder.verify."""
    store = st.store / "devices"
    ledger = Ledger(st)
    ca_pem = None
    ca_path = Path(st.cfg.dock.ca_file)
    if ca_path.is_file():
        ca_pem = ca_path.read_bytes()
    by_device: dict[str, list[RecordingInfo]] = {}
    for r in sel.recordings:
        by_device.setdefault(r.device_id, []).append(r)
    devices = []
    with st.db.session() as s:
        keys = {d.device_id: d.pubkey_pem.encode("ascii") for d in s.scalars(
            select(m.Device).where(m.Device.device_id.in_(list(by_device))))}
    for device_id, recs in sorted(by_device.items()):
        if device_id not in keys:
            raise NotFound(f"device {device_id} is not registered: no public key to export")
        rel = f"devices/{device_id}"
        ddir, evidence, mirror = copy / rel, copy / rel / "evidence", store / device_id / "mirror"
        anchor = ledger.last_anchor(device_id)
        try:
            _copy(mirror / JOURNAL_NAME, evidence / JOURNAL_NAME)
            selected = []
            for r in recs:
                for g in r.segments:
                    _copy(mirror / g.path, evidence / g.path, (g.size, g.sha256))
                    selected.append(g.path)
                    crashpoint("export-copy")
        except FileNotFoundError as exc:
            raise Unavailable(f"the store lacks {exc.filename} (a docking replacing the mirror? run the "
                              "export again; if it repeats: station verify --files)") from None
        _write(ddir / mf.SELECTION, "".join(p + "\n" for p in sorted(selected)).encode("utf-8"))
        _write(ddir / mf.KEY_NAME, keys[device_id])
        cert = store / device_id / mf.CERT_NAME
        has_cert = cert.is_file() and ca_pem is not None
        if has_cert:
            _copy(cert, ddir / mf.CERT_NAME, mode=0o644)
        if ca_pem is not None:
            _write(ddir / mf.CA_NAME, ca_pem)
        result = verify_directory(evidence, keys[device_id], anchor=anchor, selection=selected)
        if not result.ok or result.head is None:
            raise Unavailable(f"the stored evidence of device {device_id} does not verify "
                              f"({result.failure}): nothing exported; run `station verify --files`")
        devices.append({"device_id": device_id, "dir": rel, "evidence": f"{rel}/evidence",
                        "public_key": f"{rel}/{mf.KEY_NAME}", "selection": f"{rel}/{mf.SELECTION}",
                        "certificate": f"{rel}/{mf.CERT_NAME}" if has_cert else None,
                        "journal_head": f"{result.head[0]}:{result.head[1]}", "journal_records": result.records,
                        "files_attested": result.files, "files_included": len(selected),
                        "recordings": [r.id for r in recs]})
    _write(copy / mf.RECIPE, doc_block("check-evidence.sh").encode("utf-8"), 0o755)
    ca = None
    if ca_pem is not None:
        _write(copy / mf.CA_NAME, ca_pem)
        _write(copy / mf.CERT_RECIPE, doc_block("device-certificate.sh").encode("utf-8"), 0o755)
        ca = {"path": mf.CA_NAME, "sha256_fingerprint": _ca_fingerprint(ca_pem)}
    made = []
    if want_playable:
        ffmpeg = playable.find_ffmpeg()
        for r in sel.recordings:
            sources = [f"devices/{r.device_id}/evidence/{g.path}" for g in r.segments]
            made.append({"recording": r.id, **playable.remux(
                ffmpeg, copy, sources, f"playable/{r.device_id}/{naming.clean_part(r.recording_id)}.mp4",
                keys=FileKeyring(key_path(st.store)))})
    return _Built(devices, made, ca)


def _replicate(first: Path, other: Path) -> None:
    """Copy n: a second physical copy of copy 1's content (not links), modes kept."""
    for dirpath, dirnames, names in os.walk(first):
        dirnames.sort()
        for name in sorted(names):
            src = Path(dirpath) / name
            _copy(src, other / src.relative_to(first), mode=src.stat().st_mode & 0o777)
            crashpoint("export-copy")


def _manifest(st: Station, user: m.User, sel: Selection, built: _Built, *, name: str, n: int, copies: int,
              maker: str, extractor: str, extracted_ns: int, reason: str,
              files: list[dict[str, Any]]) -> dict[str, Any]:
    tz = st.cfg.timezone
    return {
        "format": mf.FORMAT, "station": st.name, "unit": st.cfg.unit, "export_name": name,
        "title": "执法记录仪音像证据导出清单",
        "case": sel.case, "activity": sel.activity,
        "maker": maker, "extractor": extractor, "created_by": user.username, "reason": reason,
        "extracted_ns": extracted_ns, "extracted_at": mf.iso(extracted_ns, tz), "timezone": tz,
        "copy": {"number": n, "of": copies, "label": f"{COPY_WORD} {n}/{copies}"},
        "recordings": [{"id": r.id, "device_id": r.device_id, "recording_id": r.recording_id, "name": r.name,
                        "officer_id": r.officer_id, "officer_name": r.officer_name,
                        "start": mf.iso(r.start_ns, tz), "end": mf.iso(r.end_ns, tz),
                        "start_ns": r.start_ns, "end_ns": r.end_ns,
                        "segments": [{"index": g.index, "path": f"devices/{r.device_id}/evidence/{g.path}",
                                      "size": g.size, "sha256": g.sha256} for g in r.segments]}
                       for r in sel.recordings],
        "devices": [dict(d, verify_command=mf.verify_command(d)) for d in built.devices],
        "agency_ca": built.ca,
        "playable": built.playable,
        "files": files,
        "not_in_files": list(mf.DERIVED),
    }


def _finish_copy(st: Station, user: m.User, copy: Path, sel: Selection, built: _Built, **kw: Any) -> str:
    """README, manifest, listing, sums and note of one copy; returns the manifest's SHA-256."""
    base = _manifest(st, user, sel, built, files=[], **kw)
    _write(copy / mf.README, mf.readme_text(base).encode("utf-8"))
    man = dict(base, files=mf.file_list(copy))
    data = mf.manifest_bytes(man)
    digest = hashlib.sha256(data).hexdigest()
    _write(copy / mf.MANIFEST, data)
    _write(copy / mf.LISTING, mf.listing_text(man, digest).encode("utf-8"))
    _write(copy / mf.SUMS, mf.sums_text(man, digest).encode("utf-8"))
    _write(copy / mf.NOTE, note.note_pdf(man, digest))
    return digest


def _verify_copy(copy: Path, built: _Built) -> None:
    for d in built.devices:
        sel = (copy / d["selection"]).read_text(encoding="utf-8").split()
        seq, head = d["journal_head"].split(":")
        r = verify_directory(copy / d["evidence"], (copy / d["public_key"]).read_bytes(),
                             anchor=(int(seq), head), selection=sel)
        if not r.ok:
            raise Unavailable(f"{copy.name}: device {d['device_id']} does not verify after copying "
                              f"({r.failure}): the export disk may be failing")


# ---- the action --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """An export that passed every check (role, form, selection, S8 copy access: registered), not
    yet written: ``make`` writes it. The web makes it in the background after answering."""

    sel: Selection
    maker: str
    extractor: str
    copies: int
    want_playable: bool
    reason: str
    extracted_ns: int
    name: str

    @property
    def bytes_to_copy(self) -> int:
        """The original segments' bytes, times the copies (what the disk must take, at least)."""
        return self.copies * sum(g.size for r in self.sel.recordings for g in r.segments)


def prepare(st: Station, user: m.User, *, case_no: str | None = None, refs: list[str] | None = None,
            maker: str, extractor: str, copies: int = 1, want_playable: bool = False,
            reason: str | None = None) -> Prepared:
    """The checks of an export, quick (no bytes read). Raises NotAllowed (role, access), NotFound,
    Conflict (purged, incomplete), InvalidInput."""
    require_role(st, user, *EXPORT_ROLES, what="export recordings for the case file (S7)")
    maker, extractor = (maker or "").strip(), (extractor or "").strip()
    if not maker or not extractor:
        raise InvalidInput("an export names its maker (制作人, --maker) and extractor (提取人, --extractor)")
    if isinstance(copies, bool) or not 1 <= copies <= MAX_COPIES:
        raise InvalidInput(f"--copies must be 1..{MAX_COPIES}")
    try:
        sel = select_recordings(st, case_no, list(refs or []))
    except (NotFound, Conflict) as exc:
        st.trail.event("export-refused", actor=user.username, subject=f"case:{case_no}" if case_no else
                       ",".join(refs or []), reason=str(exc))
        raise
    why = (reason or "").strip() or (f"案卷证据导出 {sel.case['case_no']}" if sel.case else "证据导出")
    authorize_copies(st, user, sel, reason)     # first: a purged recording is refused (and registered) here
    if sel.unnamed:
        raise InvalidInput(sel.unnamed)
    extracted_ns = st.now_ns()
    return Prepared(sel, maker, extractor, copies, want_playable, why, extracted_ns,
                    export_name(sel, extracted_ns, st.cfg.timezone))


def make(st: Station, user: m.User, prep: Prepared, out: Path) -> ExportResult:
    """Write a prepared export into ``out`` (module docstring, "Faults"). Raises Conflict (exists),
    InvalidInput (``out`` unusable), Unavailable (disk full, store damaged)."""
    sel, name = prep.sel, prep.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot use {out} as the export directory: {exc.strerror}") from None
    out = out.resolve()
    with _locked(out):
        cleaned = clean_leftovers(st, out)
        finals = [out / f"{name}-{COPY_WORD}{n}" for n in range(1, prep.copies + 1)]
        for f in finals:
            if f.exists():
                raise Conflict(f"{f} exists already")
        _check_space(out, sel, prep.copies)
        tmp = out / f"{PARTIAL_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
        try:
            result = _build_and_commit(st, user, sel, tmp, finals, name=name, maker=prep.maker,
                                       extractor=prep.extractor, extracted_ns=prep.extracted_ns, reason=prep.reason,
                                       want_playable=prep.want_playable)
        except OSError as exc:
            _cleanup(tmp)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Unavailable(f"the export disk {out} is full ({exc.strerror}): nothing was exported; "
                                  "free space or use another disk and run again") from None
            raise
        except BaseException:
            _cleanup(tmp)
            raise
        _cleanup(tmp)
    result.cleaned = cleaned
    return result


def export(st: Station, user: m.User, *, case_no: str | None = None, refs: list[str] | None = None,
           out: Path, maker: str, extractor: str, copies: int = 1, want_playable: bool = False,
           reason: str | None = None) -> ExportResult:
    """Export for the case file (S7): ``prepare`` then ``make``. Raises NotAllowed (role, access),
    NotFound, Conflict (purged, incomplete, exists), InvalidInput, Unavailable (disk full, store
    damaged)."""
    return make(st, user, prepare(st, user, case_no=case_no, refs=refs, maker=maker, extractor=extractor,
                                  copies=copies, want_playable=want_playable, reason=reason), out)


def _cleanup(tmp: Path) -> None:
    if tmp.exists():
        _remove(tmp)


def _build_and_commit(st: Station, user: m.User, sel: Selection, tmp: Path, finals: list[Path], *, name: str,
                      maker: str, extractor: str, extracted_ns: int, reason: str,
                      want_playable: bool) -> ExportResult:
    copies = len(finals)
    tmp.mkdir()
    staged = [tmp / f.name for f in finals]
    built = _build_first(st, staged[0], sel, want_playable)
    for other in staged[1:]:
        _replicate(staged[0], other)
    digests = []
    for n, copy in enumerate(staged, start=1):
        _verify_copy(copy, built)
        digests.append(_finish_copy(st, user, copy, sel, built, name=name, n=n, copies=copies, maker=maker,
                                    extractor=extractor, extracted_ns=extracted_ns, reason=reason))
        _fsync_tree(copy)
    _fsync_dir(tmp)
    files = sum(1 for _ in staged[0].rglob("*") if _.is_file())
    nbytes = sum(p.stat().st_size for p in staged[0].rglob("*") if p.is_file())
    ids = [r.id for r in sel.recordings]
    out = finals[0].parent
    with st.trail.action("export", actor=user.username, subject="export", reason=reason) as ch:
        row = m.Export(case_id=None, directory=str(out / name), maker=maker, extractor=extractor,
                       extracted_ns=extracted_ns, copies=copies, recordings=json.dumps(ids),
                       manifest_sha256=digests[0], status="complete", created_by=user.username)
        if sel.case is not None:
            case = ch.session.scalars(select(m.Case).where(m.Case.case_no == sel.case["case_no"])).first()
            row.case_id = case.id if case else None
        ch.add(row)
        ch.session.flush()
        ch.subject = f"export:{row.id}"
        ch.details.update(case_no=sel.case["case_no"] if sel.case else None, activity=sel.activity,
                          recordings=ids, copies=copies, directory=str(out / name),
                          copy_dirs=[f.name for f in finals], manifest_sha256=digests, maker=maker,
                          extractor=extractor, extracted_ns=extracted_ns, files_per_copy=files,
                          bytes_per_copy=nbytes, playable=bool(built.playable))
        moved: list[tuple[Path, Path]] = []
        try:
            for src, dst in zip(staged, finals, strict=True):
                os.rename(src, dst)
                moved.append((src, dst))
            _fsync_dir(out)
            crashpoint("export-commit")
        except BaseException:
            for src, dst in reversed(moved):     # the action is abandoned: the copies go back to be removed
                os.rename(dst, src)
            raise
        export_id = row.id
    assert ch.record is not None
    return ExportResult(export_id, name, out / name, finals, digests, ids, files, nbytes, extracted_ns,
                        audit_seq=ch.record.seq)

