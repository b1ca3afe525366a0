"""``station sync``: push verified evidence and the audit journal to the agency store
(``[agency]``, station/docs/agency.md), extend retentions, follow holds, delete what was purged.

Exit codes: 0 done (deletes the store refused are listed, not an error: the store keeps
what is still retained); 1 an integrity conflict (other bytes under a key: alerted in the
audit journal); 2 bad configuration (``[agency] kind`` is not s3); 3 the store refused our
credentials; 7 the store or the catalogue is unavailable (run again: nothing is lost).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from station.cli.common import add_common, emit, open_station
from station.errors import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, InvalidInput
from station.storage import open_store
from station.sync import sync, verify_from_store


def cmd_sync(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        if st.cfg.agency.kind != "s3":
            raise InvalidInput("[agency] kind is local: there is no agency store to sync to "
                               "(see station/docs/agency.md)")
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
        lines = [f"中心存储 {report.store}",
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = add_common(sub.add_parser("sync", help="push verified evidence and the audit journal to the agency's "
                                  "S3 Object Lock store; catch up after the store was down"), user=False)
    s.add_argument("--verify", type=int, nargs="*", default=[], metavar="RECORDING",
                   help="afterwards, fetch these recordings back from the store and verify them")
    s.set_defaults(func=cmd_sync)
