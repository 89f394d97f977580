"""oslo.messaging RPC tracing over the local RabbitMQ."""

import threading

import oslo_messaging as messaging
import pytest
from oslo_config import cfg

from stacktrail import profiler
from stacktrail.common import ids
from stacktrail.integrations import rpc

from tests.integrations.conftest import KEY


class Endpoint:
    """Records the trace each call ran in and makes one child span."""

    def __init__(self):
        self.seen = []

    def work(self, ctxt, fail=False):
        prof = profiler.get()
        self.seen.append(None if prof is None else
                         (prof.get_base_id(), prof.get_id()))
        with profiler.Trace("work"):
            if fail:
                raise ValueError("handler failed")
        return "done"


class RecordingSerializer(messaging.NoOpSerializer):
    """Keeps the raw context dicts a server received."""

    def __init__(self):
        self.contexts = []

    def deserialize_context(self, ctxt):
        self.contexts.append(dict(ctxt))
        return ctxt


@pytest.fixture
def transport(rabbit_url):
    # The global CONF, as services use: oslo.messaging 18.x registers its
    # tracing and metrics options there only.
    conf = cfg.CONF
    tr = messaging.get_rpc_transport(conf, url=rabbit_url)
    from oslo_messaging import server as om_server
    conf.register_opts(om_server._pool_opts)
    conf.set_override("executor_thread_pool_size", 1)
    yield tr
    conf.clear_override("executor_thread_pool_size")
    tr.cleanup()


@pytest.fixture
def wire(transport, monkeypatch):
    """The context dicts as they go on the wire (what a server in another
    process, osprofiler's or ours, receives)."""
    sent = []
    driver = transport._driver
    for name in ("send", "send_notification"):
        original = getattr(driver, name)

        def record(target, ctxt, *args, _original=original, **kwargs):
            sent.append(dict(ctxt))
            return _original(target, ctxt, *args, **kwargs)
        monkeypatch.setattr(driver, name, record)
    return sent


@pytest.fixture
def serve(transport, unique_name):
    """serve(endpoint, serializer=None) -> an RPC client for it."""
    servers = []

    def start(endpoint, serializer=None, client_serializer=None):
        target = messaging.Target(topic=unique_name, server="srv")
        server = messaging.get_rpc_server(transport, target, [endpoint],
                                          executor="threading",
                                          serializer=serializer)
        server.start()
        servers.append(server)
        return messaging.get_rpc_client(
            transport, messaging.Target(topic=unique_name), timeout=10,
            serializer=client_serializer)

    yield start
    for server in servers:
        server.stop()
        server.wait()


def test_call_is_a_span_and_server_joins(serve, live, trace, recorder):
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    assert client.call({}, "work") == "done"
    (server, _), (start, stop) = recorder.spans("rpc")  # in stop order
    assert start["info"]["rpc"] == {"method": "work", "type": "call",
                                    "topic": client.target.topic}
    assert start["parent_id"] == trace.get_id()
    # The server side is a span of its own, under the caller's.
    assert server["info"]["rpc"] == {"method": "work", "type": "server"}
    assert server["parent_id"] == start["trace_id"]
    base, parent = endpoint.seen[0]
    assert base == trace.get_base_id() and parent == server["trace_id"]
    (work, _), = recorder.spans("work")
    assert work["parent_id"] == server["trace_id"]
    assert profiler.get().get_id() == trace.get_id()


def test_cast_and_handler_error_cleans_context(serve, live, recorder):
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    profiler.init(KEY)
    with pytest.raises(ValueError):      # re-raised by oslo.messaging
        client.call({}, "work", fail=True)
    (_, work_stop), = recorder.spans("work")
    assert work_stop["info"]["etype"].endswith("ValueError")
    profiler.clean()
    client.call({}, "work")              # same single worker thread
    assert endpoint.seen[-1] is None     # previous trace did not leak
    profiler.init(KEY)
    client.cast({}, "work")
    _wait(lambda: len(endpoint.seen) == 3)
    types = [s["info"]["rpc"]["type"] for s, _ in recorder.spans("rpc")]
    assert [t for t in types if t != "server"] == ["call", "cast"]
    assert types.count("server") == 2
    failed = [stop for start, stop in recorder.spans("rpc")
              if start["info"]["rpc"]["type"] == "server"][0]
    assert failed["info"]["etype"].endswith("ValueError")
    assert not recorder.unclosed()


def test_disable_restores_and_stops(serve, trace, recorder):
    from oslo_messaging.rpc import client as rpc_client
    original = rpc_client._BaseCallContext.call
    rpc.enable()
    rpc.disable()
    assert rpc_client._BaseCallContext.call is original
    endpoint = Endpoint()
    serve(endpoint).call({}, "work")
    assert endpoint.seen == [None] and recorder.spans("rpc") == []


def test_serializer_wrapper_without_auto_instrumentation(serve, live, trace,
                                                         recorder):
    endpoint = Endpoint()
    client = serve(endpoint, serializer=rpc.TraceSerializer(),
                   client_serializer=rpc.TraceSerializer())
    client.call({}, "work")
    assert endpoint.seen[0] == (trace.get_base_id(), trace.get_id())
    profiler.clean()
    client.call({}, "work")
    assert endpoint.seen[1] is None


