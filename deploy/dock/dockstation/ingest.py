"""One docking: pull, verify with ``recorder.verify``, store, name, ledger, receipt (S1, S3, S9, D11).

Store layout (``store_dir``)::

    ledger.sqlite                         registry + usage ledger
    devices/<device_id>/mirror/           the device's evidence as verified (journal + attested files)
    devices/<device_id>/partial/          downloads in progress (resumed with HTTP Range)
    recordings/<S3 name>/<S3 name>_<index>.ts    the named view (hard links into the mirror)
    quarantine/<device_id>/<time>/        a docking whose evidence failed verification, with REPORT.txt

Nothing reaches the mirror, the named view or the device's receipt unless the
whole candidate directory (old mirror + new files + new journal) passes
``verify_directory`` anchored at the head verified last time. A failure is
quarantined and reported, and no receipt is sent, so the device purges nothing.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from recorder import receipt as receipt_mod
from recorder import records
from recorder.journal import JOURNAL_NAME
from recorder.records import MalformedLine
from recorder.verify import verify_directory

from dockstation import naming, pki
from dockstation.config import DockStationConfig
from dockstation.ledger import Ledger
from dockstation.link import DeviceClient, DeviceProtocolError, LinkError, LinkInterrupted
from dockstation.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class DockReport:
    status: str                      # ok | quarantined | interrupted | refused
    device_id: str | None = None
    docking_id: int | None = None
    detail: str = ""
    head: tuple[int, str] | None = None
    files_new: int = 0
    bytes_new: int = 0
    bytes_resumed: int = 0
    purged: list[str] = field(default_factory=list)
    receipt_refused: str | None = None
    quarantine_dir: Path | None = None
    named: list[str] = field(default_factory=list)


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
    def _offload(self, dev_dir: Path, report: DockReport) -> None:
        c = self.client
        manifest = c.manifest()
        mirror, partial = dev_dir / "mirror", dev_dir / "partial"
        on_device = {f["path"]: f["size"] for f in manifest.get("files", [])
                     if isinstance(f, dict) and records.safe_relpath(f.get("path"))}
        jsize = int(manifest["journal"]["size"])

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
        attested: dict[str, dict] = {}
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
            got, had = c.fetch(p, partial / p, f["size"], bar.advance)
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
        result = verify_directory(cand, c.device_pem, anchor=anchor)
        self.ledger.update(report.docking_id, records=result.records)
        if not result.ok:
            self._quarantine(cand, partial, report, str(result.failure))
            return
        self._commit(cand, mirror, partial)
        report.head = result.head
        self.ledger.update(report.docking_id, head_seq=result.head[0], head_hash=result.head[1])
        self._catalogue(mirror, recs, report)
        self._send_receipts(mirror, attested, on_device, result.head, report)
        report.status = "ok"

    def _quarantine(self, cand: Path, partial: Path, report: DockReport, failure: str) -> None:
        qdir = self.cfg.store / "quarantine" / report.device_id / cand.name.removeprefix("candidate-")
        qdir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(cand, qdir)
        (qdir / "REPORT.txt").write_text(
            f"device {report.device_id}\ndocking {report.docking_id}\nverification failed: {failure}\n"
            "nothing was stored as evidence and no receipt was sent; the device keeps everything.\n",
            encoding="utf-8")
        shutil.rmtree(partial, ignore_errors=True)   # the bytes are kept in the quarantine copy
        report.status, report.detail, report.quarantine_dir = "quarantined", failure, qdir
        log.error("device %s quarantined in %s: %s", report.device_id, qdir, failure)

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
        """The S3-named view and the 'what was recorded' rows of the ledger."""
        officer = (self.ledger.device(report.device_id) or {}).get("officer_id") or None
        segs: dict[str, list[dict]] = {}
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
                if not dst.exists() and (mirror / p["path"]).is_file():
                    _link(mirror / p["path"], dst)
            self.ledger.upsert_recording(
                device_id=report.device_id, recording_id=rid, name=name, unit=self.cfg.unit,
                counterpart=self.cfg.counterpart_placeholder, content=self.cfg.content_placeholder,
                date=name.split("_")[2], officer_id=officer, start_wall_ns=start,
                end_wall_ns=payloads[-1]["wall_end"]["wall_ns"], segments=len(payloads),
                bytes=sum(p["size"] for p in payloads), docking_id=report.docking_id)
            report.named.append(name)

    def _send_receipts(self, mirror: Path, attested: dict[str, dict], on_device: dict[str, int],
                       head: tuple[int, str], report: DockReport) -> None:
        files = [receipt_mod.ReceiptFile(p, f["sha256"], f["size"]) for p, f in attested.items()
                 if p in on_device and (mirror / p).is_file()]
        for i in range(0, len(files), receipt_mod.MAX_RECEIPT_FILES):
            chunk = tuple(files[i:i + receipt_mod.MAX_RECEIPT_FILES])
            nonce = self.client.manifest()["nonce"]
            r = receipt_mod.Receipt(
                device=report.device_id, dock=receipt_mod.dock_id_for_cert(pki.load_cert(Path(self.cfg.cert_file))),
                nonce=nonce, counter=self.ledger.next_receipt_counter(report.device_id),
                issued_wall_ns=time.time_ns(), head_seq=head[0], head_hash=head[1], files=chunk)
            wire = receipt_mod.sign_receipt(r, self.dock_key, self.dock_cert_pem)
            status, answer = self.client.send_receipt(wire)
            self.ledger.add_receipt(device_id=report.device_id, docking_id=report.docking_id,
                                    counter=r.counter, nonce=nonce, head_seq=head[0], head_hash=head[1],
                                    files=len(chunk), bytes=sum(f.size for f in chunk),
                                    sent_ns=r.issued_wall_ns, response=str(answer)[:2000])
            if status != 200:
                report.receipt_refused = str(answer.get("refused"))
                log.error("device refused the receipt: %s", answer)
                return
            report.purged += list(answer.get("removed", []))
