"""``./run-sim``: record on simulated hardware and say where the evidence is.

A bench engineer's one command: picks a fresh output directory, records
(real time by default, ``--fast`` for a virtual clock), and prints the
directory. Any other ``bodycam record`` option passes through.
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
    p.add_argument("--duration", type=float, default=30.0, help="seconds to record (default 30)")
    p.add_argument("--out", type=Path, help="evidence directory (default: out/sim-<UTC time>)")
    args, rest = p.parse_known_args(argv)
    out = args.out or Path("out") / f"sim-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    return cli.main(["record", "--sim", "--duration", str(args.duration), "--out", str(out), *rest])


if __name__ == "__main__":
    sys.exit(main())
