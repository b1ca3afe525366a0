"""CLI for the dock link: ``bodycam dock serve`` runs the link service in the foreground.

The recording service starts and stops ``DockLink`` itself when the device is
docked; this command is for the bench, the simulator and tests (it opens the
evidence store the way the service does, serves until SIGTERM/SIGINT, and
prints ``listening ADDR PORT`` on stdout once it accepts connections).
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
_P = TypeVar("_P", bound=argparse.ArgumentParser)   # the parser class of the subcommands


def _serve(args: argparse.Namespace) -> int:
    import time

    from common.clock import SystemWallClock
    from firmware import config as config_mod
    from firmware.cli import _evidence_open_failed, error
    from firmware.dock_link import DockLink, DockLinkError
    from firmware.dock_settings import DockSettings
    from firmware.evidence import open_evidence
    from recorder.identity import PRIVATE_KEY_NAME, IdentityError
    from recorder.journal import JournalError

    cfg = config_mod.load(args.config)
    table = dict(cfg.get("dock", {}))
    for key in ("listen_address", "port", "ca_file", "cert_file"):
        if getattr(args, key) is not None:
            table[key] = getattr(args, key)
    try:
        settings = DockSettings.from_mapping(table)
    except ValueError as exc:
        error(str(exc))
        return 3
    out = args.evidence or Path(cfg["storage"]["dir"])
    key_dir = args.key_dir or Path(cfg["identity"]["key_dir"])
    try:
        evidence = open_evidence(out, key_dir, SystemWallClock(), time.monotonic_ns,
                                 boot_payload={"device_id": cfg["device"]["id"],
                                               "officer_id": cfg["device"]["officer_id"],
                                               "mode": "dock-serve"})
    except (IdentityError, JournalError, OSError) as exc:   # EvidenceInUse: exit 5 in cli.main
        return _evidence_open_failed(exc, key_dir, provision=False)
    link = DockLink(settings, evidence, key_file=key_dir / PRIVATE_KEY_NAME)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        link.start()
    except DockLinkError as exc:
        error(str(exc))
        evidence.close("dock-link-error")
        return 1
    addr, port = link.address
    print(f"listening {addr} {port}", flush=True)
    try:
        stop.wait()
    finally:
        link.stop()
        evidence.close("stop")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction[_P]) -> None:
    dock = subparsers.add_parser("dock", help="dock link (offload to the dock station)")
    dsub = dock.add_subparsers(dest="dock_command", required=True)
    serve = dsub.add_parser("serve", help="serve the evidence to an agency dock until stopped")
    serve.add_argument("-v", "--verbose", action="count", default=0)
    serve.add_argument("--config", type=Path, help="bodycam TOML configuration ([dock], [storage], ...)")
    serve.add_argument("--evidence", type=Path, help="evidence directory (default: storage.dir)")
    serve.add_argument("--key-dir", type=Path, help="device key directory (default: identity.key_dir)")
    serve.add_argument("--listen-address", help="override dock.listen_address")
    serve.add_argument("--port", type=int, help="override dock.port")
    serve.add_argument("--ca-file", help="override dock.ca_file (agency CA certificate)")
    serve.add_argument("--cert-file", help="override dock.cert_file (this device's certificate)")
    serve.set_defaults(func=_serve)
