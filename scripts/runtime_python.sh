# Sourced by scripts/sam_build_smoke.sh and scripts/sam.sh: put the Lambda runtime's exact interpreter
# (`python3.X`, which `sam build` without a container needs on PATH) first on PATH and set RUNTIME_PY.
# Tries pyenv, then PATH, then uv (installing it into .tools/python if uv may). The caller defines
# `log` and `die`.
# Usage: find_runtime_python RUNTIME UV SCRATCH_DIR

find_runtime_python() {
    local RUNTIME="$1" UV="$2" TMP="$3"
    works() { "$@" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '${RUNTIME}'.split('.'))))" 2>/dev/null; }

    RUNTIME_PY=""
    if command -v pyenv >/dev/null 2>&1; then
        py_version="$(pyenv versions --bare --skip-aliases 2>/dev/null | grep -E "^${RUNTIME//./\\.}(\.[0-9]+)?\$" | sort -V | tail -n 1 || true)"
        if [[ -n "$py_version" ]]; then
            # Keep the current default first (python3 stays what it was), add the runtime's version.
            current="$(pyenv version-name 2>/dev/null || true)"
            export PYENV_VERSION="${current:+${current}:}${py_version}"
            if works python"$RUNTIME"; then
                RUNTIME_PY="$(command -v python"$RUNTIME")"
                log "python${RUNTIME} from pyenv (PYENV_VERSION=$PYENV_VERSION)"
            else
                unset PYENV_VERSION
            fi
        fi
    fi
    if [[ -z "$RUNTIME_PY" ]] && command -v python"$RUNTIME" >/dev/null 2>&1 && works python"$RUNTIME"; then
        RUNTIME_PY="$(command -v python"$RUNTIME")"
        log "python${RUNTIME} from PATH ($RUNTIME_PY)"
    fi
    if [[ -z "$RUNTIME_PY" ]] && [[ -z "$(UV_PYTHON_DOWNLOADS=never "$UV" python find "$RUNTIME" 2>/dev/null || true)" ]]; then
        # A fresh machine may have only the project's Python: let uv fetch the runtime's interpreter into
        # .tools/ (machines without access to uv's Python downloads fail here and get the message below).
        log "python${RUNTIME} not found; asking uv to install it into .tools/python"
        UV_PYTHON_INSTALL_DIR="$PWD/.tools/python" "$UV" python install "$RUNTIME" >/dev/null 2>&1 \
            || log "uv could not install python${RUNTIME}"
    fi
    if [[ -z "$RUNTIME_PY" ]]; then
        found="$(UV_PYTHON_INSTALL_DIR="$PWD/.tools/python" UV_PYTHON_DOWNLOADS=never "$UV" python find "$RUNTIME" 2>/dev/null || true)"
        if [[ -n "$found" ]] && works "$found"; then
            mkdir -p "$TMP/bin"
            ln -s "$found" "$TMP/bin/python$RUNTIME"
            export PATH="$TMP/bin:$PATH"
            RUNTIME_PY="$TMP/bin/python$RUNTIME"
            log "python${RUNTIME} found by uv ($found)"
        fi
    fi
    [[ -n "$RUNTIME_PY" ]] || die "no working python${RUNTIME} found (tried pyenv, PATH, 'uv python find ${RUNTIME}');
      sam build without a container needs the Lambda runtime's exact interpreter: install Python ${RUNTIME}
      (e.g. 'pyenv install ${RUNTIME}') and run again"
}
