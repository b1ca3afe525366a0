"""``station sync``: push verified evidence and the audit journal to the agency store
(``[agency]``, station/docs/agency.md), extend retentions, follow holds, delete what was purged.

Exit codes: 0 done (deletes the store refused are listed, not an error: the store keeps
what is still retained); 1 an integrity conflict (other bytes under a key: alerted in the
audit journal); 2 bad configuration (``[agency] kind`` is not s3); 3 the store refused our
credentials; 7 the store or the catalogue is unavailable (run again: nothing is lost).

Before pushing, ``sync`` replays the dockings spooled while the shared catalogue was
unreachable (station.dock.spool; on a station without an agency store too). ``station
spool`` lists those still waiting; it reads only the station's disk, so it works while the
catalogue is away.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from station import config as config_mod
from station.cli.common import add_common, config_path, emit, iso, open_station
from station.dock import spool
from station.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, InvalidInput
from station.storage import open_store
from station.sync import replay_spool, sync, verify_from_store


def cmd_sync(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        if st.cfg.agency.kind != "s3":
            if not spool.read(st.store):
                raise InvalidInput("[agency] kind is local: there is no agency store to sync to "
                                   "(see station/docs/agency.md)")
            figures, down = replay_spool(st)      # a catalogue of its own that was away: catch up only
            emit(args, {"spool": figures, "unavailable": down, "ok": down is None},
                 lambda: _spool_line(figures) + (f"\n  目录数据库不可用：{down}" if down else ""))
            return EXIT_UNAVAILABLE if down else EXIT_OK
        store = open_store(st.cfg)
        report = sync(st, store)
        data = report.to_dict()
        if args.verify and report.unavailable is None:
            checked = []
            for rid in args.verify:
                with tempfile.TemporaryDirectory(prefix="station-verify-") as tmp:
                    res = verify_from_store(st, store, rid, Path(tmp))
                checked.append({"recording": rid, "ok": bool(res.ok),
                                "failure": str(res.failure) if res.failure else None})
            data["verified"] = checked
    finally:
        st.close()

    def human() -> str:
        lines = [line for line in [_spool_line(report.spool)] if line] + [f"中心存储 {report.store}",
                 f"  新上传 {report.pushed} 个对象（{report.bytes} B），已存在 {report.already} 个，"
                 f"审计日志 {report.audit_lines} 行",
                 f"  延长保存期限 {report.extended} 个，法律封存变更 {report.holds_changed} 个，"
                 f"删除已销毁录像的对象 {report.deleted} 个"]
        lines += [f"  中心存储拒绝删除（保存期限未届满或封存中）：{r['key']}" for r in report.refused]
        lines += [f"  完整性告警：{c['key']}：{c['detail']}" for c in report.conflicts]
        lines += [f"  校验 录像 {v['recording']}：{'通过' if v['ok'] else '失败 ' + str(v['failure'])}"
                  for v in data.get("verified", [])]
        if report.unavailable:
            lines.append(f"  中心存储不可用，稍后重试（本地数据不受影响）：{report.unavailable}")
        return "\n".join(lines)
    emit(args, data, human)
    if report.unavailable is not None:
        return EXIT_UNAVAILABLE
    if report.conflicts or any(not v["ok"] for v in data.get("verified", [])):
        return EXIT_FAILED
    return EXIT_OK


def _spool_line(figures: dict[str, Any]) -> str:
    if not any(figures.get(k) for k in ("replayed", "already", "waiting", "blocked")):
        return ""
    line = (f"离线暂存的入库：本次补录进目录 {figures.get('replayed', 0)} 次，"
            f"已在目录中 {figures.get('already', 0)} 次，仍在等待 {figures.get('waiting', 0)} 次")
    return line + (f"（{figures['blocked']}）" if figures.get("blocked") else "")


SPOOL_KINDS = {"ingest": "入库", "end": "对接（未入库）", "receipt": "回执"}


def cmd_spool(args: argparse.Namespace) -> int:
    """The dockings spooled while the catalogue was unreachable and not yet replayed; needs only the
    station's own disk, so a clerk can look while the catalogue is away."""
    cfg = config_mod.load(config_path(args))
    rows = spool.waiting(cfg.store)
    tz = cfg.timezone

    def human() -> str:
        if not rows:
            return "没有等待补录的离线入库"
        lines = [f"等待补录进目录的离线入库 {len(rows)} 条（目录数据库恢复后 station sync 或下一次对接时补录）："]
        lines += [f"  #{r['spool_seq']} {iso(r['at_ns'], tz)} 设备 {r['device']} "
                  f"{SPOOL_KINDS.get(r['kind'], r['kind'])}"
                  f"{'' if r['head_seq'] is None else ' 至记录 ' + str(r['head_seq'])}"
                  f"{'' if r['ended'] else '（对接进行中）'}" for r in rows]
        return "\n".join(lines)
    emit(args, {"waiting": rows, "replayed_through": spool.replayed(cfg.store)}, human)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = add_common(sub.add_parser("spool", help="dockings spooled while the shared catalogue was unreachable, "
                                   "waiting to be replayed (works without the catalogue)"), user=False)
    sp.set_defaults(func=cmd_spool)
    s = add_common(sub.add_parser("sync", help="push verified evidence and the audit journal to the agency's "
                                  "S3 Object Lock store; catch up after the store was down"), user=False)
    s.add_argument("--verify", type=int, nargs="*", default=[], metavar="RECORDING",
                   help="afterwards, fetch these recordings back from the store and verify them")
    s.set_defaults(func=cmd_sync)
