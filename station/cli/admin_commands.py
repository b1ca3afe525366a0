"""Setting a station up and checking it: ``init``, ``verify``, ``db upgrade``, ``user add`` / ``user list``."""
from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import select

from station.access.accounts import ROLES, create_user, require_role
from station.audit.integrity import verify_station
from station.cli.common import add_common, config_path, emit, open_station, signed_in, table
from station.config import load
from station.db import models as m
from station.db.engine import Database
from station.errors import EXIT_FAILED, EXIT_OK, InvalidInput
from station.setup import init_station


def cmd_init(args: argparse.Namespace) -> int:
    path = config_path(args)
    r = init_station(path, unit=args.unit, store_dir=args.store, database_url=args.database_url, name=args.name)
    data = {"config": str(r.config), "config_written": r.config_written, "store": str(r.store),
            "database": Database(r.database).safe_url, "key": str(r.key), "key_made": r.key_made,
            "station": r.station, "web_pin": r.web_pin}
    cfg_opt = "" if args.config is None and not os.environ.get("STATION_CONFIG") else f" --config {path}"
    emit(args, data, lambda: "\n".join([
        f"station {r.station}: {'wrote' if r.config_written else 'kept'} {r.config}",
        f"  store     {r.store}", f"  catalogue {data['database']}",
        f"  key       {r.key} ({'made' if r.key_made else 'kept'}); public half: {r.store}/station-key.pub.pem",
        *([f"  web       self-signed HTTPS certificate made; its SPKI pin (sha256) is {r.web_pin}"] if r.web_pin
          else []),
        "next:",
        "  1. the dock certificate (on the CA machine):  station pki issue-dock --ca-dir CA --out /etc/station "
        "--name dock-1",
        f"  2. the first administrator:  station user add{cfg_opt} --first --username admin --role admin",
        f"  3. each device:  station register{cfg_opt} --pubkey device-key.pub.pem [--officer 警号]",
        f"  4. check it all:  station verify{cfg_opt}"]))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        if args.user or os.environ.get("STATION_USER"):
            require_role(st, signed_in(args, st), "auditor", "admin", "clerk", what="verify the station")
        report = verify_station(st, files=args.files)
    finally:
        st.close()

    def human() -> str:
        head = f"#{report.head[0]}" if report.head else "empty"
        lines = [f"audit journal: {report.records} records, head {head}; {report.rows_checked} catalogue rows"
                 f"{f', {report.files_checked} files' if args.files else ''} checked"]
        lines += [f"  {f.kind}: {f.where}: {f.detail}" for f in report.findings]
        lines.append("OK" if report.ok else f"FAILED: {len(report.findings)} finding(s)")
        return "\n".join(lines)
    emit(args, report.to_dict(), human)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    cfg = load(config_path(args))
    db = Database(cfg.database_url)
    try:
        db.upgrade()
        emit(args, {"database": db.safe_url, "revision": db.revision()},
             lambda: f"{db.safe_url}: at schema {db.revision()}")
    finally:
        db.dispose()
    return EXIT_OK


def _password() -> str:
    pw = os.environ.get("STATION_NEW_PASSWORD")
    if pw is None:
        if not sys.stdin.isatty():
            raise InvalidInput("no password for the new account: set STATION_NEW_PASSWORD or run on a terminal")
        import getpass
        pw = getpass.getpass("new account's password: ")
        if getpass.getpass("again: ") != pw:
            raise InvalidInput("the two passwords differ")
    return pw


def cmd_user_add(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        actor = None if args.first else signed_in(args, st).username
        user = create_user(st, actor, args.username, _password(), args.role, display_name=args.name or "",
                           officer_no=args.officer_no, unit=args.unit or st.cfg.unit, supervisor=args.supervisor)
    finally:
        st.close()
    emit(args, {"username": user.username, "roles": user.roles.split(","), "officer_no": user.officer_no},
         f"added {user.username} ({user.roles})")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        require_role(st, signed_in(args, st), "admin", "auditor", "approver", what="list accounts")
        with st.db.session() as s:
            rows = [{"username": u.username, "name": u.display_name, "officer_no": u.officer_no,
                     "roles": u.roles, "supervisor": u.supervisor, "active": u.active}
                    for u in s.scalars(select(m.User).order_by(m.User.username))]
    finally:
        st.close()
    emit(args, rows, lambda: table(rows, [("username", "账号"), ("name", "姓名"), ("officer_no", "警号"),
                                          ("roles", "角色"), ("supervisor", "上级")]))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_common(sub.add_parser("init", help="write a config, create the store, catalogue and station key"),
                   user=False)
    p.add_argument("--unit", help="the agency unit name (单位名称), for a new config")
    p.add_argument("--store", help="store directory, for a new config")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the store)")
    p.add_argument("--name", help="this station's name (default station-1)")
    p.set_defaults(func=cmd_init)

    v = add_common(sub.add_parser("verify", help="check the audit journal, the catalogue against it, "
                                  "and (--files) the stored evidence; exit 1 on any finding"))
    v.add_argument("--files", action="store_true", help="also re-hash every stored segment")
    v.set_defaults(func=cmd_verify)

    d = sub.add_parser("db", help="the catalogue's schema")
    dsub = d.add_subparsers(dest="db_command", required=True)
    add_common(dsub.add_parser("upgrade", help="migrate the catalogue to this version's schema"),
               user=False).set_defaults(func=cmd_db_upgrade)

    u = sub.add_parser("user", help="accounts (S8)")
    usub = u.add_subparsers(dest="user_command", required=True)
    ua = add_common(usub.add_parser("add", help="add an account (password from $STATION_NEW_PASSWORD or asked)"))
    ua.add_argument("--username", required=True)
    ua.add_argument("--role", action="append", required=True, choices=ROLES, help="repeat for several")
    ua.add_argument("--name", help="display name (姓名)")
    ua.add_argument("--officer-no", help="警号 (officers)")
    ua.add_argument("--unit")
    ua.add_argument("--supervisor", help="the supervisor's user name (overdue labels are flagged to them)")
    ua.add_argument("--first", action="store_true", help="the station's first account (an administrator); "
                    "no sign-in")
    ua.set_defaults(func=cmd_user_add)
    ul = add_common(usub.add_parser("list", help="list accounts"))
    ul.set_defaults(func=cmd_user_list)
    from station.cli.access_commands import register_user_commands  # user passwd|disable|enable|roles (S8)
    register_user_commands(usub)
