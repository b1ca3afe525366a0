"""A playable copy of a recording: its original segments remuxed into one MP4, never re-encoded.

The station never decodes media itself (no PyAV): the ``ffmpeg`` command joins the
segments with its ``concat:`` protocol and copies the streams (``-c copy``) into MP4,
bit-exact flags on so the same ffmpeg gives the same bytes again. The command is run in
the copy's directory with package-relative paths, so the manifest's ``command`` can be
re-run on the package to re-derive the file. The originals are untouched and stay the
evidence; the MP4 is a convenience for viewing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from recorder import age
from recorder.journal import JOURNAL_NAME, iter_records
from station.errors import Unavailable
from station.export.manifest import sha256_file
from station.keys import opening
from station.keys.keyring import FileKeyring, Keyring, key_path

TOOL = "ffmpeg"


def tool_version(ffmpeg: str) -> str:
    r = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=30)
    return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout else "unknown"


def find_ffmpeg() -> str:
    path = shutil.which(TOOL)
    if path is None:
        raise Unavailable("--playable needs the ffmpeg command (Debian package ffmpeg); it is not installed")
    return path


def _journal_of(copy_dir: Path, source: str) -> tuple[Path, str]:
    """(the package's journal for ``source``, the path the journal attests it by):
    ``devices/<device>/evidence/<path>``."""
    parts = source.split("/")
    if len(parts) < 4 or parts[0] != "devices" or parts[2] != "evidence":
        raise Unavailable(f"cannot find the journal of {source} in the package")
    return copy_dir.joinpath(*parts[:3], JOURNAL_NAME), "/".join(parts[3:])


def _plaintexts(copy_dir: Path, sources: list[str], keys: Keyring | None) -> bytes | None:
    """The sources' plaintext joined, if they are encrypted (None: plain segments), each checked
    against the plaintext SHA-256 in the package's device journal."""
    def head(src: str) -> bytes:
        with open(copy_dir / src, "rb") as f:
            return f.read(len(age.INTRO))
    if not any(opening.is_encrypted(head(s)) for s in sources):
        return None
    keys = keys or FileKeyring(key_path(None))
    out = []
    for src in sources:
        journal, path = _journal_of(copy_dir, src)
        enc = next((p.get("encryption") for p in _payloads(journal) if p.get("path") == path), None)
        data = (copy_dir / src).read_bytes()
        plain = opening.plaintext(data, keys, enc, src) if opening.is_encrypted(data) else data
        out.append(opening.playable(plain, enc, path))
    return b"".join(out)


def _payloads(journal: Path) -> list[dict[str, Any]]:
    return [r.payload for r in iter_records(journal) if r.type == "segment"]


def remux(ffmpeg: str, copy_dir: Path, sources: list[str], out_rel: str,
          keys: Keyring | None = None) -> dict[str, Any]:
    """Join ``sources`` (paths relative to ``copy_dir``) into ``out_rel``; the derivation record.

    Segments encrypted on the device are decrypted in memory with the agency key (``keys``,
    else ``$STATION_AGENCY_KEYS``), checked against the plaintext SHA-256 the journal
    attests, and piped to ffmpeg: no decrypted segment is written; the MP4 is in clear."""
    if any("|" in s for s in sources):
        raise Unavailable(f"cannot remux {out_rel}: a segment path holds '|' (ffmpeg's concat separator)")
    out = copy_dir / out_rel
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = _plaintexts(copy_dir, sources, keys)
    command = [TOOL, "-nostdin", "-v", "error", "-f", "mpegts",
               "-i", "concat:" + "|".join(sources) if plain is None else "pipe:0",
               "-map", "0", "-c", "copy", "-map_metadata", "-1", "-fflags", "+bitexact",
               "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart", "-f", "mp4", out_rel]
    if plain is not None:
        command.remove("-nostdin")
    r = subprocess.run([ffmpeg, *command[1:]], cwd=copy_dir, capture_output=True, timeout=3600,
                       input=plain if plain is not None else b"")
    stderr = r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        out.unlink(missing_ok=True)
        if "No space left" in stderr:
            raise OSError(28, f"no space left on the export disk while remuxing {out_rel}")
        raise Unavailable(f"ffmpeg could not remux {out_rel}: {stderr.strip()[-400:]}")
    size, digest = sha256_file(out)
    return {"path": out_rel, "size": size, "sha256": digest,
            "sources": [{"path": p, "sha256": sha256_file(copy_dir / p)[1]} for p in sources],
            "tool": TOOL, "tool_version": tool_version(ffmpeg), "command": command,
            "note": "remux of the original segments, streams copied (no re-encode); not evidence by itself"
                    + ("; the segments are encrypted: each was decrypted with the agency key (age -d -i KEY), "
                       "its SHA-256 checked against the journal's encryption.plaintext_sha256, and the "
                       "plaintexts joined in this order on ffmpeg's standard input" if plain is not None else "")}
