"""A small VM with USB gadget support: Debian's own kernel under QEMU (TCG), booted once.

This machine's kernel has no gadget support, Debian's ``linux-image-amd64`` has it as
modules (``libcomposite``, ``usb_f_ncm``, ``usb_f_acm``, ``dummy_hcd``, ``cdc_ncm``,
``cdc_acm``). :func:`kernel` fetches the package with ``apt-get download`` and unpacks it
with ``dpkg-deb -x`` into a cache outside the repository (never installed on the host),
keyed by version; :func:`initramfs` writes a busybox initramfs (``tests/vm/init.sh`` as
``/init`` plus the modules it needs, dependencies first) into the same cache, keyed by
its content. :func:`boot` starts QEMU with the host's ``/`` shared read-only over 9p
(the init puts a tmpfs overlay on top, so the project's venv runs unchanged inside) and
``share`` read-write at the same path, runs ``command`` there and powers off.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Iterator

CACHE = Path(os.environ.get("BODYCAM_VM_CACHE", "/var/cache/bodycam-vm"))
HERE = Path(__file__).resolve().parent
META_PACKAGE = "linux-image-amd64"
# What the init loads, in this order after their dependencies (read from each module).
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay",
           "configfs", "libcomposite", "usb_f_ncm", "usb_f_ecm", "usb_f_acm", "dummy_hcd", "cdc_ncm", "cdc_acm")


class VmUnavailable(RuntimeError):
    """A tool or privilege the VM needs is missing here; the message says which."""


def missing_tools() -> str:
    """Why the VM cannot run on this machine ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (the kernel package is fetched into /var/cache, 9p shares / as root)"
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("apt-get", "apt"),
                      ("dpkg-deb", "dpkg"), ("apt-cache", "apt")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {pkg}; deploy/bootstrap-dev.sh installs it)"
    if not Path("/bin/busybox").is_file():
        return "/bin/busybox is missing (Debian package busybox-static)"
    return ""


def _run(*cmd: str, cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise VmUnavailable(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return r.stdout


def kernel_package() -> str:
    """The versioned image package ``linux-image-amd64`` depends on in this apt's lists."""
    for line in _run("apt-cache", "depends", META_PACKAGE).splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise VmUnavailable(f"apt-cache knows no kernel behind {META_PACKAGE} (run apt-get update)")


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder at a time (two test runs may start together)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def kernel() -> Path:
    """The unpacked kernel package dir (``boot/vmlinuz-*``, ``lib/modules/*``), fetched once."""
    pkg = kernel_package()
    root = CACHE / pkg
    if (root / ".complete").exists():
        return root
    with _cache_lock():
        if not (root / ".complete").exists():
            _fetch(pkg, root)
    return root


def _fetch(pkg: str, root: Path) -> None:
    work = CACHE / f".{pkg}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    _run("apt-get", "download", pkg, cwd=work)
    [deb] = work.glob("*.deb")
    tree = work / "tree"
    _run("dpkg-deb", "-x", str(deb), str(tree))
    deb.unlink()
    (tree / ".complete").write_text(pkg + "\n")
    shutil.rmtree(root, ignore_errors=True)
    tree.rename(root)
    shutil.rmtree(work, ignore_errors=True)


def _module_index(root: Path) -> dict[str, Path]:
    [moddir] = (root / "lib" / "modules").iterdir()
    return {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko")}


def _depends(ko: Path) -> list[str]:
    """The ``depends=`` entry of the module's ``.modinfo`` (what depmod would read)."""
    data = ko.read_bytes()
    i = data.find(b"\0depends=")
    if i < 0:
        return []
    value = data[i + len(b"\0depends="):data.index(b"\0", i + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def module_order(root: Path, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    """``wanted`` and everything they need, each after its dependencies."""
    index = _module_index(root)
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in index:
            raise VmUnavailable(f"module {name} (needed by {' <- '.join(chain) or 'the VM'}) "
                                f"is not in {root.name}")
        for dep in _depends(index[name]):
            visit(dep, (name, *chain))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return [index[n] for n in order]


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of (path, mode, data-or-symlink-target) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(root: Path) -> Path:
    """The busybox initramfs for ``root``'s kernel, rebuilt only when its content changes."""
    modules = module_order(root)
    init = (HERE / "init.sh").read_bytes()
    busybox = Path("/bin/busybox").read_bytes()
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "host", "rw", "newroot", "lib", "lib/modules")]
    entries += [("bin/busybox", 0o100755, busybox), ("bin/sh", 0o120777, b"busybox"),
                ("init", 0o100755, init),
                ("modules.order", 0o100644, "".join(f"{m.stem}\n" for m in modules).encode())]
    entries += [(f"lib/modules/{m.name}", 0o100644, m.read_bytes()) for m in modules]
    digest = hashlib.sha256()
    for name, mode, data in entries:
        digest.update(f"{name}\0{mode}\0{len(data)}\0".encode())
        digest.update(data)
    out = CACHE / f"initramfs-{root.name}-{digest.hexdigest()[:16]}.cpio"
    with _cache_lock():
        if not out.exists():
            for old in CACHE.glob(f"initramfs-{root.name}-*.cpio"):
                old.unlink()          # built from an earlier init.sh or module list
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(_cpio_newc(entries))
            tmp.rename(out)
    return out


def pycache_env() -> dict[str, str]:
    """The environment for Python run inside the VM, and for warming its bytecode here.

    Byte-compiling under TCG costs as much as running: the VM's Python reads its ``.pyc``
    from a prefix in the cache, written by :func:`warm_bytecode` on the host first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    return env


def warm_bytecode(*commands: list[str], cwd: Path) -> None:
    """Run ``commands`` here with the VM's bytecode prefix, so what they import is compiled.
    Their exit status does not matter (a dock run with no device fails after its imports)."""
    for cmd in commands:
        subprocess.run(cmd, cwd=cwd, env=pycache_env(), capture_output=True, timeout=300, check=False)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def boot(share: Path, command: str, *, timeout_s: float, log: Path, memory_mb: int = 1024) -> int:
    """Boot the VM, run ``command`` (a shell line, run in the host's tree with ``share``
    writable at its own path), power off; returns QEMU's exit status. The console goes
    to ``log``. QEMU is killed when ``timeout_s`` passes (:class:`TimeoutError`)."""
    if " " in str(share) or "," in str(share):
        raise ValueError(f"share path must not contain spaces or commas: {share}")
    root = kernel()
    [vmlinuz] = (root / "boot").glob("vmlinuz-*")
    prefix = pycache_env()["PYTHONPYCACHEPREFIX"]
    (share / "command.sh").write_text(f"export PYTHONPYCACHEPREFIX={prefix}\n{command}\n", encoding="utf-8")
    append = f"console=ttyS0 panic=-1 quiet loglevel=4 bcvm.share={share}"
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", str(memory_mb),
           "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
           "-kernel", str(vmlinuz), "-initrd", str(initramfs(root)), "-append", append,
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
           "-virtfs", f"local,path={share},mount_tag=share,security_model=none,multidevs=remap"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the VM did not power off within {timeout_s:.0f} s") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

