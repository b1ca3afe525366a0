"""``./run-sim``: record on simulated hardware, verify the evidence, say where it is.

A bench engineer's one command: picks a fresh directory, provisions a device
key for the simulation beside the evidence, records (real time by default,
``--fast`` for a virtual clock), runs the same verifier the dock station runs,
and prints the evidence directory. Any other ``bodycam record`` option passes
through.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from firmware import cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run-sim", description=__doc__.splitlines()[0],
                                epilog="Other options are passed to 'bodycam record'.")
    p.add_argument("--duration", type=cli._seconds, default=30.0,
                   help="seconds to record, more than 0 (default 30)")
    p.add_argument("--out", type=Path,
                   help="directory for evidence/ and identity/ (default: out/sim-<UTC time>)")
    args, rest = p.parse_known_args(argv)
    base = args.out or Path("out") / f"sim-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    evidence, key_dir = base / "evidence", base / "identity"
    status = cli.main(["record", "--sim", "--duration", str(args.duration), "--out", str(evidence),
                       "--key-dir", str(key_dir), "--provision", *rest])
    if status not in (cli.EXIT_OK, cli.EXIT_STORAGE):
        return status
    pub = key_dir / "device-key.pub.pem"
    verdict = cli.main(["verify", str(evidence), "--pubkey", str(pub)])
    return status or verdict


if __name__ == "__main__":
    sys.exit(main())
