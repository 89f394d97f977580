# Source me (bash): make sure $ST_ROOT/.venv exists with '.[test]' installed.
#
#   . tools/venv.sh || exit 1
#
# Quiet on success.  The install runs only when setup.cfg or pyproject.toml
# changed since the last one (hash kept in .venv/.stacktrail-stamp), so a
# second run costs a few milliseconds.  Sets ST_ROOT and ST_PYTHON.
# Override the interpreter used to create the venv with PYTHON=...

ST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ST_PYTHON="$ST_ROOT/.venv/bin/python"

_st_find_python() {
    # The first interpreter that is Python >= 3.11.
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "venv.sh: no Python >= 3.11 found (set PYTHON=/path/to/python3)" >&2
    return 1
}

_st_stamp() {
    # What the install depends on.  The stamp lives inside .venv, so a
    # recreated venv always installs.
    cat "$ST_ROOT/setup.cfg" "$ST_ROOT/pyproject.toml" 2>/dev/null |
        sha256sum | cut -d' ' -f1
}

_st_ensure_venv() {
    local python log
    if [ ! -x "$ST_PYTHON" ]; then
        python="$(_st_find_python)" || return 1
        if ! "$python" -m venv "$ST_ROOT/.venv" >/dev/null 2>&1; then
            echo "venv.sh: '$python -m venv' failed (Debian: apt-get install python3-venv)" >&2
            return 1
        fi
    fi
    if [ "$(cat "$ST_ROOT/.venv/.stacktrail-stamp" 2>/dev/null)" = "$(_st_stamp)" ]; then
        return 0
    fi
    # Output goes to a log shown only on failure: pip is chatty even with -q.
    log="$ST_ROOT/.venv/install.log"
    echo "venv.sh: installing stacktrail and its test dependencies into" \
        ".venv (a minute or two; log: $log)" >&2
    if ! (cd "$ST_ROOT" && "$ST_PYTHON" -m pip install --disable-pip-version-check \
            -q -e '.[test]') >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "venv.sh: 'pip install -e .[test]' failed; full log in $log" >&2
        return 1
    fi
    _st_stamp >"$ST_ROOT/.venv/.stacktrail-stamp"
}

_st_ensure_venv
