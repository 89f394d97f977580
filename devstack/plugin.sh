#!/bin/bash
#
# devstack plugin for stacktrail:  enable_plugin stacktrail <repository>
#
# Stages: stack install (stacktrail, the store's client, the agent as
# devstack@stacktrail-agent), stack post-config (every enabled service's
# configuration), stack test-config (tempest), unstack, clean.  Settings:
# devstack/settings.

# Save trace setting
_XTRACE_STACKTRAIL_PLUGIN=$(set +o | grep xtrace)
set -o xtrace

source "$STACKTRAIL_DIR/devstack/lib/stacktrail"

if [[ "$1" == "stack" && "$2" == "install" ]]; then
    echo_summary "Installing stacktrail"
    stacktrail_init_keys
    install_stacktrail

elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    echo_summary "Configuring stacktrail tracing"
    stacktrail_init_keys
    configure_stacktrail

elif [[ "$1" == "stack" && "$2" == "test-config" ]]; then
    if is_service_enabled tempest; then
        echo_summary "Configuring tempest for stacktrail"
        stacktrail_init_keys
        configure_stacktrail_tempest
    fi

elif [[ "$1" == "unstack" ]]; then
    stop_stacktrail

elif [[ "$1" == "clean" ]]; then
    cleanup_stacktrail
fi

# Restore xtrace
$_XTRACE_STACKTRAIL_PLUGIN
