"""A Debian Bookworm arm64 root filesystem and an aarch64 wheelhouse, cached outside the repo.

Building the root filesystem under QEMU takes many minutes, so it is built once per package
list and kept in CACHE (``BODYCAM_ARM64_CACHE``, default ``/var/cache/bodycam-arm64``);
each check then runs on a throw-away overlay of it, so every run starts clean. The wheels
of ``requirements-pi.lock`` are downloaded natively on this machine (hash-checked, for the
aarch64 platform) and kept beside it, keyed by the lock. A lock file keeps two runs from
building at once.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BODYCAM_ARM64_CACHE", "/var/cache/bodycam-arm64"))
SUITE = "bookworm"
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
# What Raspberry Pi OS Lite has and the check needs besides install.sh's own list:
# systemd as init (the units, nspawn boot), python3 (3.11), CA certificates, runuser (util-linux).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates", "python3", "util-linux")
# Documentation, manuals and translations are of no use here and cost emulated dpkg time.
DPKG_EXCLUDES = ("path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                 "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
                 "path-exclude=/usr/share/info/*")
AARCH64_PLATFORMS = ("manylinux2014_aarch64",
                     *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
BUILD_TIMEOUT_S = 3600


class Unavailable(Exception):
    """A tool or privilege the check needs is genuinely absent (the test skips with this)."""


def install_sh_apt_packages() -> tuple[str, ...]:
    """APT_PACKAGES as deploy/install.sh names them, so the image follows the installer."""
    text = (REPO / "deploy/install.sh").read_text()
    match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", text, re.M)
    if match is None:
        raise AssertionError("deploy/install.sh has no APT_PACKAGES=(...) list")
    return tuple(match.group(1).split())


def packages() -> tuple[str, ...]:
    return tuple(sorted({*BASE_PACKAGES, *install_sh_apt_packages()}))


def rootfs_key() -> str:
    spec = "\n".join([SUITE, *MIRRORS, *packages(), *DPKG_EXCLUDES])
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def wheels_key() -> str:
    lock = (REPO / "requirements-pi.lock").read_bytes()
    return hashlib.sha256(lock + "\n".join(AARCH64_PLATFORMS).encode()).hexdigest()[:16]


def ensure_binfmt() -> None:
    """Mount binfmt_misc if needed and register qemu-aarch64 with the F flag (fix binary)."""
    if os.geteuid() != 0:
        raise Unavailable("the arm64 check needs root (mmdebstrap, chroot, mounts)")
    for tool in ("mmdebstrap", "arch-test", "qemu-aarch64-static", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (deploy/bootstrap-dev.sh installs it)")
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(misc)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable(f"cannot mount binfmt_misc: {r.stderr.strip()}")
    entry = misc / "qemu-aarch64"
    if not entry.exists():
        conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
        if not conf.exists():
            raise Unavailable(f"{conf} missing (qemu-user-static not installed?)")
        line = conf.read_text().strip()
        if not line.rsplit(":", 1)[-1].count("F"):
            line += "F"                    # the interpreter must work inside a chroot
        try:
            (misc / "register").write_text(line)
        except OSError as e:
            raise Unavailable(f"cannot register qemu-aarch64 with binfmt_misc: {e}") from e
    if not entry.read_text().startswith("enabled"):
        entry.write_text("1")
    r = subprocess.run(["arch-test", "arm64"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Unavailable(f"arch-test arm64 fails: {r.stdout.strip()} {r.stderr.strip()}")


@contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time; a second run waits (bounded) instead of building again."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{CACHE}/.lock held for over {BUILD_TIMEOUT_S} s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mounted_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def _remove(path: Path) -> None:
    """rmtree, but never through a leftover mount (a bind-mounted /dev, say)."""
    if not path.exists():
        return
    mounts = _mounted_under(path)
    if mounts:
        raise RuntimeError(f"not removing {path}: still mounted there: {mounts}")
    shutil.rmtree(path)


def _drop_stale(prefix: str, keep: Path) -> None:
    for old in CACHE.glob(prefix + "*"):
        if old != keep and old.is_dir():
            _remove(old)


def base_rootfs(log: Callable[[str], None] = print) -> Path:
    """The cached root filesystem for the current package list, built if missing."""
    target = CACHE / f"rootfs-{rootfs_key()}"
    if (target / ".complete").exists():
        return target
    partial = CACHE / f"building-{rootfs_key()}"
    _remove(partial)
    # In a private mount namespace: mmdebstrap's /proc, /sys and /dev mounts cannot outlive it.
    command = ["unshare", "--mount", "--propagation", "private",
               "mmdebstrap", "--arch=arm64", "--variant=minbase", "--mode=root",
               "--include=" + ",".join(packages()),
               "--skip=cleanup/apt/lists",          # install.sh's apt-get update starts warm
               *(f"--dpkgopt={x}" for x in DPKG_EXCLUDES),
               SUITE, str(partial), *MIRRORS]
    log(f"arm64: building {target} (cold cache; this takes a while under QEMU)")
    r = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if r.returncode != 0:
        _remove(partial)
        raise RuntimeError(f"mmdebstrap failed ({r.returncode}):\n{r.stderr[-4000:]}")
    (partial / ".complete").write_text(" ".join(command) + "\n")
    partial.rename(target)
    _drop_stale("rootfs-", target)
    return target


def wheelhouse(log: Callable[[str], None] = print) -> Path:
    """The locked set's aarch64 wheels, hash-checked, downloaded on the host once per lock."""
    target = CACHE / f"wheels-{wheels_key()}"
    if (target / ".complete").exists():
        return target
    partial = CACHE / f"downloading-{wheels_key()}"
    _remove(partial)
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--require-hashes", "-r", str(REPO / "requirements-pi.lock"),
               "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
               "--abi", "cp311", "--abi", "abi3", "--abi", "none",
               *(f"--platform={p}" for p in AARCH64_PLATFORMS), "-d", str(partial)]
    log(f"arm64: downloading the aarch64 wheels of requirements-pi.lock into {target}")
    r = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        _remove(partial)
        raise RuntimeError(f"pip download failed ({r.returncode}):\n{r.stderr[-4000:]}")
    (partial / ".complete").write_text("")
    partial.rename(target)
    _drop_stale("wheels-", target)
    return target
