"""The agency path under load: S stations x D devices docking at once, then syncing to one store.

A real SeaweedFS (tests/seaweed.py: S3 gateway with object lock, WORM on /buckets/) and a
real PostgreSQL (tests/pg.py) as the shared catalogue; S stations (station-1..S), each with
D simulated devices recorded with real MPEG-TS segments (tests/media_fixture.py) and docked
over the real TLS link, all at once (one thread per docking, in this process); then every
station runs ``station.sync`` at the same time. Measured in the same run:

* end to end: evidence bytes / wall time from the first docking to the last sync's end;
* the sync alone: evidence bytes / wall time of the concurrent syncs;
* baseline: a plain boto3 ``put_object`` of the same files (no lock, no hash, no catalogue)
  with as many threads as dockings;

and the ratios of the first two to the baseline. Afterwards every recording is fetched back
from the store and verified (``station.sync.verify_from_store``). Bounded: defaults
3 x 4 devices, 3 segments of 2 s each. Run:

    .venv/bin/python bench/bench_agency.py [--stations 3] [--devices 4] [--segments 3] [--seconds 2]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from station.db import models as m  # noqa: E402
from station.storage import open_store  # noqa: E402
from station.sync import sync, verify_from_store  # noqa: E402
from tests.agency_world import another_station, join_agency  # noqa: E402
from tests.media_fixture import WALL0, make_recording  # noqa: E402
from tests.pg import PgCluster  # noqa: E402
from tests.seaweed import BUCKET, WeedServer, operator, s3_client  # noqa: E402
from tests.station_fixture import StationWorld, make_station_world  # noqa: E402


def _station(base: Path, url: str, name: str, first: StationWorld | None, server: WeedServer,
             prefix: str) -> StationWorld:
    w = make_station_world(base, url, "postgresql") if first is None else another_station(base, url, first, name)
    join_agency(w, server, prefix=prefix, connect_timeout_s=5.0, read_timeout_s=120.0)   # the defaults
    return w


def _record(w: StationWorld, name: str, segments: int, seconds: float) -> None:
    """Like StationWorld.record, with longer segments (more bytes per docking)."""
    from recorder.identity import device_id_for_pem
    from station.dock.ledger import Ledger
    from tests.media_fixture import new_device
    dev = new_device(w.dock.base, name)
    w.devices[name] = dev
    Ledger(w.st).register(device_id_for_pem(dev.pem), dev.pem, "031337")
    dev.journal.append("boot", {"firmware": "bench", "officer_id": "031337"})
    dev.journal.append("recording-start", {"recording_id": "r1"})
    for info in make_recording(dev.store.recording_dir("r1"), "r1", segments, seconds=seconds, wall0_ns=WALL0):
        dev.sealer.segment_closed(info)
    dev.journal.append("recording-stop", {"recording_id": "r1", "cause": "officer"})
    dev.journal.append("shutdown", {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=3)
    ap.add_argument("--devices", type=int, default=4, help="devices per station")
    ap.add_argument("--segments", type=int, default=3, help="segments per device")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per segment")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (1 <= args.stations <= 8 and 1 <= args.devices <= 8 and 1 <= args.segments <= 20):
        ap.error("bounded: 1-8 stations, 1-8 devices, 1-20 segments")
    base = Path(tempfile.mkdtemp(prefix="bench-agency-"))
    server = WeedServer(base / "weed")
    pg = PgCluster()
    worlds: list[StationWorld] = []
    try:
        server.start()
        operator(server).create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        server.protect_buckets()
        url = pg.create_database()
        prefix = f"bench-{uuid.uuid4().hex[:8]}/"
        for i in range(args.stations):
            worlds.append(_station(base / f"s{i + 1}", url, f"station-{i + 1}", worlds[0] if worlds else None,
                                   server, prefix))
        for i, w in enumerate(worlds):
            for d in range(args.devices):
                _record(w, f"s{i + 1}d{d + 1}", args.segments, args.seconds)
            # certificates issued before the dockings start together (the link helper would race)
            for name, dev in w.devices.items():
                w.dock.device_cert(dev.pem, name)
            w.dock.device_cert(next(iter(w.devices.values())).pem)
        errors: list[BaseException] = []
        lock = threading.Lock()

        def dock(w: StationWorld, name: str) -> None:
            try:
                w.dock_device(name)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
        t0 = time.monotonic()
        threads = [threading.Thread(target=dock, args=(w, name)) for w in worlds for name in w.devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        if errors:
            raise RuntimeError(f"dockings failed: {errors}")
        t1 = time.monotonic()
        with ThreadPoolExecutor(len(worlds)) as ex:
            reports = list(ex.map(lambda w: sync(w.st), worlds))
        t2 = time.monotonic()
        if not all(r.ok for r in reports):
            raise RuntimeError(f"sync failed: {[r.to_dict() for r in reports]}")
        files = [p for w in worlds for d in sorted((w.cfg.store / "devices").iterdir())
                 for p in sorted((d / "mirror").rglob("*.ts")) if p.is_file()]
        evidence_bytes = sum(p.stat().st_size for p in files)
        if not files or evidence_bytes == 0:
            raise RuntimeError("no evidence in the stations' mirrors: nothing was measured")
        pushed_bytes = sum(r.bytes for r in reports)
        client = s3_client(server)
        base_prefix = f"baseline-{uuid.uuid4().hex[:8]}/"

        def put(p: Path) -> None:
            with open(p, "rb") as body:
                client.put_object(Bucket=BUCKET, Key=base_prefix + p.name + uuid.uuid4().hex[:6], Body=body)
        t3 = time.monotonic()
        with ThreadPoolExecutor(len(threads)) as ex:
            list(ex.map(put, files))
        t4 = time.monotonic()
        # everything verifies from the central store, read through another station than its own
        verified = failed = 0
        with worlds[0].st.db.session() as s:
            recs = list(s.scalars(select(m.Recording.id)))
        store = open_store(worlds[-1].cfg)
        for rid in recs:
            res = verify_from_store(worlds[-1].st, store, rid, base / "verify" / str(rid))
            verified += bool(res.ok)
            failed += not res.ok
        e2e, sync_s, plain = t2 - t0, t2 - t1, t4 - t3
        out = {"stations": args.stations, "devices_per_station": args.devices, "segments": len(files),
               "evidence_bytes": evidence_bytes, "pushed_bytes": pushed_bytes,
               "objects": sum(r.pushed for r in reports), "audit_lines": sum(r.audit_lines for r in reports),
               "end_to_end_s": round(e2e, 3), "sync_s": round(sync_s, 3), "baseline_s": round(plain, 3),
               "end_to_end_MBps": round(evidence_bytes / e2e / 1e6, 3),
               "sync_MBps": round(evidence_bytes / sync_s / 1e6, 3),
               "baseline_MBps": round(evidence_bytes / plain / 1e6, 3),
               "ratio_end_to_end_vs_baseline": round(plain / e2e, 3),
               "ratio_sync_vs_baseline": round(plain / sync_s, 3),
               "recordings": len(recs), "verified_from_store": verified, "verify_failed": failed}
        if args.json:
            print(json.dumps(out))
        else:
            print(f"{args.stations} stations x {args.devices} devices, {len(files)} segments, "
                  f"{evidence_bytes / 1e6:.2f} MB of evidence")
            print(f"  end to end (dock + verify + catalogue + sync): {e2e:.2f} s  {out['end_to_end_MBps']} MB/s")
            print(f"  sync to the store alone (lock, hash, audit):   {sync_s:.2f} s  {out['sync_MBps']} MB/s")
            print(f"  plain boto3 put_object of the same files:       {plain:.2f} s  {out['baseline_MBps']} MB/s")
            print(f"  ratio end-to-end / plain: {out['ratio_end_to_end_vs_baseline']}   "
                  f"sync / plain: {out['ratio_sync_vs_baseline']}")
            print(f"  verified from the store: {verified}/{len(recs)} recordings")
        return 0 if failed == 0 and verified == len(recs) else 1
    finally:
        for w in worlds:
            w.st.close()
        server.remove()
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
