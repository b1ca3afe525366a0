#!/usr/bin/env bash
# Install the body-worn camera service on Raspberry Pi OS (Bookworm).
#
#   sudo deploy/install.sh                  # on the Pi, from a checkout
#   deploy/install.sh --root DIR --skip-apt --skip-venv   # stage files into DIR
#   deploy/install.sh --dry-run             # print what would be done
#   sudo deploy/install.sh --bench          # no Raspberry Pi archive: everything else
#
# Idempotent: re-running converges to the same state; it never overwrites an
# existing /etc/bodycam/bodycam.toml (it holds the device ID) and never touches
# recordings.  What each step does and why: deploy/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [options]
  --root DIR        install into DIR instead of / (staging, tests); implies no
                    systemctl start and no changes to this machine's users
  --skip-apt        do not install Debian packages
  --skip-venv       do not create the venv or pip-install the project
  --bench           bench mode (also BODYCAM_BENCH=1): on an image without the
                    Raspberry Pi apt archive, install everything except
                    python3-picamera2 and python3-lgpio (no camera, no GPIO)
  --bench-console   also enable a login shell on the USB serial port (ttyGS0);
                    for bench units only, never for devices issued to officers
  --dry-run         print the actions instead of performing them
  -h, --help        this text
EOF
}

ROOT=/
SKIP_APT=0
SKIP_VENV=0
BENCH_CONSOLE=0
BENCH=0
[ "${BODYCAM_BENCH:-0}" = 1 ] && BENCH=1
DRY_RUN=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --root) [ "$#" -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
                ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --skip-apt) SKIP_APT=1; shift ;;
        --skip-venv) SKIP_VENV=1; shift ;;
        --bench-console) BENCH_CONSOLE=1; shift ;;
        --bench) BENCH=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -d "$ROOT" ]; then
    echo "install.sh: --root $ROOT is not a directory" >&2
    exit 2
fi
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}                      # prefix for every target path ("" on a real install)

SERVICE_USER=bodycam
SERVICE_GROUPS=(video audio gpio i2c dialout)
APP_DIR=/opt/bodycam
VENV=$APP_DIR/.venv
STATE_DIR=/var/lib/bodycam
EVIDENCE_DIR=$STATE_DIR/evidence
CONFIG_DIR=/etc/bodycam
MARK_BEGIN="# BEGIN bodycam (deploy/install.sh)"
MARK_END="# END bodycam"
# picamera2/lgpio: Raspberry Pi archive; util-linux-extra: hwclock for the RTC rule;
# pps-tools, i2c-tools, alsa-utils: bench checks (ppstest, i2cdetect, arecord);
# python3-smbus2: the fuel gauge; libportaudio2: PortAudio under pip's sounddevice ([pi] extra).
APT_PACKAGES=(python3-venv python3-pip python3-smbus2 chrony
              ffmpeg libportaudio2 util-linux-extra pps-tools i2c-tools alsa-utils)
# Only in the Raspberry Pi archive (archive.raspberrypi.com), neither in Debian nor on PyPI.
PI_ARCHIVE_PACKAGES=(python3-picamera2 python3-lgpio)

SOURCES=(deploy/boot/config.txt.snippet deploy/boot/modules-load.conf
         deploy/udev/90-bodycam-rtc.rules deploy/chrony/bodycam.conf
         deploy/systemd/bodycam-gadget.service deploy/systemd/bodycam.service
         deploy/network/bodycam-dock.nmconnection)

log() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# Run a command, or only show it under --dry-run.
run() {
    if [ "$DRY_RUN" -eq 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

require_file() { [ -f "$1" ] || die "missing $1 (incomplete checkout?)"; }

# install_file MODE SOURCE TARGET: copy only if the content differs.
install_file() {
    local mode=$1 source=$2 target=$R$3
    require_file "$source"
    if [ -f "$target" ] && cmp -s "$source" "$target"; then
        return 0
    fi
    run install -D -m "$mode" "$source" "$target"
    log "installed $3"
}

# replace_block FILE BLOCKFILE: put BLOCKFILE between the markers at the end of
# FILE, replacing an earlier block; everything outside the markers is kept.
replace_block() {
    local file=$1 block=$2 tmp
    [ -f "$file" ] || die "$file not found: is this Raspberry Pi OS Bookworm (/boot/firmware)?"
    tmp=$(mktemp)
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        !skip   { print }' "$file" > "$tmp"
    # Drop trailing blank lines left by an earlier block, then append the new one.
    sed -i -e ':a' -e '/^\n*$/{$d;N;ba' -e '}' "$tmp"
    { printf '\n%s\n' "$MARK_BEGIN"; cat "$block"; printf '%s\n' "$MARK_END"; } >> "$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 0
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        log "would update the bodycam block in $file"
        rm -f "$tmp"
        return 0
    fi
    cat "$tmp" > "$file"
    rm -f "$tmp"
    log "updated the bodycam block in ${file#"$R"}"
}

# The serial console must not talk over the GNSS receiver on the UART.
remove_serial_console() {
    local cmdline=$R/boot/firmware/cmdline.txt
    [ -f "$cmdline" ] || { log "no ${cmdline#"$R"}; serial console left as is"; return 0; }
    if grep -Eq '(^| )console=(serial0|ttyAMA0|ttyS0),[0-9]+( |$)' "$cmdline"; then
        run sed -i -E 's/(^| )console=(serial0|ttyAMA0|ttyS0),[0-9]+( |$)/\1/; s/  +/ /g; s/^ //' "$cmdline"
        log "removed the serial console from ${cmdline#"$R"} (the UART belongs to the GNSS)"
    fi
}

# apt_candidate PACKAGE: true if apt can install PACKAGE ("apt-cache policy" prints
# nothing for a package no configured archive knows, "Candidate: (none)" for one
# it knows but cannot install).
apt_candidate() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

install_packages() {
    local packages=("${APT_PACKAGES[@]}") missing=() pkg
    if [ "$SKIP_APT" -eq 1 ]; then
        log "skipping apt (--skip-apt)"
        return 0
    fi
    # --dry-run may show the apt plan for a --root (it only reads this machine's apt lists).
    [ -z "${R}" ] || [ "$DRY_RUN" -eq 1 ] || die "apt cannot install into --root $ROOT; add --skip-apt"
    run apt-get update
    for pkg in "${PI_ARCHIVE_PACKAGES[@]}"; do
        apt_candidate "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        packages+=("${PI_ARCHIVE_PACKAGES[@]}")
    elif [ "$BENCH" -eq 1 ]; then
        log "bench mode: not installing ${missing[*]} (no Raspberry Pi archive); no real camera or GPIO"
        for pkg in "${PI_ARCHIVE_PACKAGES[@]}"; do
            if apt_candidate "$pkg"; then packages+=("$pkg"); fi
        done
    else
        die "apt has no installable ${missing[*]}: these come only from the Raspberry Pi archive" \
            "(archive.raspberrypi.com, configured on Raspberry Pi OS in /etc/apt/sources.list.d/raspi.list)," \
            "which this image does not have. python3-picamera2 drives the camera (libcamera)," \
            "python3-lgpio the buttons, LEDs and vibration motor; neither is in Debian or on PyPI." \
            "Install on Raspberry Pi OS Bookworm, add that archive, or re-run with --bench" \
            "(or BODYCAM_BENCH=1) to install everything else for a bench unit without camera and GPIO." \
            "Nothing has been installed."
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
}

# The account the recorder runs as: no login, no home outside its state dir.
create_service_user() {
    local existing=() group useradd_root=()
    [ -z "$R" ] || useradd_root=(--root "$ROOT")
    [ -f "$R/etc/passwd" ] || die "$R/etc/passwd not found: cannot create the service user"
    if ! grep -q "^$SERVICE_USER:" "$R/etc/passwd"; then
        run useradd "${useradd_root[@]}" --system --user-group --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "body-worn camera recorder" "$SERVICE_USER"
    fi
    for group in "${SERVICE_GROUPS[@]}"; do
        if grep -q "^$group:" "$R/etc/group"; then
            existing+=("$group")
        else
            log "warning: group $group does not exist here (not Raspberry Pi OS?); skipped"
        fi
    done
    if [ "${#existing[@]}" -gt 0 ]; then
        run usermod "${useradd_root[@]}" --append --groups "$(IFS=,; echo "${existing[*]}")" "$SERVICE_USER"
    fi
}

# uid:gid of the service user as the target system knows it.
service_owner() {
    local uid gid
    uid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $3 }' "$R/etc/passwd")
    gid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $4 }' "$R/etc/passwd")
    if [ -z "$uid" ]; then
        [ "$DRY_RUN" -eq 1 ] && { echo "$SERVICE_USER:$SERVICE_USER"; return 0; }
        die "service user $SERVICE_USER missing from $R/etc/passwd"
    fi
    echo "$uid:$gid"
}

