"""Cases, labels (S2), the labelling queue, the S3-named view and the record checklist (S4).

    station case open --case-no NO --name NAME --category CAT [--department D]
    station case close NO [--reason TEXT] | case reopen NO --reason TEXT | case show NO | case list
    station label RECORDING (--case NO | --activity TEXT) [--category C] --counterpart P --content C
                  --place P [--from TIME] [--to TIME]
    station label correct LABEL_ID [--case NO | --activity T] [--category ...] [--from/--to | --whole]
                  --reason TEXT
    station label history RECORDING
    station queue [--overdue] [--officer NO]
    station checklist CASE_NO [--pdf FILE] [--csv FILE]
    station view check | view repair

Exit codes: 0 done; 1 ``view check`` found something; 2 invalid input (unknown category, a
range outside the recording, an ambiguous RECORDING, a correction without a reason); 3 not
allowed (audited); 5 no such recording, label or case; 6 conflict (purged recording, closed
case, a range already labelled: correct that label instead, case already closed/open); 7
catalogue or store unavailable. See station/docs/casework.md.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from station.access.accounts import require_role
from station.app import Station
from station.casework import cases, checklist, labels, queue, view
from station.cli.common import add_common, emit, iso, open_station, parse_time, signed_in, table
from station.errors import EXIT_FAILED, EXIT_OK, InvalidInput

STATUS_ZH = {"open": "办理中", "closed": "已结案"}


def _tz(st: Station) -> str:
    return st.cfg.timezone


# ---- case -------------------------------------------------------------------------------------
def _case_text(st: Station, c: dict[str, Any]) -> str:
    tz = _tz(st)
    lines = [f"案件编号 {c['case_no']}  案件名称 {c['name']}  执法类别 {c['category']}  部门 {c['department'] or '—'}",
             f"状态 {STATUS_ZH.get(c['status'], c['status'])}  立案 {iso(c['opened_ns'], tz)} ({c['opened_by']})"
             + (f"  结案 {iso(c['closed_ns'], tz)}" if c.get("closed_ns") else "")]
    if "retention_end_ns" in c:
        ends = c["retention_end_ns"]
        lines.append(f"{len(ends)} recording(s) linked; retention end (保存期限): "
                     + (", ".join(f"#{k} {iso(v, tz) or '案件办结前不删除'}" for k, v in ends.items()) or "—"))
    if "labels" in c:
        rows = [{"label": lab["id"], "rec": f"#{lab['recording']}", "rid": lab["recording_id"],
                 "officer": lab["officer_id"], "content": lab["content"], "place": lab["place"],
                 "retention": iso(lab["retention_end_ns"], tz) or "案件办结前不删除", "name": lab["name"]}
                for lab in c["labels"]]
        lines.append(table(rows, [("label", "标注"), ("rec", "录像"), ("rid", "录像编号"), ("officer", "警号"),
                                  ("content", "检查内容"), ("place", "地点"), ("retention", "保存至"),
                                  ("name", "文件名")]))
    return "\n".join(lines)


def cmd_case_open(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        c = cases.open_case(st, signed_in(args, st), args.case_no, args.name, args.category, args.department or "")
        emit(args, c, lambda: "opened case\n" + _case_text(st, c))
    return EXIT_OK


def cmd_case_close(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        c = cases.close_case(st, signed_in(args, st), args.case_no, args.reason)
        emit(args, c, lambda: "closed case\n" + _case_text(st, c))
    return EXIT_OK


def cmd_case_reopen(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        c = cases.reopen_case(st, signed_in(args, st), args.case_no, args.reason)
        emit(args, c, lambda: "reopened case\n" + _case_text(st, c))
    return EXIT_OK


def cmd_case_show(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        signed_in(args, st)
        c = cases.show_case(st, args.case_no)
        emit(args, c, lambda: _case_text(st, c))
    return EXIT_OK


def cmd_case_list(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        signed_in(args, st)
        rows = cases.list_cases(st, args.status)
        tz = _tz(st)
        emit(args, rows, lambda: table(
            [{**r, "status": STATUS_ZH.get(r["status"], r["status"]), "opened": iso(r["opened_ns"], tz)}
             for r in rows],
            [("case_no", "案件编号"), ("name", "案件名称"), ("category", "执法类别"), ("department", "部门"),
             ("status", "状态"), ("opened", "立案时间"), ("recordings", "录像数")]))
    return EXIT_OK


# ---- label ------------------------------------------------------------------------------------
def _label_input(args: argparse.Namespace, st: Station) -> labels.LabelInput:
    tz = _tz(st)
    return labels.LabelInput(case_no=args.case, activity=args.activity, category=args.category,
                             counterpart=args.counterpart, content=args.content, place=args.place,
                             range_from_ns=parse_time(args.range_from, tz) if args.range_from else None,
                             range_to_ns=parse_time(args.range_to, tz) if args.range_to else None,
                             whole=bool(args.whole))


def _label_text(st: Station, r: labels.LabelResult, verb: str) -> str:
    lab = r.label
    tz = _tz(st)
    rng = (f"{iso(lab['range_start_ns'], tz)} – {iso(lab['range_end_ns'], tz)}"
           if lab["range_start_ns"] is not None else "整段录像")
    lines = [f"{verb} recording #{r.recording}: label {lab['id']} (version {lab['version']})"
             + (f", retiring label {r.retired}" if r.retired else ""),
             f"  {'案件编号 ' + lab['case_no'] if lab['case_no'] else '执法活动 ' + str(lab['activity'])}  "
             f"执法类别 {lab['category']}  行政执法相对人 {lab['counterpart']}  检查内容 {lab['content']}  "
             f"地点 {lab['place']}  范围 {rng}",
             f"  文件名 {r.name}" + (f" (was {r.old_name})" if r.old_name != r.name else ""),
             f"  保存期限 {iso(r.retention_end_ns, tz) or '案件办结前不删除'}"]
    return "\n".join(lines)


def _result_dict(r: labels.LabelResult) -> dict[str, Any]:
    return {"label": r.label, "recording": r.recording, "name": r.name, "old_name": r.old_name,
            "retention_end_ns": r.retention_end_ns, "retired": r.retired}


def cmd_label(args: argparse.Namespace) -> int:
    words = args.target
    with open_station(args) as st:
        if words[0] == "history":
            if len(words) != 2:
                raise InvalidInput("usage: station label history RECORDING")
            user = signed_in(args, st)
            h = labels.history(st, user, words[1])
            tz = _tz(st)

            def human() -> str:
                rows = [{**lab, "state": "现行" if lab["current"] else f"已更正→{lab['superseded_by']}",
                         "when": iso(lab["labelled_ns"], tz), "case": lab["case_no"] or lab["activity"]}
                        for lab in h["labels"]]
                return (f"recording #{h['recording']} {h['device_id']}/{h['recording_id']}  文件名 {h['name']}\n"
                        + table(rows, [("id", "标注"), ("version", "版本"), ("state", "状态"),
                                       ("case", "案件/活动"), ("category", "执法类别"),
                                       ("counterpart", "行政执法相对人"), ("content", "检查内容"),
                                       ("place", "地点"), ("labelled_by", "标注人"), ("when", "时间"),
                                       ("correction_reason", "更正理由")]))
            emit(args, h, human)
            return EXIT_OK
        if words[0] == "correct":
            if len(words) != 2 or not words[1].isdigit():
                raise InvalidInput("usage: station label correct LABEL_ID [...] --reason TEXT")
            if not args.reason:
                raise InvalidInput("a correction needs its reason: --reason TEXT")
            user = signed_in(args, st)
            r = labels.correct_label(st, user, int(words[1]), _label_input(args, st), args.reason)
            emit(args, _result_dict(r), lambda: _label_text(st, r, "corrected"))
            return EXIT_OK
        if len(words) != 1:
            raise InvalidInput("usage: station label RECORDING [...] (or: label correct ID, label history REC)")
        if args.reason or args.whole:
            raise InvalidInput("--reason and --whole belong to `station label correct`")
        user = signed_in(args, st)
        r = labels.label_recording(st, user, words[0], _label_input(args, st))
        emit(args, _result_dict(r), lambda: _label_text(st, r, "labelled"))
    return EXIT_OK


# ---- queue ------------------------------------------------------------------------------------
def cmd_queue(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        user = signed_in(args, st)
        items = queue.queue(st, user, overdue_only=args.overdue, officer=args.officer)
        tz = _tz(st)
        hours = st.cfg.labels.deadline_hours

        def human() -> str:
            rows = [{**i, "rec": f"#{i['recording']}", "age": f"{i['age_hours']} h",
                     "deadline": iso(i["deadline_ns"], tz), "flag": "逾期未标注" if i["overdue"] else ""}
                    for i in items]
            over = sum(1 for i in items if i["overdue"])
            return (f"{len(items)} recording(s) awaiting labelling (deadline {hours} h after transfer), "
                    f"{over} overdue\n"
                    + table(rows, [("rec", "录像"), ("recording_id", "录像编号"), ("officer_id", "警号"),
                                   ("officer", "姓名"), ("supervisor", "上级"), ("age", "已过"),
                                   ("deadline", "标注期限"), ("flag", "")]))
        emit(args, items, human)
    return EXIT_OK


# ---- checklist --------------------------------------------------------------------------------
def cmd_checklist(args: argparse.Namespace) -> int:
    with open_station(args) as st:
        user = signed_in(args, st)
        cl = checklist.checklist(st, user, args.case_no)
        written: dict[str, str] = {}
        if args.pdf:
            data = cl.pdf(_tz(st))
            _write(args.pdf, data)
            written["pdf_sha256"] = hashlib.sha256(data).hexdigest()
        if args.csv:
            data = cl.csv()
            _write(args.csv, data)
            written["csv_sha256"] = hashlib.sha256(data).hexdigest()
        st.trail.event("checklist", actor=user.username, subject=f"case:{args.case_no}", rows=len(cl.rows),
                       **written)
        rows = [{k: v for k, v in r.items() if k != "detail"} | {"completeness_detail": r["detail"]}
                for r in cl.rows]
        data_out = {"case": cl.case, "unit": cl.unit, "rows": rows, "made_ns": cl.made_ns,
                    "pdf": str(args.pdf) if args.pdf else None, "csv": str(args.csv) if args.csv else None}
        emit(args, data_out, lambda: (f"{checklist.TITLE}  单位 {cl.unit}  案件 {cl.case['case_no']} "
                                      f"{cl.case['name']}\n" + table(cl.rows, checklist.COLUMNS)
                                      + "".join(f"\nwrote {p}" for p in (args.pdf, args.csv) if p)))
    return EXIT_OK


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


# ---- view -------------------------------------------------------------------------------------
def cmd_view(args: argparse.Namespace) -> int:
    repair = args.view_command == "repair"
    with open_station(args) as st:
        user = signed_in(args, st)
        roles = ("clerk", "admin") if repair else ("clerk", "admin", "auditor")
        require_role(st, user, *roles, what=f"{args.view_command} the named view")
        with st.db.session() as s:
            report = view.check_views(st.store, s, repair=repair)
        if repair and report.findings:
            st.trail.event("view-repair", actor=user.username, subject="view",
                           repaired=sum(1 for f in report.findings if f.repaired),
                           kinds=sorted({f.kind for f in report.findings}))
    data = {"ok": report.ok, "recordings": report.recordings, "findings": [f.to_dict() for f in report.findings]}

    def human() -> str:
        lines = [f"named view: {report.recordings} stored recording(s) checked"]
        lines += [f"  {f.kind}: {f.where}: {f.detail}{' (repaired)' if f.repaired else ''}" for f in report.findings]
        lines.append("OK" if report.ok else f"FAILED: {sum(1 for f in report.findings if not f.repaired)} "
                     "finding(s)" + ("" if repair else "; run `station view repair`"))
        return "\n".join(lines)
    emit(args, data, human)
    return EXIT_OK if report.ok else EXIT_FAILED


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("case", help="cases (案件): open, close, reopen, show, list")
    csub = c.add_subparsers(dest="case_command", required=True)
    co = add_common(csub.add_parser("open", help="open a case (evidence clerk)"))
    co.add_argument("--case-no", required=True, help="案件编号")
    co.add_argument("--name", required=True, help="案件名称 (the checklist's 事项)")
    co.add_argument("--category", required=True, help="执法类别, one of [labels] categories")
    co.add_argument("--department", help="部门")
    co.set_defaults(func=cmd_case_open)
    cc = add_common(csub.add_parser("close", help="close a case: its recordings' retention runs from now (S5)"))
    cc.add_argument("case_no", metavar="CASE_NO")
    cc.add_argument("--reason")
    cc.set_defaults(func=cmd_case_close)
    cr = add_common(csub.add_parser("reopen", help="reopen a closed case: its recordings are kept again"))
    cr.add_argument("case_no", metavar="CASE_NO")
    cr.add_argument("--reason", required=True)
    cr.set_defaults(func=cmd_case_reopen)
    cs = add_common(csub.add_parser("show", help="a case with its labelled recordings"))
    cs.add_argument("case_no", metavar="CASE_NO")
    cs.set_defaults(func=cmd_case_show)
    cl = add_common(csub.add_parser("list", help="the cases"))
    cl.add_argument("--status", choices=("open", "closed"))
    cl.set_defaults(func=cmd_case_list)

    lb = add_common(sub.add_parser(
        "label", help="label a recording (S2); `label correct LABEL_ID`; `label history RECORDING`",
        description="station label RECORDING (--case NO | --activity TEXT) --counterpart P --content C --place P "
                    "[--category C] [--from T] [--to T]  |  station label correct LABEL_ID [fields] --reason TEXT  "
                    "|  station label history RECORDING.  RECORDING: #ID or ID (catalogue id), DEVICE/RID, or RID "
                    "(the device's recording id; refused as ambiguous when it names several). A range already "
                    "labelled is never overwritten: correct its label. Exit codes: 0 ok, 2 invalid input, "
                    "3 not allowed, 5 not found, 6 conflict."))
    lb.add_argument("target", nargs="+", metavar="WHAT", help="RECORDING, or: correct LABEL_ID, or: history RECORDING")
    lb.add_argument("--case", help="案件编号 of an open case")
    lb.add_argument("--activity", help="the activity, when not a case (e.g. 日常巡查)")
    lb.add_argument("--category", help="执法类别 (default: the case's)")
    lb.add_argument("--counterpart", help="行政执法相对人")
    lb.add_argument("--content", help="检查内容")
    lb.add_argument("--place", help="地点")
    lb.add_argument("--from", dest="range_from", metavar="TIME", help="start of the labelled range (ISO 8601)")
    lb.add_argument("--to", dest="range_to", metavar="TIME", help="end of the labelled range (ISO 8601)")
    lb.add_argument("--whole", action="store_true", help="correct: the whole recording (drops the range)")
    lb.add_argument("--reason", help="correct: why (required)")
    lb.set_defaults(func=cmd_label)

    q = add_common(sub.add_parser("queue", help="recordings awaiting a label, their age and the 48 h deadline"))
    q.add_argument("--overdue", action="store_true", help="only those past the deadline")
    q.add_argument("--officer", metavar="NO", help="only this officer's (警号)")
    q.set_defaults(func=cmd_queue)

    ck = add_common(sub.add_parser("checklist", help="音像记录事项清单 of a case (S4): table, PDF, CSV"))
    ck.add_argument("case_no", metavar="CASE_NO")
    ck.add_argument("--pdf", type=Path, metavar="FILE", help="write the printable PDF")
    ck.add_argument("--csv", type=Path, metavar="FILE", help="write the CSV (UTF-8 with BOM)")
    ck.set_defaults(func=cmd_checklist)

    v = sub.add_parser("names", help="the S3-named view recordings/<name>/: check (exit 1 on a finding), repair")
    vsub = v.add_subparsers(dest="view_command", required=True)
    add_common(vsub.add_parser("check", help="compare the view with the catalogue and the mirror")
               ).set_defaults(func=cmd_view)
    add_common(vsub.add_parser("repair", help="complete the named directories, remove leftovers of "
                               "interrupted renames")).set_defaults(func=cmd_view)
