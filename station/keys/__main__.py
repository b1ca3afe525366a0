"""``python -m station.keys``: make, rotate and list the agency's age keys (docs/encryption.md).

    python -m station.keys init --file KEYFILE      a new agency key (0600); prints its recipient
    python -m station.keys rotate --file KEYFILE    a new key first, the old ones kept below
    python -m station.keys recipients --file KEYFILE [--json]

The recipient (``age1...``) is what devices get (``bodycam encryption install``); the key file
never leaves the station host (back it up offline: a lost key loses the recordings).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from station.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from station.keys.keyring import FileKeyring, KeyUnavailable, create_key_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m station.keys", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("init", "rotate", "recipients"))
    ap.add_argument("--file", type=Path, required=True, help="the agency key file (age identities)")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    try:
        if args.command == "recipients":
            found = FileKeyring(args.file).recipients()
        else:
            create_key_file(args.file, rotate=args.command == "rotate")
            found = FileKeyring(args.file).recipients()
    except FileExistsError as exc:
        print(f"station: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyUnavailable, OSError) as exc:
        print(f"station: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"file": str(args.file), "recipients": found, "current": found[0]}))
    else:
        print(f"current agency recipient (give it to the devices): {found[0]}")
        for r in found[1:]:
            print(f"older, kept for old recordings: {r}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