create_state_dirs() {
    local owner
    owner=$(service_owner)
    # 0700: recordings are readable by the recorder alone; they leave only via the dock (D10).
    run install -d -m 0755 "$R/var/lib"
    run install -d -m 0700 -o "${owner%%:*}" -g "${owner##*:}" "$R$STATE_DIR" "$R$EVIDENCE_DIR"
    run install -d -m 0755 "$R$CONFIG_DIR"
}

install_config() {
    local target=$R$CONFIG_DIR/bodycam.toml
    if [ -f "$target" ]; then
        log "keeping existing $CONFIG_DIR/bodycam.toml"
    elif [ -f "$SRC/deploy/bodycam.toml" ]; then
        run install -m 0644 "$SRC/deploy/bodycam.toml" "$target"
        log "installed $CONFIG_DIR/bodycam.toml: set [device] id and officer_id before first use"
    elif [ "$SKIP_VENV" -eq 0 ]; then
        if [ "$DRY_RUN" -eq 1 ]; then
            log "would write $CONFIG_DIR/bodycam.toml from 'bodycam config defaults'"
        else
            "$R$VENV/bin/bodycam" config defaults > "$target"
            chmod 0644 "$target"
            log "wrote default $CONFIG_DIR/bodycam.toml: set [device] id and officer_id before first use"
        fi
    else
        log "warning: no $CONFIG_DIR/bodycam.toml; write one before starting bodycam.service"
    fi
}

install_venv() {
    if [ "$SKIP_VENV" -eq 1 ]; then
        log "skipping venv and pip (--skip-venv)"
        return 0
    fi
    # --dry-run may show the venv plan for a --root (the venv itself is always $VENV).
    [ -z "$R" ] || [ "$DRY_RUN" -eq 1 ] || die "a venv cannot be relocated into --root $ROOT; add --skip-venv"
    run install -d -m 0755 "$APP_DIR"
    # --system-site-packages: picamera2/libcamera come from apt, not PyPI.
    if [ ! -x "$VENV/bin/python" ]; then
        run python3 -m venv --system-site-packages "$VENV"
    fi
    # Exactly the device's locked set (requirements-pi.lock: the runtime and the [pi] extra,
    # sounddevice and smbus2; no station, test or lint packages), every file checked against
    # its hash, then the project alone: no dependency resolved at install time, no unhashed
    # build backend (setuptools is in the lock).
    run "$VENV/bin/pip" install --disable-pip-version-check --require-hashes -r "$SRC/requirements-pi.lock"
    run "$VENV/bin/pip" install --disable-pip-version-check --no-deps --no-build-isolation --upgrade "$SRC"
}

enable_units() {
    local units=(bodycam-gadget.service bodycam.service)
    if [ "$BENCH_CONSOLE" -eq 1 ]; then
        units+=(serial-getty@ttyGS0.service)
        log "bench console: a login prompt on the USB serial port (never on issued devices)"
    fi
    if ! command -v systemctl > /dev/null; then
        log "warning: systemctl not found; enable ${units[*]} by hand"
        return 0
    fi
    if [ -z "$R" ]; then
        # daemon-reload needs a running systemd; in a chroot or an image being built there is
        # none ("System has not been booted with systemd"), and enable works offline there.
        if [ -d /run/systemd/system ]; then
            run systemctl daemon-reload
        else
            log "systemd is not running here (chroot or image build): units enabled for the next boot"
        fi
        run systemctl enable "${units[@]}"
        # Bluetooth is off (dtoverlay=disable-bt); its UART helper would only fail.
        if systemctl list-unit-files hciuart.service > /dev/null 2>&1; then
            run systemctl disable hciuart.service
        fi
    else
        run systemctl --root="$ROOT" enable "${units[@]}"
    fi
}

# No swap, ever: the pre-event buffer, the open 64 KiB age chunk and a voice note being
# encrypted are plaintext in RAM, and swap would write them to the SD card in clear
# (docs/encryption.md, "Nothing in clear on disk"). Always, not only once a key is
# installed: keys are usually provisioned after this script, and encryption then turns on
# by itself. The recorder's memory is bounded (a few hundred MB at most) and a Pi's RAM
# holds it. Raspberry Pi OS swaps to /var/swap through dphys-swapfile; any other swap
# (an fstab line, a zram or rpi-swap generator unit) is held off by masking swap.target.
# The self-check (D1) reports swap that is active anyway.
unit_exists() {
    local d
    for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
        [ -e "$R$d/$1" ] && return 0
    done
    return 1
}

