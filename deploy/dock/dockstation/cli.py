"""``dockstation``: the dock station's command line.

    python -m dockstation dock --config dock.toml [--wait 30]
    python -m dockstation register --config dock.toml --pubkey device.pub.pem --officer 031337
    python -m dockstation ledger --config dock.toml [--table dockings]
    python -m dockstation pki init-ca --dir CA --unit UNIT
    python -m dockstation pki issue-dock --ca-dir CA --out DIR --name dock-1
    python -m dockstation pki issue-device --ca-dir CA --pubkey device.pub.pem --out device-cert.pem

Exit codes of ``dock``: 0 offloaded, verified and receipted; 1 quarantined (evidence
failed verification, nothing purged); 2 usage/config; 3 device refused (unknown to
this dock, or not agency-certified); 75 interrupted (run again to resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dockstation import config as config_mod
from dockstation import pki
from dockstation.ledger import Ledger

EXIT_OK, EXIT_QUARANTINED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 75


def _ledger(cfg) -> Ledger:
    return Ledger(cfg.store / "ledger.sqlite")


def cmd_dock(args) -> int:
    from dockstation.ingest import Docking
    from dockstation.link import DeviceRefused, LinkInterrupted
    cfg = config_mod.load(args.config, store_dir=args.store, device_address=args.device_address,
                          port=args.port)
    ledger = _ledger(cfg)
    try:
        try:
            report = Docking(cfg, ledger).run(wait_s=args.wait)
        except DeviceRefused as exc:
            print(f"dock: device refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except LinkInterrupted as exc:
            print(f"dock: no device: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
    finally:
        ledger.close()
    summary = {"status": report.status, "device": report.device_id, "docking": report.docking_id,
               "files_new": report.files_new, "bytes_new": report.bytes_new,
               "bytes_resumed": report.bytes_resumed, "purged": len(report.purged),
               "receipt_refused": report.receipt_refused, "named": report.named,
               "head": list(report.head) if report.head else None, "detail": report.detail}
    print(json.dumps(summary, ensure_ascii=False))
    if report.status == "ok":
        if report.receipt_refused:
            print(f"dock: device refused the receipt ({report.receipt_refused}); evidence is stored, "
                  "nothing was purged on the device", file=sys.stderr)
        return EXIT_OK
    if report.status == "quarantined":
        print(f"dock: EVIDENCE FAILED VERIFICATION, quarantined in {report.quarantine_dir}: "
              f"{report.detail}", file=sys.stderr)
        return EXIT_QUARANTINED
    if report.status == "interrupted":
        print(f"dock: transfer interrupted ({report.detail}); run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"dock: {report.detail}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_register(args) -> int:
    from recorder.identity import BadPublicKey, device_id_for_pem
    cfg = config_mod.load(args.config, store_dir=args.store)
    pem = Path(args.pubkey).read_bytes()
    try:
        device_id = device_id_for_pem(pem)
    except BadPublicKey as exc:
        print(f"dockstation: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ledger = _ledger(cfg)
    try:
        ledger.register(device_id, pem, args.officer or "", args.label or "")
    finally:
        ledger.close()
    print(device_id)
    return EXIT_OK


def cmd_ledger(args) -> int:
    cfg = config_mod.load(args.config, store_dir=args.store)
    ledger = _ledger(cfg)
    try:
        for row in ledger.rows(args.table):
            row.pop("pubkey_pem", None)
            print(json.dumps(row, ensure_ascii=False))
    finally:
        ledger.close()
    return EXIT_OK


def cmd_pki(args) -> int:
    if args.pki_command == "init-ca":
        print(pki.init_ca(args.dir, args.unit))
    elif args.pki_command == "issue-dock":
        print(pki.init_dock(args.ca_dir, args.out, args.name, args.unit))
    else:
        print(pki.init_device(args.ca_dir, args.pubkey, args.out, args.unit, args.address))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockstation", description="Body-worn camera dock station.")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", type=Path, help="dock station TOML ([dock_station])")
        sp.add_argument("--store", help="override dock_station.store_dir")
        return sp

    d = with_config(sub.add_parser("dock", help="offload, verify, store and receipt a docked device"))
    d.add_argument("--device-address", help="override dock_station.device_address")
    d.add_argument("--port", type=int, help="override dock_station.port")
    d.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep trying to reach the device this long (it may still be coming up)")
    d.set_defaults(func=cmd_dock)
    r = with_config(sub.add_parser("register", help="add a device (its public key) to the registry"))
    r.add_argument("--pubkey", required=True, type=Path)
    r.add_argument("--officer", help="officer the device is issued to")
    r.add_argument("--label")
    r.set_defaults(func=cmd_register)
    lg = with_config(sub.add_parser("ledger", help="print the usage ledger (JSON lines)"))
    lg.add_argument("--table", default="dockings", choices=("devices", "dockings", "recordings", "receipts"))
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
    k.set_defaults(func=cmd_pki)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=max(logging.WARNING - 10 * args.verbose, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (config_mod.DockConfigError, pki.PkiError) as exc:
        print(f"dockstation: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"dockstation: {exc}", file=sys.stderr)
        return EXIT_USAGE
