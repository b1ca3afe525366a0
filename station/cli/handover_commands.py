"""Handing pooled devices out and taking them back (S9 台账, D12): ``station device ...``.

    station device checkout DEVICE --officer 警号 [--wait S]   领用: the device must be docked
    station device checkin DEVICE [--wait S]                   归还: the device must be docked
    station device list                                        who has which device now
    station device history [--device DEVICE] [--officer 警号]  the usage ledger, ISO 8601 times

DEVICE is a registered device's id, its label, or a unique prefix of its id (6+ characters).
Check-out and check-in reach the device like ``station dock`` (``[dock] device_address`` and
``port``, overridable with ``--device-address``/``--port``; the dock's TLS identity) and send it
an assignment (or its release) signed with the dock's key; the device journals it, so every
later recording names the officer who wore it (docs/docking.md, "Assignments").

Exit codes: 0 done; 2 usage or the dock's TLS identity unusable; 3 not allowed (role), or the
device refused the assignment / release, or refused this dock; 5 no such officer account (警号)
or device; 6 the device is already checked out (check it in first) / not checked out / another
device is docked; 7 no device reachable (not docked: ``--wait``), or its answer was cut off.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from station.access.accounts import require_role
from station.cli.common import add_common, emit, iso, open_station, signed_in, table
from station.errors import EXIT_OK
from station.handover import assignment as handover

STATE_ZH = {"available": "在库", "checked-out": "在用", "unconfirmed": "待设备确认", "open": "在用",
            "closed": "已归还", "refused": "设备拒绝"}


def _with_times(rows: list[dict[str, Any]], tz: str) -> list[dict[str, Any]]:
    """``*_ns`` -> ISO 8601 under the name without ``_ns`` (what people and --json both get)."""
    out = []
    for r in rows:
        out.append({(k[:-3] if k.endswith("_ns") else k): (iso(v, tz) if k.endswith("_ns") else v)
                    for k, v in r.items()})
    return out


def _run(args: argparse.Namespace, action: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    st = open_station(args, device_address=getattr(args, "device_address", None), port=getattr(args, "port", None))
    try:
        user = signed_in(args, st)
        return action(st, user, *a, **kw), st.cfg.timezone
    finally:
        st.close()


def cmd_checkout(args: argparse.Namespace) -> int:
    r, tz = _run(args, handover.checkout, args.device, args.officer, wait_s=args.wait)
    data = _with_times([r], tz)[0]
    emit(args, data, lambda: (f"领用登记 #{data['assignment']}: 设备 {data['device']} -> 警号 {data['officer_id']} "
                              f"{data['officer_name']}（{data['unit']}），领用时间 {data['checked_out']}\n"
                              f"设备已验证并记入日志（记录 #{data['record_seq']}）；此后的录像归属该民警。"))
    return EXIT_OK


def cmd_checkin(args: argparse.Namespace) -> int:
    r, tz = _run(args, handover.checkin, args.device, wait_s=args.wait)
    data = _with_times([r], tz)[0]
    emit(args, data, lambda: (f"归还登记 #{data['assignment']}: 设备 {data['device']} 由警号 {data['officer_id']} "
                              f"归还，归还时间 {data['checked_in']}\n"
                              + (f"设备已记入日志（记录 #{data['record_seq']}）。" if data["released_on_device"]
                                 else "注意：设备上没有该领用记录在效；已在工作站关闭。")))
    return EXIT_OK


def _reader(st: Any, user: Any, what: str) -> None:
    require_role(st, user, "clerk", "admin", "auditor", "approver", what=what)


def cmd_list(args: argparse.Namespace) -> int:
    def action(st: Any, user: Any) -> list[dict[str, Any]]:
        _reader(st, user, "list devices")
        return handover.devices(st)
    rows, tz = _run(args, action)
    rows = _with_times(rows, tz)
    for r in rows:
        r["status_zh"] = STATE_ZH.get(r["status"], r["status"])
    emit(args, rows, lambda: table(rows, [("device", "设备编号"), ("label", "设备名称"), ("status_zh", "状态"),
                                          ("officer_id", "警号"), ("officer_name", "姓名"), ("unit", "单位"),
                                          ("since", "领用时间"), ("issued_to", "配发警号")]))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    def action(st: Any, user: Any) -> list[dict[str, Any]]:
        _reader(st, user, "read the device usage ledger")
        return handover.history(st, args.device, args.officer)
    rows, tz = _run(args, action)
    rows = _with_times(rows, tz)
    for r in rows:
        r["state_zh"] = STATE_ZH.get(r["state"], r["state"])
    emit(args, rows, lambda: table(rows, [
        ("assignment", "序号"), ("device", "设备编号"), ("officer_id", "警号"), ("officer_name", "姓名"),
        ("unit", "单位"), ("checked_out", "领用时间"), ("checked_out_by", "经办人"), ("checked_in", "归还时间"),
        ("checked_in_by", "归还经办人"), ("state_zh", "状态"), ("recordings", "录像数"), ("recorded_s", "录像秒数")]))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("device", help="pooled devices: check out to an officer, check in, who has what (S9, D12)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = d.add_subparsers(dest="device_command", required=True, metavar="SUBCOMMAND")

    def linked(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_common(sp)
        sp.add_argument("device", metavar="DEVICE", help="device id, label, or unique id prefix")
        sp.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="keep trying to reach the docked device this long")
        sp.add_argument("--device-address", help="override [dock] device_address")
        sp.add_argument("--port", type=int, help="override [dock] port")
        return sp

    co = linked(dsub.add_parser("checkout", help="领用: assign the docked device to an officer (clerk)"))
    co.add_argument("--officer", required=True, metavar="警号", help="the officer's number (an officer account)")
    co.set_defaults(func=cmd_checkout)
    ci = linked(dsub.add_parser("checkin", help="归还: end the docked device's assignment (clerk)"))
    ci.set_defaults(func=cmd_checkin)
    ls = add_common(dsub.add_parser("list", help="who has which device now"))
    ls.set_defaults(func=cmd_list)
    hi = add_common(dsub.add_parser("history", help="the usage ledger (台账): handovers and what was recorded"))
    hi.add_argument("--device", help="one device (id, label or prefix)")
    hi.add_argument("--officer", metavar="警号", help="one officer")
    hi.set_defaults(func=cmd_history)
