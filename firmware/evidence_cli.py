"""CLI subcommands for the evidence layer: device identity and verification.

``add_subcommands(subparsers)`` registers ``identity init``, ``identity export``
and ``verify``; each sets ``func`` (args -> exit code). Wire with::

    args = parser.parse_args(); sys.exit(args.func(args))

Runs standalone too: ``python -m firmware.evidence_cli verify DIR --pubkey KEY``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

from recorder import identity
from recorder.verify import verify_directory

DEFAULT_KEY_DIR = Path("/var/lib/bodycam/identity")
_P = TypeVar("_P", bound=argparse.ArgumentParser)   # the parser class of the subcommands


def _identity_init(args: argparse.Namespace) -> int:
    owner = None
    if args.owner:
        import pwd
        try:
            entry = pwd.getpwnam(args.owner)
        except KeyError:
            print(f"bodycam: error: no such user {args.owner!r}", file=sys.stderr)
            return 2
        owner = (entry.pw_uid, entry.pw_gid)
    try:
        signer = identity.provision(args.key_dir, owner=owner)
    except identity.IdentityExists as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bodycam: error: cannot create the device key in {args.key_dir}: {exc}", file=sys.stderr)
        return 2
    print(f"device {signer.device_id}: key created in {args.key_dir}")
    return 0


def _identity_export(args: argparse.Namespace) -> int:
    try:
        pem = identity.export_public_pem(args.key_dir)
    except (identity.IdentityError, OSError, ValueError) as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_bytes(pem)
    else:
        sys.stdout.write(pem.decode("ascii"))
    return 0


def _parse_anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("anchor must be SEQ:SHA256HEX")
    return int(seq), digest.lower()


def _verify(args: argparse.Namespace) -> int:
    try:
        pem = Path(args.pubkey).read_bytes()
        result = verify_directory(args.directory, pem, allow_open_parts=args.allow_open_parts,
                                  anchor=args.anchor)
    except (OSError, identity.BadPublicKey) as exc:
        print(f"bodycam: error: {exc}", file=sys.stderr)
        return 2
    for check in result.checks:
        print(f"ok  {check}")
    if not result.ok:
        print(f"FAIL {result.failure}", file=sys.stderr)
        return 1
    if result.head:
        print(f"PASS device {result.device_id}; head {result.head[0]}:{result.head[1]}")
    else:
        print(f"PASS device {result.device_id}; empty journal")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction[_P]) -> None:
    ident = subparsers.add_parser("identity", help="device signing key")
    isub = ident.add_subparsers(dest="identity_command", required=True)
    init = isub.add_parser("init", help="generate the device key pair (refuses to replace one)")
    init.add_argument("--key-dir", type=Path, default=DEFAULT_KEY_DIR)
    init.add_argument("--owner", help="service user to own the key (when run as root)")
    init.set_defaults(func=_identity_init)
    export = isub.add_parser("export", help="print the public key (PEM)")
    export.add_argument("--key-dir", type=Path, default=DEFAULT_KEY_DIR)
    export.add_argument("--out", type=Path, help="write to this file instead of stdout")
    export.set_defaults(func=_identity_export)

    verify = subparsers.add_parser("verify", help="verify an evidence directory")
    verify.add_argument("directory", type=Path)
    verify.add_argument("--pubkey", required=True, type=Path, help="device public key (PEM)")
    verify.add_argument("--allow-open-parts", action="store_true",
                        help="tolerate NAME.ts.part files still being written")
    verify.add_argument("--anchor", type=_parse_anchor, default=None,
                        help="SEQ:HASH of a record known from an earlier verification")
    verify.set_defaults(func=_verify)

    from firmware import encryption_cli  # provisioning of the agency key (docs/encryption.md)
    encryption_cli.add_subcommands(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bodycam-evidence")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)   # the subcommand's exit code
    return status


if __name__ == "__main__":
    sys.exit(main())
