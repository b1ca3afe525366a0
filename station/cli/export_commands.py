"""``station export``: recordings for the case file (S7), as verifiable labelled copies."""
from __future__ import annotations

import argparse
from pathlib import Path

from station.cli.common import add_common, emit, iso, open_station, signed_in
from station.errors import EXIT_OK
from station.export.package import MAX_COPIES, export


def cmd_export(args: argparse.Namespace) -> int:
    st = open_station(args)
    try:
        user = signed_in(args, st)
        r = export(st, user, case_no=args.case, refs=args.recording or [], out=args.out, maker=args.maker,
                   extractor=args.extractor, copies=args.copies, want_playable=args.playable, reason=args.reason)
        tz = st.cfg.timezone
    finally:
        st.close()

    def human() -> str:
        lines = [f"导出 export #{r.export_id}: {len(r.recordings)} 条录像 recordings, {r.files} 个文件 files "
                 f"({r.bytes} bytes) per copy; 提取时间 {iso(r.extracted_ns, tz)}"]
        lines += [f"  {p}  清单 manifest sha256 {h}" for p, h in zip(r.copies, r.manifest_sha256, strict=True)]
        if r.cleaned:
            lines.append("removed leftovers of interrupted exports: " + ", ".join(r.cleaned))
        lines.append("校验 verify: README.txt in each copy (sh check-evidence.sh -s ...); print and sign 说明.pdf")
        return "\n".join(lines)
    emit(args, r.to_dict(), human)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_common(sub.add_parser(
        "export", help="export recordings for the case file (S7): original segments, journal, keys, recipe, "
        "manifest and printed note, in labelled copies",
        description="Export recordings for the case file (S7). Each copy DIR/<case>_<time>-副本n/ holds the "
        "original segments byte for byte, each device's whole journal, its public key and agency certificate, "
        "the documented recipe check-evidence.sh, manifest.json / 清单.txt and the printed note 说明.pdf. "
        "Needs the clerk role and an approved copy request for every recording (S8); audited. Exit codes: 0 "
        "exported; 2 bad arguments; 3 not allowed (role, no approved copy request); 5 no such case/recording; "
        "6 purged or incomplete recording, copy exists; 7 export disk full or store unusable."))
    what = p.add_argument_group("what to export (one or both)")
    what.add_argument("--case", metavar="NO", help="案件编号: every recording linked to the case")
    what.add_argument("--recording", action="append", metavar="ID",
                      help="a recording (number, DEVICE/RECORDING_ID, name or recording id); repeatable")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where the copies are written")
    p.add_argument("--maker", required=True, metavar="NAME", help="制作人 (who made the copy)")
    p.add_argument("--extractor", required=True, metavar="NAME", help="提取人 (who takes it for the case file)")
    p.add_argument("--copies", type=int, default=1, choices=range(1, MAX_COPIES + 1), metavar="N",
                   help=f"labelled copies (副本), 1..{MAX_COPIES}; the rules ask for 2 (default 1)")
    p.add_argument("--playable", action="store_true",
                   help="add playable/ MP4 remuxes of the originals (ffmpeg -c copy, no re-encode)")
    p.add_argument("--reason", help="why (事由), for the audit record (default: the case file export)")
    p.set_defaults(func=cmd_export)
