"""``station``: the evidence station's command line.

Every ``*_commands.py`` module in this package adds its subcommands (``register``); common
options, signing in and output are in ``station.cli.common``. Exit codes: station.errors.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from recorder.identity import IdentityError
from recorder.journal import JournalError
from station import __version__
from station.app import NotInitialised
from station.cli.common import STATION_OPTIONS
from station.config import StationConfigError
from station.db.engine import DatabaseError
from station.dock.pki import PkiError
from station.errors import EXIT_UNAVAILABLE, EXIT_USAGE, StationError


def command_modules() -> list[str]:
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if m.name.endswith("_commands"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="station", parents=[STATION_OPTIONS],
                                description="Evidence station (采集工作站): ingest, label, keep, review and "
                                            "export body-worn camera recordings. Exit codes: 0 ok, 1 check failed, "
                                            "2 usage, 3 not allowed/refused, 4 partial, 5 not found, 6 conflict, "
                                            "7 unavailable, 75 interrupted.")
    p.add_argument("--version", action="version", version=f"station {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=max(logging.WARNING - 10 * args.verbose, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        status: int = args.func(args)
        return status
    except StationError as exc:
        print(f"station: {exc}", file=sys.stderr)
        return exc.exit_code
    except (StationConfigError, PkiError, IdentityError, NotInitialised) as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseError, JournalError) as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OperationalError as exc:
        print(f"station: the catalogue database is unavailable: {exc.orig}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except SQLAlchemyError as exc:
        print(f"station: catalogue error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except OSError as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.errno in (28, 122) else EXIT_USAGE
