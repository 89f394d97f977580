"""What every tracing test shares: credentials or none, a client that sends
the headers it is given, the store, and the checks on a stored trace."""

import time

from tempest import config
from tempest import test

from stacktrail_tempest_plugin import clients
from stacktrail_tempest_plugin import traces

CONF = config.CONF

WSGI = traces.Step("wsgi")


def opts():
    return CONF.stacktrail_tracing


class TracingTest(test.BaseTestCase):
    """Base of the tests of one project (``project``: zaqar, cinder, nova).

    With ``[stacktrail_tracing] auth_strategy = keystone`` a test class gets
    a primary user (``credentials = ['primary']``) and the endpoints from
    the catalog; with ``noauth`` it gets no credentials and the endpoint
    from ``[stacktrail_tracing] endpoints``.
    """

    project = None
    credentials = ["primary"]

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if cls.project not in opts().services:
            raise cls.skipException(
                "%s is not in [stacktrail_tracing] services" % cls.project)
        if not opts().hmac_key or not opts().connection_string:
            raise cls.skipException("[stacktrail_tracing] hmac_key and "
                                    "connection_string are needed")
        if opts().auth_strategy == "noauth" and \
                cls.project not in opts().endpoints:
            raise cls.skipException(
                "noauth: no [stacktrail_tracing] endpoints entry for %s"
                % cls.project)

    @classmethod
    def setup_credentials(cls):
        if opts().auth_strategy == "noauth":
            cls.credentials = []
        super().setup_credentials()

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.store = traces.Store(opts().connection_string)

    @classmethod
    def traced_client(cls, catalog_type, region, endpoint_type,
                      default_headers=None):
        if opts().auth_strategy == "noauth":
            auth = clients.EndpointAuth(opts().endpoints[cls.project],
                                        {"X-Project-ID": opts().project_id})
        else:
            auth = cls.os_primary.auth_provider
        return clients.TracedClient(auth, catalog_type, region,
                                    endpoint_type, default_headers,
                                    **config.service_client_config())

    # -- headers --
    def signed(self, ids):
        """osprofiler's signed headers for ``ids``."""
        return ids.osprofiler_headers(opts().hmac_key)

    def secrets(self, client, *more):
        """What no span may carry: the key, the token, the test's own."""
        found = [opts().hmac_key, client.token, *more]
        return [value for value in found if value]

    # -- reading traces --
    def wait_for_trace(self, base_id, until):
        return traces.wait_for(self.store.messages, base_id, until,
                               timeout=opts().poll_timeout,
                               interval=opts().poll_interval,
                               settle=opts().settle_time)

    def assert_chain(self, trace, *steps, start=None):
        """The spans matching ``steps``, each nested under the one before."""
        found = trace.chain(*steps, start=start)
        self.assertIsNotNone(found, "no chain %s in\n%s" % (
            " -> ".join(map(repr, steps)), trace.render()))
        return found

    def assert_sound(self, trace, ids, secrets):
        """Nothing left open, every span under the caller's or another span
        of the trace, no secret recorded."""
        self.assertEqual([], [s.describe() for s in trace.open_spans()],
                         "spans left open\n%s" % trace.render())
        self.assertEqual([], [s.describe() for s in
                              trace.orphans(ids.parent_id)],
                         "spans outside the caller's tree\n%s"
                         % trace.render())
        leaked = trace.secrets_found(*secrets)
        self.assertEqual([], ["%s...(%d chars)" % (s[:4], len(s))
                              for s in leaked],
                         "secrets recorded in the trace")

    def assert_not_traced(self, ids, call):
        """Nothing is stored for ``ids`` although ``call(headers)`` with
        a validly signed trace, made afterwards, is: so the store was
        written to meanwhile and the first request was not traced."""
        if opts().sampling_rate > 0:
            self.skipTest("sampling_rate > 0: an unsigned request may be "
                          "traced")
        control = traces.Ids.new()
        call(self.signed(control))
        self.wait_for_trace(control.base_id, until=closed_roots(WSGI, 1))
        time.sleep(opts().settle_time)
        trace = traces.Trace(ids.base_id, self.store.messages(ids.base_id))
        self.assertEqual(0, len(trace), trace.render())


def closed_roots(step, count):
    """``count`` top-level spans matching ``step`` are closed."""
    def until(trace):
        return len([r for r in trace.roots
                    if step.matches(r) and r.closed]) >= count
    until.__doc__ = "%d closed %r spans at the top" % (count, step)
    return until


def closed_span(step):
    """A closed span matching ``step`` is anywhere in the trace."""
    def until(trace):
        return any(step.matches(s) and s.closed for s in trace.walk())
    until.__doc__ = "a closed %r span" % (step,)
    return until
