#!/bin/bash
#
# The devstack functions the stacktrail plugin calls, for running its stages
# without a cloud (tests/devstack/test_plugin.py).
#
# Faithful local implementations: iniset/iniget really edit INI files,
# is_service_enabled reads ENABLED_SERVICES with devstack's special cases,
# trueorfalse, generate_hex_string, conductor_conf, run_process (checks
# and writes the systemd unit as devstack does, under $SYSTEMD_DIR).
# Recording stubs (one line per call in $FAKE_CALLS, fields separated by
# tabs): everything that would install, start or stop something.

FAKE_CALLS=${FAKE_CALLS:?set FAKE_CALLS to the call log}

function _fake_record {
    local field
    {
        printf '%s' "$1"
        shift
        for field in "$@"; do
            printf '\t%s' "$field"
        done
        printf '\n'
    } >> "$FAKE_CALLS"
}

# --- INI files ------------------------------------------------------------

# iniset [-sudo] file section option value: replace the option's value in
# the section, or add it right under the section's header, or add the
# section at the end; the file is created if needed (as devstack's).
function iniset {
    local xtrace=":"
    if [[ $- == *x* ]]; then
        xtrace="set -o xtrace"
    fi
    set +o xtrace
    if [[ "$1" == "-sudo" ]]; then
        shift
    fi
    local file=$1
    local section=$2
    local option=$3
    local value=$4
    local -a lines=()
    local line
    local insec=0
    local has_section=0
    local has_option=0
    local done=0
    if [[ -z "$section" || -z "$option" ]]; then
        $xtrace
        return 0
    fi
    if [[ -e "$file" ]]; then
        mapfile -t lines < "$file"
    fi
    for line in "${lines[@]}"; do
        if _ini_is_header "$line"; then
            insec=0
            if _ini_is_header "$line" "$section"; then
                insec=1
                has_section=1
            fi
        elif (( insec )) && _ini_is_option "$line" "$option"; then
            has_option=1
        fi
    done
    insec=0
    local out=""
    for line in "${lines[@]}"; do
        if _ini_is_header "$line"; then
            insec=0
            out+="$line"$'\n'
            if _ini_is_header "$line" "$section"; then
                insec=1
                if (( ! has_option && ! done )); then
                    out+="$option = $value"$'\n'
                    done=1
                fi
            fi
        elif (( insec && ! done )) && _ini_is_option "$line" "$option"; then
            out+="$option = $value"$'\n'
            done=1
        else
            out+="$line"$'\n'
        fi
    done
    if (( ! has_section )); then
        out+=$'\n'"[$section]"$'\n'"$option = $value"$'\n'
    fi
    # Rewritten in place: the file keeps its mode.
    printf '%s' "$out" > "$file"
    $xtrace
}

# _ini_is_header line [section]: a section header (that section's).
function _ini_is_header {
    local line=$1
    [[ "$line" =~ ^\[[^]]*\][[:space:]]*$ ]] || return 1
    [[ $# -lt 2 ]] && return 0
    local name=${line#[}
    name=${name%%]*}
    [[ "$name" == "$2" ]]
}

# _ini_is_option line option: an "option = value" line (not a comment).
function _ini_is_option {
    local line=$1
    [[ "$line" == *=* ]] || return 1
    [[ "$line" =~ ^[[:space:]]*[#\;] ]] && return 1
    local key=${line%%=*}
    key=${key%"${key##*[![:space:]]}"}
    [[ "$key" == "$2" ]]
}

# iniget file section option: the option's value (empty when absent).
function iniget {
    local xtrace=":"
    if [[ $- == *x* ]]; then
        xtrace="set -o xtrace"
    fi
    set +o xtrace
    local file=$1
    local section=$2
    local option=$3
    local line
    local insec=0
    local value
    if [[ ! -f "$file" ]]; then
        $xtrace
        return 0
    fi
    while IFS= read -r line || [[ -n "$line" ]]; do
        if _ini_is_header "$line"; then
            insec=0
            _ini_is_header "$line" "$section" && insec=1
        elif (( insec )) && _ini_is_option "$line" "$option"; then
            value=${line#*=}
            value=${value#"${value%%[![:space:]]*}"}
            value=${value%"${value##*[![:space:]]}"}
            echo "$value"
            break
        fi
    done < "$file"
    $xtrace
}

# --- services -------------------------------------------------------------

function enable_service {
    local service
    for service in "$@"; do
        if ! is_service_enabled "$service"; then
            ENABLED_SERVICES="${ENABLED_SERVICES:+$ENABLED_SERVICES,}$service"
        fi
    done
}

function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ",${ENABLED_SERVICES}," =~ ,${service}, ]] && return 0
        if type "is_${service}_enabled" >/dev/null 2>&1; then
            "is_${service}_enabled" && return 0
        fi
        [[ ${service} == "nova" && ",${ENABLED_SERVICES}" =~ ,"n-" ]] && return 0
        [[ ${service} == "cinder" && ",${ENABLED_SERVICES}" =~ ,"c-" ]] && return 0
        [[ ${service} == "glance" && ",${ENABLED_SERVICES}" =~ ,"g-" ]] && return 0
        [[ ${service} == "neutron" && ",${ENABLED_SERVICES}" =~ ,"q-" ]] && return 0
    done
    return 1
}

# lib/keystone's: the service is called "key".
function is_keystone_enabled {
    [[ ",${ENABLED_SERVICES}," =~ ,"key", ]]
}

function define_plugin {
    :
}

function echo_summary {
    echo "summary: $*"
}

function die {
    local line=$1
    shift
    echo "die (line $line): $*" >&2
    exit 1
}

function trueorfalse {
    local default=$1
    local testval=${!2:-}
    case "$testval" in
        "1" | [yY]es | "YES" | [tT]rue | "TRUE" ) echo "True" ;;
        "0" | [nN]o | "NO" | [fF]alse | "FALSE" ) echo "False" ;;
        * ) echo "$default" ;;
    esac
}