mask_unit() {
    local link=$R/etc/systemd/system/$1
    if [ -L "$link" ] && [ "$(readlink "$link")" = /dev/null ]; then
        return 0
    fi
    if command -v systemctl > /dev/null; then
        if [ -z "$R" ]; then run systemctl mask "$1"; else run systemctl --root="$ROOT" mask "$1"; fi
    else
        run install -d -m 0755 "$R/etc/systemd/system"
        run ln -sf /dev/null "$link"
    fi
    log "masked $1 (no swap: docs/encryption.md)"
}

disable_swap() {
    local fstab=$R/etc/fstab proc_swaps=${BODYCAM_PROC_SWAPS:-/proc/swaps} tmp
    if [ -z "$R" ]; then
        # this running system: swap off now (a real install on the device)
        if command -v dphys-swapfile > /dev/null; then
            run dphys-swapfile swapoff
            run dphys-swapfile uninstall      # removes /var/swap
        fi
        if [ -r "$proc_swaps" ] && awk 'NR > 1 { found = 1 } END { exit !found }' "$proc_swaps"; then
            run swapoff -a
            log "swap turned off"
        fi
    fi
    if unit_exists dphys-swapfile.service && ! { [ -L "$R/etc/systemd/system/dphys-swapfile.service" ] &&
            [ "$(readlink "$R/etc/systemd/system/dphys-swapfile.service")" = /dev/null ]; }; then
        if [ -n "$R" ]; then
            run systemctl --root="$ROOT" disable dphys-swapfile.service
        elif [ -d /run/systemd/system ]; then
            run systemctl disable --now dphys-swapfile.service
        else
            run systemctl disable dphys-swapfile.service
        fi
    fi
    unit_exists dphys-swapfile.service && mask_unit dphys-swapfile.service
    mask_unit swap.target
    if [ -f "$fstab" ] && awk '!/^[[:space:]]*#/ && $3 == "swap" { found = 1 } END { exit !found }' "$fstab"; then
        if [ "$DRY_RUN" -eq 1 ]; then
            log "would comment out the swap lines of /etc/fstab"
        else
            tmp=$(mktemp)
            awk '!/^[[:space:]]*#/ && $3 == "swap" { print "# no swap (bodycam, docs/encryption.md): " $0; next }
                 { print }' "$fstab" > "$tmp"
            cat "$tmp" > "$fstab"
            rm -f "$tmp"
            log "commented out the swap lines of /etc/fstab"
        fi
    fi
}

# Every input checked before the first change, so a bad checkout or a target
# that is not Raspberry Pi OS never leaves a half-installed device.
preflight() {
    local f
    for f in "${SOURCES[@]}"; do
        require_file "$SRC/$f"
    done
    [ "$SKIP_VENV" -eq 1 ] || require_file "$SRC/requirements-pi.lock"
    if [ ! -f "$R/boot/firmware/config.txt" ]; then
        [ "$BENCH" -eq 1 ] ||
            die "$R/boot/firmware/config.txt not found: is this Raspberry Pi OS Bookworm?"
        log "bench mode: no /boot/firmware/config.txt; the boot overlays are left out"
    fi
}

main() {
    [ "$DRY_RUN" -eq 1 ] || [ -n "$R" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
    log "installing from $SRC into ${ROOT}"
    preflight
    install_packages
    create_service_user
    create_state_dirs
    install_venv
    install_config
    install_file 0644 "$SRC/deploy/boot/modules-load.conf" /etc/modules-load.d/bodycam.conf
    install_file 0644 "$SRC/deploy/udev/90-bodycam-rtc.rules" /etc/udev/rules.d/90-bodycam-rtc.rules
    install_file 0644 "$SRC/deploy/chrony/bodycam.conf" /etc/chrony/conf.d/bodycam.conf
    install_file 0600 "$SRC/deploy/network/bodycam-dock.nmconnection" \
        /etc/NetworkManager/system-connections/bodycam-dock.nmconnection
    install_file 0644 "$SRC/deploy/systemd/bodycam-gadget.service" /etc/systemd/system/bodycam-gadget.service
    install_file 0644 "$SRC/deploy/systemd/bodycam.service" /etc/systemd/system/bodycam.service
    if [ -f "$R/boot/firmware/config.txt" ]; then
        replace_block "$R/boot/firmware/config.txt" "$SRC/deploy/boot/config.txt.snippet"
    fi
    remove_serial_console
    enable_units
    disable_swap
    log "done; reboot to load the overlays (dwc2, i2c-rtc, pps-gpio, i2s)"
}

main
