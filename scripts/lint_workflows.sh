#!/usr/bin/env bash
# Lint the GitHub Actions workflows (.github/workflows/*.yml) with actionlint: syntax, expressions,
# job dependencies, the inputs of known actions, and (when shellcheck is on PATH) the `run:` scripts.
#
# Usage: bash scripts/lint_workflows.sh      (run by `make test`; actionlint comes with the dev dependencies)
# Offline: actionlint reads only the workflow files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ACTIONLINT="${ACTIONLINT:-.venv/bin/actionlint}"
if [[ ! -x "$ACTIONLINT" ]]; then
    echo "lint_workflows: actionlint not found at $ACTIONLINT (run: make setup)" >&2
    exit 1
fi

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if ((${#workflows[@]} == 0)); then
    echo "lint_workflows: no workflows under .github/workflows" >&2
    exit 1
fi

if ! command -v shellcheck >/dev/null 2>&1; then
    echo "lint_workflows: shellcheck not on PATH; run: scripts are not checked"
fi
"$ACTIONLINT" -no-color "${workflows[@]}"
echo "lint_workflows: ${#workflows[@]} workflow(s) ok ($("$ACTIONLINT" -version | head -n 1))"
