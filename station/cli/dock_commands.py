"""Docking, the device registry, the usage ledger (S9) and the agency PKI.

    station dock [--wait 30] [--device-address IP] [--port N]
    station register --pubkey device-key.pub.pem [--officer 031337]
    station ledger [--table dockings]
    station pki init-ca --dir CA --unit UNIT
    station pki issue-dock --ca-dir CA --out DIR --name dock-1
    station pki issue-device --ca-dir CA --pubkey device-key.pub.pem --out device-cert.pem

``dock`` on an agency station (``[agency] kind = "s3"``): a sync to the agency store follows
the receipt (its failure is logged, never the docking's); with the shared catalogue
unreachable the docking is spooled on this station (``"spooled"`` in its JSON; ``station
spool``) and replayed by ``station sync`` (station/docs/agency.md).

Exit codes of ``dock``: 0 offloaded, verified and receipted; 1 quarantined (the journal
failed verification: the whole docking, nothing purged); 2 usage/config; 3 device refused
(unknown to this dock, or not agency-certified); 4 partial (the journal and the intact
files were stored and receipted, some damaged file(s) quarantined: they stay on the
device); 75 interrupted (run again to resume).

``ledger`` prints times (the ``*_ns`` columns) as ISO 8601 with the UTC offset of
``[station] timezone``, under the column name without ``_ns``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from station import config as config_mod
from station.cli.common import add_common, config_path, open_station
from station.dock import pki
from station.dock.ledger import TABLES, Ledger
from station.errors import EXIT_FAILED as EXIT_QUARANTINED
from station.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED, EXIT_USAGE


def iso_time(ns: int, tz: dt.tzinfo) -> str:
    """Nanoseconds since the epoch as ISO 8601 with milliseconds and UTC offset."""
    t = dt.datetime.fromtimestamp(ns // 10**9, tz) + dt.timedelta(microseconds=(ns % 10**9) // 1000)
    return t.isoformat(timespec="milliseconds")


def readable_row(row: dict[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    """A ledger row for people: ``*_ns`` integers become ISO 8601 strings under the name without _ns."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k.endswith("_ns"):
            out[k[:-3]] = iso_time(v, tz) if isinstance(v, int) else v
        else:
            out[k] = v
    return out


