"""Whose recording is it (D12): the officer of the assignment in force when it started, from the
device's own signed journal, never from the station's word alone.

The catalogue (``station.dock.catalogue``) feeds a docking's verified journal through an
``OfficerTrack`` in journal order. Who wears the device at a record:

1. the officer of the ``assignment`` record in force (journaled by the device after it
   checked the dock's signature; the station checks that signature again here, against the
   agency CA, at the record's time, and that it names this device); an ``assignment-end``
   (the signed release of that assignment) ends it;
2. else the ``officer_id`` of the last ``boot`` record (the officer the device's
   configuration says it is issued to);
3. else the officer the device is registered to at the station (``station register --officer``).

An ``assignment`` record whose signature does not check is not believed (logged, counted in
``unverified``): the device journal proves the device wrote it, not that the agency's dock
signed it. A recording is attributed at its ``recording-start`` record (or its first segment).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from recorder import assignment as asg
from recorder import records
from station.config import StationConfig
from station.db import models as m

log = logging.getLogger(__name__)


def load_ca(cfg: StationConfig) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(Path(cfg.dock.ca_file).read_bytes())
    except (OSError, ValueError) as exc:
        log.error("attribution: cannot load the agency CA %s (assignments cannot be checked): %s",
                  cfg.dock.ca_file, exc)
        return None


def verified(rec: records.Record, ca: x509.Certificate | None, device_id: str) -> asg.Assignment | None:
    """The assignment or release an ``assignment``/``assignment-end`` record holds, if an agency
    dock signed it for this device (its certificate valid at the record's time); else None."""
    if ca is None:
        return None
    try:
        signed = asg.from_record(rec)
        when = dt.datetime.fromtimestamp(rec.message["wall_ns"] // 10**9, dt.timezone.utc)
        asg.check_signature(signed, ca, now=when)
    except asg.AssignmentRefused as exc:
        log.warning("device %s record #%d (%s): not a dock-signed assignment: %s: %s",
                    device_id, rec.seq, rec.type, exc.reason, exc)
        return None
    a = signed.assignment
    want = asg.KIND_ASSIGN if rec.type == asg.ASSIGNMENT else asg.KIND_RELEASE
    if a.device != device_id or a.kind != want:
        log.warning("device %s record #%d: a %s for device %s", device_id, rec.seq, a.kind, a.device)
        return None
    return a


@dataclass
class OfficerTrack:
    """Who wore the device, record by record (``feed``), and at each recording's start."""

    device_id: str
    ca: x509.Certificate | None
    registered: str | None = None            # rule 3
    boot: str | None = None                  # rule 2
    assigned: asg.Assignment | None = None   # rule 1
    assignment_seq: int | None = None
    unverified: int = 0
    _recordings: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def for_docking(cls, s: Session, cfg: StationConfig, device_id: str, fallback: str | None = None
                    ) -> "OfficerTrack":
        """``fallback``: used only for a device not in the registry."""
        row = s.get(m.Device, device_id)
        return cls(device_id, load_ca(cfg), (row.officer_id or None) if row is not None else fallback)

    @property
    def officer(self) -> str | None:
        if self.assigned is not None:
            return self.assigned.officer_id
        return self.boot if self.boot is not None else self.registered

    def feed(self, rec: records.Record) -> str | None:
        """Take one record (journal order); returns who wears the device after it."""
        if rec.type == records.BOOT and isinstance(rec.payload.get("officer_id"), str):
            self.boot = rec.payload["officer_id"]
        elif rec.type in (asg.ASSIGNMENT, asg.ASSIGNMENT_END):
            a = verified(rec, self.ca, self.device_id)
            if a is None:
                self.unverified += 1
            elif a.kind == asg.KIND_ASSIGN:
                self.assigned, self.assignment_seq = a, rec.seq
            elif self.assigned is not None and a.assignment_id == self.assigned.assignment_id:
                self.assigned, self.assignment_seq = None, None
        elif rec.type in (records.RECORDING_START, records.SEGMENT):
            rid = rec.payload.get("recording_id")
            if isinstance(rid, str):
                self._recordings.setdefault(rid, self.officer)
        return self.officer

    def recording(self, recording_id: str) -> str | None:
        """The officer of the assignment in force when ``recording_id`` started."""
        return self._recordings.get(recording_id, self.officer)
