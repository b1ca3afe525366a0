"""A directory as a streamed tar or zip: an export package downloaded from the web.

Only regular files and directories inside the directory are packed; a symlink, device or
anything resolving outside it refuses the whole download (``Unsafe``) before the first byte,
so a planted link never leaks another file. Files are read in chunks as the response is sent
(memory stays small for a package of many gigabytes); a file whose size changed since the
listing aborts the stream rather than sending something else than was listed.
"""
from __future__ import annotations

import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
FORMATS = {"tar": "application/x-tar", "zip": "application/zip"}


class Unsafe(Exception):
    """The directory holds something that must not be served (a link, a device, an escape)."""


@dataclass(frozen=True)
class Entry:
    path: Path          # on disk
    arcname: str        # in the archive: <top>/<relative path>
    is_dir: bool
    size: int
    mode: int
    mtime: float


def listing(root: Path, top: str) -> list[Entry]:
    """Every entry under ``root`` (itself no link), checked; ``Unsafe`` on anything else."""
    if root.is_symlink() or not root.is_dir():
        raise Unsafe(f"{root.name} is not a plain directory")
    real = root.resolve()
    out = [Entry(root, top + "/", True, 0, 0o755, root.stat().st_mtime)]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            info = p.lstat()
            if stat.S_ISLNK(info.st_mode) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise Unsafe(f"{p.relative_to(root)} is not a regular file or directory")
            if not p.resolve().is_relative_to(real):
                raise Unsafe(f"{p.relative_to(root)} lies outside the package")
            is_dir = stat.S_ISDIR(info.st_mode)
            out.append(Entry(p, f"{top}/{p.relative_to(root).as_posix()}" + ("/" if is_dir else ""), is_dir,
                             0 if is_dir else info.st_size, info.st_mode & 0o777, info.st_mtime))
    return out


def _chunks(e: Entry) -> Iterator[bytes]:
    sent = 0
    with open(e.path, "rb") as f:
        while chunk := f.read(CHUNK):
            sent += len(chunk)
            if sent > e.size:
                break
            yield chunk
    if sent != e.size:
        raise OSError(f"{e.arcname} changed while it was being sent")


def tar_stream(entries: list[Entry]) -> Iterator[bytes]:
    """POSIX (pax) tar, UTF-8 names, modes kept (check-evidence.sh stays executable)."""
    for e in entries:
        ti = tarfile.TarInfo(e.arcname.rstrip("/"))
        ti.type = tarfile.DIRTYPE if e.is_dir else tarfile.REGTYPE
        ti.size, ti.mode, ti.mtime = e.size, e.mode, int(e.mtime)
        yield ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if not e.is_dir:
            yield from _chunks(e)
            if e.size % tarfile.BLOCKSIZE:
                yield b"\0" * (tarfile.BLOCKSIZE - e.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class _Sink:
    """A write-only, unseekable file for ZipFile; what was written is taken out as it comes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_stream(entries: list[Entry]) -> Iterator[bytes]:
    """Zip (stored, no compression: the video does not shrink; zip64 where needed), UTF-8 names."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for e in entries:
            info = zipfile.ZipInfo(e.arcname, time.localtime(e.mtime)[:6])
            info.external_attr = ((0o040000 if e.is_dir else 0o100000) | e.mode) << 16
            if e.is_dir:
                info.external_attr |= 0x10
                zf.writestr(info, b"")
            else:
                info.file_size = e.size
                with zf.open(info, "w", force_zip64=e.size > 0x7FFFFFFF) as out:
                    for chunk in _chunks(e):
                        out.write(chunk)
                        yield sink.take()
            yield sink.take()
    yield sink.take()
