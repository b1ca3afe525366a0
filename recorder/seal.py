"""Seals closed segments: read-only, durable, and attested by a signed journal record.

Trust but verify: the pipeline hashes each segment while writing it, but the
sealer re-hashes the file as it is on disk before signing (``rehash=True``, the
default). The record then attests the bytes that are really there. Without it,
a writer bug (a seek-back rewrite, a buffer not flushed, a wrong path) would go
unnoticed until the dock station, where it would look exactly like tampering
with genuine evidence. The cost is one read of a just-written ~5 MB file, which
is still in the page cache, plus SHA-256 (see bench/bench_seal.py); the fsync
that must happen anyway costs more. On a mismatch the record carries both
hashes (``writer_sha256``) and an error is logged; the on-disk hash is sealed.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import time
from pathlib import Path

from common.crashpoints import crashpoint
from recorder import records
from recorder.journal import Journal, fsync_dir
from recorder.records import Record
from recorder.segment_info import SegmentInfo
from recorder.store import EvidenceStore

log = logging.getLogger(__name__)

READ_ONLY_MODE = 0o444
_CHUNK = 256 * 1024


class SealError(Exception):
    """A segment could not be sealed (it stays on disk; salvage seals it at next start)."""


def hash_and_sync(path: Path, rehash: bool = True) -> tuple[str | None, int]:
    """fsync a file and, if asked, hash it on the same descriptor. Returns (sha256|None, size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        digest = None
        if rehash:
            # read into one buffer: a fresh 1 MB bytes per read (and the last one still alive
            # while the next is read) put up to 2 MB on the recorder's peak memory per seal
            h = hashlib.sha256()
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            while n := os.readv(fd, [buf]):
                h.update(view[:n])
            digest = h.hexdigest()
        size = os.fstat(fd).st_size
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest, size


class Sealer:
    """A SegmentSink that seals each segment as soon as the pipeline closes it."""

    def __init__(self, store: EvidenceStore, journal: Journal | None = None,
                 rehash: bool = True) -> None:
        self.store = store
        self.journal = journal or store.journal
        self.rehash = rehash
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=1000)

    def segment_closed(self, info: SegmentInfo) -> Record:
        """Make ``info.path`` read-only and durable, then append its signed record."""
        return self.seal(info)

    def seal(self, info: SegmentInfo) -> Record:
        t0 = time.perf_counter()
        path = Path(info.path)
        rel = self.store.relpath(path)
        if path.name.endswith(".part"):
            raise SealError(f"{rel}: a .part file is not closed; rename it before sealing")
        try:
            os.chmod(path, READ_ONLY_MODE)
            digest, size = hash_and_sync(path, self.rehash)
            fsync_dir(path.parent)
        except OSError as exc:
            raise SealError(f"cannot seal {rel}: {exc}") from exc
        if digest is None:
            digest = info.sha256
        elif info.sha256 and digest != info.sha256:
            log.error("seal: %s on-disk sha256 %s differs from writer's %s; sealing the on-disk bytes",
                      rel, digest, info.sha256)
        payload = records.segment_payload(info, rel, digest, size)
        if info.size != size:
            payload["writer_size"] = info.size
            log.error("seal: %s is %d bytes on disk, writer said %d", rel, size, info.size)
        crashpoint("seal-before-record")
        record = self.journal.append(records.SEGMENT, payload)
        latency = time.perf_counter() - t0
        self.latencies_s.append(latency)
        log.info("sealed %s as record %d (%d bytes) in %.1f ms", rel, record.seq, size, latency * 1e3)
        return record
