"""A service applies the central policy's per-request rules when a request
arrives: always-keep paths and operations, and operation rates, through
the real WSGI filter."""

import webob

from stacktrail import notifier
from stacktrail import policy_client
from stacktrail import web
from stacktrail.common import policy
from stacktrail.common import settings
from tests.integrations.conftest import Recorder


def traced_paths(paths, recorder):
    app = web.WsgiMiddleware(lambda environ, start: webob.Response()(
        environ, start), enabled=True)
    for path in paths:
        webob.Request.blank(path).get_response(app)
    return [m["info"]["request"]["path"] for m in recorder
            if m["name"] == "wsgi-start"]


def use(data):
    """The service's [profiler] defaults, then ``data`` as its policy (as
    if its agent had served it)."""
    policy_client.follow("noop://", {"service": "api"})
    policy_client.use(policy.parse(data))


def test_always_keep_paths_are_traced_whatever_the_rate():
    recorder = Recorder()
    notifier.set(recorder)
    use({"default_rate": 0.0, "max_traces_per_second": 1,
         "always_keep": {"paths": ["/v2.1/servers*"]}})
    paths = ["/v2.1/servers/%d" % i for i in range(5)] + ["/v2.1/flavors"]
    # every kept path, beyond the cap of 1 trace/s; nothing else at rate 0
    assert traced_paths(paths, recorder) == paths[:5]


def test_operation_rate_overrides_the_service_rate():
    recorder = Recorder()
    notifier.set(recorder)
    use({"default_rate": 0.0, "rates": {"operation": {"wsgi": 1.0}}})
    assert settings.current.sampling_rate == 0.0
    assert traced_paths(["/a", "/b"], recorder) == ["/a", "/b"]
    use({"default_rate": 1.0, "rates": {"operation": {"wsgi": 0.0}}})
    recorder.clear()
    assert traced_paths(["/a", "/b"], recorder) == []
