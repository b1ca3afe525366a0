"""One docking: pull, verify with ``recorder.verify``, store, name, ledger, receipt (S1, S3, S9, D11).

Store layout (``store_dir``)::

    ledger.sqlite                         registry + usage ledger
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
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from dockstation import naming, pki
from dockstation.config import DockStationConfig
from dockstation.ledger import Ledger
from dockstation.link import DeviceClient, DeviceProtocolError, FileSizeDiffers, LinkError, LinkInterrupted
from dockstation.progress import Progress
from recorder import dock_protocol as protocol
from recorder import receipt as receipt_mod
from recorder import records
from recorder.journal import JOURNAL_NAME
from recorder.records import MalformedLine
from recorder.verify import VerificationFailure, verify_directory

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


def _parse_journal(data: bytes) -> list[records.Record]:
    out = []
    for line in data.splitlines(keepends=True):
        try:
            out.append(records.parse_line(line))
        except MalformedLine:
            break            # the verifier names it; nothing after it is trusted
    return out


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class Docking:
    def __init__(self, cfg: DockStationConfig, ledger: Ledger, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.progress = progress
        self.client = DeviceClient(cfg.device_address, cfg.port, cfg.ca_file, cfg.cert_file, cfg.key_file,
                                   ledger.pubkey, cfg.timeout_s)
        self.dock_cert_pem = Path(cfg.cert_file).read_bytes()
        self.dock_key = pki.load_key(Path(cfg.key_file))

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
        device_id = self.wait_for_device(wait_s)   # DeviceRefused propagates: nothing read
        dev_dir = self.cfg.store / "devices" / device_id
        docking = self.ledger.check_in(device_id, (self.ledger.device(device_id) or {}).get("officer_id"))
        report = DockReport("in-progress", device_id, docking)
        try:
            self._push_crl()
            self._offload(dev_dir, report)
        except LinkInterrupted as exc:
            report.status, report.detail = "interrupted", str(exc)
        except (DeviceProtocolError, LinkError) as exc:
            report.status, report.detail = "refused", str(exc)
        finally:
            self.client.close()
            self.ledger.update(docking, bytes_new=report.bytes_new, bytes_resumed=report.bytes_resumed,
                               files_new=report.files_new, purged=len(report.purged))
            self.ledger.check_out(docking, report.status, report.detail)
        return report

    # ---- the steps -----------------------------------------------------------------------
    def _push_crl(self) -> None:
        """Refresh the device's CRL with the agency's current one (first thing at each docking)."""
        path = Path(self.cfg.crl_file) if self.cfg.crl_file else None
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
        needed = [(p, f) for p, f in attested.items()
                  if not (mirror / p).is_file() and p in on_device]
        total = sum(f["size"] - ((partial / p).stat().st_size if (partial / p).exists() else 0)
                    for p, f in needed)
        bar = Progress(total, "segments", enabled=self.progress)
        for p, f in needed:
            try:
                got, had = c.fetch(p, partial / p, f["size"], bar.advance)
            except FileSizeDiffers as exc:
                # truncated or grown on the device: take what it has, so the verifier names the
                # size mismatch and the quarantine holds those bytes (it never reaches the receipt)
                log.error("device %s: %s", report.device_id, exc)
                got, had = c.fetch(p, partial / p, exc.found, bar.advance)
            report.bytes_new += got
            report.bytes_resumed += had
            report.files_new += 1
        bar.finish()

        # candidate = old mirror + new files + new journal; verified as a whole
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
        cand = dev_dir / f"candidate-{stamp}"
        cand.mkdir(parents=True)
        for p in attested:
            src = mirror / p if (mirror / p).is_file() else partial / p
            if src.is_file():
                _link(src, cand / p)
        shutil.copyfile(journal_part, cand / JOURNAL_NAME)
        anchor = self.ledger.last_anchor(report.device_id)
        device_pem = cast(bytes, c.device_pem)   # pinned by connect() (wait_for_device)
        result = verify_directory(cand, device_pem, anchor=anchor, collect_file_failures=True)
        self.ledger.update(report.docking_id, records=result.records)
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
        report.head = head
        self.ledger.update(report.docking_id, head_seq=head[0], head_hash=head[1])
        self.ledger.resolve_quarantined_files(report.device_id, report.docking_id,
                                              [p for p in attested if (mirror / p).is_file()])
        self._catalogue(mirror, recs, report)
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
        for d in damaged:
            self.ledger.add_quarantined_file(device_id=report.device_id, docking_id=report.docking_id,
                                             quarantine_dir=str(qdir), **{k: d.get(k) for k in (
                                                 "path", "recording_id", "seg_index", "reason",
                                                 "expected_sha256", "expected_size", "found_sha256",
                                                 "found_size", "detail")})
        report.quarantine_dir, report.quarantined_files = qdir, damaged

    @staticmethod
    def _commit(cand: Path, mirror: Path, partial: Path) -> None:
        for dirpath, _, files in os.walk(cand):
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o444)
        old = None
        if mirror.exists():
            old = mirror.with_name(f"old-{cand.name}")
            os.rename(mirror, old)
        os.rename(cand, mirror)
        if old is not None:
            shutil.rmtree(old)        # only links: the data lives on in the new mirror
        shutil.rmtree(partial, ignore_errors=True)

    def _catalogue(self, mirror: Path, recs: list[records.Record], report: DockReport) -> None:
        """The S3-named view and the 'what was recorded' rows of the ledger.

        A quarantined segment leaves a hole in the named view, marked by NAME_<index>.DAMAGED.txt
        (continuity is that of the signed records, which verified; the file is what is missing).
        """
        damaged = {d["path"]: d for d in report.quarantined_files}
        officer = (self.ledger.device(report.device_id) or {}).get("officer_id") or None
        segs: dict[str, list[dict[str, Any]]] = {}
        for rec in recs:
            if rec.type == records.BOOT and isinstance(rec.payload.get("officer_id"), str):
                officer = rec.payload["officer_id"]
            if rec.type == records.SEGMENT:
                segs.setdefault(rec.payload["recording_id"], []).append(rec.payload)
        if recs:
            self.ledger.update(report.docking_id, officer_id=officer,
                               used_from_ns=recs[0].message["wall_ns"], used_until_ns=recs[-1].message["wall_ns"])
        for rid, payloads in segs.items():
            start = payloads[0]["wall_start"]["wall_ns"]
            name = self.ledger.recording_name(report.device_id, rid) or naming.evidence_name(
                self.cfg.unit, self.cfg.counterpart_placeholder,
                naming.evidence_date(start, self.cfg.timezone), self.cfg.content_placeholder, rid)
            ndir = self.cfg.store / "recordings" / name
            for p in payloads:
                dst = ndir / f"{name}_{p['index']:05d}.ts"
                note = dst.with_name(dst.name.removesuffix(".ts") + ".DAMAGED.txt")
                if not dst.exists() and (mirror / p["path"]).is_file():
                    _link(mirror / p["path"], dst)
                    note.unlink(missing_ok=True)          # a re-docking brought it intact
                elif p["path"] in damaged:
                    note.parent.mkdir(parents=True, exist_ok=True)
                    note.write_text(f"segment {p['index']} ({p['path']}) failed verification at docking "
                                    f"{report.docking_id}: {damaged[p['path']]['reason']}; see "
                                    f"{report.quarantine_dir}/REPORT.txt. It stays on the device.\n",
                                    encoding="utf-8")
            self.ledger.upsert_recording(
                device_id=report.device_id, recording_id=rid, name=name, unit=self.cfg.unit,
                counterpart=self.cfg.counterpart_placeholder, content=self.cfg.content_placeholder,
                date=name.split("_")[2], officer_id=officer, start_wall_ns=start,
                end_wall_ns=payloads[-1]["wall_end"]["wall_ns"], segments=len(payloads),
                bytes=sum(p["size"] for p in payloads), docking_id=report.docking_id)
            report.named.append(name)

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
            r = receipt_mod.Receipt(
                device=report.device_id, dock=receipt_mod.dock_id_for_cert(pki.load_cert(Path(self.cfg.cert_file))),
                nonce=nonce, counter=self.ledger.next_receipt_counter(report.device_id),
                issued_wall_ns=time.time_ns(), head_seq=head[0], head_hash=head[1], files=chunk)
            wire = receipt_mod.sign_receipt(r, self.dock_key, self.dock_cert_pem)
            status, answer = self.client.send_receipt(wire)
            self.ledger.add_receipt(device_id=report.device_id, docking_id=report.docking_id,
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


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
