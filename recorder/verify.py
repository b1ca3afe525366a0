"""The strict evidence verifier: the same code runs on the device and at the dock.

``verify_directory(root, public_key_pem)`` walks the journal in order and stops
at the first failure, which is an exception of a named class (BadSignature,
ChainBroken, ...) carrying the record, file and what was expected. Nothing is
trusted that the public key does not vouch for: the device id is derived from
the key, every line's signature is checked over its exact bytes, the chain and
sequence must be unbroken, every file the journal attests must be present with
its size and SHA-256, no other file may be present, and segments of one
recording must follow each other without a gap in index, video PTS or audio
samples.

Limit (inherent to any append-only log): cutting records off the *end* of the
journal together with the files they attest cannot be seen from the directory
alone. Pass ``anchor=(seq, line_hash)`` from an earlier verification or a dock
receipt to close that gap.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cryptography.exceptions import InvalidSignature

from recorder import records
from recorder.failures import NamedFailure
from recorder.identity import device_id_for, load_public_key_pem
from recorder.journal import JOURNAL_NAME
from recorder.receipt import ReleasedFiles
from recorder.records import GENESIS_PREV, MalformedLine, Record

log = logging.getLogger(__name__)


class VerificationFailure(NamedFailure):
    """Base class: the directory is not intact evidence. ``reason`` is the class name."""

    def __init__(self, message: str, *, seq: int | None = None, line_no: int | None = None,
                 file: str | None = None, expected: object = None, found: object = None) -> None:
        where = []
        if line_no is not None:
            where.append(f"journal line {line_no}")
        if seq is not None:
            where.append(f"record #{seq}")
        if file is not None:
            where.append(f"file {file}")
        detail = message
        if expected is not None or found is not None:
            detail += f" (expected {expected!r}, found {found!r})"
        super().__init__(f"{self.reason}: {', '.join(where) + ': ' if where else ''}{detail}",
                         seq=seq, line_no=line_no, file=file, expected=expected, found=found)
        self.seq, self.line_no, self.file = seq, line_no, file
        self.expected, self.found = expected, found


class JournalMissing(VerificationFailure):
    """There is no journal file in the directory."""


class MalformedRecord(VerificationFailure):
    """A line is not a well-formed record (bad JSON, not canonical, wrong fields, bad paths)."""


class TornRecord(MalformedRecord):
    """The journal ends in a partial line (power cut; the device recovers it at next start)."""


class FloatInRecord(MalformedRecord):
    """A format-version-2 record holds a float anywhere in its message (v2 is integer-only)."""


class ForeignDevice(VerificationFailure):
    """A record claims a device other than the one the public key belongs to."""


class BadSignature(VerificationFailure):
    """A record's signature does not verify with the device's public key."""


class SequenceGap(VerificationFailure):
    """Sequence numbers are not 0, 1, 2, ... (a record deleted, duplicated or moved)."""


class ChainBroken(VerificationFailure):
    """A record's ``prev`` is not the hash of the line before it."""


class SegmentMissing(VerificationFailure):
    """A file the journal attests (segment, quarantined tail, unreadable part) is gone."""


class SegmentSizeMismatch(VerificationFailure):
    """An attested file has a different size."""


class SegmentHashMismatch(VerificationFailure):
    """An attested file has different bytes."""


class SegmentExtra(VerificationFailure):
    """A file in the directory that no record attests (inserted, or never sealed)."""


class DuplicateAttestation(VerificationFailure):
    """Two records attest the same file."""


class MediaDiscontinuity(VerificationFailure):
    """Consecutive segments of one recording do not join (index, video PTS or audio samples)."""


class AnchorMismatch(VerificationFailure):
    """The journal does not reach, or differs at, a record known from an earlier verification."""


class SelectionMismatch(VerificationFailure):
    """Selected-files check: the selection names a file that no record of the journal attests."""


