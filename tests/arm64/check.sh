#!/usr/bin/env bash
# The arm64 install check, inside a private mount namespace (run through `unshare --mount`,
# so every mount below vanishes with this process, however it ends).
#
#   check.sh BASE WHEELS SRC WORK
#
# BASE: the cached Debian Bookworm arm64 root filesystem (never written: an overlay on top);
# WHEELS: the aarch64 wheels of requirements-pi.lock; SRC: a copy of the checkout;
# WORK: a fresh directory for the overlay, logs and the evidence copied out.
# Runs deploy/install.sh --bench for real in a chroot (no Raspberry Pi archive here), then
# records a short simulated recording as the service user and verifies it there.
# "FACT name=value" lines on stdout are what the test checks.
set -euo pipefail
[ "$#" -eq 4 ] || { echo "usage: check.sh BASE WHEELS SRC WORK" >&2; exit 2; }
BASE=$1 WHEELS=$2 SRC=$3 WORK=$4
M=$WORK/merged

step() { printf '== %s (%s)\n' "$*" "$(date -u +%T)"; }

mkdir -p "$WORK/upper" "$WORK/work" "$M" "$WORK/out"
step "overlay on $BASE"
if ! mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$WORK/upper,workdir=$WORK/work" "$M"; then
    echo "overlayfs unavailable; copying the root filesystem instead" >&2
    cp -a "$BASE/." "$M/"
fi
mount -t proc proc "$M/proc"
mount -t sysfs sysfs "$M/sys"
mount --rbind /dev "$M/dev"
mount -t tmpfs tmpfs "$M/run"
mount -t tmpfs tmpfs "$M/tmp"
cp --remove-destination /etc/resolv.conf "$M/etc/resolv.conf"      # apt-get update
mkdir -p "$M/var/cache/bodycam-wheels" "$M/usr/src"
mount --bind -o ro "$WHEELS" "$M/var/cache/bodycam-wheels"
cp -a "$SRC" "$M/usr/src/bodycam"

# A clean environment, as sudo would give; pip takes the wheels from the cache (still checked
# against the lock's hashes) instead of fetching them from PyPI under emulation.
in_root() {
    chroot "$M" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 HOME=/root PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/cache/bodycam-wheels "$@"
}
as_service_user() { in_root runuser -u bodycam -- "$@"; }

echo "FACT machine=$(in_root uname -m)"
echo "FACT debian=$(in_root cat /etc/debian_version)"
echo "FACT python=$(in_root python3 -c 'import platform; print(platform.python_version())')"

step "deploy/install.sh --bench, executed directly, as root in the arm64 chroot"
in_root /usr/src/bodycam/deploy/install.sh --bench
echo "FACT install=ok"

step "the installed venv"
in_root /opt/bodycam/.venv/bin/python -m pip list --format=freeze --disable-pip-version-check \
    | sed 's/^/FACT pip /'
in_root /opt/bodycam/.venv/bin/python -c 'import platform; print("FACT venv_machine=" + platform.machine())'
in_root /opt/bodycam/.venv/bin/python -c 'import numpy, av, cryptography, pyrage; print("FACT imports=ok")'
echo "FACT enabled=$(in_root systemctl is-enabled bodycam.service bodycam-gadget.service | tr '\n' ' ')"

step "a 3 s simulated recording as the service user"
as_service_user /opt/bodycam/.venv/bin/bodycam record --config /etc/bodycam/bodycam.toml \
    --sim --fast --duration 3 --provision
step "bodycam verify as the service user"
as_service_user /opt/bodycam/.venv/bin/bodycam verify /var/lib/bodycam/evidence \
    --pubkey /var/lib/bodycam/identity/device-key.pub.pem | sed 's/^/FACT verify /'
echo "FACT evidence_owner=$(in_root stat -c %U /var/lib/bodycam/evidence/journal.log)"
cp -a "$M/var/lib/bodycam/evidence" "$WORK/out/evidence"
cp "$M/var/lib/bodycam/identity/device-key.pub.pem" "$WORK/out/"
step "done"

# ---- boot it with systemd-nspawn (BOOT=1): the units, READY=1, the watchdog
[ "${BOOT:-0}" = 1 ] || exit 0
if ! command -v systemd-nspawn > /dev/null; then
    echo "FACT boot=no-nspawn"; exit 0
fi
step "systemd-nspawn --boot under emulation"
umount -R "$M/proc" "$M/sys" "$M/dev" "$M/run" "$M/tmp" "$M/var/cache/bodycam-wheels"
# Emulation only: the service on simulated hardware (no camera here), with room for the
# ~11x slower start; everything else is the unit install.sh installed.
mkdir -p "$M/etc/systemd/system/bodycam.service.d"
cat > "$M/etc/systemd/system/bodycam.service.d/arm64-check.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=/opt/bodycam/.venv/bin/bodycam run --config /etc/bodycam/bodycam.toml --sim
TimeoutStartSec=300s
UNIT
install -m 0755 "$(dirname "$0")/boot-report.sh" "$M/usr/local/sbin/arm64-check-report"
cat > "$M/etc/systemd/system/arm64-check-report.service" <<'UNIT'
[Unit]
Description=arm64 check: report on bodycam.service, then power off
After=bodycam.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/arm64-check-report
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/arm64-check-report.service \
    "$M/etc/systemd/system/multi-user.target.wants/arm64-check-report.service"
rc=0
timeout -k 20 "${BOOT_TIMEOUT:-600}" systemd-nspawn --quiet --boot --directory="$M" \
    --register=no --keep-unit --private-network --console=pipe --machine=bodycam-arm64 \
    > "$WORK/out/boot.log" 2>&1 < /dev/null || rc=$?
echo "FACT boot_rc=$rc"
# If nspawn had to be killed, its container (emulated systemd and all) may outlive it.
root=$(readlink -f "$M")
for proc in /proc/[0-9]*; do
    if [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ]; then kill -9 "${proc#/proc/}" 2>/dev/null || true; fi
done
sed 's/^/FACT boot /' "$M/var/lib/arm64-check/report" 2>/dev/null || echo "FACT boot_report=missing"
cp "$M/var/lib/arm64-check/journal" "$WORK/out/" 2>/dev/null || true
