"""One open station: its configuration, catalogue, audit trail, clock and key, passed to every action.

Commands, the web interface and tests all start from ``Station.open`` (tests with a
``FixedClock`` to move time); the actions in ``station/<area>/`` take it as their first
argument and never open anything themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from recorder.identity import FileSigner
from station import identity
from station.audit.trail import AuditTrail
from station.clock import Clock, SystemClock
from station.config import StationConfig
from station.db.engine import Database, open_database
from station.db.models import Station as StationRow


class NotInitialised(Exception):
    """The store, key or catalogue is not there yet: run ``station init``."""


@dataclass
class Station:
    cfg: StationConfig
    db: Database
    signer: FileSigner
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def open(cls, cfg: StationConfig, clock: Clock | None = None, *, check_schema: bool = True) -> "Station":
        signer = identity.load_key(cfg.key_path)
        db = open_database(cfg.database_url, check=check_schema)
        st = cls(cfg, db, signer, clock or SystemClock())
        with db.session() as s:
            row = s.get(StationRow, cfg.station.name)
        if row is None:
            raise NotInitialised(f"station {cfg.station.name!r} is not in the catalogue at {db.safe_url}: "
                                 "run `station init`")
        if row.pubkey_pem.encode("ascii") != signer.public_key_pem():
            raise NotInitialised(f"the key {cfg.key_path} is not the key station {cfg.station.name!r} was "
                                 "registered with in the catalogue")
        return st

    @property
    def name(self) -> str:
        return self.cfg.station.name

    @property
    def store(self) -> Path:
        return self.cfg.store

    @property
    def trail(self) -> AuditTrail:
        return AuditTrail(self.db, self.store, self.signer, self.name, self.clock)

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> "Station":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def station_names(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(StationRow.name)))
