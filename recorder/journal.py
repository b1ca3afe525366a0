"""The device's one append-only, hash-chained, signed journal.

Every fact the device attests (sealed segment, recording start/stop, config
change, boot/shutdown, reasons, checks, docking) is one line in
``<root>/journal.log`` (format in recorder/records.py and docs/evidence-format.md).

Appends are written, fsynced, and only then become the new head, under a lock,
so concurrent callers get consecutive sequence numbers. A power cut mid-write
leaves a torn last line (bytes after the last LF). ``Journal.open`` moves those
bytes to ``<root>/quarantine/`` (fsynced first, never discarded), truncates the
journal back to the last whole line, and appends a ``journal-recovered`` record
that names the quarantine file and its hash, so the chain continues and the
verifier accounts for every byte.

One process writes an evidence root at a time: ``Journal.open`` takes an
exclusive ``flock`` on ``journal.log`` itself (no lock file, which would be an
unattested file) before it reads or recovers anything, and a second writer gets
``EvidenceInUse`` naming the holder's pid.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from common.clock import TimeSample, WallClock
from common.crashpoints import crashpoint
from recorder import records
from recorder.identity import Signer, device_id_for_pem
from recorder.records import GENESIS_PREV, MalformedLine, Record

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.log"
QUARANTINE_DIR = "quarantine"
_QUARANTINE_RE = re.compile(r"^journal-torn-at-(\d+)-([0-9a-f]{16})\.bin$")


class JournalError(Exception):
    """Base class for journal problems."""


class JournalCorrupt(JournalError):
    """The last whole line of the journal is not a valid record of this device.

    The journal is left exactly as found; nothing is appended to it.
    """


class JournalClosed(JournalError):
    """Append after close()."""


class JournalWriteFailed(JournalError):
    """A record could not be made durable (e.g. disk full); the journal is unchanged."""


class EvidenceInUse(Exception):
    """Another process (``pid``, None if it cannot be told) has this evidence root open for writing.

    Not a JournalError: nothing is wrong with the evidence, and callers report it with
    an exit code of its own.
    """

    def __init__(self, root: Path, pid: int | None) -> None:
        self.root, self.pid = root, pid
        if pid == os.getpid():
            super().__init__(f"evidence directory {root} is already open for writing in this process")
        else:
            holder = f"pid {pid}" if pid else "pid unknown"
            super().__init__(f"evidence directory {root} is in use by another process ({holder})")


def _flock_holder(fd: int) -> int | None:
    """The pid holding an flock on ``fd``'s file, from /proc/locks (no lock file of our own:
    every file under the evidence root must be attested)."""
    st = os.fstat(fd)
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        try:
            major, minor, ino = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(ino)) == (os.major(st.st_dev),
                                                              os.minor(st.st_dev), st.st_ino):
                return int(fields[4]) or None
        except ValueError:
            continue
    return None


def lock_evidence_root(fd: int, root: Path) -> None:
    """Take the one-writer lock of an evidence root: an exclusive flock on its open
    ``journal.log``, held as long as that descriptor (the Journal) stays open and dropped
    by the kernel when the holder dies, however it dies. EvidenceInUse if another holds it.

    Every writer (record, run, status, scenario, dock serve) opens the root through
    ``Journal.open``, which calls this before it reads, recovers or salvages anything.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise EvidenceInUse(root, _flock_holder(fd)) from None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_last_line(fd: int, size: int) -> tuple[int, bytes]:
    """Return (offset just after the last LF, the last whole line) reading backwards.

    (0, b"") when the file holds no LF at all.
    """
    end = size
    chunk = 65536
    buf = b""
    pos = size
    last_lf = -1
    # find the last LF
    while pos > 0:
        start = max(0, pos - chunk)
        piece = os.pread(fd, pos - start, start)
        buf = piece + buf
        pos = start
        if last_lf < 0:
            idx = buf.rfind(b"\n")
            if idx >= 0:
                last_lf = pos + idx
        if last_lf >= 0:
            prev_lf = buf.rfind(b"\n", 0, last_lf - pos)
            if prev_lf >= 0 or pos == 0:
                line_start = pos + prev_lf + 1 if prev_lf >= 0 else 0
                return last_lf + 1, buf[line_start - pos:last_lf - pos + 1]
        if end - pos > records.MAX_LINE_BYTES * 2:
            break
    if last_lf < 0:
        return 0, b""
    raise JournalCorrupt(f"last journal line is longer than {records.MAX_LINE_BYTES} bytes")


