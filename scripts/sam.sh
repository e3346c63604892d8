#!/usr/bin/env bash
# The project's pinned SAM CLI, run with the Lambda runtime's exact Python on PATH (what `sam build`
# needs without a container): `make build`, `make deploy`. Usage: bash scripts/sam.sh SAM-ARGS...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SAM="${SAM:-.tools/bin/sam}"
UV="${UV:-.tools/uv/bin/uv}"
RUNTIME="3.13"               # keep in step with Globals.Function.Runtime in template.yaml

die() { echo "sam: $*" >&2; exit 1; }
log() { echo "sam: $*" >&2; }

[[ -x "$SAM" ]] || die "SAM CLI not found at $SAM (run: make build)"
grep -q "Runtime: python${RUNTIME}\$" template.yaml || die "template.yaml's runtime is not python${RUNTIME}: update RUNTIME here"
export SAM_CLI_TELEMETRY=0

TMP="$(mktemp -d "${TMPDIR:-/tmp}/otafleet-sam.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=scripts/runtime_python.sh
source scripts/runtime_python.sh
find_runtime_python "$RUNTIME" "$UV" "$TMP"
"$SAM" "$@"
