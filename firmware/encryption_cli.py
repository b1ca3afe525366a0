"""Provisioning of the agency's public key: ``bodycam encryption install`` and ``status``.

The device holds only age *recipients* (public keys): the agency's, and optionally an escrow
key held by a second office. Installing them turns encryption on (``[encryption] mode =
"auto"``, the default); the private keys stay at the station (``station/keys``). The file is
written atomically and is world-readable: a public key is no secret, and the recorder,
running as the service user, must read it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TypeVar

from recorder import age

_P = TypeVar("_P", bound=argparse.ArgumentParser)
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def _err(text: str) -> None:
    print(f"bodycam: error: {text}", file=sys.stderr)


def _config(args: argparse.Namespace) -> dict[str, dict[str, object]] | None:
    from firmware import config as config_mod
    try:
        return config_mod.load(getattr(args, "config", None))
    except config_mod.ConfigError as exc:
        _err(str(exc))
        return None


def _target(args: argparse.Namespace, cfg: dict[str, dict[str, object]]) -> Path:
    return Path(args.file) if args.file else Path(str(cfg["encryption"]["recipients_file"]))


def install_recipients(path: Path, recipients: list[str], replace: bool = False) -> None:
    """Check every recipient, then write the file atomically (0644). Refuses to replace an
    installed key unless ``replace`` (key rotation is a deliberate act)."""
    checked = age.parse_recipients("\n".join(recipients))
    if not checked:
        raise age.AgeError("no recipient given")
    if path.exists() and not replace:
        raise FileExistsError(f"{path} exists: pass --replace to rotate the agency key")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ("# age recipients: segments and voice notes are encrypted to every key below\n"
            + "".join(r + "\n" for r in checked))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".recipients-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _install(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return EXIT_CONFIG
    path = _target(args, cfg)
    recipients = list(args.recipient) + ([args.escrow] if args.escrow else [])
    try:
        install_recipients(path, recipients, args.replace)
    except age.AgeError as exc:
        _err(f"not an age X25519 recipient: {exc}")
        return EXIT_USAGE
    except FileExistsError as exc:
        _err(str(exc))
        return EXIT_FAIL
    except OSError as exc:
        _err(f"cannot write {path}: {exc}")
        return EXIT_FAIL
    print(f"agency key installed in {path}: {len(recipients)} recipient(s); new segments are encrypted")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from firmware import config as config_mod
    cfg = _config(args)
    if cfg is None:
        return EXIT_CONFIG
    if args.file:
        cfg["encryption"]["recipients_file"] = str(args.file)
    mode = str(cfg["encryption"]["mode"])
    try:
        recipients = list(config_mod.encryption_recipients(cfg))
        problem = None
    except config_mod.EncryptionKeyMissing as exc:
        recipients, problem = [], str(exc)
    state = "on" if recipients else ("error" if problem else "off")
    if args.json:
        print(json.dumps({"mode": mode, "state": state, "recipients": recipients, "error": problem,
                          "file": str(_target(args, cfg))}))
    elif problem:
        _err(problem)
    else:
        print(f"encryption {state} (mode {mode}); recipients: {', '.join(recipients) or 'none'}")
    return EXIT_FAIL if problem else EXIT_OK


def add_subcommands(subparsers: argparse._SubParsersAction[_P]) -> None:
    enc = subparsers.add_parser("encryption", help="agency key for encryption at rest")
    esub = enc.add_subparsers(dest="encryption_command", required=True)
    ins = esub.add_parser("install", help="install the agency public key (age1...) on the device")
    ins.add_argument("--recipient", action="append", required=True, metavar="AGE1...",
                     help="the agency's age recipient (repeat for several)")
    ins.add_argument("--escrow", metavar="AGE1...", help="an optional second (escrow) recipient")
    ins.add_argument("--file", type=Path, help="recipients file (default: [encryption] recipients_file)")
    ins.add_argument("--config", type=Path, help="TOML configuration file")
    ins.add_argument("--replace", action="store_true", help="replace an installed key (rotation)")
    ins.set_defaults(func=_install)
    st = esub.add_parser("status", help="is encryption on, and to which keys")
    st.add_argument("--config", type=Path, help="TOML configuration file")
    st.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