def cmd_dock(args: argparse.Namespace) -> int:
    from station.dock.ingest import Docking
    from station.dock.link import DeviceRefused, LinkInterrupted
    from station.dock.offline import open_station as open_for_docking
    from station.sync import after_docking
    cfg = config_mod.load(config_path(args), store_dir=args.store, device_address=args.device_address,
                          port=args.port)
    st = open_for_docking(cfg)     # the shared catalogue unreachable: the docking is spooled here
    try:
        try:
            report = Docking(st).run(wait_s=args.wait)
        except DeviceRefused as exc:
            print(f"dock: device refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except LinkInterrupted as exc:
            print(f"dock: no device: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        code = _report_docking(report)
        if report.status in ("ok", "partial") and not report.spooled:
            # the receipt is out: push to the agency store now rather than at the timer's next run
            done = after_docking(st)
            if done is not None and done.ok:
                print(f"dock: synced to the agency store ({done.pushed} object(s) pushed)", file=sys.stderr)
        return code
    finally:
        st.close()


def _report_docking(report: Any) -> int:
    summary = {"status": report.status, "device": report.device_id, "docking": report.docking_id,
               "files_new": report.files_new, "bytes_new": report.bytes_new,
               "bytes_resumed": report.bytes_resumed, "purged": len(report.purged),
               "receipt_refused": report.receipt_refused, "named": report.named,
               "head": list(report.head) if report.head else None, "detail": report.detail,
               "quarantine_dir": str(report.quarantine_dir) if report.quarantine_dir else None,
               "quarantined_files": [{k: d.get(k) for k in ("path", "reason", "recording_id", "seg_index")}
                                     for d in report.quarantined_files],
               "spooled": report.spooled}
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    if report.spooled:
        print(f"dock: 目录数据库不可用：本次对接已在本站校验、保存并离线暂存（暂存记录 {report.spooled}），"
              "目录恢复后由 station sync 或下一次对接补录（station spool 可查看）", file=sys.stderr)
    if report.status == "ok":
        if report.receipt_refused:
            print(f"dock: device refused the receipt ({report.receipt_refused}); evidence is stored, "
                  "nothing was purged on the device", file=sys.stderr)
        return EXIT_OK
    if report.status == "partial":
        print(f"dock: {len(report.quarantined_files)} FILE(S) FAILED VERIFICATION and were quarantined in "
              f"{report.quarantine_dir} (see REPORT.txt); the journal and every other file were stored"
              f"{' and receipted' if not report.receipt_refused else ''}; the damaged file(s) stay on the "
              "device", file=sys.stderr)
        if report.receipt_refused:
            print(f"dock: device refused the receipt ({report.receipt_refused}); nothing was purged on "
                  "the device", file=sys.stderr)
        return EXIT_PARTIAL
    if report.status == "quarantined":
        print(f"dock: EVIDENCE FAILED VERIFICATION, the whole docking is quarantined in "
              f"{report.quarantine_dir} (the journal itself failed; nothing stored, nothing purged): "
              f"{report.detail}", file=sys.stderr)
        return EXIT_QUARANTINED
    if report.status == "interrupted":
        print(f"dock: transfer interrupted ({report.detail}); run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"dock: {report.detail}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_register(args: argparse.Namespace) -> int:
    from recorder.identity import BadPublicKey, device_id_for_pem
    st = open_station(args, store_dir=args.store)
    pem = Path(args.pubkey).read_bytes()
    try:
        device_id = device_id_for_pem(pem)
    except BadPublicKey as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        Ledger(st).register(device_id, pem, args.officer or "", args.label or "")
    finally:
        st.close()
    print(device_id)
    return EXIT_OK


def cmd_ledger(args: argparse.Namespace) -> int:
    st = open_station(args, store_dir=args.store)
    tz = ZoneInfo(st.cfg.timezone)
    try:
        for row in Ledger(st).rows(args.table):
            row.pop("pubkey_pem", None)
            if args.table == "assignments":   # the signed documents summed up (see station device history)
                from station.handover.assignment import ledger_row
                row = ledger_row(row)
            print(json.dumps(readable_row(row, tz), ensure_ascii=False))
    finally:
        st.close()
    return EXIT_OK


def cmd_pki(args: argparse.Namespace) -> int:
    if args.pki_command == "init-ca":
        print(pki.init_ca(args.dir, args.unit))
    elif args.pki_command == "issue-dock":
        print(pki.init_dock(args.ca_dir, args.out, args.name, args.unit))
    elif args.pki_command == "revoke":
        print(f"{pki.revoke(args.ca_dir, args.cert):x}")
    elif args.pki_command == "crl":
        print(pki.issue_crl(args.ca_dir, args.out, args.days))
    else:
        print(pki.init_device(args.ca_dir, args.pubkey, args.out, args.unit, args.address))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_common(sp, user=False)
        sp.add_argument("--store", help="override [station] store_dir")
        return sp

    d = with_config(sub.add_parser("dock", help="offload, verify, store and receipt a docked device"))
    d.add_argument("--device-address", help="override [dock] device_address")
    d.add_argument("--port", type=int, help="override [dock] port")
    d.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep trying to reach the device this long (it may still be coming up)")
    d.set_defaults(func=cmd_dock)
    r = with_config(sub.add_parser("register", help="add a device (its public key) to the registry"))
    r.add_argument("--pubkey", required=True, type=Path)
    r.add_argument("--officer", help="officer number (警号) the device is personally issued to")
    r.add_argument("--label")
    r.set_defaults(func=cmd_register)
    lg = with_config(sub.add_parser("ledger", help="print the usage ledger (台账, JSON lines)"))
    lg.add_argument("--table", default="dockings", choices=TABLES)
    lg.set_defaults(func=cmd_ledger)

    k = sub.add_parser("pki", help="agency CA, dock and device certificates")
    ksub = k.add_subparsers(dest="pki_command", required=True)
    a = ksub.add_parser("init-ca")
    a.add_argument("--dir", required=True, type=Path)
    a.add_argument("--unit", default="")
    b = ksub.add_parser("issue-dock")
    b.add_argument("--ca-dir", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--name", required=True)
    b.add_argument("--unit", default="")
    c = ksub.add_parser("issue-device")
    c.add_argument("--ca-dir", required=True, type=Path)
    c.add_argument("--pubkey", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--unit", default="")
    c.add_argument("--address")
    rv = ksub.add_parser("revoke", help="put a dock certificate on the revocation list (then: pki crl)")
    rv.add_argument("--ca-dir", required=True, type=Path)
    rv.add_argument("--cert", required=True, type=Path)
    cr = ksub.add_parser("crl", help="sign the current CRL (CA/agency-crl.pem; --out: a copy for a station)")
    cr.add_argument("--ca-dir", required=True, type=Path)
    cr.add_argument("--out", type=Path)
    cr.add_argument("--days", type=int, default=30)
    k.set_defaults(func=cmd_pki)
