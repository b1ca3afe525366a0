"""Keeping the evidence: ``retention show|list`` (S5), ``hold place|release|list`` (S6),
``purge list|run`` (S11). See station/docs/keeping.md.

Exit codes: 0 ok (also ``purge run`` without --confirm: it only lists); 2 bad arguments or
input (a missing reason, ``other`` without text); 3 not allowed (role) or wrong password;
5 no such recording or hold; 6 conflict (purge of a held, in-retention or purged recording;
a hold on a purged recording; a hold released twice); 7 catalogue or store unavailable.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from sqlalchemy import select

from station.access.accounts import has_role, require_role
from station.app import Station
from station.cli.common import add_common, emit, iso, open_station, parse_time, signed_in, table
from station.db import models as m
from station.errors import EXIT_OK, InvalidInput
from station.keeping import holds as holds_mod
from station.keeping import purge as purge_mod
from station.keeping.retention import RULES_ZH, active_holds, explain
from station.recordings import find_recording

READ_ROLES = ("clerk", "approver", "auditor", "admin")
STATUS_ZH = {"stored": "在库", "purged": "已销毁"}


def _size(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n} B"
    return f"{n // (1024 * 1024)} MiB ({n} B)"


# ---- retention (S5) ------------------------------------------------------------------------------
def _retention_row(st: Station, s: Any, rec: m.Recording) -> dict[str, Any]:
    d = explain(st.cfg, s, rec)
    holds = active_holds(s, rec.id)
    tz = st.cfg.timezone
    return {"recording": rec.id, "name": rec.name, "device": rec.device_id, "recording_id": rec.recording_id,
            "status": rec.status, "end_wall_ns": rec.end_wall_ns, "end": iso(rec.end_wall_ns, tz),
            "retention_end_ns": rec.retention_end_ns, "retention_end": iso(rec.retention_end_ns, tz),
            "rule": d.rule, "rule_zh": RULES_ZH[d.rule], "why": d.text_zh(), "decision": d.to_dict(),
            "current": d.end_ns == rec.retention_end_ns or rec.status == "purged",
            "held": bool(holds), "holds": [{"id": h.id, "kind": h.kind, "kind_zh": holds_mod.KINDS_ZH[h.kind],
                                             "text": h.text, "placed_by": h.placed_by,
                                             "placed": iso(h.placed_ns, tz)} for h in holds],
            "purged": iso(rec.purged_ns, tz)}


def cmd_retention_show(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        with st.db.session() as s:
            rec = find_recording(s, args.recording)
            own = has_role(user, "officer") and user.officer_no is not None and user.officer_no == rec.officer_id
            if not own:
                require_role(st, user, *READ_ROLES, what=f"see the retention of recording {rec.id}")
            row = _retention_row(st, s, rec)
    finally:
        st.close()

    def human() -> str:
        lines = [f"录像 {row['recording']}  {row['name']}",
                 f"  状态          {STATUS_ZH.get(row['status'], row['status'])}",
                 f"  录制结束      {row['end'] or '-'}",
                 f"  保存期限至    {row['retention_end'] or '未确定（关联案件未结案）'}",
                 f"  依据          {row['why']}"]
        if not row["current"]:
            lines.append("  注意          目录中的保存期限与按当前规则计算的不一致，将在下次变更时更新")
        if row["holds"]:
            lines += [f"  长期保存      封存 #{h['id']} {h['kind_zh']}{'：' + h['text'] if h['text'] else ''}"
                      f"（{h['placed_by']}，{h['placed']}）——解除前不得销毁" for h in row["holds"]]
        else:
            lines.append("  长期保存      无")
        if row["purged"]:
            lines.append(f"  销毁时间      {row['purged']}")
        return "\n".join(lines)
    emit(args, row, human)
    return EXIT_OK


def cmd_retention_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        require_role(st, signed_in(args, st), *READ_ROLES, what="list retention ends")
        before = parse_time(args.before, st.cfg.timezone) if args.before else None
        with st.db.session() as s:
            q = select(m.Recording).order_by(m.Recording.retention_end_ns.is_(None),
                                             m.Recording.retention_end_ns, m.Recording.id)
            if before is not None:
                q = q.where(m.Recording.retention_end_ns.is_not(None), m.Recording.retention_end_ns < before)
            if not args.all:
                q = q.where(m.Recording.status == "stored")
            rows = [_retention_row(st, s, rec) for rec in s.scalars(q)]
    finally:
        st.close()
    for r in rows:
        r["held_zh"] = "是" if r["held"] else ""
        r["status_zh"] = STATUS_ZH.get(r["status"], r["status"])
        r["retention_end_shown"] = r["retention_end"] or "结案前"
    emit(args, rows, lambda: table(rows, [("recording", "编号"), ("name", "名称"), ("status_zh", "状态"),
                                          ("retention_end_shown", "保存期限至"), ("rule_zh", "依据"),
                                          ("held_zh", "封存")]))
    return EXIT_OK


# ---- holds (S6) ------------------------------------------------------------------------------------
def _hold_dict(st: Station, h: holds_mod.HoldView) -> dict[str, Any]:
    d = h.to_dict()
    d["placed"], d["released"] = iso(h.placed_ns, st.cfg.timezone), iso(h.released_ns, st.cfg.timezone)
    return d


def cmd_hold_place(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        h = holds_mod.place(st, signed_in(args, st), args.recording, args.kind, reason=args.reason, text=args.text)
        data = _hold_dict(st, h)
    finally:
        st.close()
    emit(args, data, f"封存 #{h.id}：录像 {h.recording}（{h.recording_name}）长期保存，类型 {h.kind_zh}；"
                     "解除前不得销毁")
    return EXIT_OK


def cmd_hold_release(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        h = holds_mod.release(st, signed_in(args, st), args.hold_id, reason=args.reason)
        data = _hold_dict(st, h)
    finally:
        st.close()
    emit(args, data, f"封存 #{h.id} 已解除（录像 {h.recording}，{h.recording_name}）；到期后可销毁")
    return EXIT_OK


def cmd_hold_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        require_role(st, signed_in(args, st), *READ_ROLES, what="list holds")
        rows = [_hold_dict(st, h) for h in holds_mod.list_holds(st, active_only=not args.all,
                                                               recording=args.recording)]
    finally:
        st.close()
    for r in rows:
        r["kind_shown"] = r["kind_zh"] + (f"：{r['text']}" if r["text"] else "")
        r["state"] = "有效" if r["active"] else f"已解除（{r['released_by']}）"
    emit(args, rows, lambda: table(rows, [("id", "封存号"), ("recording", "录像"), ("recording_name", "名称"),
                                          ("kind_shown", "类型"), ("reason", "理由"), ("placed_by", "办理人"),
                                          ("placed", "时间"), ("state", "状态")]))
    return EXIT_OK


# ---- purge (S11) ------------------------------------------------------------------------------------
def _candidate_dict(st: Station, c: purge_mod.Candidate) -> dict[str, Any]:
    d = c.to_dict()
    d["retention_end"] = iso(c.retention_end_ns, st.cfg.timezone)
    return d


def _candidates_text(rows: list[dict[str, Any]], unfinished: list[dict[str, Any]]) -> str:
    lines = []
    if not rows:
        lines.append("没有可销毁的录像（无已过保存期限且未封存的录像）")
    for r in rows:
        segs = [f for f in r["files"] if f["role"] != "view"]
        head = f"录像 {r['recording']}  {r['name']}  保存期限至 {r['retention_end']}  {_size(r['bytes'])}"
        if r.get("refused"):
            head += f"  不可销毁：{r['refused']}"
        lines.append(head)
        lines += [f"    {f['path']}  {f['size']} B  sha256 {f['sha256']}" for f in segs]
        views = [f for f in r["files"] if f["role"] == "view"]
        if views:
            lines.append(f"    + 命名视图 {len(views)} 个文件")
    if rows:
        total = sum(r["bytes"] for r in rows if not r.get("refused"))
        n = sum(1 for r in rows if not r.get("refused"))
        lines.append(f"合计 {n} 个录像，{_size(total)}")
    for u in unfinished:
        lines.append(f"未完成的销毁 #{u['purge']}（录像 {u['recording']}）：{len(u['files'])} 个文件仍在，"
                     "运行 station purge run --confirm 完成")
    return "\n".join(lines)


def _unfinished_dicts(st: Station) -> list[dict[str, Any]]:
    return [{"purge": t.id, "recording": t.recording, "files": [f.to_dict() for f in left]}
            for t, left in purge_mod.unfinished(st)]


def cmd_purge_list(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        # the daily timer runs this as the station's service account, which reads the catalogue
        # anyway (like `station verify`); a person signing in needs a reading role
        if args.user or os.environ.get("STATION_USER"):
            require_role(st, signed_in(args, st), "admin", "auditor", "clerk", what="list purge candidates")
        rows = [_candidate_dict(st, c) for c in purge_mod.candidates(st)]
        unfinished = _unfinished_dicts(st)
        now = st.now_ns()
    finally:
        st.close()
    data = {"now_ns": now, "candidates": rows, "count": len(rows), "bytes": sum(r["bytes"] for r in rows),
            "unfinished": unfinished}
    emit(args, data, lambda: _candidates_text(rows, unfinished))
    return EXIT_OK


def cmd_purge_run(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        require_role(st, user, *purge_mod.PURGE_ROLES, what="purge recordings (S11)")
        refs = args.recording or None
        if not args.confirm:
            listed = purge_mod.examine(st, refs) if refs else purge_mod.candidates(st)
            rows = [_candidate_dict(st, c) for c in listed]
            unfinished = _unfinished_dicts(st)
            data = {"confirmed": False, "purged": [], "would_purge": rows, "unfinished": unfinished}
            emit(args, data, lambda: _candidates_text(rows, unfinished) +
                 "\n未确认：没有删除任何文件。确认销毁请加 --confirm（仅系统管理员）")
            return EXIT_OK
        if not (args.reason or "").strip():
            raise InvalidInput("a purge needs a reason (--reason)")
        done = purge_mod.purge(st, user, refs, reason=args.reason)
        data = {"confirmed": True, "purged": [{**o.to_dict(), "confirmed_by": user.username} for o in done]}
    finally:
        st.close()

    def human() -> str:
        if not done:
            return "没有可销毁的录像"
        lines = [f"已销毁录像 {o.recording}（{o.name}）：{o.removed} 个文件，{_size(o.bytes)}；"
                 f"销毁记录 #{o.purge_id}，审计记录 #{o.audit_seq}" for o in done]
        return "\n".join(lines)
    emit(args, data, human)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    r = sub.add_parser("retention", help="retention ends (S5): when each recording may be purged, and why")
    rsub = r.add_subparsers(dest="retention_command", required=True)
    rs = add_common(rsub.add_parser("show", help="a recording's retention end, the rule that decided it, "
                                    "and its holds"))
    rs.add_argument("recording", help="recording number, S3 name or DEVICE/RECORDING_ID")
    rs.set_defaults(func=cmd_retention_show)
    rl = add_common(rsub.add_parser("list", help="every stored recording's retention end (ISO 8601, station "
                                    "time zone)"))
    rl.add_argument("--before", help="only those ending before this ISO 8601 date/time (station time zone)")
    rl.add_argument("--all", action="store_true", help="include purged recordings")
    rl.set_defaults(func=cmd_retention_list)

    h = sub.add_parser("hold", help="long-term holds (S6): keep a recording beyond retention")
    hsub = h.add_subparsers(dest="hold_command", required=True)
    hp = add_common(hsub.add_parser("place", help="hold a recording (clerk, approver, admin); needs a reason"))
    hp.add_argument("recording", help="recording number, S3 name or DEVICE/RECORDING_ID")
    hp.add_argument("--kind", required=True, choices=list(holds_mod.KINDS_ZH),
                    help="; ".join(f"{k} = {v}" for k, v in holds_mod.KINDS_ZH.items()))
    hp.add_argument("--text", help="what it is (required for --kind other)")
    hp.add_argument("--reason", required=True, help="why the recording is held (audited)")
    hp.set_defaults(func=cmd_hold_place)
    hr = add_common(hsub.add_parser("release", help="release a hold (approver, admin); needs a reason"))
    hr.add_argument("hold_id", type=int)
    hr.add_argument("--reason", required=True, help="why the hold ends (audited)")
    hr.set_defaults(func=cmd_hold_release)
    hl = add_common(hsub.add_parser("list", help="holds in force (--all: released ones too)"))
    hl.add_argument("--all", action="store_true", help="include released holds")
    hl.add_argument("--recording", help="only this recording's")
    hl.set_defaults(func=cmd_hold_list)

    p = sub.add_parser("purge", help="expiry (S11): recordings past retention and not held; purged only on "
                       "an administrator's confirmation")
    psub = p.add_subparsers(dest="purge_command", required=True)
    pl = add_common(psub.add_parser("list", help="the candidates: past retention, not held, not purged, with "
                                    "their files, hashes and bytes (the daily timer logs this)"))
    pl.set_defaults(func=cmd_purge_list)
    pr = add_common(psub.add_parser("run", help="purge (administrator); without --confirm only lists what "
                                    "would be purged and exits 0"))
    pr.add_argument("--recording", action="append", metavar="ID",
                    help="purge only this recording (repeat); default: every candidate")
    pr.add_argument("--reason", help="why (audited; required with --confirm)")
    pr.add_argument("--confirm", action="store_true", help="really delete: the administrator's confirmation")
    pr.set_defaults(func=cmd_purge_run)

