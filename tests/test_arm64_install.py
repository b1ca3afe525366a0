"""The Pi install, proven on arm64: Debian Bookworm arm64 under QEMU user emulation.

tests/arm64/ builds (once, cached in /var/cache/bodycam-arm64 outside the repository) an
arm64 Bookworm root filesystem with mmdebstrap; each run overlays it afresh, runs
deploy/install.sh --bench for real in a chroot (the Raspberry Pi archive with
python3-picamera2 and python3-lgpio is not reachable here, hence bench mode), records a
short simulated recording as the service user and verifies it there and on this machine,
then boots the image with systemd-nspawn to see the units start, bodycam.service reach
READY and its watchdog fed. What this proves and what only a Pi can: deploy/README.md.
Everything runs about 11x slower emulated: no timing from here feeds a benchmark.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.arm64 import rootfs
from tests.arm64.run import CheckRun, run_check

EM_AARCH64 = 183


@pytest.fixture(scope="module")
def arm64(tmp_path_factory) -> Iterator[CheckRun]:
    try:
        run = run_check(tmp_path_factory.mktemp("arm64"), boot=True)
    except rootfs.Unavailable as e:
        pytest.skip(f"arm64 check not possible here: {e}")
    print(f"arm64 check: {run.seconds:.0f} s in the emulated root filesystem")
    yield run
    for bulky in ("upper", "work", "src"):      # the installed image: hundreds of MB
        shutil.rmtree(run.work / bulky, ignore_errors=True)


def locked_pins() -> dict[str, str]:
    text = (rootfs.REPO / "requirements-pi.lock").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_the_image_is_debian_bookworm_arm64_with_python_3_11(arm64):
    assert arm64.returncode == 0, arm64.output[-6000:]
    assert arm64.facts["machine"] == "aarch64"
    assert arm64.facts["debian"].startswith("12.")
    assert arm64.facts["python"].startswith("3.11.")


def test_install_sh_installs_the_locked_set_in_bench_mode(arm64):
    assert arm64.facts.get("install") == "ok", arm64.output[-6000:]
    assert "bench mode: not installing python3-picamera2 python3-lgpio" in arm64.output
    assert arm64.facts["venv_machine"] == "aarch64" and arm64.facts["imports"] == "ok"
    installed = dict(line.removeprefix("pip ").lower().split("==", 1)
                     for line in arm64.lines if line.startswith("pip ") and "==" in line)
    pins = locked_pins()
    assert {name: installed.get(name) for name in pins} == pins   # every pin, exact version
    # pip and wheel come with the venv itself (Debian's ensurepip, from apt), nothing else.
    extra = set(installed) - set(pins) - {"bodycam", "pip", "wheel"}
    assert not extra, f"installed beyond requirements-pi.lock: {extra}"
    assert installed["bodycam"] == "0.1.0"
    # The compiled wheels are the aarch64 ones, not something built or borrowed from here.
    venv = arm64.upper / "opt/bodycam/.venv/lib/python3.11/site-packages"
    compiled = [p for pkg in ("numpy", "av", "cryptography", "pyrage") for p in (venv / pkg).rglob("*.so")]
    assert compiled and {elf_machine(p) for p in compiled} == {EM_AARCH64}
    assert arm64.facts["enabled"].split() == ["enabled", "enabled"]


def test_service_user_records_and_the_evidence_verifies_on_arm64_and_here(arm64):
    assert arm64.facts.get("evidence_owner") == "bodycam", arm64.output[-6000:]
    assert [line for line in arm64.lines if line.startswith("verify ")][-1].startswith(
        "verify PASS device "), arm64.lines
    evidence = arm64.work / "out/evidence"
    assert list(evidence.glob("recordings/*/*.ts"))
    here = subprocess.run([sys.executable, "-m", "firmware", "verify", str(evidence),
                           "--pubkey", str(arm64.work / "out/device-key.pub.pem")],
                          capture_output=True, text=True, cwd=rootfs.REPO)
    assert here.returncode == 0, here.stdout + here.stderr
    assert here.stdout.splitlines()[-1].startswith("PASS device "), here.stdout


def test_the_units_boot_under_systemd_nspawn_ready_and_watchdog_fed(arm64):
    """systemd (arm64, emulated) boots the image: the recorder reaches READY, pings its watchdog."""
    boot = dict(line.removeprefix("boot ").split("=", 1) for line in arm64.lines
                if line.startswith("boot ") and "=" in line)
    journal = arm64.work / "out/journal"
    why = journal.read_text()[-3000:] if journal.exists() else arm64.output[-3000:]
    assert arm64.facts.get("boot") != "no-nspawn", "systemd-nspawn missing: apt-get install systemd-container"
    assert "boot finished" in arm64.lines, why
    assert boot["first.ActiveState"] == "active" and boot["second.ActiveState"] == "active", why
    assert boot["second.NRestarts"] == "0", why
    assert boot["second.WatchdogUSec"] == "10s", boot
    first, second = int(boot["first.WatchdogTimestampMonotonic"]), int(boot["second.WatchdogTimestampMonotonic"])
    assert 0 < first < second, boot          # pinged again within the 12 s between the samples
    # No configfs in a container: the gadget fails, and (Wants=, not Requires=) recording goes on.
    assert boot["gadget.Result"] == "exit-code", boot


def test_the_image_follows_install_sh_and_the_wheels_follow_the_lock(monkeypatch, tmp_path):
    """The cache keys: a package added to install.sh or a changed lock means a new image/wheelhouse."""
    assert {"ffmpeg", "python3-venv", "chrony"} <= set(rootfs.install_sh_apt_packages())
    assert set(rootfs.install_sh_apt_packages()) <= set(rootfs.packages())
    image, wheels = rootfs.rootfs_key(), rootfs.wheels_key()
    (tmp_path / "deploy").mkdir()
    install_sh = (rootfs.REPO / "deploy/install.sh").read_text()
    (tmp_path / "deploy/install.sh").write_text(install_sh.replace("APT_PACKAGES=(", "APT_PACKAGES=(gpsd ", 1))
    (tmp_path / "requirements-pi.lock").write_text((rootfs.REPO / "requirements-pi.lock").read_text() + "\n")
    monkeypatch.setattr(rootfs, "REPO", tmp_path)
    assert "gpsd" in rootfs.packages()
    assert rootfs.rootfs_key() != image and rootfs.wheels_key() != wheels


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_stale_build_with_a_mount_left_inside_is_never_deleted_through_it(tmp_path):
    stale = tmp_path / "building-x"
    (stale / "dev").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(stale / "dev")], check=True)
    try:
        (stale / "dev/node").write_text("a host file seen through a leftover bind mount")
        with pytest.raises(RuntimeError, match="still mounted"):
            rootfs._remove(stale)
        assert (stale / "dev/node").exists()
    finally:
        subprocess.run(["umount", str(stale / "dev")], check=True)
    rootfs._remove(stale)
    assert not stale.exists()
