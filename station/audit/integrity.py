"""``station verify``: the catalogue against the audit journal, the journal against its key,
and (optionally) the stored evidence against the device journals' hashes.

Named findings, one per thing wrong (a sigstore-style verifier: it never stops at the first):

* ``JournalInvalid``   the audit journal fails ``recorder.verify`` (signature, chain, ...)
* ``EntryDiffers``     an ``audit_entries`` row is not the journal's line at that seq
* ``RowChanged``       a catalogue row differs from the digest its last action attested
* ``RowUnattested``    a row of an audited table that no action attested (inserted by hand)
* ``RowMissing``       an attested row that is no longer there (deleted by hand)
* ``FileChanged`` / ``FileMissing``  (with ``files=True``) a stored segment is not what its
  device journal attests
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from recorder.journal import JOURNAL_NAME, iter_records
from recorder.verify import verify_directory
from station.audit.trail import row_digest, row_key, row_state
from station.db.models import AUDITED, AuditEntry, Recording, Segment

if TYPE_CHECKING:
    from station.app import Station


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


@dataclass
class IntegrityReport:
    head: tuple[int, str] | None = None
    records: int = 0
    rows_checked: int = 0
    files_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "head": list(self.head) if self.head else None, "records": self.records,
                "rows_checked": self.rows_checked, "files_checked": self.files_checked,
                "findings": [f.to_dict() for f in self.findings]}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_station(st: "Station", *, files: bool = False) -> IntegrityReport:
    report = IntegrityReport()
    st.trail.catch_up()
    jdir = st.trail.journal_dir
    result = verify_directory(jdir, st.signer.public_key_pem())
    report.records = result.records
    report.head = result.head
    if result.failure is not None:
        report.findings.append(Finding("JournalInvalid", str(jdir / JOURNAL_NAME), str(result.failure)))
        return report     # digests from a journal that does not verify prove nothing

    attested: dict[tuple[str, str], str] = {}
    lines: dict[int, bytes] = {}
    for rec in iter_records(jdir / JOURNAL_NAME):
        lines[rec.seq] = rec.line
        if rec.payload.get("station") != st.name:
            continue
        for table, rows in (rec.payload.get("rows") or {}).items():
            for key, digest in rows.items():
                attested[(table, key)] = digest

    with st.db.session() as s:
        for entry in s.scalars(select(AuditEntry).where(AuditEntry.station == st.name)):
            if lines.get(entry.seq) != entry.line.encode("ascii", "replace"):
                report.findings.append(Finding("EntryDiffers", f"audit_entries:{entry.seq}",
                                               "the catalogue's copy of this audit line is not the journal's"))
        seen: set[tuple[str, str]] = set()
        for model in AUDITED:
            table = model.__tablename__
            for obj in s.scalars(select(model)):
                key = row_key(obj)
                seen.add((table, key))
                report.rows_checked += 1
                want = attested.get((table, key))
                if want is None:
                    report.findings.append(Finding("RowUnattested", f"{table}:{key}",
                                                   "no audit record attests this row (written outside the "
                                                   "station?)"))
                elif row_digest(row_state(obj)) != want:
                    report.findings.append(Finding("RowChanged", f"{table}:{key}",
                                                   "the row differs from what its last audited action wrote"))
        for (table, key) in sorted(set(attested) - seen):
            report.findings.append(Finding("RowMissing", f"{table}:{key}",
                                           "an attested row is gone from the catalogue"))
        if files:
            q = select(Segment, Recording).join(Recording, Segment.recording == Recording.id).where(
                Segment.present.is_(True), Recording.status == "stored")
            for seg, rec_row in s.execute(q):
                path = st.store / "devices" / rec_row.device_id / "mirror" / seg.path
                report.files_checked += 1
                where = f"recording:{rec_row.id}/segment:{seg.index}"
                if not path.is_file():
                    report.findings.append(Finding("FileMissing", where, f"{path} is gone"))
                elif path.stat().st_size != seg.size or _sha256(path) != seg.sha256:
                    report.findings.append(Finding("FileChanged", where,
                                                   f"{path} is not what the device journal attests"))
    return report
