#!/usr/bin/env bash
# The tests on the Lambda runtime's Python (3.13; the project's .venv is 3.11), in a venv of their own:
# .venv-3.13, the locked versions (uv.lock) with the dev group and the `local` extra.
# The interpreter is found as for `sam build` (scripts/runtime_python.sh: pyenv, PATH, uv). Without one
# this says so clearly and exits 0 (skipped); OTAFLEET_REQUIRE_RUNTIME_PYTHON=1 makes that a failure.
#
# Usage: bash scripts/test_runtime_python.sh [pytest arguments]   (default: tests/unit -q)
# Run by `make test-py313` (and so by `make test`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UV="${UV:-.tools/uv/bin/uv}"
RUNTIME="3.13"               # keep in step with Globals.Function.Runtime in template.yaml
VENV=".venv-${RUNTIME}"

log() { echo "test-py${RUNTIME//./}: $*"; }
die() {
    if [[ -n "${OTAFLEET_REQUIRE_RUNTIME_PYTHON:-}" ]]; then
        echo "test-py${RUNTIME//./}: $*" >&2
        exit 1
    fi
    echo "test-py${RUNTIME//./}: SKIPPED - $*" >&2
    exit 0
}

[[ -x "$UV" ]] || { echo "uv not found at $UV (run: make setup)" >&2; exit 1; }
grep -q "Runtime: python${RUNTIME}\$" template.yaml || { echo "template.yaml's runtime is not python${RUNTIME}: update RUNTIME in $0" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=scripts/runtime_python.sh
source scripts/runtime_python.sh
find_runtime_python "$RUNTIME" "$UV" "$TMP"

# --python only when creating the venv: uv recreates one whose interpreter is not that very path.
python_arg=()
[[ -f "$VENV/pyvenv.cfg" ]] || python_arg=(--python "$RUNTIME_PY")
UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --frozen --quiet --extra local "${python_arg[@]}"
actual="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$actual" == "$RUNTIME" ]] || { echo "$VENV runs Python $actual, not $RUNTIME: remove it and run again" >&2; exit 1; }
log "$("$VENV/bin/python" --version) in $VENV"

if [[ $# -eq 0 ]]; then
    set -- tests/unit -q
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
