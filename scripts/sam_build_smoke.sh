#!/usr/bin/env bash
# `sam build` without a container, then prove the built artifact works on the runtime's Python:
# the UpdateFunction artifact plus boto3 (what the Lambda runtime provides), run by python3.13
# against a moto server on 127.0.0.1, must answer 404 for an unknown device and 403 for a non-ESP client.
#
# Usage: bash scripts/sam_build_smoke.sh [path/to/sam]      (run by `make sam-build`)
# Never talks to AWS: fake credentials, SAM CLI telemetry off, AWS_ENDPOINT_URL at the moto server.
# `sam build` itself fetches functions/requirements.txt from the package index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SAM="${1:-.tools/bin/sam}"
UV="${UV:-.tools/uv/bin/uv}"
VENV_PY="${VENV_PY:-.venv/bin/python}"
RUNTIME="3.13"               # keep in step with Globals.Function.Runtime in template.yaml
REGION="us-east-1"
BUILD_DIR=".aws-sam/build"

die() { echo "sam_build_smoke: $*" >&2; exit 1; }
log() { echo "sam_build_smoke: $*"; }

[[ -x "$SAM" ]] || die "SAM CLI not found at $SAM (run: make $SAM)"
[[ -x "$UV" ]] || die "uv not found at $UV (run: make setup)"
[[ -x "$VENV_PY" ]] || die "project environment not found at $VENV_PY (run: make setup)"
grep -q "Runtime: python${RUNTIME}\$" template.yaml || die "template.yaml's runtime is not python${RUNTIME}: update RUNTIME here"

# Never AWS: no profile, fake credentials, no telemetry, no SAM version check (see template_check.py).
unset AWS_PROFILE AWS_DEFAULT_PROFILE
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_DEFAULT_REGION="$REGION" AWS_REGION="$REGION"
export SAM_CLI_TELEMETRY=0
__SAM_CLI_APP_DIR="$("$VENV_PY" -c '
import sys
sys.path.insert(0, "scripts")
import template_check
print(template_check.prepare_sam_app_dir())
')"
export __SAM_CLI_APP_DIR

TMP="$(mktemp -d "${TMPDIR:-/tmp}/otafleet-smoke.XXXXXX")"
MOTO_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ the runtime's interpreter
# shellcheck source=scripts/runtime_python.sh
source scripts/runtime_python.sh
find_runtime_python "$RUNTIME" "$UV" "$TMP"
# The real interpreter behind a shim, for everything after the build.
PY313="$("$RUNTIME_PY" -c 'import sys; print(sys.executable)')"

# ------------------------------------------------------------------ sam build
log "sam build (no container) ..."
start=$(date +%s.%N)
"$SAM" build --template-file template.yaml --build-dir "$BUILD_DIR" || die "sam build failed"
end=$(date +%s.%N)
log "sam build took $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"

for fn in UpdateFunction PublishFunction; do
    art="$BUILD_DIR/$fn"
    [[ -d "$art/otafleet" ]] || die "$art has no otafleet package"
    [[ -d "$art/aws_lambda_powertools" ]] || die "$art lacks aws_lambda_powertools (functions/requirements.txt)"
    [[ ! -d "$art/boto3" ]] || log "warning: $art bundles boto3; the Lambda runtime already provides it"
done
[[ -f "$BUILD_DIR/UpdateFunction/update/app.py" ]] || die "$BUILD_DIR/UpdateFunction/update/app.py missing"
[[ -f "$BUILD_DIR/PublishFunction/publish/app.py" ]] || die "$BUILD_DIR/PublishFunction/publish/app.py missing"

# ------------------------------------------------------------------ what the Lambda runtime provides
boto3_version="$(awk '/^name = "boto3"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' uv.lock)"
log "installing boto3${boto3_version:+==$boto3_version} for python${RUNTIME} (stands in for the runtime's copy)"
"$UV" pip install --quiet --python "$PY313" --target "$TMP/runtime" "boto3${boto3_version:+==$boto3_version}" \
    || die "could not install boto3 for $PY313"

