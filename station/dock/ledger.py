"""The dock's part of the catalogue: known devices (the pin registry) and the usage ledger (台账, S9).

Per docking: which device, which officer, when it was checked in (docked) and out again,
what it recorded and over which period, how it went (ok / partial / quarantined /
interrupted / refused), the verified journal head (the anchor for the next docking), the
receipts sent, and the files that failed verification while the journal was sound
(``quarantined_files``, marked ``resolved_docking_id`` once a later docking stores them
intact). Every write is an audited action of the station (``station.audit.trail``).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from station.app import Station
from station.audit.trail import Change, row_state
from station.db import models as m

TABLES = ("devices", "dockings", "recordings", "receipts", "quarantined_files", "assignments")
_MODELS: dict[str, type[m.Base]] = {"devices": m.Device, "dockings": m.Docking, "recordings": m.Recording,
                                    "receipts": m.Receipt, "quarantined_files": m.QuarantinedFile,
                                    "assignments": m.Assignment}
STATION_ACTOR = "station"


class UnknownDevice(LookupError):
    """A device that is not in the registry."""


class Ledger:
    def __init__(self, st: Station) -> None:
        self.st = st

    def close(self) -> None:
        pass

    # ---- registry --------------------------------------------------------------------
    def register(self, device_id: str, pubkey_pem: bytes, officer_id: str = "", label: str = "",
                 actor: str = STATION_ACTOR) -> None:
        with self.st.trail.action("device-register", actor=actor, subject=f"device:{device_id}",
                                  officer=officer_id or None) as ch:
            row = ch.session.get(m.Device, device_id)
            if row is None:
                row = m.Device(device_id=device_id, registered_at_ns=self.st.now_ns())
                ch.session.add(row)
            row.pubkey_pem, row.officer_id, row.label = pubkey_pem.decode("ascii"), officer_id or None, label
            ch.touch(row)

    def pubkey(self, device_id: str) -> bytes | None:
        with self.st.db.session() as s:
            row = s.get(m.Device, device_id)
            return row.pubkey_pem.encode("ascii") if row else None

    def device(self, device_id: str) -> dict[str, Any] | None:
        with self.st.db.session() as s:
            row = s.get(m.Device, device_id)
            return row_state(row) if row else None

    def officer_for(self, device_id: str, at_ns: int | None = None) -> str | None:
        """Who wore the device: the open assignment (D12), else the officer it is issued to."""
        with self.st.db.session() as s:
            q = select(m.Assignment).where(m.Assignment.device_id == device_id,
                                           m.Assignment.checked_in_ns.is_(None))
            a = s.scalars(q.order_by(m.Assignment.id.desc())).first()
            if a is not None:
                return a.officer_id
            row = s.get(m.Device, device_id)
            return row.officer_id if row else None

    # ---- dockings --------------------------------------------------------------------------
    def check_in(self, device_id: str, officer_id: str | None, *, close_stale: bool = False) -> int:
        """A new in-progress docking of ``device_id``; its id.

        ``close_stale``: the caller holds the device's dock lock (``station.dock.ingest``), so any
        docking of this device still in progress belongs to a process that died (kill -9, power
        cut, the database gone before it could check out): it is closed as ``interrupted`` in
        the same action, with a detail saying so. Nothing it did is lost: files it committed are
        in the mirror and are catalogued and receipted by this docking; it sent no receipt the
        catalogue does not hold unless it died right after sending one (then the device purged
        files the catalogue already holds).
        """
        with self.st.trail.action("docking-start", actor=STATION_ACTOR, subject=f"device:{device_id}") as ch:
            if close_stale:
                stale = ch.session.scalars(select(m.Docking).where(
                    m.Docking.device_id == device_id, m.Docking.status == "in-progress")).all()
                for old in stale:
                    old.status, old.checked_out_ns = "interrupted", self.st.now_ns()
                    old.detail = ("closed at the next docking of the device: the docking process ended "
                                  "without closing it (killed, crashed, or the catalogue was unavailable)")
                    ch.touch(old)
                if stale:
                    ch.details["closed_stale"] = [old.id for old in stale]
            row = m.Docking(station=self.st.name, device_id=device_id, officer_id=officer_id,
                            checked_in_ns=self.st.now_ns(), status="in-progress")
            ch.add(row)
            ch.session.flush()
            ch.details["docking"] = row.id
        return row.id

    @staticmethod
    def docking(ch: Change, docking_id: int) -> m.Docking:
        row = ch.session.get(m.Docking, docking_id)
        if row is None:
            raise LookupError(f"no docking {docking_id}")
        ch.touch(row)
        return row

    def check_out(self, docking_id: int, status: str, detail: str = "", **values: Any) -> None:
        with self.st.trail.action("docking-end", actor=STATION_ACTOR, subject=f"docking:{docking_id}",
                                  status=status) as ch:
            row = self.docking(ch, docking_id)
            for k, v in values.items():
                setattr(row, k, v)
            row.status, row.detail, row.checked_out_ns = status, detail, self.st.now_ns()

    def last_anchor(self, device_id: str) -> tuple[int, str] | None:
        # 'partial': the journal verified in full (only files were quarantined), so its head anchors too
        with self.st.db.session() as s:
            row = s.scalars(select(m.Docking).where(
                m.Docking.device_id == device_id, m.Docking.status.in_(("ok", "partial")),
                m.Docking.head_seq.is_not(None)).order_by(m.Docking.id.desc())).first()
            return (row.head_seq, row.head_hash) if row and row.head_hash is not None \
                and row.head_seq is not None else None

    def rows(self, table: str) -> list[dict[str, Any]]:
        if table not in TABLES:
            raise ValueError(f"no table {table}")
        model = _MODELS[table]
        with self.st.db.session() as s:
            pk = list(inspect(model).primary_key)
            return [row_state(r) for r in s.scalars(select(model).order_by(*pk))]

    # ---- what was recorded ------------------------------------------------------------------
    @staticmethod
    def recording(s: Session, device_id: str, recording_id: str) -> m.Recording | None:
        return s.scalars(select(m.Recording).where(m.Recording.device_id == device_id,
                                                   m.Recording.recording_id == recording_id)).first()

    def recording_name(self, device_id: str, recording_id: str) -> str | None:
        with self.st.db.session() as s:
            row = self.recording(s, device_id, recording_id)
            return row.name if row else None

    # ---- receipts ----------------------------------------------------------------------------
    def next_receipt_counter(self, device_id: str) -> int:
        with self.st.db.session() as s:
            counters = s.scalars(select(m.Receipt.counter).where(m.Receipt.device_id == device_id)).all()
            return max(counters) + 1 if counters else 0

    def add_receipt(self, **v: Any) -> int:
        with self.st.trail.action("receipt", actor=STATION_ACTOR, subject=f"docking:{v['docking_id']}",
                                  counter=v["counter"], files=v["files"]) as ch:
            row = m.Receipt(**v)
            ch.add(row)
            ch.session.flush()
        return row.id

    # ---- files that failed verification (docking status 'partial') -----------------------------
    def open_quarantined_files(self, device_id: str | None = None) -> list[dict[str, Any]]:
        with self.st.db.session() as s:
            q = select(m.QuarantinedFile).where(m.QuarantinedFile.resolved_docking_id.is_(None))
            if device_id is not None:
                q = q.where(m.QuarantinedFile.device_id == device_id)
            return [row_state(r) for r in s.scalars(q.order_by(m.QuarantinedFile.id))]
