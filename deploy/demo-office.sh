#!/usr/bin/env bash
# The whole system on one machine, for a first look (./run-sim --station):
#   a simulated one-hour shift on the device simulator (bodycam scenario), an agency CA and
#   dock/device certificates, a local evidence station, the device docked into it over the
#   real TLS link (bodycam dock serve <-> station dock, on loopback), one demo account per
#   role, and the station's web interface left running with its URL printed.
# Usage: deploy/demo-office.sh [--out DIR] [--scenario FILE] [--port N] [--check]
#   --check  start the web interface, check it answers, stop (for tests)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.venv/bin"
out="$repo/out/office-$(date -u +%Y%m%dT%H%M%SZ)"
scenario="$repo/sim/scenarios/shift-1h.txt"
port=8444
check=0
unit="演示市城市管理行政执法局"
password="demo-password-2026"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --scenario) scenario=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo-office: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$port" = 0 ]; then   # any free port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
[ ! -e "$out" ] || { echo "demo-office: $out exists; give a new --out" >&2; exit 2; }
mkdir -p "$out"
say() { printf '%s\n' "$*" >&2; }

say "1/6 a simulated shift: $scenario"
"$bin/bodycam" scenario "$scenario" --out "$out/device" -q > "$out/scenario.txt"
device_key="$out/device-key"

say "2/6 agency CA, dock and device certificates"
"$bin/station" pki init-ca --dir "$out/ca" --unit "$unit" > /dev/null
"$bin/station" pki issue-dock --ca-dir "$out/ca" --out "$out/dock" --name dock-1 --unit "$unit" > /dev/null
"$bin/station" pki issue-device --ca-dir "$out/ca" --pubkey "$device_key/device-key.pub.pem" \
  --out "$out/device-cert.pem" --unit "$unit" > /dev/null

say "3/6 a local station"
export STATION_CONFIG="$out/station.toml"
"$bin/station" init --unit "$unit" --store "$out/store" > /dev/null
sed -i -e "s#/etc/station/agency-crl.pem#$out/dock/agency-crl.pem#" -e "s#/etc/station/#$out/dock/#" \
  "$STATION_CONFIG"
sed -i -e "s#^crl_file = .*#crl_file = \"\"#" "$STATION_CONFIG"
"$bin/station" register --pubkey "$device_key/device-key.pub.pem" --officer 031337 --label 演示设备 > /dev/null

say "4/6 accounts, one per role (password: $password)"
export STATION_NEW_PASSWORD="$password"
"$bin/station" user add --first --username admin --role admin --name 管理员 > /dev/null
export STATION_USER=admin STATION_PASSWORD="$password"
"$bin/station" user add --username chief --role approver --name 张队长 > /dev/null
"$bin/station" user add --username clerk --role clerk --name 李证据管理员 > /dev/null
"$bin/station" user add --username auditor --role auditor --name 赵审计 > /dev/null
"$bin/station" user add --username wang --role officer --officer-no 031337 --supervisor chief --name 王警官 > /dev/null
unset STATION_USER STATION_PASSWORD STATION_NEW_PASSWORD

say "5/6 docking the device over the real link (TLS, pinned keys, verify, receipt)"
fifo="$out/dock-serve.out"
"$bin/bodycam" dock serve --evidence "$out/device" --key-dir "$device_key" --listen-address 127.0.0.1 \
  --port 0 --ca-file "$out/ca/agency-ca.pem" --cert-file "$out/device-cert.pem" > "$fifo" 2> "$out/dock-serve.log" &
serve_pid=$!
trap 'kill "$serve_pid" 2> /dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q '^listening' "$fifo" 2> /dev/null && break
  sleep 0.2
done
read -r _ _ dev_port < <(grep '^listening' "$fifo")
"$bin/station" dock --device-address 127.0.0.1 --port "$dev_port" --wait 10 > "$out/dock-summary.json"
kill "$serve_pid"
wait "$serve_pid" 2> /dev/null || true
trap - EXIT

say "6/6 the web interface"
"$bin/station" verify > /dev/null
if [ "$check" -eq 1 ]; then
  "$bin/station" serve --listen 127.0.0.1 --port "$port" 2> "$out/web.log" &
  web_pid=$!
  trap 'kill "$web_pid" 2> /dev/null || true' EXIT
  for _ in $(seq 1 100); do
    python3 -c "import ssl,urllib.request;urllib.request.urlopen('https://127.0.0.1:$port/healthz',context=ssl._create_unverified_context())" \
      2> /dev/null && break
    sleep 0.3
  done
  python3 -c "import ssl,urllib.request;print(urllib.request.urlopen('https://127.0.0.1:$port/healthz',context=ssl._create_unverified_context()).read().decode())"
  exit 0
fi
cat <<EOF

The office is ready:  https://127.0.0.1:$port/   (self-signed certificate; store: $out/store)
Sign in as (password $password):
  admin    系统管理员     clerk    证据管理员     chief    审批人
  auditor  审计员         wang     执法人员 (警号 031337, wore the device)
Stop with Ctrl-C. The commands behind it: station --help (STATION_CONFIG=$STATION_CONFIG)
EOF
exec "$bin/station" serve --listen 127.0.0.1 --port "$port"
