"""HTML → PDF (WeasyPrint) with Chinese rendered in Noto Sans/Serif CJK, and CSV that Excel opens.

Every printable document of the station (checklist, export note, supervision report, audit
trail) is an HTML page rendered here with one stylesheet: A4, CJK fonts from Debian's
``fonts-noto-cjk`` (found through fontconfig), tables with repeated headers. ``pdftotext``
reads the text back (tests).
"""
from __future__ import annotations

import csv
import html
import io
from typing import Any, Iterable, Sequence

BASE_CSS = """
@page { size: A4 %(orientation)s; margin: 16mm 12mm 18mm 12mm;
        @bottom-center { content: "第 " counter(page) " 页 / 共 " counter(pages) " 页"; font-size: 8pt; } }
body { font-family: "Noto Sans CJK SC", "Noto Serif CJK SC", sans-serif; font-size: 9.5pt; }
h1 { font-size: 15pt; text-align: center; margin: 0 0 4mm 0; }
.meta { margin: 0 0 3mm 0; }
.meta span { margin-right: 8mm; }
table { width: 100%%; border-collapse: collapse; }
thead { display: table-header-group; }
th, td { border: 0.6pt solid #333; padding: 1.2mm 1.5mm; vertical-align: top; }
th { background: #eee; font-weight: bold; }
.sign { margin-top: 10mm; }
.sign span { display: inline-block; width: 60mm; }
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def html_table(columns: Sequence[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> str:
    """``columns``: (key, heading). Cells escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(r.get(k))}</td>" for k, _ in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body_html: str, *, meta: Sequence[tuple[str, Any]] = (), landscape: bool = False,
         signatures: Sequence[str] = ()) -> str:
    """A whole HTML document: title, a line of ``meta`` (label, value), the body, signature lines."""
    meta_html = "".join(f"<span>{esc(k)}：{esc(v)}</span>" for k, v in meta)
    sign_html = "".join(f"<span>{esc(s)}：</span>" for s in signatures)
    css = BASE_CSS % {"orientation": "landscape" if landscape else "portrait"}
    return (f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{css}</style></head><body><h1>{esc(title)}</h1><div class='meta'>{meta_html}</div>"
            f"{body_html}{f'<div class=sign>{sign_html}</div>' if signatures else ''}</body></html>")


def pdf(document_html: str) -> bytes:
    """Render a page (``page``) to PDF bytes."""
    from weasyprint import HTML  # heavy import: only when a PDF is made
    data: bytes = HTML(string=document_html).write_pdf()
    return data


def csv_text(columns: Sequence[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> str:
    """CSV with a header of the headings, UTF-8 with BOM when written (``csv_bytes``) so Excel reads CJK."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([h for _, h in columns])
    for r in rows:
        w.writerow(["" if r.get(k) is None else r.get(k) for k, _ in columns])
    return out.getvalue()


def csv_bytes(columns: Sequence[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> bytes:
    return b"\xef\xbb\xbf" + csv_text(columns, rows).encode("utf-8")
