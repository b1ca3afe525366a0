"""Where a docking's records go: the shared catalogue, or this station's spool while it is unreachable.

An agency's stations share one PostgreSQL catalogue. When it cannot be reached (network
cut, server down) a docking must still do what a single office does: download, verify,
swap the mirror durably, and only then receipt, so the device can purge. ``Book`` is the
docking's one door to the catalogue: each step (check-in, tombstones, anchor, ingest,
receipt counter, receipts, check-out) goes to the catalogue as before, and from the first
"unreachable" on, to the signed spool (``station.dock.spool``) instead, with what the
catalogue transaction would have written. Everything a step needs without the catalogue
comes from this station's own disk:

* the anchor (the head verified last time) is the head of ``devices/<id>/mirror/journal.log``,
  which only ever holds a journal that verified (the mirror is swapped after verification);
* the registered device key, its officer, the station's tombstones of the device (S11) and
  the last receipt counter are kept in ``devices/<id>/offline-cache.json`` at every docking
  that reached the catalogue. A device never docked here while the catalogue was reachable
  cannot dock offline (its key is not known here): refused, exit 7.

Spooling is for an agency's stations (``[agency] kind = "s3"`` and a catalogue on a server,
``spooling``): a station on its own catalogue (SQLite, a local file) fails a docking whose
catalogue is gone, as before — nothing is receipted and the next docking completes it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from common.crashpoints import crashpoint
from recorder.journal import JOURNAL_NAME, last_record
from station import identity
from station.app import Station
from station.clock import Clock, SystemClock
from station.config import StationConfig
from station.db.engine import Database, DatabaseError
from station.dock import spool
from station.dock.ledger import Ledger
from station.errors import Unavailable
from station.keeping.purge import PurgedFiles

log = logging.getLogger(__name__)

CACHE = "offline-cache.json"


class CatalogueUnreachable(Unavailable):
    """The catalogue cannot be reached and this station cannot do the step without it."""


def spooling(cfg: StationConfig) -> bool:
    """Does this station spool dockings while its catalogue is unreachable (module docstring)?"""
    return cfg.agency.kind == "s3" and not cfg.database_url.startswith("sqlite")


def unreachable(exc: BaseException, db: Database) -> bool:
    """Is ``exc`` the shared catalogue being out of reach (not a bug, not a refusal)?"""
    if db.dialect == "sqlite":
        return False
    if isinstance(exc, (OperationalError, InterfaceError, DatabaseError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def open_station(cfg: StationConfig, clock: Clock | None = None) -> Station:
    """``Station.open``, or, when the shared catalogue cannot be reached, the station without the
    check that it is registered there (its key and store are local): enough to dock and spool."""
    try:
        return Station.open(cfg, clock)
    except (DatabaseError, SQLAlchemyError) as exc:
        if not spooling(cfg):
            raise
        db = Database(cfg.database_url)
        try:
            with db.engine.connect():
                pass
        except SQLAlchemyError:
            log.error("the catalogue at %s cannot be reached (%s): docking on this station's spool",
                      db.safe_url, exc)
            return Station(cfg, db, identity.load_key(cfg.key_path), clock or SystemClock())
        db.dispose()
        raise


# ---- what this station keeps of each device for a docking without the catalogue --------------------------
def load_cache(dev_dir: Path) -> dict[str, Any]:
    try:
        doc = json.loads((dev_dir / CACHE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def update_cache(dev_dir: Path, **fields: Any) -> None:
    """Merge ``fields`` into the device's cache (written whole, fsynced, then renamed)."""
    doc = {**load_cache(dev_dir), **fields}
    dev_dir.mkdir(parents=True, exist_ok=True)
    tmp = dev_dir / (CACHE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(doc, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dev_dir / CACHE)


def mirror_head(dev_dir: Path) -> tuple[int, str] | None:
    """(seq, hash) of the last record of the verified mirror: the anchor for the next docking."""
    rec = last_record(dev_dir / "mirror" / JOURNAL_NAME)
    return (rec.seq, rec.hash) if rec is not None else None


def known_key(st: Station, ledger: Ledger) -> Callable[[str], bytes | None]:
    """The registered key of a device (pinned at connect): the catalogue's, kept in the cache;
    the cache's alone while the catalogue is unreachable."""
    def lookup(device_id: str) -> bytes | None:
        dev_dir = st.store / "devices" / device_id
        try:
            pem = ledger.pubkey(device_id)
        except Exception as exc:
            if not (spooling(st.cfg) and unreachable(exc, st.db)):
                raise
            cached = load_cache(dev_dir).get("pubkey_pem")
            if not isinstance(cached, str):
                raise CatalogueUnreachable(f"the catalogue cannot be reached and device {device_id} has never "
                                           "docked at this station while it could: its key is not known here "
                                           f"({exc.__class__.__name__})") from None
            return cached.encode("ascii")
        if pem is not None and load_cache(dev_dir).get("pubkey_pem") != pem.decode("ascii"):
            update_cache(dev_dir, pubkey_pem=pem.decode("ascii"))
        return pem
    return lookup


class Book:
    """One docking's records: the catalogue while it answers, the spool from the first time it does not."""

    def __init__(self, st: Station, ledger: Ledger, device_id: str, dev_dir: Path) -> None:
        self.st, self.ledger, self.device_id, self.dev_dir = st, ledger, device_id, dev_dir
        self.offline = False
        self.officer: str | None = None
        self.checked_in_ns = st.now_ns()
        self.ingest_seq: int | None = None      # the spool record of this docking's ingest
        self.spooled: list[int] = []            # every spool record this docking wrote

    def _fall_back(self, exc: BaseException, step: str) -> None:
        if not (spooling(self.st.cfg) and unreachable(exc, self.st.db)):
            raise exc
        if not self.offline:
            log.error("device %s: the catalogue cannot be reached at %s (%s: %s); this docking goes on and is "
                      "spooled on this station, to be replayed into the catalogue by `station sync`",
                      self.device_id, step, type(exc).__name__, exc)
        self.offline = True

    def _spool(self, type: str, payload: dict[str, Any]) -> int:
        seq = spool.append(self.st, type, {"device": self.device_id, **payload}).seq
        self.spooled.append(seq)
        return seq

    # ---- the steps, in docking order ----------------------------------------------------------------
    def check_in(self) -> int:
        """The docking's ledger row (its id), or 0 when it is spooled. Earlier spooled dockings are
        replayed first; while any is still waiting, this one is spooled too (the catalogue gets
        every station's dockings in the order they happened)."""
        try:
            waiting = spool.replay(self.st, held_device=self.device_id).waiting
        except spool.SpoolBroken as exc:    # never blocks a docking: it is spooled after, or goes online
            log.error("device %s: %s", self.device_id, exc)
            waiting = 1
        except Exception as exc:
            self._fall_back(exc, "replaying the spool")
            waiting = 1
        if waiting and spooling(self.st.cfg):
            if not self.offline:
                log.warning("device %s: spooled docking(s) still wait for the catalogue: this one is spooled "
                            "after them", self.device_id)
            self.offline = True
        if not self.offline:
            try:
                self.officer = self.ledger.officer_for(self.device_id)
                docking = self.ledger.check_in(self.device_id, self.officer, close_stale=True)
                update_cache(self.dev_dir, officer_id=self.officer)
                return docking
            except Exception as exc:
                self._fall_back(exc, "check-in")
        officer = load_cache(self.dev_dir).get("officer_id")
        self.officer = officer if isinstance(officer, str) else None
        return 0

    def purged(self) -> PurgedFiles:
        if not self.offline:
            try:
                found = PurgedFiles.load(self.st, self.device_id)
                update_cache(self.dev_dir, purged={p: list(v) for p, v in found._entries.items()})
                return found
            except Exception as exc:
                self._fall_back(exc, "reading the tombstones")
        cached = load_cache(self.dev_dir).get("purged") or {}
        return PurgedFiles({p: (v[0], int(v[1])) for p, v in cached.items()})

    def anchor(self) -> tuple[int, str] | None:
        if not self.offline:
            try:
                return self.ledger.last_anchor(self.device_id)
            except Exception as exc:
                self._fall_back(exc, "reading the anchor")
        return mirror_head(self.dev_dir)

    def ingest(self, online: Callable[[], None], **payload: Any) -> None:
        """The docking's ``ingest``: the catalogue transaction, or (unreachable) a spool record that
        holds what it would have written. Either way durable before any receipt goes out."""
        if not self.offline:
            try:
                online()
                return
            except Exception as exc:
                self._fall_back(exc, "ingest")
        self.ingest_seq = self._spool(spool.INGEST, {"officer": self.officer, "checked_in_ns": self.checked_in_ns,
                                                     **payload})
        crashpoint("dock-spooled")

    def next_receipt_counter(self) -> int:
        """Receipt counters per device; offline, above anything this station used and above any a
        station counting up from 0 will reach (microseconds since the epoch), so a replay does not
        collide with receipts other stations gave the device meanwhile. Kept before it is sent."""
        cached = load_cache(self.dev_dir).get("receipt_counter")
        last = cached if isinstance(cached, int) else -1
        counter: int | None = None
        if not self.offline:
            try:
                counter = max(self.ledger.next_receipt_counter(self.device_id), last + 1)
            except Exception as exc:
                self._fall_back(exc, "the receipt counter")
        if counter is None:
            counter = max(last + 1, self.st.now_ns() // 1000)
        update_cache(self.dev_dir, receipt_counter=counter)
        return counter

    def add_receipt(self, **v: Any) -> None:
        if not self.offline:
            try:
                self.ledger.add_receipt(**v)
                return
            except Exception as exc:
                self._fall_back(exc, "recording the receipt")
        self._spool(spool.RECEIPT, {"ingest_seq": self.ingest_seq, "docking_id": v.pop("docking_id") or None,
                                    **{k: v[k] for k in spool.RECEIPT_FIELDS}})

    def check_out(self, docking: int, status: str, detail: str, **values: Any) -> None:
        if not self.offline:
            try:
                self.ledger.check_out(docking, status, detail, **values)
                return
            except Exception as exc:
                self._fall_back(exc, "check-out")
        self._spool(spool.END, {"ingest_seq": self.ingest_seq, "docking_id": docking or None,
                                "officer": self.officer, "checked_in_ns": self.checked_in_ns,
                                "checked_out_ns": self.st.now_ns(), "status": status, "detail": detail,
                                **{k: values.get(k) for k in spool.END_FIELDS}})