@dataclass
class VerificationResult:
    root: Path
    device_id: str
    checks: list[str] = field(default_factory=list)
    failure: VerificationFailure | None = None
    records: int = 0
    files: int = 0
    head: tuple[int, str] | None = None   # (seq, line hash) of the last record: an anchor for next time
    # collect_file_failures=True only: attested files missing or differing (SegmentMissing,
    # SegmentSizeMismatch, SegmentHashMismatch), one per file, while the walk goes on
    file_failures: list[VerificationFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None and not self.file_failures

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class KnownDigest:
    """The SHA-256 of a file's bytes, read from disk earlier by the caller, and the identity of
    the file it was read from: device, inode, size and modification time (ns).

    ``verify_directory(..., known_digests={rel: KnownDigest})`` takes it instead of reading
    the file again only while the file on disk is still that identity (same inode, not
    written since); otherwise it reads and hashes the file as always. What this trusts:
    that whoever read the file hashed all of it, and that a change of the bytes changes the
    mtime (true of every write through the file system; only a deliberate reset of the
    mtime by the file's owner or root defeats it, who could as well change the file after
    any verification).
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of_stat(cls, st: os.stat_result, sha256: str) -> "KnownDigest":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha256)

    def matches(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (self.dev, self.ino, self.size,
                                                                       self.mtime_ns)


_SEGMENT_INT_FIELDS = ("index", "time_base", "first_pts", "last_pts", "frame_duration",
                       "video_frames", "first_sample", "audio_samples")


def _count(n: int, noun: str) -> str:
    """``1 record``, ``2 records``, ``0 records``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Walker:
    def __init__(self, root: Path, public_key_pem: bytes, allow_open_parts: bool,
                 anchor: tuple[int, str] | None, collect_file_failures: bool = False,
                 selection: frozenset[str] | None = None,
                 known_digests: Mapping[str, KnownDigest] | None = None) -> None:
        self.root = root
        self.selection = selection
        self.known_digests = known_digests or {}
        self.collect_file_failures = collect_file_failures
        self.key = load_public_key_pem(public_key_pem)
        self.device_id = device_id_for(self.key)
        self.allow_open_parts = allow_open_parts
        self.anchor = anchor
        self.result = VerificationResult(root, self.device_id)
        self.attested: dict[str, int] = {}
        self.last_segment: dict[str, dict[str, Any]] = {}
        self.released = ReleasedFiles.scan(root / JOURNAL_NAME)   # purged against dock receipts
        self.absent_released = 0
        self.unselected = 0
        self.version = min(records.SUPPORTED_VERSIONS)   # highest format version seen so far

    def run(self) -> None:
        journal = self.root / JOURNAL_NAME
        if not journal.is_file():
            raise JournalMissing("no journal", file=JOURNAL_NAME)
        prev_hash, expected_seq, n = GENESIS_PREV, 0, 0
        with open(journal, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                rec = self._check_line(line, line_no, expected_seq, prev_hash)
                self._check_files(rec, line_no)
                if rec.type == records.SEGMENT:
                    self._check_continuity(rec, line_no)
                if self.anchor and rec.seq == self.anchor[0] and rec.hash != self.anchor[1]:
                    raise AnchorMismatch("record differs from the anchored one", seq=rec.seq,
                                         line_no=line_no, expected=self.anchor[1], found=rec.hash)
                prev_hash, expected_seq, n = rec.hash, rec.seq + 1, n + 1
        self.result.records = n
        self.result.head = (expected_seq - 1, prev_hash) if n else None
        self.result.checks += [
            f"journal: {_count(n, 'record')}, all of device {self.device_id}, in canonical form",
            f"signatures: {_count(n, 'valid Ed25519 signature')}",
            f"sequence: 0..{n - 1} without gap" if n else "sequence: empty journal",
            "chain: every prev matches the SHA-256 of the line before",
        ]
        if self.anchor and self.anchor[0] >= n:
            raise AnchorMismatch("journal ends before the anchored record", seq=self.anchor[0],
                                 expected=f"at least {self.anchor[0] + 1} records", found=n)
        if self.anchor:
            self.result.checks.append(f"anchor: record #{self.anchor[0]} matches")
        self.result.files = len(self.attested)
        intact = (len(self.attested) - self.absent_released - self.unselected
                  - len(self.result.file_failures))
        self.result.checks.append(f"files: {_count(intact, 'attested file')} present with matching size "
                                  "and SHA-256")
        if self.result.file_failures:
            self.result.checks.append(f"FILES FAILED: {_count(len(self.result.file_failures), 'attested file')} "
                                      "missing or differing (see file_failures)")
        if self.absent_released:
            self.result.checks.append(f"released: {_count(self.absent_released, 'file')} purged against "
                                      "signed dock receipts")
        if self.selection is not None:
            unknown = sorted(self.selection - set(self.attested))
            if unknown:
                raise SelectionMismatch("selected file is not attested by any record", file=unknown[0],
                                        found=len(unknown))
            self.result.checks.append(f"selection: {_count(len(self.selection), 'selected file')} checked; "
                                      f"{_count(self.unselected, 'attested file')} not selected (not checked, "
                                      "must be absent)")
        self._check_no_extra()
        self.result.checks.append("no file without a record")
        self.result.checks.append(f"media: {_count(len(self.last_segment), 'recording')} continuous "
                                  "(index, PTS, audio samples)")

    def _check_line(self, line: bytes, line_no: int, expected_seq: int, prev_hash: str) -> Record:
        if not line.endswith(b"\n"):
            raise TornRecord(f"last line is partial ({len(line)} bytes without LF)", line_no=line_no,
                             file=JOURNAL_NAME)
        try:
            rec = records.parse_line(line)
        except records.FloatInRecord as exc:
            raise FloatInRecord(str(exc), line_no=line_no, file=JOURNAL_NAME) from None
        except MalformedLine as exc:
            raise MalformedRecord(str(exc), line_no=line_no, file=JOURNAL_NAME) from None
        if rec.device != self.device_id:
            raise ForeignDevice("record from another device", seq=rec.seq, line_no=line_no,
                                expected=self.device_id, found=rec.device)
        try:
            self.key.verify(rec.signature, rec.message_bytes)
        except InvalidSignature:
            raise BadSignature("signature does not verify with the device key", seq=rec.seq,
                               line_no=line_no) from None
        if rec.seq != expected_seq:
            raise SequenceGap("sequence number out of order", seq=rec.seq, line_no=line_no,
                              expected=expected_seq, found=rec.seq)
        if rec.prev != prev_hash:
            raise ChainBroken("prev is not the hash of the previous line", seq=rec.seq,
                              line_no=line_no, expected=prev_hash, found=rec.prev)
        version = rec.message["v"]
        if version < self.version:
            raise MalformedRecord(f"format version {version} after version {self.version}: versions "
                                  "may only stay equal or rise along the journal", seq=rec.seq,
                                  line_no=line_no, expected=f">= {self.version}", found=version)
        self.version = version
        return rec

    def _check_files(self, rec: Record, line_no: int) -> None:
        try:
            files = records.attested_files(rec)
        except MalformedLine as exc:
            raise MalformedRecord(str(exc), seq=rec.seq, line_no=line_no) from None
        for f in files:
            rel = f["path"]
            if rel in self.attested or rel == JOURNAL_NAME:
                raise DuplicateAttestation("file attested twice", seq=rec.seq, line_no=line_no,
                                           file=rel, expected=self.attested.get(rel))
            self.attested[rel] = rec.seq
            if self.selection is not None and rel not in self.selection:
                self.unselected += 1     # selected-files check: not part of this directory
                continue
            path = self.root / rel
            if (self.selection is None and not os.path.lexists(path)
                    and self.released.covers(rel, f["sha256"], f["size"], rec.seq)):
                self.absent_released += 1
                continue
            if not path.is_file() or path.is_symlink():
                self._file_failed(SegmentMissing(f"attested {f.get('role', 'file')} is missing",
                                                 seq=rec.seq, line_no=line_no, file=rel))
                continue
            st = path.stat()
            size = st.st_size
            if size != f["size"]:
                self._file_failed(SegmentSizeMismatch("size differs", seq=rec.seq, line_no=line_no,
                                                      file=rel, expected=f["size"], found=size))
                continue
            known = self.known_digests.get(rel)
            digest = known.sha256 if known is not None and known.matches(st) else _sha256_file(path)
            if digest != f["sha256"]:
                self._file_failed(SegmentHashMismatch("SHA-256 differs", seq=rec.seq, line_no=line_no,
                                                      file=rel, expected=f["sha256"], found=digest))

    def _file_failed(self, failure: VerificationFailure) -> None:
        """A bad attested file: the verdict (default), or noted and the walk goes on."""
        if not self.collect_file_failures:
            raise failure
        self.result.file_failures.append(failure)

    def _check_continuity(self, rec: Record, line_no: int) -> None:
        p = rec.payload
        for k in _SEGMENT_INT_FIELDS:
            if not records._is_int(p.get(k)):
                raise MalformedRecord(f"segment field {k} is not an integer", seq=rec.seq,
                                      line_no=line_no)
        rid = p.get("recording_id")
        if not isinstance(rid, str) or not rid:
            raise MalformedRecord("segment has no recording_id", seq=rec.seq, line_no=line_no)
        prev = self.last_segment.get(rid)
        where = dict(seq=rec.seq, line_no=line_no, file=p["path"])
        if prev is None:
            if p["index"] != 0:
                raise MediaDiscontinuity(f"recording {rid} does not start at index 0",
                                         expected=0, found=p["index"], **where)
        else:
            if prev.get("final"):
                raise MediaDiscontinuity(f"segment after the final segment of {rid}", **where)
            checks = (
                ("index", prev["index"] + 1, p["index"]),
                ("first_pts", prev["last_pts"] + prev["frame_duration"], p["first_pts"]),
                ("first_sample", prev["first_sample"] + prev["audio_samples"], p["first_sample"]),
                ("time_base", prev["time_base"], p["time_base"]),
            )
            for name, want, got in checks:
                if want != got:
                    raise MediaDiscontinuity(f"{name} does not follow segment {prev['index']} "
                                             f"of {rid}", expected=want, found=got, **where)
        self.last_segment[rid] = p

    def _check_no_extra(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames
                                             if os.path.islink(os.path.join(dirpath, d))]:
                rel = Path(os.path.relpath(os.path.join(dirpath, name), self.root)).as_posix()
                if rel == JOURNAL_NAME or (rel in self.attested
                                           and (self.selection is None or rel in self.selection)):
                    continue
                if self.allow_open_parts and rel.endswith((".ts.part", ".ts.sync", ".aac.age.sync")):
                    continue    # a segment being written, an encrypted segment's or note's sync index
                if rel in self.attested:
                    raise SegmentExtra("attested, but not in the selection of files checked", file=rel)
                raise SegmentExtra("no record attests this file", file=rel)


def verify_directory(root: Path | str, public_key_pem: bytes, *, allow_open_parts: bool = False,
                     anchor: tuple[int, str] | None = None,
                     collect_file_failures: bool = False,
                     selection: Iterable[str] | None = None,
                     known_digests: Mapping[str, KnownDigest] | None = None) -> VerificationResult:
    """Verify an evidence directory. Never raises for bad evidence: see ``result.failure``.

    ``collect_file_failures``: a missing or differing attested file (SegmentMissing,
    SegmentSizeMismatch, SegmentHashMismatch) does not end the walk; each is listed in
    ``result.file_failures`` (``result.ok`` is then False) and the journal itself (signatures,
    chain, sequence, anchor, continuity, extra files) is still checked to the end; any failure
    of those is ``result.failure`` as usual. The dock station uses it to ingest the intact files.

    ``known_digests`` (relative path -> ``KnownDigest``): SHA-256 values the caller already
    read from these very files on disk (same inode, size and mtime); such a file is not read
    again. Every other check is the same; without it every attested file is read and hashed.

    ``allow_open_parts`` tolerates NAME.ts.part files being written and the sync indexes
    of encrypted segments and voice notes (``NAME.ts.sync``, ``NOTE.aac.age.sync``, removed
    once their file is sealed) (device self-check during a recording); the dock station
    leaves it False. Raises identity.BadPublicKey for a
    key that is not Ed25519 PEM (that is a usage error, not a verdict).

    ``selection`` (the selected-files check of an export package, docs/evidence-format.md):
    the directory holds ``journal.log`` and exactly these attested files. The whole journal is
    checked as always (lines, signatures, sequence, chain, anchor, attestations, continuity);
    each selected file must be present with its size and SHA-256 (no purge exception); a file
    the journal attests but the selection leaves out is not checked and must be absent
    (``SegmentExtra`` if present); a selected path the journal does not attest is
    ``SelectionMismatch``; any other file is ``SegmentExtra``.
    """
    sel = None if selection is None else frozenset(selection)
    walker = _Walker(Path(root), public_key_pem, allow_open_parts, anchor, collect_file_failures, sel,
                     known_digests)
    try:
        walker.run()
    except VerificationFailure as failure:
        walker.result.failure = failure
        log.info("verify %s: %s", root, failure)
    return walker.result


