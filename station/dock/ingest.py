"""One docking: pull, verify with ``recorder.verify``, store, name, ledger, receipt (S1, S3, S9, D11).

Store layout (``store_dir``)::

    station.sqlite                        the catalogue (default; or PostgreSQL): registry, ledger, ...
    audit/journal.log                     the station's audit journal (station.audit.trail)
    devices/<device_id>/mirror/           the device's evidence as verified (journal + attested files)
    devices/<device_id>/partial/          downloads in progress (resumed with HTTP Range)
    recordings/<S3 name>/<S3 name>_<index>.ts    the named view (hard links into the mirror)
    quarantine/<device_id>/<time>/        what failed verification, with REPORT.txt and report.json

The candidate directory (old mirror + new files + new journal) is verified with
``verify_directory(..., anchor=<head verified last time>, collect_file_failures=True)``:

* the journal itself (signatures, chain, sequence, anchor, media continuity of the
  records, no unattested file) is all or nothing: any failure there quarantines the
  whole docking (status ``quarantined``), nothing is stored and no receipt is sent, so
  the device purges nothing. A broken journal is not partially trustworthy.
* an attested file that is missing or differs in size or SHA-256 while the journal is
  sound is quarantined *alone* (status ``partial``): its bytes as received go to
  ``quarantine/<device>/<time>/files/``, with the report (reason class, expected and
  found size and SHA-256) and a ``quarantined_files`` ledger row; the journal and every
  intact file are stored; the receipt names only files in the mirror, so the device
  keeps the damaged one (it is fetched and checked again at every docking).

Speed, and exactly what the verification trusts to get it:

* downloads are written by a thread of the link client (``DeviceClient.fetch(wait=False)``),
  so network and disk overlap; after a file's last byte that thread fsyncs it, then reads
  it back *from disk* and hashes it while the next file downloads. The verifier takes that
  digest instead of reading the file a second time only while the file is the same inode
  with the same size and mtime (``recorder.verify.KnownDigest``), i.e. it still checks the
  bytes on disk, just earlier.
* the old mirror is not hashed again at every docking: each commit writes
  ``devices/<id>/mirror-index.json`` (path -> inode, size, mtime, the SHA-256 just
  verified); the next docking takes a mirror file's digest from it while the file is still
  that inode, unchanged. This trusts the station's own store between dockings (read-only
  files, hard links) and that a write to a file moves its mtime. A file changed with its
  mtime put back (root, deliberately) is not seen at docking; ``station verify --files``
  re-hashes every stored segment against the catalogue and finds it (run it periodically).
  A missing or stale index only costs the hashing.

Several devices dock at once, each in its own ``station dock`` process (one per USB link,
deploy/station/station-dock@.service): ``devices/<id>/dock.lock`` keeps one docking per
device, the catalogue sees each docking's ``ingest`` as one transaction (SQLite queues the
writers, the audit trail's lock serialises the actions), and nothing else is shared. A
docking whose process died (kill -9, power cut, database gone) is closed as
``interrupted`` by the next docking of the device (``Ledger.check_in(close_stale=True)``),
which also clears its leftovers (``_recover``); named crash points
(``BODYCAM_CRASHPOINT=dock-fetched|dock-mirror-swapped|dock-committed|dock-catalogued|
dock-receipted``, common/crashpoints.py) let the tests kill it exactly there.

A shared catalogue (PostgreSQL) that cannot be reached does not stop a docking: every
step that needs it goes through ``station.dock.offline.Book``, which falls back to this
station's signed spool (``station.dock.spool``; crash points ``dock-spooled``,
``spool-replayed``); the receipt still goes out only once the evidence is durable and
verified here. ``station sync`` and the next docking replay the spool into the catalogue.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, cast

from common.crashpoints import crashpoint
from recorder import dock_protocol as protocol
from recorder import receipt as receipt_mod
from recorder import records
from recorder.journal import JOURNAL_NAME
from recorder.records import MalformedLine
from recorder.verify import KnownDigest, VerificationFailure, verify_directory
from station.app import Station
from station.device_lock import DeviceLocked, device_lock
from station.dock import pki
from station.dock.catalogue import ingest_rows, link_or_copy
from station.dock.ledger import STATION_ACTOR, Ledger
from station.dock.link import DeviceClient, DeviceProtocolError, FileSizeDiffers, LinkError, LinkInterrupted
from station.dock.offline import Book, known_key
from station.dock.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class DockReport:
    status: str                      # ok | partial | quarantined | interrupted | refused
    device_id: str                   # the device docked (connected and pinned)
    docking_id: int                  # its ledger row
    detail: str = ""
    head: tuple[int, str] | None = None
    files_new: int = 0
    bytes_new: int = 0
    bytes_resumed: int = 0
    purged: list[str] = field(default_factory=list)
    receipt_refused: str | None = None
    quarantine_dir: Path | None = None
    named: list[str] = field(default_factory=list)
    quarantined_files: list[dict[str, Any]] = field(default_factory=list)   # status partial: what failed, per file
    spooled: list[int] = field(default_factory=list)   # catalogue unreachable: its spool records (dock.spool)


def _parse_journal(data: bytes) -> list[records.Record]:
    out = []
    for line in data.splitlines(keepends=True):
        try:
            out.append(records.parse_line(line))
        except MalformedLine:
            break            # the verifier names it; nothing after it is trusted
    return out


_link = link_or_copy


class DeviceBusy(LinkInterrupted):
    """Another ``station dock`` process of this store is docking the same device right now, or a
    purge is removing its files (try again when it is done: exit 75, like an interrupted docking)."""


@contextlib.contextmanager
def _device_lock(dev_dir: Path, device_id: str) -> Iterator[None]:
    """One docking per device at a time (several devices dock at once, each in its own process),
    and none while a purge removes that device's files: ``station.device_lock``, held for the
    whole docking."""
    try:
        with device_lock(dev_dir):
            yield
    except DeviceLocked:
        raise DeviceBusy(f"device {device_id} is being docked by another process of this station, or a purge "
                         "of its recordings is running") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    C library or the file system does not offer it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(dev_dir: Path) -> None:
    """Clean up after a docking of this device that died (under the device's lock).

    A crash inside ``_commit`` between its two renames leaves no ``mirror/`` but an ``old-*``
    (the previous mirror): it is put back. Candidates and old mirrors left over otherwise hold
    only hard links (the data lives in ``mirror/`` or ``partial/``) and a journal copy.
    """
    mirror = dev_dir / "mirror"
    olds = sorted(dev_dir.glob("old-candidate-*"))
    if not mirror.exists() and olds:
        os.rename(olds[-1], mirror)
        log.warning("%s: restored the mirror from %s (a docking died while committing)", dev_dir, olds[-1].name)
        olds = olds[:-1]
    for d in olds + sorted(dev_dir.glob("candidate-*")):
        log.warning("%s: removing %s left by a docking that died", dev_dir, d.name)
        shutil.rmtree(d, ignore_errors=True)


def _keep_device_certificate(dev_dir: Path, der: bytes | None) -> None:
    """Keep the agency certificate the device presented (its key is the pinned evidence key)
    as ``devices/<id>/device-cert.pem``, so an export can hand it over (S7). Best effort."""
    if der is None:
        return
    import ssl
    pem = ssl.DER_cert_to_PEM_cert(der).encode("ascii")
    path = dev_dir / "device-cert.pem"
    try:
        if path.is_file() and path.read_bytes() == pem:
            return
        dev_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not keep the device certificate in %s: %s", dev_dir, exc)


class Docking:
    def __init__(self, st: Station, progress: bool | None = None) -> None:
        self.st = st
        self.cfg = st.cfg
        self.ledger = Ledger(st)
        self.progress = progress
        d = st.cfg.dock
        self.client = DeviceClient(d.device_address, d.port, d.ca_file, d.cert_file, d.key_file,
                                   known_key(st, self.ledger), d.timeout_s)
        self.dock_cert_pem = Path(d.cert_file).read_bytes()
        self.dock_key = pki.load_key(Path(d.key_file))

    def wait_for_device(self, wait_s: float) -> str:
        """Connect to the configured device address, retrying while the link is not up yet."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.client.connect()
            except LinkInterrupted:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def run(self, wait_s: float = 0.0) -> DockReport:
        try:
            device_id = self.wait_for_device(wait_s)   # DeviceRefused propagates: nothing read
            dev_dir = self.cfg.store / "devices" / device_id
            dev_dir.mkdir(parents=True, exist_ok=True)
            with _device_lock(dev_dir, device_id):
                _recover(dev_dir)
                _keep_device_certificate(dev_dir, self.client.device_cert_der)
                return self._run(device_id, dev_dir)
        finally:
            self.client.shutdown()

    def _run(self, device_id: str, dev_dir: Path) -> DockReport:
        # this process holds the device's lock: an in-progress docking of the device is one
        # whose process died (kill -9, power cut, database gone); check_in closes it as interrupted
        # (the catalogue unreachable: the docking goes on, spooled on this station; station.dock.offline)
        self.book = Book(self.st, self.ledger, device_id, dev_dir)
        docking = self.book.check_in()
        report = DockReport("in-progress", device_id, docking)
        self._records: int | None = None
        try:
            self._push_crl()
            self._offload(dev_dir, report)
        except LinkInterrupted as exc:
            report.status, report.detail = "interrupted", str(exc)
        except (DeviceProtocolError, LinkError) as exc:
            report.status, report.detail = "refused", str(exc)
        except BaseException as exc:
            # the store or the catalogue failed (disk full, database gone): nothing was receipted
            # unless the report says so; the error goes to the caller, the docking is closed as failed
            report.status, report.detail = "failed", f"{type(exc).__name__}: {exc}"
            try:
                self._check_out(docking, report)
            except Exception as again:   # the catalogue is what failed: the next docking closes it
                log.error("device %s: docking %d not closed in the catalogue (%s); the next docking of "
                          "this device closes it", device_id, docking, again)
            raise
        self._check_out(docking, report)
        return report

    def _check_out(self, docking: int, report: DockReport) -> None:
        self.book.check_out(docking, report.status, report.detail, bytes_new=report.bytes_new,
                            bytes_resumed=report.bytes_resumed, files_new=report.files_new,
                            purged=len(report.purged), records=self._records)
        report.spooled = list(self.book.spooled)

    # ---- the steps -----------------------------------------------------------------------
    def _push_crl(self) -> None:
        """Refresh the device's CRL with the agency's current one (first thing at each docking)."""
        path = Path(self.cfg.dock.crl_file) if self.cfg.dock.crl_file else None
        if path is None:
            return
        try:
            crl = path.read_bytes()
        except OSError as exc:
            log.warning("no CRL to push to the device (%s): %s", path, exc)
            return
        status, answer = self.client.push_crl(crl)
        if isinstance(answer, protocol.CrlRefusal):
            log.error("the device did not take the CRL %s: %s", path, answer.to_dict())
    def _offload(self, dev_dir: Path, report: DockReport) -> None:
        c = self.client
        manifest = c.manifest()
        mirror, partial = dev_dir / "mirror", dev_dir / "partial"
        on_device = {f.path: f.size for f in manifest.files}   # safe paths: checked by the parse
        jsize = manifest.journal.size

        journal_part = partial / JOURNAL_NAME
        if journal_part.exists() and journal_part.stat().st_size > jsize:
            journal_part.unlink()
        # the journal and the new files, resumed from whatever an earlier cut left
        journal_bytes_needed = jsize - (journal_part.stat().st_size if journal_part.exists() else 0)
        bar = Progress(journal_bytes_needed, "journal", enabled=self.progress)
        got, had = c.fetch(JOURNAL_NAME, journal_part, jsize, bar.advance)
        c.drain()                 # the journal is on disk before it is read
        bar.finish()
        report.bytes_new += got
        report.bytes_resumed += had if got else 0
        recs = _parse_journal(journal_part.read_bytes())
        attested: dict[str, dict[str, Any]] = {}
        for rec in recs:
            try:
                for f in records.attested_files(rec):
                    attested.setdefault(f["path"], f)
            except MalformedLine:
                break
        purged = self.book.purged()   # S11: what the station purged stays purged
        needed = [(p, f) for p, f in attested.items()
                  if not (mirror / p).is_file() and p in on_device and p not in purged]
        total = sum(f["size"] - ((partial / p).stat().st_size if (partial / p).exists() else 0)
                    for p, f in needed)
        bar = Progress(total, "segments", enabled=self.progress)
        for p, f in needed:
            try:
                got, had = c.fetch(p, partial / p, f["size"], bar.advance, wait=False)
            except FileSizeDiffers as exc:
                # truncated or grown on the device: take what it has, so the verifier names the
                # size mismatch and the quarantine holds those bytes (it never reaches the receipt)
                log.error("device %s: %s", report.device_id, exc)
                got, had = c.fetch(p, partial / p, exc.found, bar.advance)
            report.bytes_new += got
            report.bytes_resumed += had
            report.files_new += 1
        fetched = c.drain()       # every byte on disk (fsynced); SHA-256 of each file read back from disk
        bar.finish()
        crashpoint("dock-fetched")

        # candidate = old mirror + new files + new journal; verified as a whole
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
        cand = dev_dir / f"candidate-{stamp}"
        cand.mkdir(parents=True)
        index = _load_mirror_index(dev_dir)
        known: dict[str, KnownDigest] = {}
        for p in attested:
            if p in purged:
                continue            # never fetched again nor kept (a purge killed mid-way leaves some)
            src = mirror / p if (mirror / p).is_file() else partial / p
            if src.is_file():
                _link(src, cand / p)
                digest = index.get(p) if src == mirror / p else fetched.get(str(src))
                if digest is not None:
                    known[p] = digest
        shutil.copyfile(journal_part, cand / JOURNAL_NAME)
        anchor = self.book.anchor()
        device_pem = cast(bytes, c.device_pem)   # pinned by connect() (wait_for_device)
        # files already read from disk (this docking's, as they were written; the old mirror's, at
        # the docking that stored them) are not read again while they are the same inode,
        # unchanged (recorder.verify.KnownDigest; module docstring: what this trusts)
        result = verify_directory(cand, device_pem, anchor=anchor, collect_file_failures=True,
                                  known_digests=known)
        result.file_failures = purged.excuse(result.file_failures, attested)   # tombstone: same hash, size
        self._records = result.records
        damaged = [_describe(cand, f, attested, recs, on_device) for f in result.file_failures]
        if result.failure is not None:
            self._quarantine(cand, partial, report, result.failure, damaged)
            return
        head = result.head
        if head is None:   # an empty journal verifies when there is no anchor yet; nothing to keep
            shutil.rmtree(cand, ignore_errors=True)
            raise DeviceProtocolError("the device's journal is empty: nothing to store or receipt")
        if damaged:
            self._quarantine_files(cand, damaged, report)
        self._commit(cand, mirror, partial)
        _write_mirror_index(dev_dir, mirror, attested)
        crashpoint("dock-committed")
        report.head = head
        self.book.ingest(lambda: self._catalogue(mirror, recs, report, head, damaged, result.records,
                                                 stored={p for p in attested if (mirror / p).is_file()}),
                         head_seq=head[0], head_hash=head[1], anchor_seq=anchor[0] if anchor else None,
                         records=result.records, files_new=report.files_new, bytes_new=report.bytes_new,
                         bytes_resumed=report.bytes_resumed, damaged=damaged,
                         quarantine_dir=str(report.quarantine_dir) if report.quarantine_dir else None)
        crashpoint("dock-catalogued")
        self._send_receipts(mirror, attested, on_device, head, report)
        if damaged:
            report.status = "partial"
            report.detail = (f"{len(damaged)} file(s) failed verification and were quarantined in "
                             f"{report.quarantine_dir}; they stay on the device: " + "; ".join(
                                 f"{d['path']} ({d['reason']})" for d in damaged))
            log.error("device %s: %s", report.device_id, report.detail)
        else:
            report.status = "ok"

    def _quarantine(self, cand: Path, partial: Path, report: DockReport, failure: VerificationFailure,
                    damaged: list[dict[str, Any]]) -> None:
        """The journal itself failed: the whole docking is quarantined, nothing stored, no receipt."""
        qdir = self.cfg.store / "quarantine" / report.device_id / cand.name.removeprefix("candidate-")
        qdir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(cand, qdir)
        text = (f"device {report.device_id}\ndocking {report.docking_id}\nverification failed: {failure}\n"
                "scope: the WHOLE docking. The journal itself (signature, chain, sequence, anchor or "
                "continuity of its records) failed: a broken journal is not partially trustworthy, so "
                "nothing was stored as evidence and no receipt was sent; the device keeps everything.\n")
        if damaged:
            text += "files that also failed before the journal check stopped:\n" + _file_lines(damaged)
        (qdir / "REPORT.txt").write_text(text, encoding="utf-8")
        _write_json(qdir / "report.json", {
            "device": report.device_id, "docking": report.docking_id, "scope": "docking",
            "failure": _failure_dict(failure), "files": damaged})
        shutil.rmtree(partial, ignore_errors=True)   # the bytes are kept in the quarantine copy
        report.status, report.detail, report.quarantine_dir = "quarantined", str(failure), qdir
        log.error("device %s quarantined in %s: %s", report.device_id, qdir, failure)

    def _quarantine_files(self, cand: Path, damaged: list[dict[str, Any]], report: DockReport) -> None:
        """The journal is sound but some attested files are not: move just those out of the candidate."""
        qdir = self.cfg.store / "quarantine" / report.device_id / cand.name.removeprefix("candidate-")
        (qdir / "files").mkdir(parents=True, exist_ok=True)
        for d in damaged:
            src = cand / d["path"]
            if src.is_file() and not src.is_symlink():
                dst = qdir / "files" / d["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dst)
                os.chmod(dst, 0o444)
                d["quarantined_copy"] = f"files/{d['path']}"
            d["quarantine_dir"] = str(qdir)
        (qdir / "REPORT.txt").write_text(
            f"device {report.device_id}\ndocking {report.docking_id}\n"
            f"scope: {len(damaged)} FILE(S). The journal verified (signatures, chain, sequence, anchor, "
            "continuity); the files below did not. They were not stored as evidence and are not in the "
            "receipt: the device keeps them. Every other file was stored and receipted.\n"
            + _file_lines(damaged)
            + "next: dock the device again (the files are fetched and verified again); if the failure "
              "repeats, the copy on the device is damaged: escalate (see docs/docking.md).\n",
            encoding="utf-8")
        _write_json(qdir / "report.json", {"device": report.device_id, "docking": report.docking_id,
                                           "scope": "files", "failure": None, "files": damaged})
        report.quarantine_dir, report.quarantined_files = qdir, damaged

    @staticmethod
    def _commit(cand: Path, mirror: Path, partial: Path) -> None:
        for dirpath, _, files in os.walk(cand):
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o444)
        if not mirror.exists():
            os.rename(cand, mirror)
        elif _exchange(cand, mirror):    # one atomic step: there is always a whole mirror
            crashpoint("dock-mirror-swapped")
            shutil.rmtree(cand)          # now the old mirror: only links, the data lives on in the new one
        else:                            # no renameat2 here: two renames (``_recover`` mends a crash between)
            old = mirror.with_name(f"old-{cand.name}")
            os.rename(mirror, old)
            crashpoint("dock-mirror-swapped")
            os.rename(cand, mirror)
            shutil.rmtree(old)
        _fsync_dir(mirror.parent)
        shutil.rmtree(partial, ignore_errors=True)

    def _catalogue(self, mirror: Path, recs: list[records.Record], report: DockReport, head: tuple[int, str],
                   damaged: list[dict[str, Any]], n_records: int, stored: set[str]) -> None:
        """The docking's one ``ingest`` action: one transaction, one audit record.

        Head (the next docking's anchor), the files quarantined and those a re-docking
        brought intact, the recordings with their segments and interruptions, the S3-named
        view (hard links; a quarantined segment leaves NAME_<index>.DAMAGED.txt).
        """
        with self.st.trail.action("ingest", actor=STATION_ACTOR, subject=f"docking:{report.docking_id}",
                                  device=report.device_id, head_seq=head[0], head_hash=head[1],
                                  files_new=report.files_new, bytes_new=report.bytes_new) as ch:
            docking = self.ledger.docking(ch, report.docking_id)
            docking.head_seq, docking.head_hash, docking.records = head[0], head[1], n_records
            report.named = ingest_rows(ch, self.cfg, device_id=report.device_id, docking=docking, mirror=mirror,
                                       recs=recs, damaged=damaged, stored=stored,
                                       quarantine_dir=report.quarantine_dir, now_ns=self.st.now_ns())
            ch.details["recordings"] = len(report.named)

    def _send_receipts(self, mirror: Path, attested: dict[str, dict[str, Any]], on_device: dict[str, int],
                       head: tuple[int, str], report: DockReport) -> None:
        files = [receipt_mod.ReceiptFile(p, f["sha256"], f["size"]) for p, f in attested.items()
                 if p in on_device and (mirror / p).is_file()]
        # the device purges only files served in full in the receipt's TLS session: those fetched
        # in an earlier docking, resumed after a cut, or fetched before a reconnect are read again
        # (and must still be what was verified); a file that is not is left out of the receipt
        for f in list(files):
            if f.path not in self.client.served and not self.client.reread(f.path, f.sha256, f.size):
                log.error("device %s: %s is no longer what was verified; not receipted",
                          report.device_id, f.path)
                files.remove(f)
        for i in range(0, len(files), receipt_mod.MAX_RECEIPT_FILES):
            chunk = tuple(files[i:i + receipt_mod.MAX_RECEIPT_FILES])
            nonce = self.client.manifest().nonce
            dock_id = receipt_mod.dock_id_for_cert(pki.load_cert(Path(self.cfg.dock.cert_file)))
            r = receipt_mod.Receipt(
                device=report.device_id, dock=dock_id,
                nonce=nonce, counter=self.book.next_receipt_counter(),
                issued_wall_ns=time.time_ns(), head_seq=head[0], head_hash=head[1], files=chunk)
            wire = receipt_mod.sign_receipt(r, self.dock_key, self.dock_cert_pem)
            status, answer = self.client.send_receipt(wire)
            crashpoint("dock-receipted")
            self.book.add_receipt(device_id=report.device_id, docking_id=report.docking_id,
                                    counter=r.counter, nonce=nonce, head_seq=head[0], head_hash=head[1],
                                    files=len(chunk), bytes=sum(f.size for f in chunk),
                                    sent_ns=r.issued_wall_ns, response=_answer_json(answer.to_dict()))
            if not isinstance(answer, protocol.ReceiptAccepted):
                report.receipt_refused = answer.refused
                log.error("device refused the receipt: %s", answer.to_dict())
                return
            report.purged += list(answer.removed)


# ---- reports -------------------------------------------------------------------------------
MAX_RESPONSE_CHARS = 65536


def _answer_json(answer: dict[str, Any]) -> str:
    """The device's answer to a receipt as JSON for the ledger (always valid JSON, bounded)."""
    text = json.dumps(answer, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_RESPONSE_CHARS:
        text = json.dumps({"truncated": True, "chars": len(text),
                           "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                           "accepted": answer.get("accepted"), "refused": answer.get("refused"),
                           "removed_count": len(answer.get("removed", []) or [])}, sort_keys=True)
    return text


def _failure_dict(f: VerificationFailure) -> dict[str, Any]:
    return {"reason": f.reason, "message": str(f), "seq": f.seq, "line_no": f.line_no, "file": f.file,
            "expected": f.expected if isinstance(f.expected, (str, int, type(None))) else repr(f.expected),
            "found": f.found if isinstance(f.found, (str, int, type(None))) else repr(f.found)}


def _describe(cand: Path, failure: VerificationFailure, attested: dict[str, dict[str, Any]],
              recs: list[records.Record], on_device: dict[str, int]) -> dict[str, Any]:
    """One failed file: reason class, expected (journal) and found (as received) size and SHA-256."""
    rel = failure.file or ""
    att = attested.get(rel, {})
    seg = next((r.payload for r in recs if r.type == records.SEGMENT and r.payload.get("path") == rel), {})
    path = cand / rel
    found_size = found_sha = None
    if rel and path.is_file() and not path.is_symlink():
        found_size = path.stat().st_size
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        found_sha = h.hexdigest()
    return {"path": rel, "reason": failure.reason, "detail": str(failure), "seq": failure.seq,
            "recording_id": seg.get("recording_id"), "seg_index": seg.get("index"),
            "role": att.get("role", "file"), "expected_size": att.get("size"),
            "expected_sha256": att.get("sha256"), "found_size": found_size, "found_sha256": found_sha,
            "on_device": rel in on_device}


def _file_lines(damaged: list[dict[str, Any]]) -> str:
    out = []
    for d in damaged:
        where = (f" (recording {d['recording_id']}, segment {d['seg_index']})"
                 if d.get("recording_id") is not None else "")
        out.append(f"  {d['path']}{where}: {d['reason']}\n"
                   f"    expected size {d['expected_size']} sha256 {d['expected_sha256']}\n"
                   f"    found    size {d['found_size']} sha256 {d['found_sha256']}"
                   f"{'' if d['on_device'] else '  (not offered by the device)'}\n")
    return "".join(out)


MIRROR_INDEX = "mirror-index.json"


def _load_mirror_index(dev_dir: Path) -> dict[str, KnownDigest]:
    """What the last commit verified in the mirror (``_write_mirror_index``); {} if unreadable."""
    try:
        doc = json.loads((dev_dir / MIRROR_INDEX).read_text(encoding="utf-8"))
        return {p: KnownDigest(*v) for p, v in doc["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_mirror_index(dev_dir: Path, mirror: Path, attested: dict[str, dict[str, Any]]) -> None:
    """After a commit: each file of the mirror (every one verified against its attested SHA-256
    just now) with its inode identity, so the next docking does not hash the whole history again.
    Written atomically; a crash before it leaves the old index, whose entries no longer match
    and are simply hashed again."""
    files: dict[str, list[Any]] = {}
    for p, f in attested.items():
        try:
            st = os.stat(mirror / p)
        except OSError:
            continue
        if st.st_size == f["size"]:
            k = KnownDigest.of_stat(st, f["sha256"])
            files[p] = [k.dev, k.ino, k.size, k.mtime_ns, k.sha256]
    tmp = dev_dir / (MIRROR_INDEX + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump({"files": files}, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dev_dir / MIRROR_INDEX)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