function is_ubuntu {
    [[ "${FAKE_DISTRO:-ubuntu}" == "ubuntu" ]]
}

function is_fedora {
    [[ "${FAKE_DISTRO:-ubuntu}" == "fedora" ]]
}

function generate_hex_string {
    local size=$1
    if command -v hexdump >/dev/null 2>&1; then
        hexdump -n "$size" -v -e '/1 "%02x"' /dev/urandom
    else
        od -An -N"$size" -tx1 /dev/urandom | tr -d ' \n'
    fi
}

function get_python_exec_prefix {
    echo "${FAKE_BIN_DIR:?}"
}

function conductor_conf {
    echo "${NOVA_CONF_DIR}/nova_cell${1}.conf"
}

function database_connection_url {
    echo "mysql+pymysql://root:dbpass@127.0.0.1/$1?charset=utf8"
}

# --- processes, as devstack runs them under systemd -----------------------

function write_user_unit_file {
    local service=$1
    local command="$2"
    local group=$3
    local user=$4
    local unitfile="$SYSTEMD_DIR/$service"
    mkdir -p "$SYSTEMD_DIR"
    iniset -sudo "$unitfile" "Unit" "Description" "Devstack $service"
    iniset -sudo "$unitfile" "Service" "User" "$user"
    iniset -sudo "$unitfile" "Service" "ExecStart" "$command"
    iniset -sudo "$unitfile" "Service" "KillMode" "process"
    if [[ -n "$group" ]]; then
        iniset -sudo "$unitfile" "Service" "Group" "$group"
    fi
    iniset -sudo "$unitfile" "Install" "WantedBy" "multi-user.target"
    _fake_record systemctl daemon-reload
}

function run_process {
    local service=$1
    local command="$2"
    local group=${3:-}
    local user=${4:-$STACK_USER}
    _fake_record run_process "$service" "$command"
    if is_service_enabled "$service"; then
        [[ "$command" =~ sudo ]] && die $LINENO "run_process with sudo"
        [[ "$command" =~ ^/ ]] || die $LINENO "run_process needs an absolute path: $command"
        write_user_unit_file "devstack@$service.service" "$command" "$group" "$user"
        _fake_record systemctl enable "devstack@$service.service"
        _fake_record systemctl start "devstack@$service.service"
    fi
}

function stop_process {
    _fake_record stop_process "$@"
    if is_service_enabled "$1"; then
        _fake_record systemctl stop "devstack@$1.service"
    fi
}

# --- recording stubs -------------------------------------------------------

function install_package {
    _fake_record install_package "$@"
}

function start_service {
    _fake_record start_service "$@"
}

function reload_service {
    _fake_record reload_service "$@"
}

function setup_develop {
    _fake_record setup_develop "$@"
}

function pip_install {
    _fake_record pip_install "$@"
}

# lib/tempest's: the constraints tempest's venv is installed with.
function set_tempest_venv_constraints {
    _fake_record set_tempest_venv_constraints
    echo "# upper constraints" > "$1"
}

function recreate_database {
    _fake_record recreate_database "$@"
}

# sudo: recorded, then run as the current user (the tests own every path).
function sudo {
    _fake_record sudo "$@"
    "$@"
}

# Run a phase as devstack's run_plugins does: each enabled plugin's
# devstack/plugin.sh, sourced, in registration order.
function run_phase {
    local mode=$1
    local phase=${2:-}
    local dir
    for dir in $FAKE_PLUGIN_DIRS; do
        if [[ -f $dir/devstack/plugin.sh ]]; then
            source "$dir/devstack/plugin.sh" "$mode" "$phase"
        fi
    done
}

# Load every plugin's settings, as devstack's "source" phase does.
function load_plugin_settings {
    local dir
    for dir in $FAKE_PLUGIN_DIRS; do
        if [[ -f $dir/devstack/settings ]]; then
            source "$dir/devstack/settings"
        fi
    done
}