def test_osprofiler_caller_joins_our_server(serve, live, recorder):
    import osprofiler.profiler as osp

    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    prof = osp.init(KEY)
    try:
        # What an osprofiler-instrumented service's serializer writes.
        ctxt = {"trace_info": {"hmac_key": KEY,
                               "base_id": prof.get_base_id(),
                               "parent_id": prof.get_id()}}
        client.call(ctxt, "work")
    finally:
        osp.clean()
    (server, _), = recorder.spans("rpc")
    assert server["parent_id"] == prof.get_id()
    assert endpoint.seen[0] == (prof.get_base_id(), server["trace_id"])


def test_our_caller_joins_osprofiler_server(serve, wire, trace, recorder):
    """What our caller sends is what an osprofiler-using service's
    serializer (Nova's, Cinder's) reads in its own process."""
    import osprofiler.profiler as osp

    class OsprofilerStyle(messaging.NoOpSerializer):
        """The serializer osprofiler-using services (Nova, Cinder) ship."""

        def __init__(self):
            self.seen = []

        def deserialize_context(self, ctxt):
            trace_info = ctxt.pop("trace_info", None)
            if trace_info:
                osp.init(**trace_info)
                prof = osp.get()
                self.seen.append((prof.get_base_id(), prof.get_id()))
                osp.clean()
            return ctxt

    rpc.enable()
    client = serve(Endpoint())
    client.call({}, "work")
    span = [s for s, _ in recorder.spans("rpc")
            if s["info"]["rpc"]["type"] == "call"][0]
    serializer = OsprofilerStyle()
    serializer.deserialize_context(dict(wire[0]))
    assert serializer.seen == [(trace.get_base_id(), span["trace_id"])]


def test_servers_serializer_gets_what_the_callers_made(serve, wire, live,
                                                       trace, recorder):
    """The trace is written into the context after the caller's
    serializer ran: the server's serializer gets the context without it
    (one that refuses values it did not write, as oslo.messaging's own
    test serializer does, still serves), and the handler runs in the
    trace."""

    class Prefixing(messaging.NoOpSerializer):
        """Text values only (the AMQP driver adds None ones)."""

        def serialize_context(self, ctxt):
            return {key: "s" + value for key, value in ctxt.items()}

        def deserialize_context(self, ctxt):
            return {key: value if value is None else "d" + value
                    for key, value in ctxt.items()}

    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint, serializer=Prefixing(),
                   client_serializer=Prefixing())
    assert client.call({"user": "alice"}, "work") == "done"
    assert "trace_info" in wire[0]   # on the wire, for the server to join
    assert endpoint.seen[0][0] == trace.get_base_id()


def test_signed_token_for_our_receivers(serve, wire, live, trace,
                                        recorder):
    rpc.enable(signed=True)
    endpoint = Endpoint()
    raw = RecordingSerializer()
    client = serve(endpoint, serializer=raw)
    client.call({}, "work")
    assert "trace_info" not in wire[0]
    assert KEY not in repr(wire[0])
    assert set(wire[0]["trace_token"]) == {"packed", "hmac"}
    assert "trace_token" not in raw.contexts[0]   # joined, then left out
    assert endpoint.seen[0][0] == trace.get_base_id()


def test_bad_token_is_not_joined(serve, live, recorder):
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    client.call({"trace_token": {"packed": "e30=", "hmac": "00"}}, "work")
    assert endpoint.seen == [None]


def test_traceparent_from_oslo_messaging_tracing(serve, live, recorder):
    live.trust_traceparent = True
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint)
    trace_hex, span_hex = "4bf92f3577b34da6a3ce929d0e0e4736", \
        "00f067aa0ba902b7"
    client.call({"traceparent": "00-%s-%s-01" % (trace_hex, span_hex)},
                "work")
    (server, _), = recorder.spans("rpc")
    base, parent = endpoint.seen[0]
    assert ids.trace_id_hex(base) == trace_hex
    assert ids.span_id_hex(server["parent_id"]) == span_hex
    assert parent == server["trace_id"]


def test_both_keys_join_once(serve, live, trace, recorder):
    """oslo.messaging's tracing adds a traceparent of its own OTel span;
    our trace_info wins and the message joins exactly one trace."""
    live.trust_traceparent = True
    rpc.enable()
    endpoint = Endpoint()
    client = serve(endpoint, serializer=rpc.TraceSerializer())
    otel = "00-%s-%s-01" % ("1" * 32, "2" * 16)
    client.call({"traceparent": otel}, "work")
    assert endpoint.seen[0][0] == trace.get_base_id()
    assert len({m["base_id"] for m in recorder}) == 1


def test_notifications_carry_the_trace(transport, wire, unique_name, live,
                                       trace, recorder):
    rpc.enable()
    got = []

    class Listener:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            prof = profiler.get()
            got.append((ctxt.get("trace_info"),
                        prof and prof.get_base_id()))

    listener = messaging.get_notification_listener(
        transport, [messaging.Target(topic=unique_name)], [Listener()],
        executor="threading")
    listener.start()
    try:
        notifier = messaging.Notifier(transport, "test.publisher",
                                      driver="messaging",
                                      topics=[unique_name])
        notifier.info({}, "thing.happened", {"n": 1})
        _wait(lambda: got)
    finally:
        listener.stop()
        listener.wait()
    trace_info, base = got[0]
    assert wire[0]["trace_info"]["base_id"] == trace.get_base_id()
    assert trace_info is None   # the listener gets what the notifier sent
    assert base == trace.get_base_id()


def _wait(predicate, timeout=10):
    done = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        done.wait(0.05)
    raise AssertionError("timed out")
