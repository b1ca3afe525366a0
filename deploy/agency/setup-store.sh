#!/usr/bin/env bash
# Once, on the storage host, after weed-agency.service is up: the evidence bucket with
# versioning + object lock, and the filer-level WORM rule over every bucket.
# Usage: deploy/agency/setup-store.sh [--endpoint URL] [--master HOST:PORT] [--bucket NAME]
#   credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of an identity in s3.json
# Idempotent: an existing bucket is checked (object lock must be on), the rule re-applied.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${STATION_VENV:-$repo/.venv}/bin"
endpoint="http://127.0.0.1:8333"
master="127.0.0.1:9333"
bucket="evidence"
while [ $# -gt 0 ]; do
  case "$1" in
    --endpoint) endpoint=$2; shift 2 ;;
    --master) master=$2; shift 2 ;;
    --bucket) bucket=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup-store: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}" "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"

"$bin/python" - "$endpoint" "$bucket" <<'PY'
import sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
try:
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    print(f"bucket {bucket}: created with object lock")
except ClientError as exc:
    if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        raise
lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
if lock.get("ObjectLockEnabled") != "Enabled":
    sys.exit(f"bucket {bucket} exists WITHOUT object lock: it cannot hold evidence; use another name")
if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
    sys.exit(f"bucket {bucket}: versioning is off")
print(f"bucket {bucket}: versioning and object lock enabled")
PY

# The filer's own WORM rule: a file under /buckets/ whose retention was set (station sync sets
# it on every object) cannot be deleted or overwritten through the filer, JWT or not.
out=$(printf 'fs.configure -locationPrefix=/buckets/ -worm -apply\n' | "$bin/weed" shell -master="$master" 2>&1)
if ! grep -q '"worm":  *true' <<<"$out"; then
  echo "setup-store: fs.configure did not take the WORM rule:" >&2
  echo "$out" >&2
  exit 1
fi
echo "filer: WORM on /buckets/"
