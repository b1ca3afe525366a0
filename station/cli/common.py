"""What every station command shares: the config option, signing in, output (human or --json), times."""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from station import config as config_mod
from station.access.accounts import authenticate
from station.app import Station
from station.db import models as m
from station.errors import InvalidInput

DEFAULT_CONFIG = "/etc/station/station.toml"

STATION_OPTIONS = argparse.ArgumentParser(add_help=False)
STATION_OPTIONS.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")


def add_common(sp: argparse.ArgumentParser, *, user: bool = True) -> argparse.ArgumentParser:
    """--config, --json (and --user, for commands done as someone)."""
    sp.add_argument("--config", type=Path, default=None,
                    help=f"station TOML (default: $STATION_CONFIG or {DEFAULT_CONFIG})")
    sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    if user:
        sp.add_argument("--user", default=None,
                        help="the account doing this (default $STATION_USER); password from $STATION_PASSWORD "
                             "or asked on the terminal")
    return sp


def config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("STATION_CONFIG") or DEFAULT_CONFIG)


def open_station(args: argparse.Namespace, **overrides: Any) -> Station:
    cfg = config_mod.load(config_path(args), **overrides)
    return Station.open(cfg)


def signed_in(args: argparse.Namespace, st: Station) -> m.User:
    username = args.user or os.environ.get("STATION_USER")
    if not username:
        raise InvalidInput("who is doing this? give --user NAME (or set STATION_USER)")
    password = os.environ.get("STATION_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidInput("no password: set STATION_PASSWORD or run on a terminal")
        password = getpass.getpass(f"password for {username}: ")
    return authenticate(st, username, password)


def iso(ns: int | None, tz: str | dt.tzinfo) -> str | None:
    """Nanoseconds since the epoch as ISO 8601 with milliseconds and the UTC offset of ``tz``."""
    if ns is None:
        return None
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    t = dt.datetime.fromtimestamp(ns // 10**9, zone) + dt.timedelta(microseconds=(ns % 10**9) // 1000)
    return t.isoformat(timespec="milliseconds")


def parse_time(text: str, tz: str) -> int:
    """An ISO 8601 date or time (local ``tz`` when it has no offset) as ns since the epoch."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 date/time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(tz))
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str] | str | None = None) -> None:
    """``data`` as JSON with --json, else the human text (``human`` or a plain rendering)."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
        return
    text = human() if callable(human) else human
    if text is None:
        text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)
    if text:
        print(text)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain text table: (key, heading) columns, widths from the content (CJK counted double)."""
    def width(s: str) -> int:
        return sum(2 if ord(c) > 0x2E80 else 1 for c in s)

    cells = [[str(r.get(k, "") if r.get(k) is not None else "") for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    ws = [max([width(h)] + [width(c[i]) for c in cells]) for i, h in enumerate(heads)]

    def line(vals: list[str]) -> str:
        return "  ".join(v + " " * (ws[i] - width(v)) for i, v in enumerate(vals)).rstrip()

    return "\n".join([line(heads)] + [line(c) for c in cells]) if rows else "(none)"
