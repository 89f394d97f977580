"""``noop://``: tracing on, every point discarded (for overhead runs)."""

from stacktrail.common import sink
from stacktrail.drivers import base


class NoopDriver(base.WriteOnly, base.Driver):

    WHERE_TO_READ = ("noop:// keeps no traces: read them from the store the "
                     "services write to (their [profiler] connection_string)")

    def make_sink(self):
        return sink.NoopSink()

    def notify(self, info, **kwargs):
        pass
