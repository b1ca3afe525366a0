"""A station fed by real dockings, on SQLite or on a real PostgreSQL, with a clock the test moves.

``station_world`` (parametrised ``sqlite`` / ``postgresql``) gives a ``StationWorld``: an
initialised station (config, key, catalogue, audit journal), one account per role, and
``dock_device`` which provisions a simulated device, records real MPEG-TS segments sealed
in its signed journal (plus any extra device records: interruptions, reasons), and docks
it over the real TLS link into the station. Nothing is inserted into the catalogue by hand.

The station's clock is a ``FixedClock`` starting two hours after the recordings (the
media fixture's WALL0): ``world.clock.advance(...)`` moves it for the 48 h, retention,
grant and expiry rules. ``world.cli(...)`` runs the ``station`` command as a subprocess
(system clock) on the same config.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from recorder.identity import device_id_for_pem
from station import config as station_config
from station.access.accounts import create_user
from station.app import Station
from station.clock import NS_PER_HOUR, FixedClock
from station.dock.ingest import Docking, DockReport
from station.dock.ledger import Ledger
from station.setup import init_station
from tests.media_fixture import WALL0, make_recording, new_device
from tests.netns import DockWorld

PASSWORD = "correct-horse-battery"
UNIT = "厦门市城市管理行政执法局"
OFFICER_NO = "031337"
OFFICER2_NO = "042042"
# username -> (roles, officer number, supervisor)
ACCOUNTS: dict[str, tuple[list[str], str | None, str | None]] = {
    "admin": (["admin"], None, None),
    "clerk": (["clerk"], None, None),
    "chief": (["approver"], None, None),           # supervisor of both officers
    "deputy": (["approver"], None, None),
    "auditor": (["auditor"], None, None),
    "wang": (["officer"], OFFICER_NO, "chief"),
    "li": (["officer"], OFFICER2_NO, "chief"),
}


@dataclass
class StationWorld:
    dock: DockWorld
    config_path: Path
    backend: str
    clock: FixedClock
    st: Station
    devices: dict[str, Any] = field(default_factory=dict)
    reports: list[DockReport] = field(default_factory=list)

    @property
    def cfg(self) -> station_config.StationConfig:
        return self.st.cfg

    def reopen(self) -> Station:
        """A fresh Station on the same config and clock (as after a restart)."""
        self.st.close()
        self.st = Station.open(station_config.load(self.config_path), self.clock)
        return self.st

    def record(self, name: str, recordings: dict[str, int], *, officer: str | None = OFFICER_NO,
               wall0_ns: int = WALL0, extra: Callable[[Any], None] | None = None) -> Any:
        """A device ``name`` (made on first use) records ``recordings`` (id -> segments)."""
        dev = self.devices.get(name)
        if dev is None:
            dev = new_device(self.dock.base, name)
            self.devices[name] = dev
            Ledger(self.st).register(device_id_for_pem(dev.pem), dev.pem, officer or "")
        dev.journal.append("boot", {"firmware": "test", **({"officer_id": officer} if officer else {})})
        for rid, count in recordings.items():
            dev.journal.append("recording-start", {"recording_id": rid})
            for info in make_recording(dev.store.recording_dir(rid), rid, count, wall0_ns=wall0_ns):
                dev.sealer.segment_closed(info)
            dev.journal.append("recording-stop", {"recording_id": rid, "cause": "officer"})
        if extra is not None:
            extra(dev)
        dev.journal.append("shutdown", {})
        return dev

    def start_link(self, name: str = "dev") -> Any:
        """Device ``name``'s dock link on loopback (the caller stops it), with its certificate:
        issued at the first docking, kept for the next (delete it for a new one)."""
        dev = self.devices[name]
        cert = self.dock.base / f"{name}-cert.pem"
        if not cert.exists():
            cert = self.dock.device_cert(dev.pem, name)
        return self.dock.start_link(dev, cert_file=str(cert), crl_file=str(self.dock.base / f"{name}-crl.pem"))

    @contextmanager
    def link(self, name: str = "dev") -> Iterator[int]:
        """:meth:`start_link` for a ``with`` block; yields the port (as ``--port`` takes it)."""
        link = self.start_link(name)
        try:
            yield link.address[1]
        finally:
            link.stop()

    def dock_device(self, name: str = "dev", recordings: dict[str, int] | None = None, **kw: Any) -> DockReport:
        """Record (if ``recordings``) and dock device ``name`` over the real TLS link."""
        if recordings is not None:
            self.record(name, recordings, **kw)
        with self.link(name) as port:
            cfg = station_config.load(self.config_path, device_address="127.0.0.1", port=port)
            report = Docking(Station.open(cfg, self.clock), progress=False).run()
        assert report.status in ("ok", "partial"), report.detail
        self.reports.append(report)
        return report

    def user(self, username: str) -> Any:
        from station.access.accounts import get_user
        return get_user(self.st, username)

    def env(self, user: str | None = None) -> dict[str, str]:
        e = dict(os.environ)
        e["STATION_CONFIG"] = str(self.config_path)
        e.pop("STATION_USER", None)
        if user:
            e["STATION_USER"], e["STATION_PASSWORD"] = user, PASSWORD
        return e

    def cli(self, *args: str, user: str | None = None, check: bool = False,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``station ARGS`` as ``user``; ``check``: fail the test on a non-zero exit."""
        r = subprocess.run([sys.executable, "-m", "station", *args], env=self.env(user), capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"station {' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def cli_json(self, *args: str, user: str | None = None) -> Any:
        r = self.cli(*args, "--json", user=user, check=True)
        return json.loads(r.stdout)


def make_station_world(base: Path, database_url: str, backend: str) -> StationWorld:
    dock = DockWorld.create(base)
    path = dock.dock_config("127.0.0.1", 8443)   # [station] + [dock] for this store
    text = path.read_text(encoding="utf-8")
    if database_url:
        text = text.replace("[dock]\n", f'database_url = "{database_url}"\n[dock]\n', 1)
    path = base / "station.toml"
    path.write_text(text, encoding="utf-8")
    init_station(path)
    dock.config_path = path
    clock = FixedClock(WALL0 + 2 * NS_PER_HOUR)
    st = Station.open(station_config.load(path), clock)
    create_user(st, None, "admin", PASSWORD, ["admin"], display_name="管理员")
    for username, (roles, officer_no, supervisor) in ACCOUNTS.items():
        if username != "admin":
            create_user(st, "admin", username, PASSWORD, roles, officer_no=officer_no, supervisor=supervisor,
                        display_name=username)
    return StationWorld(dock, path, backend, clock, st)


@pytest.fixture(params=["sqlite", "postgresql"])
def station_world(request, tmp_path):
    url = ""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").create_database()
    world = make_station_world(tmp_path, url, request.param)
    yield world
    world.st.close()


@pytest.fixture()
def sqlite_station_world(tmp_path):
    """The same on SQLite only, for tests about the embedded default (files, crashes)."""
    world = make_station_world(tmp_path, "", "sqlite")
    yield world
    world.st.close()
