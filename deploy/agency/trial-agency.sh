#!/usr/bin/env bash
# A whole agency on one machine, for a trial: SeaweedFS (S3 gateway with object lock, filer
# and volume on loopback, JWT keys, WORM on /buckets/), a PostgreSQL cluster as the shared
# catalogue, and two stations (station-1, station-2) of one agency CA, each docking its own
# simulated device at the same time and syncing to the store; then each station reads the
# other's recording back from the store and verifies it. Everything lives in --out.
# Usage: deploy/agency/trial-agency.sh [--out DIR] [--check]
#   --check  run through, print the figures as JSON, stop every server (for tests)
# Without --check the servers keep running until Ctrl-C; the commands to use are printed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$repo/.venv/bin"
out="$repo/out/agency-$(date -u +%Y%m%dT%H%M%SZ)"
check=0
unit="演示市城市管理行政执法局"
password="trial-password-2026"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "trial-agency: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ ! -e "$out" ] || { echo "trial-agency: $out exists; give a new --out" >&2; exit 2; }
mkdir -p "$out"
chmod 755 "$out"
say() { printf '%s\n' "$*" >&2; }
pids=()
pg_ctl=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  if [ -n "$pg_ctl" ]; then $pg_ctl -D "$out/pg/data" -m fast -w stop > /dev/null 2>&1 || true; fi
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
}
trap cleanup EXIT

free_port() {  # a loopback port with its +10000 gRPC twin free too
  "$bin/python" - <<'PY'
import socket
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p + 10000 < 65536:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError:
            pass
        finally:
            t.close()
PY
}