# ------------------------------------------------------------------ native packages
# The functions run on arm64 (template.yaml Architectures), so sam build bundles arm64 builds of native
# packages (cryptography). Check that they are arm64 builds; on a host of another architecture they
# cannot load, so for the import checks below a host build of the same version stands in for them,
# first on the path, exactly as boto3 stands in for the runtime's copy.
NATIVE="$TMP/native"
mkdir -p "$NATIVE"
for fn in UpdateFunction PublishFunction; do
    for wheel in "$BUILD_DIR/$fn"/*.dist-info/WHEEL; do
        grep -q '^Root-Is-Purelib: false' "$wheel" || continue
        pkg="$(basename "$(dirname "$wheel")" .dist-info)"
        grep -q '^Tag: .*aarch64' "$wheel" || die "$fn bundles $pkg built for another architecture than arm64"
        if [[ "$(uname -m)" != "aarch64" && ! -f "$NATIVE/.$pkg" ]]; then
            log "$fn bundles $pkg for arm64; a $(uname -m) build of it stands in for the import checks"
            "$UV" pip install --quiet --no-deps --python "$PY313" --target "$NATIVE" "${pkg/-/==}" \
                || die "could not install $pkg for $PY313"
            touch "$NATIVE/.$pkg"
        fi
    done
done

# ------------------------------------------------------------------ moto server
"$VENV_PY" - "$TMP/moto.port" >"$TMP/moto.log" 2>&1 <<'PY' &
import signal, socket, sys, threading
from moto.server import ThreadedMotoServer

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(port))
import os
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
server.stop()
PY
MOTO_PID=$!
for _ in $(seq 1 100); do
    [[ -s "$TMP/moto.port" ]] && break
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$TMP/moto.log" >&2; die "moto server exited"; }
    sleep 0.1
done
[[ -s "$TMP/moto.port" ]] || { cat "$TMP/moto.log" >&2; die "moto server did not start"; }
PORT="$(cat "$TMP/moto.port")"
ENDPOINT="http://127.0.0.1:$PORT"
log "moto server on $ENDPOINT"

DEVICES_TABLE=otafleet-devices
CATALOG_TABLE=otafleet-catalog
FIRMWARE_BUCKET=otafleet-firmware

# Tables with the template's own key schema, and the bucket, versioned as in the template.
AWS_ENDPOINT_URL="$ENDPOINT" "$VENV_PY" - "$DEVICES_TABLE" "$CATALOG_TABLE" "$FIRMWARE_BUCKET" <<'PY' \
    || die "could not create the tables and bucket on the moto server"
import sys
import boto3
sys.path.insert(0, "scripts")
import template_check

devices, catalog, bucket = sys.argv[1:4]
resources = template_check.load_template()["Resources"]
ddb = boto3.client("dynamodb")
for logical_id, name in (("DevicesTable", devices), ("CatalogTable", catalog)):
    props = resources[logical_id]["Properties"]
    kwargs = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "BillingMode") if k in props}
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(TableName=name, **kwargs)
s3 = boto3.client("s3")
s3.create_bucket(Bucket=bucket)
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
print(f"sam_build_smoke: created {devices}, {catalog}, s3://{bucket}")
PY

# ------------------------------------------------------------------ run the built handlers on python3.13
# Same variables as the template's Globals; -S: nothing from the interpreter's own site-packages,
# only the artifact and the runtime's boto3, in Lambda's order (/var/task before /var/runtime).
run_artifact() {
    local fn="$1"
    shift
    env -i \
        PATH="$PATH" HOME="$TMP" LANG=C.UTF-8 \
        PYTHONPATH="$NATIVE:$BUILD_DIR/$fn:$TMP/runtime" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
        AWS_ENDPOINT_URL="$ENDPOINT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
        AWS_SESSION_TOKEN=testing AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION" \
        AWS_LAMBDA_FUNCTION_NAME="$fn" AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512 \
        DEVICES_TABLE="$DEVICES_TABLE" CATALOG_TABLE="$CATALOG_TABLE" FIRMWARE_BUCKET="$FIRMWARE_BUCKET" \
        PRESIGN_EXPIRY_SECONDS=300 CATALOG_CACHE_SECONDS=30 FAILURE_OFFER_LIMIT=3 \
        POWERTOOLS_SERVICE_NAME=otafleet POWERTOOLS_METRICS_NAMESPACE=otafleet \
        POWERTOOLS_LOG_LEVEL=INFO POWERTOOLS_TRACE_DISABLED="${TRACE_DISABLED:-true}" \
        "$PY313" -S "$@"
}

# The publish artifact must at least import on the runtime's Python.
run_artifact PublishFunction - <<'PY' || die "PublishFunction artifact does not import on python3.13"
import importlib, sys
module = importlib.import_module("publish.app")
assert callable(getattr(module, "handler", None)), "publish/app.py has no handler"
print(f"sam_build_smoke: PublishFunction imports on Python {sys.version.split()[0]}")
PY

run_artifact UpdateFunction - events/update_unknown_device.json 404 events/update_not_esp.json 403 <<'PY' \
    || die "UpdateFunction artifact gave wrong answers on python3.13 (see above)"
import base64
import importlib
import json
import os
import sys
import time
import uuid

assert sys.version_info[:2] == (3, 13), sys.version
module = importlib.import_module("update/app".replace("/", "."))  # as Lambda resolves "update/app.handler"
for origin in ("update.app", "aws_lambda_powertools", "boto3"):
    print(f"sam_build_smoke:   {origin} from {importlib.import_module(origin).__file__}")


class Context:
    function_name = "UpdateFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:UpdateFunction"
    log_group_name = "/aws/lambda/UpdateFunction"
    log_stream_name = "smoke"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 10

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


failures = 0
args = sys.argv[1:]
for event_file, want in zip(args[::2], args[1::2]):
    with open(event_file) as f:
        event = json.load(f)
    response = module.handler(event, Context())
    status = response.get("statusCode") if isinstance(response, dict) else None
    ok = status == int(want)
    failures += not ok
    body: object = response
    if isinstance(response, dict):
        body = response.get("body") or ""
        if response.get("isBase64Encoded") and isinstance(body, str):
            body = base64.b64decode(body).decode("utf-8", "replace")
    print(f"sam_build_smoke: {event_file}: {status} (want {want}) {'ok' if ok else 'WRONG'} body={str(body)[:120]!r}")

# The handler's own boto3 (the runtime's) reached the moto server, not AWS.
import boto3

seen = boto3.client("dynamodb").scan(TableName=os.environ["DEVICES_TABLE"], Select="COUNT")["Count"]
print(f"sam_build_smoke: devices table on the moto server now holds {seen} item(s)")
sys.exit(1 if failures else 0)
PY

# EnableTracing=true sets POWERTOOLS_TRACE_DISABLED=false; the handlers must still import then.
# Reported, not fatal: the X-Ray SDK is not bundled (see functions/requirements.txt).
if ! TRACE_DISABLED=false run_artifact UpdateFunction -c 'import update.app' >"$TMP/trace.log" 2>&1; then
    log "WARNING: with EnableTracing=true the UpdateFunction artifact does not import:"
    grep -E '^[A-Za-z]+(Error|Exception)' "$TMP/trace.log" | tail -n 1 | sed 's/^/    /' >&2 || true
fi

log "ok: the built artifact answers correctly on $("$PY313" -c 'import sys; print(sys.version.split()[0])')"
