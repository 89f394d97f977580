"""Method tracing (integrations.methods): the one implementation behind
driver objects, adapters and the osprofiler takeover."""

import functools

import pytest

from stacktrail import profiler
from stacktrail.common import context
from stacktrail.integrations import methods


class Store:
    def get(self, key):
        return "value of %s" % key

    def fail(self):
        raise KeyError("missing")

    def scan(self, count):
        for i in range(count):
            with profiler.Trace("redis"):
                pass
            yield i

    def _private(self):
        return "private"


def _names(recorder):
    return [m["name"] for m in recorder]


def test_class_methods_traced_once_and_marked(trace, recorder):
    class Local(Store):
        def get(self, key):
            return super().get(key)

    assert methods.trace_class(Local, "store") == ["get"]
    assert methods.trace_class(Local, "store") == []   # marked: not twice
    assert Local().get("secret-key") == "value of secret-key"
    assert _names(recorder) == ["store-start", "store-stop"]
    assert recorder[0]["info"]["function"]["name"].endswith("Local.get")
    assert "secret-key" not in str(recorder)          # no arguments


def test_inherited_methods_set_on_the_class(trace, recorder):
    class Local(Store):
        pass
    done = methods.trace_class(Local, "store", inherited=True)
    assert sorted(done) == ["fail", "get", "scan"]
    assert not methods.is_traced(Store.get)  # the base class is untouched
    Local().get("x")
    Store().get("y")
    assert _names(recorder) == ["store-start", "store-stop"]


def test_gate_read_at_each_call(trace, recorder):
    state = {"on": False}
    store = methods.trace_object(Store(), "store", lambda: state["on"])
    store.get("a")
    state["on"] = True
    store.get("b")
    state["on"] = False
    store.get("c")
    assert _names(recorder) == ["store-start", "store-stop"]


def test_object_keeps_type_errors_recorded_and_reraised(trace, recorder):
    store = methods.trace_object(Store(), "store")
    assert type(store) is Store
    with pytest.raises(KeyError):
        store.fail()
    stop = recorder[-1]
    assert stop["name"] == "store-stop"
    assert stop["info"]["etype"] == "KeyError"
    methods.untrace_object(store)
    assert vars(store) == {}


def test_generator_span_covers_its_iteration(trace, recorder):
    store = methods.trace_object(Store(), "store")
    items = store.scan(2)
    assert _names(recorder) == ["store-start"]     # open while iterating
    position = context.current.get()
    assert list(items) == [0, 1]
    assert context.current.get() is position       # consumer undisturbed
    assert _names(recorder) == ["store-start", "redis-start", "redis-stop",
                                "redis-start", "redis-stop", "store-stop"]
    span = recorder[0]["trace_id"]
    assert all(m["parent_id"] == span for m in recorder[1:5])


def test_generator_closed_early_still_closes_its_span(trace, recorder):
    store = methods.trace_object(Store(), "store")
    items = store.scan(5)
    next(items)
    items.close()
    assert _names(recorder)[-1] == "store-stop"


def test_untraced_call_passes_through(recorder):
    store = methods.trace_object(Store(), "store")
    assert store.get("a") == "value of a"
    assert list(store.scan(2)) == [0, 1]
    assert recorder == []


def test_signature_changing_decorator_is_called_as_written(trace, recorder):
    def inject_context(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, timeout=None, **kwargs):
            return fn(self, "ctx", *args, **kwargs)
        return wrapper

    class Manager:
        @inject_context
        def create(self, context, name):
            return context, name

    methods.trace_class(Manager, "rpc")
    assert Manager().create("vol", timeout=3) == ("ctx", "vol")
    assert _names(recorder) == ["rpc-start", "rpc-stop"]


def test_osprofiler_wrapper_is_replaced_not_wrapped(trace, recorder):
    osprofiler = pytest.importorskip("osprofiler.profiler")

    class Api:
        @osprofiler.trace("rpc")
        def call(self, value):
            return value * 2

    methods.trace_class(Api, "rpc")
    assert Api().call(2) == 4
    assert _names(recorder) == ["rpc-start", "rpc-stop"]
    assert not hasattr(Api.call, "__wrapped__") or \
        "osprofiler" not in Api.call.__wrapped__.__code__.co_filename


def test_untrace_puts_back_methods_trace_wrapped(trace, recorder):
    """What osprofiler's names wrapped (TracedMeta, @trace), taken over or
    not, is put back: no span, and no arguments recorded."""
    osprofiler = pytest.importorskip("osprofiler.profiler")

    class Manager:
        @profiler.trace("rpc")
        def build(self, admin_password):
            return "built"

        @osprofiler.trace("rpc")
        def delete(self):
            return "deleted"

    assert sorted(methods.untrace_class(Manager)) == ["build", "delete"]
    assert Manager().build("S3cr3t") == "built"
    assert Manager().delete() == "deleted"
    assert recorder == []