say "1/6 SeaweedFS: S3 gateway on loopback here (the storage network in production), filer and volume on loopback"
mkdir -p "$out/weed/data"
access="TRIALSTATIONS"
secret=$(openssl rand -hex 20)
op_secret=$(openssl rand -hex 20)
# the stations: only the evidence bucket (SeaweedFS wants Admin on it for the object-lock headers);
# the storage operator: every bucket (creates the bucket). COMPLIANCE binds both.
cat > "$out/weed/s3.json" <<EOF
{"identities": [
  {"name": "agency-stations", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
   "actions": ["Read:evidence", "Write:evidence", "List:evidence", "Tagging:evidence", "Admin:evidence"]},
  {"name": "storage-operator", "credentials": [{"accessKey": "TRIALOPERATOR", "secretKey": "$op_secret"}],
   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
chmod 600 "$out/weed/s3.json"
m=$(free_port); v=$(free_port); f=$(free_port); s=$(free_port)
(cd "$out/weed" && HOME="$out/weed" WEED_JWT_FILER_SIGNING_KEY=$(openssl rand -hex 32) \
  WEED_JWT_SIGNING_KEY=$(openssl rand -hex 32) exec "$bin/weed" server -dir="$out/weed/data" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="$m" -volume.port="$v" -volume.max=30 \
  -volume.preStopSeconds=0 -master.volumeSizeLimitMB=64 -filer -filer.port="$f" -s3 -s3.port="$s" \
  -s3.config="$out/weed/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -metricsPort=0) > "$out/weed/weed.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=TRIALOPERATOR AWS_SECRET_ACCESS_KEY="$op_secret"
for _ in $(seq 1 180); do
  curl -s -o /dev/null "http://127.0.0.1:$s/" && break
  sleep 0.5
done
for _ in $(seq 1 60); do   # the gateway answers before the filer is ready: retry the set-up
  "$repo/deploy/agency/setup-store.sh" --endpoint "http://127.0.0.1:$s" --master "127.0.0.1:$m" \
    > "$out/weed/setup.log" 2>&1 && break
  sleep 1
done
grep -q "WORM on /buckets/" "$out/weed/setup.log" || { cat "$out/weed/setup.log" >&2; exit 1; }
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

say "2/6 PostgreSQL: the shared catalogue (Unix socket only)"
pgbin=$(dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
as_pg=()
mkdir -p "$out/pg/sock"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$out/pg"; as_pg=(runuser -u postgres --); fi
"${as_pg[@]}" "$pgbin/initdb" -D "$out/pg/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync > /dev/null
printf "listen_addresses = ''\nunix_socket_directories = '%s'\n" "$out/pg/sock" >> "$out/pg/data/postgresql.conf"
pg_ctl="${as_pg[*]} $pgbin/pg_ctl"
$pg_ctl -D "$out/pg/data" -l "$out/pg/server.log" -w start > /dev/null
"${as_pg[@]}" "$pgbin/createdb" -h "$out/pg/sock" -U postgres agency
db_url="postgresql+psycopg://postgres@/agency?host=$out/pg/sock"

say "3/6 one agency CA; two stations on the shared catalogue, each with a dock certificate"
"$bin/station" pki init-ca --dir "$out/ca" --unit "$unit" > /dev/null
printf '%s' "$secret" > "$out/store-secret"
chmod 600 "$out/store-secret"
for n in 1 2; do
  "$bin/station" pki issue-dock --ca-dir "$out/ca" --out "$out/dock-$n" --name "dock-$n" --unit "$unit" > /dev/null
  cfg="$out/station-$n.toml"
  "$bin/station" init --config "$cfg" --unit "$unit" --store "$out/store-$n" --database-url "$db_url" \
    --name "station-$n" > /dev/null
  sed -i -e "s#/etc/station/agency-crl.pem##" -e "s#/etc/station/#$out/dock-$n/#" "$cfg"
  sed -i -e '/^\[agency\]/,$d' "$cfg"
  cat >> "$cfg" <<EOF
[agency]
kind = "s3"
endpoint_url = "http://127.0.0.1:$s"
bucket = "evidence"
access_key = "$access"
secret_key_file = "$out/store-secret"
EOF
done
export STATION_NEW_PASSWORD="$password"
STATION_CONFIG="$out/station-1.toml" "$bin/station" user add --first --username admin --role admin --name 管理员 > /dev/null
export STATION_USER=admin STATION_PASSWORD="$password"
STATION_CONFIG="$out/station-1.toml" "$bin/station" user add --username chief --role approver --name 张队长 > /dev/null
STATION_CONFIG="$out/station-2.toml" "$bin/station" user add --username clerk --role clerk --name 李证据管理员 > /dev/null
unset STATION_USER STATION_PASSWORD STATION_NEW_PASSWORD

say "4/6 two simulated devices record a short scene each"
cat > "$out/scene.txt" <<'EOF'
set video.width 160
set video.height 120
set video.fps 5
set segment.seconds 10
set service.prebuffer_s 5.0
00:02 double-press record
00:40 hold record 3s
end 00:50
EOF
for n in 1 2; do
  "$bin/bodycam" scenario "$out/scene.txt" --out "$out/device-$n" -q > "$out/scenario-$n.txt"
  "$bin/station" pki issue-device --ca-dir "$out/ca" --pubkey "$out/device-$n-key/device-key.pub.pem" \
    --out "$out/device-$n-cert.pem" --unit "$unit" > /dev/null
  STATION_CONFIG="$out/station-$n.toml" "$bin/station" register --pubkey "$out/device-$n-key/device-key.pub.pem" \
    --officer "03133$n" --label "试用设备$n" > /dev/null
done

say "5/6 both stations dock at the same time (each docking syncs to the agency store after its receipt), then sync again"
dock_one() {
  local n=$1
  local log="$out/dock-serve-$n.out" port
  "$bin/bodycam" dock serve --evidence "$out/device-$n" --key-dir "$out/device-$n-key" --listen-address 127.0.0.1 \
    --port 0 --ca-file "$out/ca/agency-ca.pem" --cert-file "$out/device-$n-cert.pem" > "$log" 2> "$out/dock-serve-$n.log" &
  local serve=$!
  for _ in $(seq 1 100); do grep -q '^listening' "$log" 2> /dev/null && break; sleep 0.2; done
  read -r _ _ port < <(grep '^listening' "$log")
  STATION_CONFIG="$out/station-$n.toml" "$bin/station" dock --device-address 127.0.0.1 --port "$port" --wait 10 \
    > "$out/dock-$n.json"
  kill "$serve" 2> /dev/null || true
  wait "$serve" 2> /dev/null || true
  STATION_CONFIG="$out/station-$n.toml" "$bin/station" sync --json > "$out/sync-$n.json"
}
dock_one 1 & d1=$!
dock_one 2 & d2=$!
wait "$d1"
wait "$d2"

say "6/6 each station verifies the other's recordings from the agency store"
ids() {  # the recordings station $1 ingested, from the shared catalogue
  "$bin/python" - "$db_url" "station-$1" <<'PY'
import sys
from sqlalchemy import create_engine, text
with create_engine(sys.argv[1]).connect() as c:
    print(" ".join(str(r[0]) for r in c.execute(text("select id from recordings where station = :s"), {"s": sys.argv[2]})))
PY
}
# shellcheck disable=SC2046
STATION_CONFIG="$out/station-2.toml" "$bin/station" sync --json --verify $(ids 1) > "$out/verify-by-2.json"
# shellcheck disable=SC2046
STATION_CONFIG="$out/station-1.toml" "$bin/station" sync --json --verify $(ids 2) > "$out/verify-by-1.json"
"$bin/python" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
v = [json.loads((out / f"verify-by-{n}.json").read_text()) for n in (1, 2)]
checked = [x for d in v for x in d["verified"]]
ok = bool(checked) and all(x["ok"] for x in checked) and all(d["ok"] for d in v)
syncs = [json.loads((out / f"sync-{n}.json").read_text()) for n in (1, 2)]
print(json.dumps({"ok": ok, "verified": checked, "pushed": [s["pushed"] for s in syncs],
                  "bytes": [s["bytes"] for s in syncs]}, ensure_ascii=False))
sys.exit(0 if ok else 1)
PY
[ "$check" -eq 1 ] && exit 0
cat <<EOF

The agency is running (everything in $out):
  S3 gateway       http://127.0.0.1:$s   (bucket evidence; key $access, secret in $out/store-secret)
  filer / volume   127.0.0.1:$f / 127.0.0.1:$v  (JWT-protected; WORM on /buckets/)
  catalogue        $db_url
  stations         STATION_CONFIG=$out/station-1.toml or $out/station-2.toml, then: station sync --json,
                   station recordings ..., station serve (accounts admin/chief/clerk, password $password)
Stop with Ctrl-C.
EOF
while true; do sleep 3600; done
