"""What a Nova server's life costs with tracing off, armed, triggered and \
osprofiler.

    .venv/bin/python benchmarks/nova_overhead.py [--rounds N] [--iterations N]

Nova 34 in its own functional harness (tests/services/nova.py: the API
through wsgi-intercept, the conductor, the scheduler, placement and one
compute service with the fake virt driver in one eventlet process, fake
RPC transport, SQLite).  One lifecycle is what a user waits for: POST
/servers, wait until the API says ACTIVE, DELETE, wait until 404
(tests/services/nova_tests/bench.py, ``nova_tests.boot.BootServerTest``
with real casts: ``CAST_AS_CALL = False``).  The same five configurations
as benchmarks/cinder_overhead.py, whose docstring says how they are
measured and what is printed:

* ``off``: Nova as published (osprofiler is not installed in its
  environment), nothing of stacktrail on its path, no config source;
* ``armed``: ``etc/nova/stacktrail.conf`` given as Nova's functional tests
  take configuration, the oslo.config environment (``OS_DEFAULT__
  CONFIG_SOURCE=stacktrail``, ``OS_PROFILER__ENABLED=True`` ...), with
  ``connection_string = agent://<socket>`` and a key; requests not signed;
* ``triggered``: the same, the POST and the DELETE of every lifecycle
  signed, points going through a real stacktrail-agent into the local
  Redis;
* ``osprofiler``: osprofiler 4.4.0 (with prettytable and redis) installed
  with ``pip --no-deps --target`` into an overlay directory for this
  configuration only, ``enabled``, ``trace_sqlalchemy`` and
  ``trace_requests`` as in the fragment, ``connection_string =
  redis://``, every lifecycle signed with osprofiler's headers.  Nova
  decorates its classes for osprofiler at import time, before its
  configuration is read, so osprofiler records a fraction of what
  stacktrail does (the API's ``wsgi`` and ``compute_api`` spans and some
  SQL statements, each written to Redis from the request's greenthread):
  compare the points per trace before comparing the times;
* ``control``: ``off`` in a second process.

By default the processes of a round run each turn's lifecycle at once on
one core and are compared by CPU time per lifecycle, turn by turn
(``--schedule together``; cinder_overhead.py says why).  Targets: armed
<= 1.01 x off, triggered <= 1.05 x off; osprofiler for comparison.
Checked at the end: every triggered trace id is in the agent's store, a
sample is complete (both ``wsgi`` spans, the driver's ``spawn`` and
``destroy``, no span left open), a sample of the osprofiler traces has both
``wsgi`` spans, the agent dropped nothing.  Exit status 0: targets met; 1:
a target missed; 2: a test process failed or a trace is missing.  About 14
minutes with the defaults.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cinder_overhead as common  # noqa: E402


class NovaService(common.Service):

    title = ("Nova 34.0.0 functional harness (eventlet, fake RPC, SQLite, "
             "fake virt driver, placement in-process); one lifecycle = "
             "POST /servers, wait until ACTIVE, DELETE, wait until 404")
    test_id = "nova_tests.bench.LifecycleBenchTest.test_lifecycles"
    fragment = Path(common.ROOT) / "etc" / "nova" / "stacktrail.conf"
    osprofiler_packages = ("osprofiler==4.4.0", "prettytable", "redis")
    phases = ("post", "active", "delete", "gone")
    driver_calls = ("spawn", "destroy")

    def env(self):
        from tests.services import nova
        return nova.nova_env()

    def added_environ(self, config):
        return 1 + len(config.profiler or ())   # OS_TEST_TIMEOUT, [profiler]

    def run(self, env, config, env_vars, timeout):
        """Run the bench test once; None when it passed, else a report.
        Nova's ConfFixture parses the oslo.config environment in every
        test: ``[profiler]`` goes there."""
        from tests.services import nova
        env_vars = dict(env_vars, OS_TEST_TIMEOUT="0")
        if config.profiler:
            env_vars.update(common.oslo_environ(
                {"profiler": config.profiler}))
        result = nova.run_functional(
            [self.test_id], overlay=config.overlay, env_vars=env_vars,
            timeout=timeout, env=env)
        return None if result.ok else result.report()


if __name__ == "__main__":
    sys.exit(common.main(NovaService(), common.parse_args(
        __doc__.split("\n")[0], rounds=6, iterations=15, batch=1)))
