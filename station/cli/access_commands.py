"""Controlled access (S8): ``access request|approve|refuse|revoke|list|log``, ``view``, ``copy``; and the
account commands ``user passwd|disable|enable|roles`` (added to ``user`` by admin_commands).

See station/docs/access.md for the rules. Exit codes (station.errors): 0 ok, 1 a stored original
failed its hash check (view/copy refused, integrity alert audited), 2 bad input, 3 not allowed
(role, own request, no/expired/revoked approval, wrong password), 5 no such recording/request/user,
6 conflict (purged, already decided or not in force, target exists), 7 unavailable (disk full,
database gone).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from station.access import accounts, requests, viewer
from station.access.policy import ACTION_ZH, ACTIONS
from station.app import Station
from station.cli.common import add_common, emit, iso, open_station, signed_in, table
from station.errors import EXIT_OK, InvalidInput
from station.recordings import find_recording


def _recording(st: Station, ref: str) -> int:
    with st.db.session() as s:
        return find_recording(s, ref).id


def _request_row(r: dict[str, Any], tz: str) -> dict[str, Any]:
    return {**r, "requested": iso(r["requested_ns"], tz), "decided": iso(r["decided_ns"], tz),
            "valid_until": iso(r["valid_until_ns"], tz), "revoked": iso(r["revoked_ns"], tz)}


def cmd_request(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        req = requests.request_access(st, user, _recording(st, args.recording), args.action, args.reason)
        data = {"id": req.id, "recording": req.recording, "action": req.action, "reason": req.reason,
                "status": req.status, "requested": iso(req.requested_ns, st.cfg.timezone)}
    finally:
        st.close()
    emit(args, data, f"申请 {req.id}: {user.username} 申请{ACTION_ZH[req.action]}执法记录 {req.recording} "
                     f"(事由: {req.reason}); 待审批 — another approver decides with "
                     f"`station access approve {req.id}`")
    return EXIT_OK


def cmd_decide(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        if args.access_command == "approve":
            req = requests.approve(st, user, args.request_id, hours=args.hours, note=args.note)
        elif args.access_command == "revoke":
            req = requests.revoke(st, user, args.request_id, args.note)
        else:
            req = requests.refuse(st, user, args.request_id, args.note)
        data = _request_row(requests.request_dict(req, st.now_ns()), st.cfg.timezone)
    finally:
        st.close()
    if req.status == "revoked":
        text = (f"申请 {req.id} 的批准已撤销 (撤销人 {req.revoked_by}): {req.requester} 不能再{ACTION_ZH[req.action]}"
                f"执法记录 {req.recording}; 理由: {req.revoke_note}")
    elif req.status == "approved":
        text = (f"申请 {req.id} 已批准 (审批人 {req.decided_by}): {req.requester} 可{ACTION_ZH[req.action]}"
                f"执法记录 {req.recording}, 有效期至 {data['valid_until']}")
    else:
        text = f"申请 {req.id} 不予批准 (审批人 {req.decided_by}): {req.decision_note}"
    emit(args, data, text)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        rows = [_request_row(r, st.cfg.timezone)
                for r in requests.requests(st, user, pending=args.pending, mine=args.mine)]
    finally:
        st.close()

    def human() -> str:
        shown = [{**r, "action": ACTION_ZH[r["action"]], "status": requests.STATUS_ZH.get(r["status"], r["status"])}
                 for r in rows]
        return table(shown, [("id", "申请号"), ("recording", "记录"), ("requester", "申请人"), ("action", "事项"),
                             ("reason", "事由"), ("requested", "申请时间"), ("status", "状态"),
                             ("decided_by", "审批人"), ("valid_until", "有效期至")])
    emit(args, rows, human)
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        reg = requests.access_log(st, user, _recording(st, args.recording))
        tz = st.cfg.timezone
        data = reg.to_dict()
        data["requests"] = [_request_row(r, tz) for r in reg.requests]
        data["attempts"] = [{**a, "at": iso(a["at_ns"], tz)} for a in reg.attempts]
    finally:
        st.close()

    def human() -> str:
        rec = data["recording"]
        reqs = [{**r, "action": ACTION_ZH[r["action"]], "status": requests.STATUS_ZH.get(r["status"], r["status"])}
                for r in data["requests"]]
        tries = [{**a, "action": ACTION_ZH[a["action"]], "granted": "准许" if a["granted"] else "拒绝"}
                 for a in data["attempts"]]
        return "\n".join([
            f"执法记录 {rec['id']} {rec['name']} ({rec['status']}) — 查阅登记 (S8)", "", "申请与审批:",
            table(reqs, [("id", "申请号"), ("requester", "申请人"), ("action", "事项"), ("reason", "事由"),
                         ("requested", "申请时间"), ("status", "状态"), ("decided_by", "审批人"),
                         ("decided", "审批时间"), ("note", "审批意见"), ("valid_until", "有效期至"),
                         ("revoked_by", "撤销人"), ("revoked", "撤销时间"), ("revoke_note", "撤销理由")]),
            "", "查看/复制登记:",
            table(tries, [("at", "时间"), ("username", "人员"), ("action", "事项"), ("granted", "结果"),
                          ("reason", "事由"), ("approver", "审批人"), ("request_id", "申请号"), ("rule", "依据"),
                          ("audit_seq", "审计记录")])])
    emit(args, data, human)
    return EXIT_OK


def cmd_view(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        v = viewer.view(st, user, _recording(st, args.recording), args.reason)
    finally:
        st.close()
    emit(args, v.to_dict(), lambda: "\n".join(str(g.path) for g in v.segments) or "(no stored segments)")
    if not args.json:
        who = f"审批人 {v.access.approver}, 申请 {v.access.request_id}" if v.access.approver else "本人记录"
        print(f"查看登记 {v.access.id}: {len(v.segments)} 个原始片段, 已校验 SHA-256 ({who})", file=sys.stderr)
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        r = viewer.copy(st, user, _recording(st, args.recording), args.to, args.reason)
    finally:
        st.close()
    emit(args, r.to_dict(), f"复制 {len(r.files)} 个原始片段 ({r.bytes} bytes) 到 {r.directory}; "
                            f"清单 {r.directory / viewer.MANIFEST} (SHA-256 {r.manifest_sha256[:16]}…); "
                            f"审批人 {r.access.approver}, 申请 {r.access.request_id}")
    return EXIT_OK


# ---- accounts --------------------------------------------------------------------------------------
def _new_password() -> str:
    pw = os.environ.get("STATION_NEW_PASSWORD")
    if pw is None:
        if not sys.stdin.isatty():
            raise InvalidInput("no new password: set STATION_NEW_PASSWORD or run on a terminal")
        import getpass
        pw = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != pw:
            raise InvalidInput("the two passwords differ")
    return pw


def cmd_passwd(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        target = args.username or user.username
        accounts.set_password(st, user, target, _new_password())
    finally:
        st.close()
    emit(args, {"username": target, "changed_by": user.username}, f"password of {target} changed")
    return EXIT_OK


def cmd_active(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        enable = args.user_command == "enable"
        t = accounts.set_active(st, user, args.username, enable, reason=args.reason)
    finally:
        st.close()
    emit(args, {"username": t.username, "active": t.active},
         f"{t.username} {'enabled (may sign in)' if t.active else 'disabled (can no longer sign in)'}")
    return EXIT_OK


def cmd_roles(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        t = accounts.set_roles(st, user, args.username, args.role)
    finally:
        st.close()
    roles = sorted(accounts.roles_of(t))
    emit(args, {"username": t.username, "roles": roles},
         f"{t.username}: {', '.join(f'{r} ({accounts.ROLE_ZH[r]})' for r in roles)}")
    return EXIT_OK


def register_user_commands(usub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``user passwd|disable|enable|roles`` (called by admin_commands, which owns ``user``)."""
    p = add_common(usub.add_parser("passwd", help="change your password, or (admin) another's; the new one "
                                   "from $STATION_NEW_PASSWORD or asked"))
    p.add_argument("username", nargs="?", help="whose (default: your own; others need the role admin)")
    p.set_defaults(func=cmd_passwd)
    for verb, text in (("disable", "disable an account: it can no longer sign in (admin)"),
                       ("enable", "enable a disabled account again (admin)")):
        d = add_common(usub.add_parser(verb, help=text))
        d.add_argument("username")
        d.add_argument("--reason", help="why (kept in the audit record)")
        d.set_defaults(func=cmd_active)
    r = add_common(usub.add_parser("roles", help="replace an account's roles (admin)"))
    r.add_argument("username")
    r.add_argument("--role", action="append", required=True, choices=accounts.ROLES, help="repeat for several")
    r.set_defaults(func=cmd_roles)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    epilog = ("exit codes: 0 ok, 1 a stored original failed its hash check, 2 bad input, 3 not allowed, "
              "5 not found, 6 conflict, 7 unavailable (disk full)")
    a = sub.add_parser("access", help="S8 controlled access: requests, approvals, the access register",
                       epilog=epilog)
    asub = a.add_subparsers(dest="access_command", required=True)
    rq = add_common(asub.add_parser("request", help="ask to view or copy a recording (a reason is required)",
                                    epilog=epilog))
    rq.add_argument("recording", help="number, DEVICE/RECORDING_ID or S3 name")
    rq.add_argument("--action", required=True, choices=ACTIONS, help="view (查看) or copy (复制)")
    rq.add_argument("--reason", required=True, help="why (事由)")
    rq.set_defaults(func=cmd_request)
    ap = add_common(asub.add_parser("approve", help="approve another user's request (approver)", epilog=epilog))
    ap.add_argument("request_id", type=int)
    ap.add_argument("--hours", type=int, help=f"valid for (default [access] grant_hours; at most "
                    f"{requests.MAX_GRANT_HOURS})")
    ap.add_argument("--note", help="审批意见")
    ap.set_defaults(func=cmd_decide)
    rf = add_common(asub.add_parser("refuse", help="refuse another user's request (approver)", epilog=epilog))
    rf.add_argument("request_id", type=int)
    rf.add_argument("--note", required=True, help="why not (审批意见)")
    rf.set_defaults(func=cmd_decide)
    rv = add_common(asub.add_parser("revoke", help="withdraw an approval still in force, at once (approver)",
                                    epilog=epilog))
    rv.add_argument("request_id", type=int)
    rv.add_argument("--note", required=True, help="why (撤销理由)")
    rv.set_defaults(func=cmd_decide)
    ls = add_common(asub.add_parser("list", help="requests (approvers/auditors/admins see all, others their own)",
                                    epilog=epilog))
    ls.add_argument("--pending", action="store_true", help="only those awaiting a decision")
    ls.add_argument("--mine", action="store_true", help="only my own")
    ls.set_defaults(func=cmd_list)
    lg = add_common(asub.add_parser("log", help="the access register of a recording: every request and "
                                    "attempt with who, why, when, approver (auditor, approver)", epilog=epilog))
    lg.add_argument("recording", help="number, DEVICE/RECORDING_ID or S3 name")
    lg.set_defaults(func=cmd_log)

    v = add_common(sub.add_parser("view", help="after the access check, list the verified original segments "
                                  "of a recording (each re-hashed)", epilog=epilog))
    v.add_argument("recording", help="number, DEVICE/RECORDING_ID or S3 name")
    v.add_argument("--reason", help="why now (default: the approved request's reason)")
    v.set_defaults(func=cmd_view)
    c = add_common(sub.add_parser("copy", help="after copy approval, copy a recording's original segments with "
                                  "a manifest of hashes into DIR/<name>/", epilog=epilog))
    c.add_argument("recording", help="number, DEVICE/RECORDING_ID or S3 name")
    c.add_argument("--to", required=True, type=Path, help="an existing directory")
    c.add_argument("--reason", required=True, help="why (事由)")
    c.set_defaults(func=cmd_copy)
