#!/usr/bin/env bash
# Run the test suite:  tools/test.sh [pytest args]
#   tools/test.sh                               everything under tests/
#   tools/test.sh tests/test_servers.py -q      one file
#   tools/test.sh -k redis -x                   a selection
# Exit code is pytest's.  As root it installs Debian's chromium and graphviz
# when missing (STACKTRAIL_NO_APT=1: don't).
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/venv.sh" || exit 1
cd "$ST_ROOT" || exit 1

ensure_packages() {
    # Debian packages some tests use: chromium (the HTML report checked in a
    # real browser) and graphviz (dot output rendered).  As root, install
    # what is missing and say so; otherwise (or with STACKTRAIL_NO_APT=1)
    # those tests skip with a reason.  A failure here is only a note.
    local missing=() log
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v dot >/dev/null 2>&1 || missing+=(graphviz)
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ -n "${STACKTRAIL_NO_APT:-}" ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    [ "$(id -u)" = 0 ] || return 0
    log="$(mktemp)"
    echo "test.sh: installing ${missing[*]} for the browser and graph tests" \
        "(apt-get, log: $log)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they do not know a package yet.
    local pkg
    for pkg in "${missing[@]}"; do
        if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            apt-get update >>"$log" 2>&1
            break
        fi
    done
    if apt-get install -y -q "${missing[@]}" >>"$log" 2>&1 </dev/null; then
        rm -f "$log"
    else
        echo "test.sh: installing ${missing[*]} failed; those tests will skip" >&2
    fi
}

ensure_packages

# Default to the whole tests/ tree unless a path (file, dir, node id) is given.
has_path=""
for arg in "$@"; do
    [ -e "${arg%%::*}" ] && has_path=1
done
if [ -n "$has_path" ]; then
    exec "$ST_PYTHON" -m pytest "$@"
fi
exec "$ST_PYTHON" -m pytest tests "$@"
