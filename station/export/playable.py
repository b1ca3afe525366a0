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

from station.errors import Unavailable
from station.export.manifest import sha256_file

TOOL = "ffmpeg"


def tool_version(ffmpeg: str) -> str:
    r = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=30)
    return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout else "unknown"


def find_ffmpeg() -> str:
    path = shutil.which(TOOL)
    if path is None:
        raise Unavailable("--playable needs the ffmpeg command (Debian package ffmpeg); it is not installed")
    return path


def remux(ffmpeg: str, copy_dir: Path, sources: list[str], out_rel: str) -> dict[str, Any]:
    """Join ``sources`` (paths relative to ``copy_dir``) into ``out_rel``; the derivation record."""
    if any("|" in s for s in sources):
        raise Unavailable(f"cannot remux {out_rel}: a segment path holds '|' (ffmpeg's concat separator)")
    out = copy_dir / out_rel
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [TOOL, "-nostdin", "-v", "error", "-f", "mpegts", "-i", "concat:" + "|".join(sources),
               "-map", "0", "-c", "copy", "-map_metadata", "-1", "-fflags", "+bitexact",
               "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart", "-f", "mp4", out_rel]
    r = subprocess.run([ffmpeg, *command[1:]], cwd=copy_dir, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        out.unlink(missing_ok=True)
        if "No space left" in r.stderr:
            raise OSError(28, f"no space left on the export disk while remuxing {out_rel}")
        raise Unavailable(f"ffmpeg could not remux {out_rel}: {r.stderr.strip()[-400:]}")
    size, digest = sha256_file(out)
    return {"path": out_rel, "size": size, "sha256": digest,
            "sources": [{"path": p, "sha256": sha256_file(copy_dir / p)[1]} for p in sources],
            "tool": TOOL, "tool_version": tool_version(ffmpeg), "command": command,
            "note": "remux of the original segments, streams copied (no re-encode); not evidence by itself"}
