"""Traces that start in a client: the ``openstack`` command and scripts.

``stacktrail.client`` is the API a script uses (``client.trace``); this
package holds what it switches on and the plugin that gives
python-openstackclient its ``--os-profile``:

``executors``
    Work submitted to a thread pool (``concurrent.futures``, futurist)
    runs in the trace of the code that submitted it: openstacksdk's
    connection pool (parallel Large Object segment uploads, project
    cleanup), ``loop.run_in_executor`` under asyncio, a script's own pools.
``osc``
    The ``openstack.cli.extension`` plugin python-openstackclient loads at
    every command: ``openstack --os-profile <key> ...`` starts a stacktrail
    trace, whether osprofiler is installed or not.

Nothing here imports a client library at import time: the plugin module
acts only inside a process that already runs osc-lib.
"""
