"""The S3-named view ``<store>/recordings/<name>/``: renamed when a label is set or corrected (S3),
checked and repaired after a crash. The verified originals (``devices/<id>/mirror/``) are never
touched: the view holds hard links to them (same inodes), so renaming is only new directory
entries and never a write to an original's bytes or times.

Crash safety: the catalogue's ``Recording.name`` is the truth, and the directory it names is
complete at every instant. A rename is

1. *stage*: a new directory ``recordings/.staging/<id>-<random>/`` with links named after the
   new name, made from the mirror (not from the old view), and the DAMAGED notes carried over;
2. *publish*: one ``rename(2)`` of the staged directory to ``recordings/<new name>/`` (atomic);
3. the label action commits (``Recording.name`` = new name, audited);
4. *finish*: the old directory is removed (only links and notes: the data lives on in the mirror).

A crash (kill -9, power) before 3 leaves the old directory complete and named in the catalogue,
plus an orphan (the staging directory or the published new one); after 3, the new directory
complete and named, plus the stale old one. Either way the named directory is whole; the
leftovers are found by ``check_views`` and removed by ``repair`` (``station view check`` /
``station view repair``, and every later label of that recording repairs its view first). A
commit that fails (the database went away) unpublishes the new directory before the error is
raised.
"""
from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.crashpoints import crashpoint
from station import naming
from station.db import models as m

VIEW_DIR = "recordings"
STAGING_DIR = ".staging"


def view_root(store: Path) -> Path:
    return Path(store) / VIEW_DIR


def mirror_path(store: Path, device_id: str, seg_path: str) -> Path:
    return Path(store) / "devices" / device_id / "mirror" / seg_path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)      # a store on a file system without hard links (as at ingest)


def _same_file(a: Path, b: Path) -> bool:
    """``a`` is ``b`` (one inode) or, on a store without hard links, a copy of the same size."""
    try:
        sa, sb = a.stat(), b.stat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) or (
        sa.st_nlink == 1 and sb.st_nlink == 1 and sa.st_size == sb.st_size)


def _segments(s: Session, rec: m.Recording) -> list[m.Segment]:
    return list(s.scalars(select(m.Segment).where(m.Segment.recording == rec.id).order_by(m.Segment.index)))


def _notes(directory: Path) -> dict[int, Path]:
    """The DAMAGED notes of a view directory, by segment index."""
    out: dict[int, Path] = {}
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.endswith(".DAMAGED.txt"):
                idx = p.name.removesuffix(".DAMAGED.txt").rsplit("_", 1)[-1]
                if idx.isdigit():
                    out[int(idx)] = p
    return out


def stage(store: Path, rec: m.Recording, segments: list[m.Segment], name: str, notes_from: Path | None) -> Path:
    """Step 1: a complete view of ``rec`` under ``name`` in a staging directory (fsynced)."""
    staging = view_root(store) / STAGING_DIR / f"{rec.id}-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    for seg in segments:
        src = mirror_path(store, rec.device_id, seg.path)
        if seg.present and src.is_file():
            _link(src, staging / naming.segment_file_name(name, seg.index))
    for idx, note in (_notes(notes_from) if notes_from else {}).items():
        shutil.copyfile(note, staging / naming.damaged_note_name(name, idx))
    _fsync_dir(staging)
    return staging


@dataclass
class Rename:
    """A published rename: ``finish`` after the action committed, ``undo`` if it did not."""

    old_dir: Path
    new_dir: Path

    def finish(self) -> None:
        if self.old_dir != self.new_dir and self.old_dir.exists():
            shutil.rmtree(self.old_dir)
            _fsync_dir(self.old_dir.parent)

    def undo(self) -> None:
        if self.old_dir != self.new_dir and self.new_dir.exists():
            shutil.rmtree(self.new_dir)

    def settle(self, name_in_catalogue: str | None) -> None:
        """After the action raised: whether it committed is read back from the catalogue (the
        record may have been committed before an error appending the journal line). Unknown
        (the database is gone): both directories stay, for ``repair``."""
        if name_in_catalogue == self.new_dir.name:
            self.finish()
        elif name_in_catalogue == self.old_dir.name:
            self.undo()


def publish(staging: Path, new_dir: Path) -> None:
    """Step 2: the staged directory becomes ``new_dir`` in one rename."""
    os.rename(staging, new_dir)
    _fsync_dir(new_dir.parent)


def rename_view(store: Path, s: Session, rec: m.Recording, old_name: str, new_name: str) -> Rename | None:
    """Stage and publish the view of ``rec`` under ``new_name`` (steps 1 and 2); None if unchanged.

    Called inside the label action, after ``repair_recording``; the caller ``finish``es the
    returned rename once the action committed and ``undo``es it if it raised.
    """
    if new_name == old_name:
        return None
    root = view_root(store)
    new_dir, old_dir = root / new_name, root / old_name
    if new_dir.exists():
        # only a leftover of this recording (repair_recording removed those) or another's: refuse
        raise FileExistsError(f"{new_dir} exists and is not this recording's view")
    staging = stage(store, rec, _segments(s, rec), new_name, old_dir)
    crashpoint("label-rename-staged")
    try:
        publish(staging, new_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    crashpoint("label-rename-published")          # both directories; the action not committed yet
    return Rename(old_dir, new_dir)


# ---- checking and repairing ------------------------------------------------------------------
@dataclass(frozen=True)
class ViewFinding:
    """``kind``: ViewMissing, ViewFileMissing, ViewFileWrong (the named directory of a stored
    recording is absent or incomplete), ViewStale (a directory of a former name of a recording:
    a rename interrupted after its commit or before it), ViewStaging (a staging directory left
    by a crash), ViewUnknown (a directory the catalogue knows nothing of: reported, never
    removed)."""

    kind: str
    where: str
    detail: str
    repaired: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail, "repaired": self.repaired}


