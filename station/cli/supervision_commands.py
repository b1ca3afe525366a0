"""Supervision: ``stats`` (S10), ``signoff list|approve|reject`` (D6/D5 sign-off), ``ledger-report`` (S9).

Exit codes: 0 ok, 2 bad arguments, 3 not allowed (role, own item, not the officer's
supervisor), 5 no such item/device, 6 already decided, 7 catalogue unavailable.
"""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from station.cli.common import add_common, emit, open_station, parse_time, signed_in, table
from station.errors import EXIT_OK
from station.supervision import ledger_report, report, signoff, stats

EXIT_CODES = ("exit codes: 0 ok, 2 bad arguments, 3 not allowed (role; one's own item; not the officer's "
              "supervisor), 5 no such item or device, 6 already decided, 7 catalogue unavailable")


def _period(args: argparse.Namespace, tz: str) -> stats.Period:
    start = parse_time(args.from_, tz) if args.from_ else None
    end = None
    if args.to:
        end = parse_time(args.to, tz)
        if _is_date(args.to):            # --to 2026-09-30 includes that whole day
            end = parse_time((dt.date.fromisoformat(args.to) + dt.timedelta(days=1)).isoformat(), tz)
    return stats.Period(start, end)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) <= 10


def _write(path: Path | None, data: bytes, out: dict[str, Any], key: str) -> None:
    if path is not None:
        path.write_bytes(data)
        out[key] = str(path)


def cmd_stats(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        officer = stats.scope_for(st, user, args.officer, "see the statistics of use")
        s = stats.compute(st, period=_period(args, st.cfg.timezone), by=args.by, officer=officer,
                          device=args.device)
        data = s.to_dict(st.cfg.timezone)
        _write(args.csv, report.stats_csv(s) if args.csv else b"", data, "csv")
        if args.pdf:
            pending = signoff.list_items(st, user, pending_only=True, officer=officer, device=args.device)
            pending = [p for p in pending if s.period.holds(p["wall_ns"])]
            _write(args.pdf, report.stats_pdf(st, s, made_by=user.display_name or user.username, pending=pending),
                   data, "pdf")
        text = report.stats_text(st, s)
    finally:
        st.close()
    emit(args, data, lambda: text + "".join(f"\n{k.upper()}: {data[k]}" for k in ("csv", "pdf") if k in data))
    return EXIT_OK


def cmd_signoff_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        items = signoff.list_items(st, user, pending_only=args.pending, officer=args.officer, device=args.device)
    finally:
        st.close()
    emit(args, items, lambda: table(items, [("item", "编号"), ("kind_zh", "类别"), ("officer", "执法人员"),
                                            ("at", "时间"), ("cause_zh", "原因类别"), ("reason", "说明"),
                                            ("state_zh", "状态"), ("signed_off_by", "签批人"),
                                            ("signoff_note", "签批意见")]))
    return EXIT_OK


def _decide(args: argparse.Namespace, decision: str) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        item = signoff.decide(st, user, args.item, decision, args.note)
    finally:
        st.close()
    emit(args, item, f"第 {item['item']} 项（{item['kind_zh']}，{item['officer']}）{item['state_zh']}："
                     f"{item['signoff_note']}（签批人 {item['signed_off_by']}，{item['signed_off_at']}）")
    return EXIT_OK


def cmd_signoff_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approved")


def cmd_signoff_reject(args: argparse.Namespace) -> int:
    return _decide(args, "rejected")


def cmd_ledger_report(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        officer = stats.scope_for(st, user, args.officer, "see the usage ledger")
        r = ledger_report.build(st, device=args.device, officer=officer)
        data: dict[str, Any] = {"devices": r.devices, "rows": r.rows}
        _write(args.csv, report.ledger_csv(r) if args.csv else b"", data, "csv")
        if args.pdf:
            scope = "；".join(x for x in (f"设备 {args.device}" if args.device else "",
                                          f"警号 {officer}" if officer else "") if x) or "全部设备"
            _write(args.pdf, report.ledger_pdf(st, r, made_by=user.display_name or user.username, scope=scope),
                   data, "pdf")
    finally:
        st.close()
    emit(args, data, lambda: report.ledger_text(r) + "".join(f"\n{k.upper()}: {data[k]}"
                                                             for k in ("csv", "pdf") if k in data))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_common(sub.add_parser(
        "stats", help="statistics of use (S10) per officer, device or week",
        description="Per officer (or device, or week) over a period: hours recorded, recordings, dockings and "
                    "those later than 24 h after the shift (D11), labels overdue (S2), interruptions by cause "
                    "(D5), reasons missing, not-recording reasons (D6) awaiting sign-off. Officers see their "
                    "own figures only. See station/docs/supervision.md.", epilog=EXIT_CODES))
    p.add_argument("--from", dest="from_", metavar="DATE", help="period start, ISO 8601 date or time "
                   "([station] timezone unless it has an offset)")
    p.add_argument("--to", metavar="DATE", help="period end (exclusive; a date alone includes that day)")
    p.add_argument("--officer", metavar="NO", help="only this officer (警号)")
    p.add_argument("--device", metavar="ID", help="only this device (id or a unique start of it)")
    p.add_argument("--by", choices=stats.GROUPINGS, default="officer", help="group by (default officer)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV (UTF-8, Excel)")
    p.add_argument("--pdf", type=Path, metavar="FILE", help="also write a printable PDF (A4 landscape)")
    p.set_defaults(func=cmd_stats)

    so = sub.add_parser("signoff", help="supervisor sign-off (签批) of not-recording reasons (D6) and missing "
                        "interruption reasons (D5)", epilog=EXIT_CODES)
    ssub = so.add_subparsers(dest="signoff_command", required=True)
    sl = add_common(ssub.add_parser("list", help="the sign-off items, oldest first", epilog=EXIT_CODES))
    sl.add_argument("--pending", action="store_true", help="only those awaiting a decision")
    sl.add_argument("--officer", metavar="NO", help="only this officer (警号)")
    sl.add_argument("--device", metavar="ID", help="only this device")
    sl.set_defaults(func=cmd_signoff_list)
    for name, func, verb in (("approve", cmd_signoff_approve, "approve (批准)"),
                             ("reject", cmd_signoff_reject, "reject (驳回); stays visible as rejected")):
        sp = add_common(ssub.add_parser(
            name, help=f"{verb} an item, as the officer's supervisor (an approver; never one's own)",
            epilog=EXIT_CODES))
        sp.add_argument("item", type=int, metavar="ITEM", help="the item number (编号) from `signoff list`")
        sp.add_argument("--note", required=True, help="the sign-off note (签批意见)")
        sp.set_defaults(func=func)

    lr = add_common(sub.add_parser(
        "ledger-report", help="the usage ledger (台账, S9) per device: who, handover and docking times, "
                              "what was recorded", epilog=EXIT_CODES))
    lr.add_argument("--device", metavar="ID", help="only this device (id or a unique start of it)")
    lr.add_argument("--officer", metavar="NO", help="only this officer (警号)")
    lr.add_argument("--csv", type=Path, metavar="FILE", help="also write it as CSV (UTF-8, Excel)")
    lr.add_argument("--pdf", type=Path, metavar="FILE", help="also write a printable PDF (A4 landscape)")
    lr.set_defaults(func=cmd_ledger_report)
