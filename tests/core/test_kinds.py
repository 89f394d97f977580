"""The registry of span kinds (stacktrail.common.kinds).

The builtin kinds are what the integrations write and what reports and the
OTLP exporter read; a third party's kind, added through the
``stacktrail.kinds`` entry points, is described in text reports and
exported with its attributes like a builtin one.
"""

import sys
import textwrap
import time

import pytest

from stacktrail import report as reports
from stacktrail import web
from stacktrail.common import ids
from stacktrail.common import kinds
from stacktrail.common import points
from stacktrail.report import tree
from tests.report import tracegen as tg


def _queue_line(part, stop):
    size = stop.get("queue", {}).get("size")
    return "%s (%s messages)" % (part["name"], size)


def _queue_attributes(part, info):
    return {"messaging.system": "zaqar",
            "messaging.destination.name": part["name"]}


# What a per-project adapter would declare for its message queues.
QUEUE = kinds.Kind(
    "queue", "queue",
    {"name": "queue name", "project": "queue's project",
     "size": "stop: messages in the queue"},
    span_kind=kinds.CLIENT, describe=_queue_line,
    attributes=_queue_attributes, mapped=("name",),
    names={"zaqar": {"name": "(by name)"}})


@pytest.fixture
def registry(monkeypatch):
    """The registry's lazily loaded state, restored after the test."""
    for name in ("_extra", "_every", "_order", "_lines", "_names"):
        monkeypatch.setattr(kinds, name, None)
    monkeypatch.setattr(kinds, "_by_point", {})
    return kinds


def _with(*plugins):
    from stevedore import extension
    manager = extension.ExtensionManager.make_test_instance(
        [extension.Extension("p%d" % i, None, plugin, None)
         for i, plugin in enumerate(plugins)])
    return kinds.extra(manager)


# --- the builtin kinds -------------------------------------------------------

def test_lookup_order_is_the_describers():
    assert [k.key for k in kinds.BUILTIN] == [
        "request", "requests", "db", "rpc", "pool", "function"]
    assert kinds.of({"host": "h", "db": {}}) is kinds.DB
    assert kinds.of({"function": {}, "request": {}}) is kinds.WSGI
    assert kinds.of({"function": {}, "pool": {}}) is kinds.POOL
    assert kinds.of({"response": {"status": 200}}) is None
    assert kinds.of({}) is None


def test_every_builtin_declares_its_fields_and_otel_kind():
    for kind in kinds.BUILTIN:
        assert kind.fields and all(isinstance(doc, str) and doc
                                   for doc in kind.fields.values())
        assert kind.otel_kind({}, kind.name) in (
            kinds.SERVER, kinds.CLIENT, kinds.INTERNAL)
    assert kinds.RPC.otel_kind({"type": "cast"}, "rpc") == kinds.CLIENT
    assert kinds.RPC.otel_kind({"type": "server"}, "rpc") == kinds.SERVER


def test_integrations_build_their_info_through_the_registry():
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v2/queues",
               "wsgi.url_scheme": "http", "HTTP_HOST": "api:8888"}
    assert kinds.of(web.request_info(environ)) is kinds.WSGI
    assert kinds.WSGI.stop_info({"status": 200}) == {
        "response": {"status": 200}}
    assert kinds.DB.start_info({"statement": "SELECT 1"}) == {
        "db": {"statement": "SELECT 1"}}


def test_point_names_say_the_kind_by_their_first_word():
    assert kinds.named("db-query") == (kinds.DB, {})
    assert kinds.named("Redis:get") == (kinds.DB, {"system": "redis"})
    assert kinds.named("https") == (kinds.HTTP, {})
    assert kinds.named("compute_api") is None


def test_span_kind_name_first_then_info():
    # trace_cls("rpc") on a manager: the name says rpc, the info function.
    function = {"function": {"name": "nova.compute.manager.build"}}
    assert kinds.span_kind("rpc", function) == kinds.CLIENT
    assert kinds.span_kind("compute_api", function) == kinds.INTERNAL
    assert kinds.span_kind("websocket", {"request": {"action": "x"}}) == \
        kinds.SERVER
    assert kinds.span_kind("rpc", {"rpc": {"type": "server"}}) == \
        kinds.SERVER
    assert kinds.span_kind("custom", {"other": {}}) == kinds.INTERNAL


def test_parts_fill_in_what_the_point_name_implies():
    found = dict(kinds.parts("mongodb", {"db": {"command": "find"}}))
    assert found[kinds.DB] == {"command": "find", "system": "mongodb"}
    found = dict(kinds.parts("rpc", {"function": {"name": "m"}}))
    assert found[kinds.RPC] == {"system": "oslo_messaging"}
    # A stop-only wsgi span still maps its response status.
    assert dict(kinds.parts("wsgi", {"response": {"status": 503}})) == {
        kinds.WSGI: {}}
    assert kinds.parts("db", {"function": {"name": "f"}}) == [
        (kinds.FUNCTION, {"name": "f"})]


