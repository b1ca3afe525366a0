"""``station init``: a documented config file, the store, the catalogue, the station key.

Idempotent where that is safe (an existing config is kept, the schema is upgraded, the
key is never replaced) so running it twice is harmless.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recorder.identity import FileSigner, IdentityError, device_id_for_pem
from station import config as config_mod
from station import identity
from station.app import Station
from station.audit.trail import AuditTrail
from station.clock import Clock, SystemClock
from station.db.engine import Database
from station.db.models import Station as StationRow
from station.web.tls import make_self_signed

STORE_DIRS = ("audit", "keys")   # devices/, recordings/, quarantine/, exports/ appear with their first use


@dataclass
class InitResult:
    config: Path
    config_written: bool
    store: Path
    database: str
    key: Path
    key_made: bool
    station: str
    web_pin: str | None = None    # SPKI pin of a self-signed HTTPS certificate made now


def init_station(config_path: Path, *, unit: str | None = None, store_dir: str | None = None,
                 database_url: str | None = None, name: str | None = None,
                 clock: Clock | None = None) -> InitResult:
    written = False
    if not config_path.exists():
        if not unit:
            raise config_mod.StationConfigError("a new station needs its unit name (--unit, S3)")
        values = {"unit": unit, **({"store_dir": store_dir} if store_dir else {}),
                  **({"database_url": database_url} if database_url else {}), **({"name": name} if name else {})}
        config_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = config_path.with_name(config_path.name + ".tmp")
        tmp.write_text(config_mod.example_toml({"station": values}), encoding="utf-8")
        os.replace(tmp, config_path)
        written = True
    cfg = config_mod.load(config_path)
    cfg.store.mkdir(parents=True, exist_ok=True)
    for d in STORE_DIRS:
        (cfg.store / d).mkdir(exist_ok=True)
    os.chmod(cfg.store / "keys", 0o700)
    key_made = False
    if cfg.key_path.exists():
        signer: FileSigner = identity.load_key(cfg.key_path)
    else:
        signer, key_made = identity.make_key(cfg.key_path), True
    db = Database(cfg.database_url)
    try:
        db.upgrade()
        pem = signer.public_key_pem().decode("ascii")
        clock = clock or SystemClock()
        with db.session(write=True) as s:
            row = s.get(StationRow, cfg.station.name)
            if row is not None and row.pubkey_pem != pem:
                raise IdentityError(f"station {cfg.station.name!r} is registered in {db.safe_url} "
                                             "with another key")
            new = row is None
            if new:
                s.add(StationRow(name=cfg.station.name, unit=cfg.unit, pubkey_pem=pem,
                                 key_id=device_id_for_pem(pem.encode("ascii")), created_ns=clock.now_ns()))
        if new:
            AuditTrail(db, cfg.store, signer, cfg.station.name, clock).event(
                "station-init", actor="station", subject=f"station:{cfg.station.name}", unit=cfg.unit,
                key_id=device_id_for_pem(pem.encode("ascii")))
        (cfg.store / "station-key.pub.pem").write_text(pem, encoding="ascii")   # beside, not in, audit/
    finally:
        db.dispose()
    web_pin = None
    if not cfg.web.cert_file and not cfg.web_cert_path.exists():
        web_pin = make_self_signed(cfg.web_cert_path, cfg.web_key_path, cfg.unit)
    return InitResult(config_path, written, cfg.store, cfg.database_url, cfg.key_path, key_made, cfg.station.name,
                      web_pin)


def open_station(config_path: Path | None, clock: Clock | None = None, **overrides: str | None) -> Station:
    return Station.open(config_mod.load(config_path, **overrides), clock)
