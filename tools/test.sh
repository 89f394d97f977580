#!/usr/bin/env bash
# Run the test suite:  tools/test.sh [pytest args]
#   tools/test.sh                               everything under tests/
#   tools/test.sh tests/test_servers.py -q      one file
#   tools/test.sh -k redis -x                   a selection
# Exit code is pytest's.  Set STACKTRAIL_NO_APT=1 to skip the chromium install.
set -uo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/venv.sh" || exit 1
cd "$ST_ROOT" || exit 1

ensure_chromium() {
    # The browser tests need Debian's chromium; they skip without it, so any
    # failure here (no root, no network, dpkg busy) is only a note.
    [ -x /usr/bin/chromium ] && return 0
    [ -n "${STACKTRAIL_NO_APT:-}" ] && return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    [ "$(id -u)" = 0 ] || return 0
    local log
    log="$(mktemp)"
    echo "test.sh: installing chromium for the browser tests (log: $log)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they do not know chromium yet.
    if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update >>"$log" 2>&1
    fi
    if apt-get install -y -q chromium >>"$log" 2>&1 </dev/null; then
        rm -f "$log"
    else
        echo "test.sh: chromium install failed; browser tests will skip" >&2
    fi
}

ensure_chromium

# Default to the whole tests/ tree unless a path (file, dir, node id) is given.
has_path=""
for arg in "$@"; do
    [ -e "${arg%%::*}" ] && has_path=1
done
if [ -n "$has_path" ]; then
    exec "$ST_PYTHON" -m pytest "$@"
fi
exec "$ST_PYTHON" -m pytest tests "$@"