class Journal:
    """An open journal. Create with ``Journal.open``; append with ``append``."""

    def __init__(self, root: Path, fd: int, signer: Signer, wall_clock: WallClock,
                 monotonic_ns: Callable[[], int], session: str, next_seq: int,
                 head_hash: str, size: int) -> None:
        self.root = root
        self.path = root / JOURNAL_NAME
        self._fd: int | None = fd
        self._signer = signer
        self._clock = wall_clock
        self._monotonic_ns = monotonic_ns
        self.session = session
        self.device_id = device_id_for_pem(signer.public_key_pem())
        self._next_seq = next_seq
        self._head_hash = head_hash
        self._size = size
        self._lock = threading.Lock()
        self.recoveries: list[Record] = []

    # ---- opening -------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, signer: Signer, wall_clock: WallClock,
             monotonic_ns: Callable[[], int] = time.monotonic_ns,
             session: str | None = None) -> "Journal":
        """Open (or create) ``root/journal.log``, recovering a torn tail if there is one.

        ``session`` identifies this boot (monotonic times compare only within a
        session); a random UUID by default.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        path = root / JOURNAL_NAME
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            lock_evidence_root(fd, root)
            if created:
                fsync_dir(root)
            size = os.fstat(fd).st_size
            end, last_line = _read_last_line(fd, size)
            device_id = device_id_for_pem(signer.public_key_pem())
            if last_line:
                try:
                    last = records.parse_line(last_line)
                except MalformedLine as exc:
                    raise JournalCorrupt(
                        f"{path}: last whole line (ending at byte {end}) is malformed: {exc}") from None
                if last.device != device_id:
                    raise JournalCorrupt(
                        f"{path} belongs to device {last.device}, not {device_id}")
                next_seq, head = last.seq + 1, last.hash
            else:
                next_seq, head = 0, GENESIS_PREV
            journal = cls(root, fd, signer, wall_clock, monotonic_ns,
                          session or str(uuid.uuid4()), next_seq, head, end)
        except BaseException:
            os.close(fd)
            raise
        pending = journal._quarantine_unrecorded(end)
        if end != size:
            pending.append(journal._quarantine_tail(fd, end, size))
        for rel, digest, nbytes, offset in pending:
            rec = journal.append(records.JOURNAL_RECOVERED, {
                "cause": "torn-tail", "offset": offset,
                "attachments": [records.file_attestation(rel, digest, nbytes, "journal-torn-tail")],
            })
            journal.recoveries.append(rec)
            log.warning("journal: recovered %d torn bytes at offset %d into %s (record %d)",
                        nbytes, offset, rel, rec.seq)
        return journal

    def _quarantine_tail(self, fd: int, end: int, size: int) -> tuple[str, str, int, int]:
        """Copy bytes [end, size) to a quarantine file (durably), then truncate the journal (``fd``)."""
        torn = os.pread(fd, size - end, end)
        digest = hashlib.sha256(torn).hexdigest()
        qdir = self.root / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        name = f"journal-torn-at-{end}-{digest[:16]}.bin"
        qpath = qdir / name
        if qpath.exists():
            if hashlib.sha256(qpath.read_bytes()).hexdigest() != digest:
                raise JournalCorrupt(f"{qpath} exists with different content; not replacing it")
        else:
            tmp = qdir / (name + ".tmp")
            qfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
            try:
                _write_all(qfd, torn)
                os.fsync(qfd)
            finally:
                os.close(qfd)
            os.rename(tmp, qpath)
            fsync_dir(qdir)
            fsync_dir(self.root)
        os.ftruncate(fd, end)
        os.fsync(fd)
        return f"{QUARANTINE_DIR}/{name}", digest, len(torn), end

    def _quarantine_unrecorded(self, end: int) -> list[tuple[str, str, int, int]]:
        """Quarantine files saved by an earlier open that died before journaling them.

        Such a file was torn at exactly the current end of the journal (a record for
        it would have moved the end), so its offset names it.
        """
        qdir = self.root / QUARANTINE_DIR
        found: list[tuple[str, str, int, int]] = []
        if not qdir.is_dir():
            return found
        for p in sorted(qdir.iterdir()):
            if p.name.endswith(".tmp"):
                log.error("journal: incomplete quarantine copy %s left in place", p)
                continue
            m = _QUARANTINE_RE.match(p.name)
            if m and int(m.group(1)) == end:
                data = p.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest.startswith(m.group(2)):
                    found.append((f"{QUARANTINE_DIR}/{p.name}", digest, len(data), end))
        return found

    # ---- appending -----------------------------------------------------
    @property
    def head(self) -> tuple[int, str]:
        """(sequence number, line hash) of the last record; (-1, zeros) when empty."""
        with self._lock:
            return self._next_seq - 1, self._head_hash

    def append(self, type: str, payload: dict[str, Any] | None = None,
               sample: TimeSample | None = None) -> Record:
        """Sign and durably append one record; returns it once it is on disk.

        ``sample`` is the wall/monotonic time the record describes; by default
        the time of the call. Raises ValueError for a bad type or payload and
        JournalWriteFailed if the disk refuses (the journal is then unchanged).
        """
        with self._lock:
            record = self._sign_next(type, payload, sample)
            self._write(record)
        log.debug("journal: %s #%d", type, record.seq)
        return record

    def prepare(self, type: str, payload: dict[str, Any] | None = None,
                sample: TimeSample | None = None) -> Record:
        """Sign the next record without writing it; ``write_prepared`` appends it later.

        For a writer that must first keep the signed line in another store in the same
        transaction as the change it attests (the station's catalogue is such an outbox):
        the line is then either in both places or can be copied from there on the next
        open. Nothing else may be appended in between (the caller holds its own lock).
        """
        with self._lock:
            return self._sign_next(type, payload, sample)

    def write_prepared(self, record: Record) -> None:
        """Durably append a record made by ``prepare`` (or parsed from a kept copy of its line).

        JournalError unless it is exactly the next record (its seq and prev follow the head)
        and signed by this journal's key; JournalWriteFailed if the disk refuses.
        """
        with self._lock:
            if record.seq != self._next_seq or record.prev != self._head_hash:
                raise JournalError(f"record #{record.seq} does not follow the head "
                                   f"#{self._next_seq - 1} of {self.path}")
            if record.device != self.device_id:
                raise JournalError(f"record #{record.seq} is of {record.device}, not {self.device_id}")
            self._write(record)

    def _sign_next(self, type: str, payload: dict[str, Any] | None, sample: TimeSample | None) -> Record:
        if self._fd is None:
            raise JournalClosed(f"{self.path} is closed")
        if sample is None:
            sample = self._clock.at(self._monotonic_ns())
        message = records.build_message(
            seq=self._next_seq, prev=self._head_hash, device=self.device_id,
            session=self.session, sample=sample, type=type, payload={} if payload is None else payload)
        signature = self._signer.sign(message)
        return Record(json.loads(message), message, signature, records.format_line(message, signature))

    def _write(self, record: Record) -> None:
        """Write, fsync and advance the head (caller holds the lock)."""
        fd = self._fd
        if fd is None:
            raise JournalClosed(f"{self.path} is closed")
        line = record.line
        try:
            crashpoint("journal-write", lambda: _write_all(fd, line[:len(line) // 2]))
            _write_all(fd, line)
            crashpoint("journal-fsync")
            os.fsync(fd)
        except OSError as exc:
            self._roll_back(fd, exc)
            raise JournalWriteFailed(f"could not append {record.type} record: {exc}") from exc
        self._next_seq += 1
        self._head_hash = records.line_hash(line)
        self._size += len(line)

    def _roll_back(self, fd: int, exc: OSError) -> None:
        """Cut a partly written line back off (``fd``) so the next append starts on a clean line."""
        try:
            os.ftruncate(fd, self._size)
            os.fsync(fd)
        except OSError:
            log.error("journal: could not roll back a failed append (%s); "
                      "the torn line will be quarantined at next open", exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -------------------------------------------------------
    def records(self) -> Iterator[Record]:
        """Parse the journal from the start (structure only; use recorder.verify to check)."""
        return iter_records(self.path)


def last_record(path: Path | str) -> Record | None:
    """The last whole record of a journal file (None if there is none), read from the end."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        _, line = _read_last_line(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return records.parse_line(line) if line else None


def iter_records(path: Path | str) -> Iterator[Record]:
    """Parse every whole line of a journal file; MalformedLine on the first bad one."""
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return  # torn tail: recovered at next open, reported by the verifier
            yield records.parse_line(line)
