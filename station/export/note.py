"""The printed note (说明.pdf) of one copy: the manifest's facts, its file list with hashes,
how to verify, and signature lines for the maker (制作人) and the extractor (提取人)."""
from __future__ import annotations

from typing import Any

from station.documents import render
from station.export.manifest import MANIFEST, case_title, verify_command

_MONO = "font-family: 'DejaVu Sans Mono', monospace; font-size: 6.5pt; word-break: break-all;"


def note_html(m: dict[str, Any], manifest_sha256: str) -> str:
    name, number = case_title(m)
    facts = [("单位", m["unit"]), ("案件名称", name), ("案件编号", number), ("制作人", m["maker"]),
             ("提取人", m["extractor"]), ("提取时间", m["extracted_at"]), ("副本", m["copy"]["label"]),
             ("导出名称", m["export_name"]), ("办理人（账号）", m["created_by"]),
             (f"清单 {MANIFEST} SHA-256", manifest_sha256)]
    facts_html = "<table><tbody>" + "".join(
        f"<tr><th style='width:32mm'>{render.esc(k)}</th><td>{render.esc(v)}</td></tr>" for k, v in facts) \
        + "</tbody></table>"
    recs_html = ("<table><thead><tr><th style='width:8mm'>序号</th><th>录像名称 / 设备编号</th>"
                 "<th style='width:28mm'>执法人员（警号）</th><th style='width:48mm'>开始时间 / 结束时间</th>"
                 "<th style='width:12mm'>片段数</th></tr></thead><tbody>" + "".join(
                     f"<tr><td>{i}</td><td style='word-break:break-all'>{render.esc(r['name'])}<br>"
                     f"<span style=\"{_MONO}\">{render.esc(r['device_id'])} / {render.esc(r['recording_id'])}</span>"
                     f"</td><td>{render.esc(r['officer_name'] or '')}（{render.esc(r['officer_id'] or '-')}）</td>"
                     f"<td>{render.esc(r['start'])}<br>{render.esc(r['end'])}</td><td>{len(r['segments'])}</td></tr>"
                     for i, r in enumerate(m["recordings"], start=1)) + "</tbody></table>")
    files_html = ("<ol>" + "".join(
        f"<li><span style=\"{_MONO}\">{render.esc(f['path'])}</span>（{f['size']} 字节）<br>"
        f"SHA-256 <span style=\"{_MONO}\">{render.esc(f['sha256'])}</span></li>" for f in m["files"]) + "</ol>")
    checks = "".join(f"<li style=\"{_MONO}\">{render.esc(verify_command(d))}</li>" for d in m["devices"])
    body = (f"{facts_html}<h3>录像</h3>{recs_html}<h3>文件清单</h3>{files_html}"
            "<h3>校验方法</h3><p>在任一装有 sh、openssl、sha256sum 与 python3 的计算机上，于本副本目录中运行"
            f"（每条输出 PASS 即原始证据完整、未被改动；另以 <code>sha256sum {MANIFEST}</code> 核对上列清单哈希）：</p>"
            f"<ul>{checks}</ul>")
    return render.page("执法记录仪音像证据导出说明", body,
                       meta=[("单位", m["unit"]), ("案件编号", number), ("副本", m["copy"]["label"])],
                       signatures=["制作人（签名）", "提取人（签名）", "日期"])


def note_pdf(m: dict[str, Any], manifest_sha256: str) -> bytes:
    return render.pdf(note_html(m, manifest_sha256))
