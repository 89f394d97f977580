"""A volume's life, signed as an operator's client signs it.

Run inside the Cinder environment by tests/services/test_cinder_tracing.py.
Cinder is configured only as its own functional tests configure it: the
oslo.config environment (``OS_DEFAULT__CONFIG_SOURCE=stacktrail`` ...,
which loads stacktrail's config source while Cinder parses) and
``_get_flags`` (``CINDER_HARNESS_FLAGS``: the ``[profiler]`` section).

Each test starts traces with ``STACKTRAIL_TEST_KEY``, signs the POST and
the DELETE with ``web.get_trace_id_headers()`` inside a ``client`` span,
polls untraced, and writes each trace id to ``STACKTRAIL_TEST_IDS``.
stacktrail is imported here before Cinder's test package monkey-patches
the standard library; ``traced_after_patch`` imports it after.
"""

import os

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import context

import eventlet
from cinder_tests import volumes


class TracedVolumeTest(volumes.VolumeLifecycleTest):

    def _signed(self, call, *args):
        with profiler.Trace("client"):
            return call(*args, headers=web.get_trace_id_headers())

    def lifecycle(self):
        """Create and delete one volume in a trace of its own; its id."""
        prof = profiler.init(os.environ["STACKTRAIL_TEST_KEY"])
        volume_id = self._signed(self.api.api_post, "/volumes",
                                 {"volume": {"size": 1}})["volume"]["id"]
        trace = context.capture()
        profiler.clean()
        self.assertEqual("available",
                         self._wait_volume(volume_id, ("creating",))["status"])
        with context.restored(trace):
            self._signed(self.api.api_delete, "/volumes/%s" % volume_id)
        self.assertIsNone(self._wait_volume(volume_id, ("deleting",)))
        return prof.get_base_id()

    def _record(self, *base_ids):
        with open(os.environ["STACKTRAIL_TEST_IDS"], "a") as out:
            out.write("".join(base_id + "\n" for base_id in base_ids))

    def test_create_and_delete_volume(self):
        self._record(self.lifecycle())

    def test_two_volumes_in_concurrent_greenthreads(self):
        """Two traces at once, each in its own greenthread: never mixed."""
        threads = [eventlet.spawn(self.lifecycle) for _ in range(2)]
        self._record(*[thread.wait() for thread in threads])