def test_attribute_mappings_are_pure():
    part = {"method": "GET", "path": "/x", "status_code": "200 OK",
            "port": "8774", "hostname": "h"}
    before = dict(part)
    attrs = kinds.HTTP.attributes(part, {"requests": part})
    assert part == before
    assert attrs == {"http.request.method": "GET", "url.path": "/x",
                     "http.response.status_code": 200,
                     "server.address": "h", "server.port": 8774}
    assert set(part) <= kinds.HTTP.mapped


# --- a third party's kind ----------------------------------------------------

def test_entry_point_kinds_are_loaded_once(registry):
    assert _with(QUEUE) == (QUEUE,)
    assert kinds.every() == kinds.BUILTIN[:-1] + (QUEUE, kinds.FUNCTION)
    assert kinds.extra() is kinds.extra()
    # Before function: an adapter's traced method records both.
    assert kinds.of({"function": {"name": "f"}, "queue": {}}) is QUEUE
    assert kinds.named("zaqar-queue") == (QUEUE, {"name": "(by name)"})


def test_a_kind_cannot_take_a_builtin_key_and_junk_is_ignored(registry):
    impostor = kinds.Kind("sql", "db", {"statement": "x"})
    assert _with(impostor, "not a kind", QUEUE) == (QUEUE,)
    assert kinds.of({"db": {}}) is kinds.DB


def test_a_real_entry_point_namespace(registry, tmp_path, monkeypatch):
    (tmp_path / "st_queue_kind.py").write_text(textwrap.dedent("""
        from stacktrail.common import kinds
        QUEUE = kinds.Kind("queue", "queue", {"name": "queue name"},
                           describe=lambda part, stop: part["name"])
    """))
    dist = tmp_path / "st_queue_kind-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: st-queue-kind\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[stacktrail.kinds]\nqueue = st_queue_kind:QUEUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "st_queue_kind", raising=False)
    # stevedore keeps each namespace's entry points for the process.
    from stevedore import extension
    monkeypatch.setattr(extension.ExtensionManager, "ENTRY_POINT_CACHE", {})
    assert "queue" in [k.name for k in kinds.extra()]
    assert kinds.line({"queue": {"name": "q9"}}) == "q9"


def test_a_failing_describer_says_nothing(registry):
    broken = kinds.Kind("broken", "broken", {},
                        describe=lambda part, stop: 1 / 0)
    odd = kinds.Kind("odd", "odd", {}, describe=lambda part, stop: 42)
    _with(broken, odd)
    assert kinds.line({"broken": {}}) == ""
    assert kinds.line({"odd": {}}) == ""


def test_a_third_party_kind_in_a_text_report(registry):
    _with(QUEUE)
    messages = tg.span("wsgi", "r", tg.BASE, 0, 100,
                       {"request": {"method": "POST", "path": "/v2/q"}},
                       {"response": {"status": 201}})
    messages += tg.span("zaqar-post", "q", "r", 10, 20,
                        {"queue": {"name": "q1"}}, {"queue": {"size": 3}})
    out = reports.render(tree.build(messages), "text")
    assert any("zaqar-post  q1 (3 messages)" in line
               for line in out.splitlines()), out


def test_a_third_party_kind_exported_over_otlp(registry):
    pytest.importorskip("opentelemetry.proto")
    from opentelemetry.proto.trace.v1 import trace_pb2

    from stacktrail.drivers import base
    from tests.otlp_receiver import OTLPReceiver
    from tests.otlp_receiver import attributes

    _with(QUEUE)
    base_id, span_id, now = ids.new_id(), ids.new_id(), time.time_ns()
    batch = [
        ("queue-post", points.START, base_id, base_id, span_id, now,
         {"queue": {"name": "q1", "project": "p1"}}),
        ("queue-post", points.STOP, base_id, base_id, span_id, now + 5000,
         {"queue": {"size": 3}}),
    ]
    with OTLPReceiver() as receiver:
        driver = base.get_driver(receiver.connection_string, timeout=2)
        driver.write_points(batch)
        span, = receiver.wait_for_spans(1)
    assert span.kind == trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
    attrs = attributes(span.attributes)
    assert attrs["messaging.system"] == "zaqar"
    assert attrs["messaging.destination.name"] == "q1"
    assert "stacktrail.queue.name" not in attrs  # mapped, not repeated
    assert attrs["stacktrail.queue.project"] == "p1"
    assert attrs["stacktrail.queue.size"] == 3
