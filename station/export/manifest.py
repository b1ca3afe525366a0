"""What a package says about itself: manifest.json, 清单.txt, README.txt, SHA256SUMS.

``manifest.json`` names the unit, the case (name and number), the maker (制作人), the
extractor (提取人), the extraction time (提取时间, ISO 8601 in ``[station] timezone``), the
copy (副本 n/N), every recording (officer, device, start, end, segments), every device
(evidence directory, key, certificate, selection, journal head, the command that checks
it) and every file of the copy with its size and SHA-256 — except the four documents
made from the manifest itself (``DERIVED``): the manifest, its Chinese listing, the
printed note and SHA256SUMS. The manifest's own SHA-256 is on those, and in the station's
audit journal (``export`` record).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

FORMAT = "station-export/1"
MANIFEST, LISTING, NOTE, SUMS, README = "manifest.json", "清单.txt", "说明.pdf", "SHA256SUMS", "README.txt"
DERIVED = (MANIFEST, LISTING, NOTE, SUMS)
RECIPE, CERT_RECIPE = "check-evidence.sh", "device-certificate.sh"
CA_NAME, KEY_NAME, CERT_NAME, SELECTION = "agency-ca.pem", "device-key.pub.pem", "device-cert.pem", \
    "selected-files.txt"


def iso(ns: int | None, tz: str) -> str | None:
    """ns since the epoch as ISO 8601 (milliseconds, UTC offset of ``tz``)."""
    if ns is None:
        return None
    t = dt.datetime.fromtimestamp(ns // 10**9, ZoneInfo(tz)) + dt.timedelta(microseconds=(ns % 10**9) // 1000)
    return t.isoformat(timespec="milliseconds")


def sha256_file(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def file_list(root: Path) -> list[dict[str, Any]]:
    """Every regular file under ``root`` (POSIX relative path, size, SHA-256), sorted; not DERIVED."""
    out = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            rel = Path(os.path.relpath(os.path.join(dirpath, name), root)).as_posix()
            if rel in DERIVED:
                continue
            size, digest = sha256_file(root / rel)
            out.append({"path": rel, "size": size, "sha256": digest})
    return sorted(out, key=lambda f: f["path"])


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def case_title(m: dict[str, Any]) -> tuple[str, str]:
    """(案件名称, 案件编号) of a manifest; an activity when the export is not for a case."""
    case = m.get("case")
    if case:
        return case["name"], case["case_no"]
    return m.get("activity") or "", ""


def verify_command(device: dict[str, Any]) -> str:
    d = device["dir"]
    anchor = f" {device['journal_head']}" if device.get("journal_head") else ""
    return f"sh {RECIPE} -s {d}/{SELECTION} {d}/evidence {d}/{KEY_NAME}{anchor}"


def readme_text(m: dict[str, Any]) -> str:
    name, number = case_title(m)
    devs = "\n".join(f"  {verify_command(d)}" for d in m["devices"])
    certs = "\n".join(f"  (cd {d['dir']} && sh ../../{CERT_RECIPE})" for d in m["devices"] if d.get("certificate"))
    ca = m.get("agency_ca") or {}
    fingerprint = ca.get("sha256_fingerprint", "")
    if certs:
        cert_step = (f"3. 设备公钥经机构证书认证 / the device key is the one the agency certified\n"
                     f"   {CA_NAME} SHA-256 指纹 fingerprint (须与机构公布的一致 / must equal the agency's):\n"
                     f"   {fingerprint}\n{certs}\n")
    else:
        cert_step = ("3. 本包未含设备证书，设备公钥请向机构核对。\n"
                     "   No device certificate is in this package: confirm the device keys with the agency.\n")
    play = ("\n可播放副本（playable/）为原始片段的无损封装转换（MP4，-c copy），不是证据原件；\n"
            "其来源与命令见 manifest.json。\n"
            "The playable/ copies are MP4 remuxes of the original segments (no re-encode), never the\n"
            "originals; their derivation (sources, tool, command) is in manifest.json.\n") if m.get("playable") else ""
    return f"""执法记录仪音像证据导出包 / Body-worn camera evidence export
==========================================================

单位 Unit:            {m['unit']}
案件名称 Case name:   {name}
案件编号 Case number: {number}
制作人 Maker:         {m['maker']}
提取人 Extractor:     {m['extractor']}
提取时间 Extracted:   {m['extracted_at']}
副本 Copy:            {m['copy']['label']}

内容 Contents
  manifest.json / 清单.txt   清单：每个文件的大小与 SHA-256 / the manifest: every file, size, SHA-256
  说明.pdf                    书面说明（制作人、提取人签名）/ the printed note to sign
  devices/<设备编号>/evidence/  原始文件（设备日志 journal.log 与原始片段，逐字节复制）/ the originals
  devices/<设备编号>/{KEY_NAME}, {SELECTION}   设备公钥，所选文件列表 / device key, selection
  {RECIPE}, {CERT_RECIPE}   公开文档中的校验脚本 / the documented recipes (docs/evidence-format.md)

如何校验（只需 sh、openssl、sha256sum、python3 标准库，不需要本系统）
How to verify (sh, openssl, sha256sum and python3's standard library; nothing of this system)

1. 清单与书面说明一致 / the manifest is the one on the signed note:
  sha256sum {MANIFEST}          # 与说明.pdf 及审计日志中的值一致 / equals the value on 说明.pdf
  sha256sum -c {SUMS}           # 每个文件与清单一致 / every file as the manifest lists it
2. 原始证据完整、未被改动（设备签名、哈希链、每个片段的 SHA-256）/ the originals are intact
   (device signatures, hash chain, SHA-256 of every segment); each prints PASS and exits 0:
{devs}
{cert_step}
任何一步失败即说明该副本已被改动。 Any failure means this copy was altered.
设备日志是完整的（含本包未导出的其他录像的记录），所选文件列表之外的文件不在本包中。
The device journal is complete (it also records recordings not exported); only the files
in the selection are in this package, and each of them is checked.
{play}"""


def listing_text(m: dict[str, Any], manifest_sha256: str) -> str:
    name, number = case_title(m)
    lines = [f"执法记录仪音像证据导出清单（{m['copy']['label']}）", "",
             f"单位：{m['unit']}", f"案件名称：{name}", f"案件编号：{number}",
             f"制作人：{m['maker']}", f"提取人：{m['extractor']}", f"提取时间：{m['extracted_at']}",
             f"副本：{m['copy']['label']}", f"清单文件 {MANIFEST} 的 SHA-256：{manifest_sha256}", "",
             "录像："]
    for i, r in enumerate(m["recordings"], start=1):
        lines.append(f"  {i}. {r['name']}  执法人员 {r['officer_name'] or ''}（警号 {r['officer_id'] or '-'}）  "
                     f"设备 {r['device_id']}  开始 {r['start']}  结束 {r['end']}  片段 {len(r['segments'])}")
    lines += ["", "文件（大小 字节，SHA-256）："]
    lines += [f"  {f['path']}  {f['size']}  {f['sha256']}" for f in m["files"]]
    return "\n".join(lines) + "\n"


def sums_text(m: dict[str, Any], manifest_sha256: str) -> str:
    """``sha256sum -c`` input: every file of the manifest, and the manifest itself."""
    rows = [(f["sha256"], f["path"]) for f in m["files"]] + [(manifest_sha256, MANIFEST)]
    return "".join(f"{h}  {p}\n" for h, p in rows)
