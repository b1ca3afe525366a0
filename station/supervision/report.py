"""The supervision printouts: the statistics of use (S10) and the usage ledger (台账, S9) as a
plain text table, CSV (UTF-8 with BOM, opens in Excel) and a printable A4 landscape PDF."""
from __future__ import annotations

from typing import Any

from station.app import Station
from station.cli.common import iso, table
from station.clock import NS_PER_HOUR
from station.documents import render
from station.supervision import ledger_report, stats

# wide tables on A4 landscape: a smaller type, headings kept on one line where they fit
PRINT_CSS = ("<style>table { font-size: 7.5pt; } th { word-break: keep-all; } "
             "td { overflow-wrap: anywhere; }</style>")
BY_ZH = {"officer": "按执法人员", "device": "按设备", "week": "按周"}
PENDING_COLUMNS: list[tuple[str, str]] = [
    ("item", "编号"), ("kind_zh", "类别"), ("officer", "执法人员"), ("at", "时间"), ("cause_zh", "原因类别"),
    ("reason", "说明"), ("state_zh", "状态"),
]


def period_text(st: Station, s: stats.Stats) -> str:
    tz = st.cfg.timezone
    a = iso(s.period.from_ns, tz) or "起"
    b = iso(s.period.to_ns, tz) or "今"
    return f"{a} 至 {b}"


def stats_text(st: Station, s: stats.Stats) -> str:
    head = (f"执法记录仪使用情况统计（{BY_ZH[s.by]}）  期间：{period_text(st, s)}  "
            f"截至：{iso(s.now_ns, st.cfg.timezone)}  逾期入库：班次结束后超过 "
            f"{stats.LATE_DOCKING_NS // NS_PER_HOUR} 小时")
    return head + "\n" + table(list(stats.rows_for(s)), stats.columns_for(s.by, printed=True))


def stats_csv(s: stats.Stats) -> bytes:
    return render.csv_bytes(stats.columns_for(s.by), stats.rows_for(s))


def stats_pdf(st: Station, s: stats.Stats, *, made_by: str, pending: list[dict[str, Any]]) -> bytes:
    body = PRINT_CSS + render.html_table(stats.columns_for(s.by, printed=True), stats.rows_for(s))
    if pending:
        body += ("<h2 style='font-size:11pt'>待签批事项（不录像说明 D6、中断原因未说明 D5）</h2>"
                 + render.html_table(PENDING_COLUMNS, pending))
    doc = render.page(f"执法记录仪使用情况统计（{BY_ZH[s.by]}）", body, landscape=True,
                      meta=[("单位", st.cfg.unit), ("统计期间", period_text(st, s)),
                            ("截至", iso(s.now_ns, st.cfg.timezone)), ("制表人", made_by)],
                      signatures=["统计人", "审核人（分管领导）", "日期"])
    return render.pdf(doc)


def ledger_text(r: ledger_report.LedgerReport) -> str:
    return table(r.rows, ledger_report.COLUMNS)


def ledger_csv(r: ledger_report.LedgerReport) -> bytes:
    return render.csv_bytes(ledger_report.CSV_COLUMNS, r.rows)


def ledger_pdf(st: Station, r: ledger_report.LedgerReport, *, made_by: str, scope: str) -> bytes:
    body = PRINT_CSS + render.html_table(ledger_report.PRINT_COLUMNS, r.rows)
    doc = render.page("执法记录仪使用登记台账", body, landscape=True,
                      meta=[("单位", st.cfg.unit), ("范围", scope), ("设备数", r.devices),
                            ("打印时间", iso(st.now_ns(), st.cfg.timezone)), ("制表人", made_by)],
                      signatures=["管理员", "审核人", "日期"])
    return render.pdf(doc)

