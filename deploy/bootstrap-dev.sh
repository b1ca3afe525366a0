#!/usr/bin/env bash
# Sets a fresh Debian machine up for the simulator and the tests: Debian packages,
# a virtual environment with the locked Python packages, the project itself.
# Idempotent and quick when nothing changed. Used by ./run-sim and ./run-tests.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
# Each one is needed by a test (CI=true fails on any skip, see tests/conftest.py): systemd for
# systemd-analyze (unit files), openssl + coreutils for the evidence recipe, passwd (useradd)
# and mount for the install and storage tests, iproute2 for the dock network namespaces.
apt_packages=(ffmpeg chrony espeak-ng sox shellcheck iproute2 tesseract-ocr tesseract-ocr-eng python3-venv time
              systemd openssl coreutils passwd mount
              postgresql fonts-noto-cjk poppler-utils libpango-1.0-0 libpangoft2-1.0-0
              chromium    # npm (with Node.js) is on the machine already: the station web assets (below)
              age         # the standard tool a third party decrypts an encrypted segment with
              qemu-system-x86 busybox-static      # the USB-gadget VM (Debian's kernel, dummy_hcd)
              qemu-user-static mmdebstrap arch-test    # the arm64 Bookworm install check
              systemd-container)   # systemd-nspawn: the arm64 check boots the image

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
lock="$repo/requirements.lock"
stamp="$venv/.bootstrap-stamp"
want="$(sha256sum "$lock" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: preparing $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$lock" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo" >&2
  echo "$want" > "$stamp"
fi
# The station's front-end packages (hls.js), exactly as locked, from the npm registry.
web="$repo/station/web"
if [ ! -f "$web/node_modules/.package-lock.json" ] || ! cmp -s "$web/package-lock.json" "$web/node_modules/.station-lock"; then
  echo "bootstrap: npm ci in $web" >&2
  (cd "$web" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  cp "$web/package-lock.json" "$web/node_modules/.station-lock"
fi
