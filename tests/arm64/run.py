"""Run tests/arm64/check.sh on a fresh overlay of the cached arm64 root filesystem."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.arm64 import rootfs

CHECK = Path(__file__).with_name("check.sh")
CHECK_TIMEOUT_S = 2400


@dataclass
class CheckRun:
    work: Path
    returncode: int
    output: str
    seconds: float
    facts: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)    # every FACT line, in order

    @property
    def upper(self) -> Path:
        """What the run wrote over the base image (the install, the evidence)."""
        return self.work / "upper"


def copy_checkout(target: Path) -> None:
    """The checkout as git sees it (tracked and new, not ignored: no .venv, no node_modules)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=rootfs.REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        source = rootfs.REPO / name.decode()
        if source.is_file():                       # listed but deleted in the work tree: skip
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())


def run_check(work: Path, boot: bool, log: Callable[[str], None] = print) -> CheckRun:
    """Everything under the cache lock: the base image must not change under a running check."""
    rootfs.ensure_binfmt()
    with rootfs.cache_lock():
        base = rootfs.base_rootfs(log)
        wheels = rootfs.wheelhouse(log)
        source = work / "src"
        copy_checkout(source)
        started = time.monotonic()
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", str(CHECK),
                            str(base), str(wheels), str(source), str(work)],
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BOOT": "1" if boot else "0",
                                "LANG": "C.UTF-8"},
                           capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    output = r.stdout + r.stderr
    (work / "check.log").write_text(output)
    shutil.copy(work / "check.log", rootfs.CACHE / "last-check.log")     # outlives pytest's tmp
    run = CheckRun(work, r.returncode, output, time.monotonic() - started)
    for line in r.stdout.splitlines():
        if line.startswith("FACT "):
            run.lines.append(line[5:])
            key, sep, value = line[5:].partition("=")
            if sep and " " not in key:
                run.facts[key] = value.strip()
    return run
