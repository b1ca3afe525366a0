"""Stations of one agency for the tests and the agency bench: more stations on one shared
PostgreSQL catalogue, and the ``[agency]`` settings that point a station at the weed server."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from station import config as station_config
from station.app import Station
from station.setup import init_station
from tests.netns import DockWorld
from tests.seaweed import ACCESS_KEY, BUCKET, WeedServer
from tests.station_fixture import StationWorld


def join_agency(w: StationWorld, server: WeedServer, **over: Any) -> Station:
    """Give the station the agency's ``[agency]`` settings (secret in a 0600 file) and reopen it;
    ``over`` replaces any of them (by default each caller its own agency prefix in the bucket)."""
    secret = w.config_path.parent / "store-secret"
    secret.write_text(server.secret_key, encoding="utf-8")
    secret.chmod(0o600)
    a = {"kind": "s3", "endpoint_url": server.s3_url, "bucket": BUCKET, "access_key": ACCESS_KEY,
         "secret_key_file": str(secret), "connect_timeout_s": 1.0, "read_timeout_s": 30.0,
         "prefix": f"t-{uuid.uuid4().hex[:12]}/", **over}
    body = "\n[agency]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in a.items())
    with open(w.config_path, "a", encoding="utf-8") as f:
        f.write(body)
    return w.reopen()


def another_station(base: Path, url: str, first: StationWorld, name: str = "station-2") -> StationWorld:
    """Another office's station named ``name`` on the first one's PostgreSQL catalogue ``url``
    (users shared), on the first one's clock."""
    dock = DockWorld.create(base)
    path = dock.dock_config("127.0.0.1", 8443)
    text = path.read_text(encoding="utf-8").replace(
        "[dock]\n", f'database_url = "{url}"\nname = "{name}"\n[dock]\n', 1)
    path = base / "station.toml"
    path.write_text(text, encoding="utf-8")
    init_station(path)
    dock.config_path = path
    st = Station.open(station_config.load(path), first.clock)
    return StationWorld(dock, path, "postgresql", first.clock, st)
