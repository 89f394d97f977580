"""Zaqar's own Redis and SQLAlchemy storage tests, each inside a trace.

Every test class of Zaqar's two modules, subclassed to start a trace
(signed with ``STACKTRAIL_TEST_KEY``) before the test's set-up and to end
it after its clean-ups: every storage call, Redis command, Lua script and
SQL statement of the test is then traced.  Each class keeps its name, so
``zaqar_tests.own_storage.RedisQueuesTest.test_...`` is Zaqar's
``...test_impl_redis.RedisQueuesTest.test_...``, traced.

Tracing is switched on by configuration alone, as in zaqar-server: the
process's configuration (oslo.config's global ``CONF``) is parsed for the
project ``zaqar`` as the server parses it when it starts, and the
oslo.config environment (``OS_DEFAULT__CONFIG_SOURCE=stacktrail``,
``OS_PROFILER__...``) is what it finds.  Each test's own ConfigOpts is
not the service's, so it changes nothing.
"""

import os
import unittest

from oslo_config import cfg

from stacktrail import profiler
from zaqar.tests.unit.storage import test_impl_redis
from zaqar.tests.unit.storage import test_impl_sqlalchemy


cfg.CONF(args=[], project="zaqar")


def _traced(base):
    class Traced(base):
        def setUp(self):
            profiler.init(os.environ["STACKTRAIL_TEST_KEY"])
            self.addCleanup(profiler.clean)   # the last clean-up to run
            super().setUp()
    Traced.__name__ = Traced.__qualname__ = base.__name__
    return Traced


for _module in (test_impl_redis, test_impl_sqlalchemy):
    for _name, _value in vars(_module).items():
        if (isinstance(_value, type) and issubclass(_value, unittest.TestCase)
                and _value.__module__ == _module.__name__):
            globals()[_name] = _traced(_value)