@dataclass
class ViewReport:
    recordings: int = 0
    findings: list[ViewFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing wrong, or everything found was repaired."""
        return all(f.repaired for f in self.findings)


def _complete(store: Path, rec: m.Recording, segments: list[m.Segment], repair: bool) -> list[ViewFinding]:
    """The named directory of ``rec`` has a link to every present segment."""
    out: list[ViewFinding] = []
    d = view_root(store) / rec.name
    present = [g for g in segments if g.present and mirror_path(store, rec.device_id, g.path).is_file()]
    if not d.is_dir():
        if not present:
            return out
        out.append(ViewFinding("ViewMissing", str(d), f"recording {rec.id}: its named view is absent", repair))
        if repair:
            publish(stage(store, rec, segments, rec.name, None), d)
        return out
    for seg in present:
        src = mirror_path(store, rec.device_id, seg.path)
        dst = d / naming.segment_file_name(rec.name, seg.index)
        if not dst.exists():
            out.append(ViewFinding("ViewFileMissing", str(dst), f"recording {rec.id} segment {seg.index}", repair))
        elif not _same_file(dst, src):
            out.append(ViewFinding("ViewFileWrong", str(dst),
                                   f"recording {rec.id} segment {seg.index}: not the mirror's file", repair))
        else:
            continue
        if repair:
            tmp = dst.with_name(dst.name + ".repair")
            tmp.unlink(missing_ok=True)
            _link(src, tmp)
            os.replace(tmp, dst)
    return out


def _inode_owner(store: Path, recs: list[tuple[m.Recording, list[m.Segment]]]) -> dict[tuple[int, int], int]:
    owner: dict[tuple[int, int], int] = {}
    for rec, segs in recs:
        for g in segs:
            try:
                st = mirror_path(store, rec.device_id, g.path).stat()
            except OSError:
                continue
            owner[(st.st_dev, st.st_ino)] = rec.id
    return owner


def _owner_of_dir(d: Path, owner: dict[tuple[int, int], int]) -> int | None:
    for p in d.iterdir():
        if p.suffix == ".ts" and p.is_file():
            st = p.stat()
            rid = owner.get((st.st_dev, st.st_ino))
            if rid is not None:
                return rid
    return None


def repair_recording(store: Path, s: Session, rec: m.Recording) -> list[ViewFinding]:
    """Make ``rec``'s view whole and remove its leftovers (a directory of another name holding
    its files); done first by every label action on it."""
    segs = _segments(s, rec)
    found = _complete(store, rec, segs, True)
    root = view_root(store)
    if not root.is_dir():
        return found
    owner = _inode_owner(store, [(rec, segs)])
    rid_part = naming.clean_part(rec.recording_id)
    candidates = [p for p in root.iterdir() if p.is_dir() and p.name != rec.name and rid_part in p.name]
    staging = root / STAGING_DIR
    if staging.is_dir():
        candidates += [p for p in staging.iterdir() if p.is_dir() and p.name.startswith(f"{rec.id}-")]
    for d in candidates:
        if d.parent.name == STAGING_DIR or _owner_of_dir(d, owner) == rec.id:
            kind = "ViewStaging" if d.parent.name == STAGING_DIR else "ViewStale"
            shutil.rmtree(d)
            found.append(ViewFinding(kind, str(d), f"recording {rec.id}: leftover of an interrupted rename", True))
    return found


def check_views(store: Path, s: Session, *, repair: bool = False) -> ViewReport:
    """Every stored recording's named view against the catalogue and the mirror; leftovers."""
    report = ViewReport()
    recs = [(r, _segments(s, r)) for r in s.scalars(select(m.Recording).where(m.Recording.status == "stored")
                                                     .order_by(m.Recording.id))]
    report.recordings = len(recs)
    for rec, segs in recs:
        report.findings += _complete(store, rec, segs, repair)
    root = view_root(store)
    if not root.is_dir():
        return report
    names = {r.name for r, _ in recs}
    owner = _inode_owner(store, recs)
    staging = root / STAGING_DIR
    if staging.is_dir():
        for d in sorted(staging.iterdir()):
            report.findings.append(ViewFinding("ViewStaging", str(d), "staging directory left by a crash", repair))
            if repair:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
    for d in sorted(root.iterdir()):
        if d.name in names or d.name == STAGING_DIR or not d.is_dir():
            continue
        rid = _owner_of_dir(d, owner)
        if rid is None:
            report.findings.append(ViewFinding("ViewUnknown", str(d), "no stored recording's files: left alone"))
            continue
        report.findings.append(ViewFinding("ViewStale", str(d),
                                           f"a former name of recording {rid} (an interrupted rename)", repair))
        if repair:
            shutil.rmtree(d)
    return report
