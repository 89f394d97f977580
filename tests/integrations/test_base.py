"""The shared contract: idempotent, reversible, failures swallowed."""

import logging

import pytest

from stacktrail import integrations
from stacktrail import notifier
from stacktrail import profiler
from stacktrail.integrations import _base
from tests import fresh_process


class Thing:
    def method(self):
        return "original"


class Child(Thing):
    pass


def test_patcher_restores_exactly():
    patcher = _base.Patcher()
    before_thing = dict(vars(Thing))
    before_child = dict(vars(Child))
    patcher.patch(Thing, "method", lambda self: "patched")
    patcher.patch(Child, "method", lambda self: "child")
    assert Child().method() == "child"
    patcher.restore()
    assert dict(vars(Thing)) == before_thing
    assert dict(vars(Child)) == before_child   # inherited: deleted again
    assert Child().method() == "original"


@pytest.mark.parametrize("flag", sorted(integrations.modules()))
def test_every_flag_is_idempotent_and_reversible(flag):
    module = integrations.module(flag)
    assert module.enable() is True
    assert module.enable() is False
    assert module.is_enabled()
    assert integrations.apply({flag: True}) == {flag: True}
    assert module.disable() is True
    assert module.disable() is False
    assert integrations.apply({flag: False}) == {flag: False}


def test_apply_ignores_foreign_and_missing_flags():
    assert integrations.apply({"trace_wsgi": True}) == {}
    assert integrations.apply(None) == {}


def test_apply_swallows_a_failing_integration(monkeypatch, caplog):
    module = integrations.module("trace_redis")

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "enable", broken)
    with caplog.at_level(logging.ERROR):
        result = integrations.apply({"trace_redis": True, "trace_pooling":
                                     True})
    assert result == {"trace_redis": False, "trace_pooling": True}
    assert "trace_redis" in caplog.text


def test_span_closes_and_records_error(trace, recorder):
    with pytest.raises(KeyError):
        with _base.Span("t", "thing", {"a": 1}):
            raise KeyError("gone")
    (start, stop), = recorder.spans("thing")
    assert start["info"]["a"] == 1
    assert stop["info"]["etype"] == "KeyError"
    assert profiler.get().get_id() == trace.get_id()   # stack restored


def test_span_closes_its_own_frame_when_callee_leaks(trace, recorder):
    with _base.Span("t", "outer"):
        profiler.start("leaked")
    assert [n for n in recorder.names()] == [
        "outer-start", "leaked-start", "outer-stop"]
    assert profiler.get().get_id() == trace.get_id()


def test_no_trace_no_points(recorder):
    with _base.Span("t", "thing"):
        pass
    assert _base.leaf_start("leaf", {}) is None
    assert recorder == []


def test_failing_notifier_never_reaches_the_caller(trace):
    def broken(message):
        raise RuntimeError("store down")

    notifier.set(broken)
    try:
        with _base.Span("t", "thing"):
            result = "served"
        handle = _base.leaf_start("leaf", {})
        if handle is not None:
            _base.leaf_stop(handle)
    finally:
        notifier.set(lambda m: None)
    assert result == "served"


def test_guard_logs_and_swallows(caplog):
    def broken():
        raise ValueError("tracing bug")

    with caplog.at_level(logging.WARNING, "stacktrail.integrations"):
        assert _base.guard("unit", broken) is None
    assert _base.failures()["unit"] >= 1
    assert "tracing failure in unit" in caplog.text


def test_leaf_spans_do_not_touch_the_stack(trace, recorder):
    a = _base.leaf_start("leaf", {"n": 1})
    b = _base.leaf_start("leaf", {"n": 2})
    _base.leaf_stop(a)
    _base.leaf_stop(b)
    spans = recorder.spans("leaf")
    assert len(spans) == 2
    assert all(s["parent_id"] == trace.get_id() for s, _ in spans)
    assert profiler.get().get_id() == trace.get_id()


def test_carrying_means_a_trace_or_an_untraced_w3c_context_to_send():
    """What a sent message carries: nothing outside a request, the W3C
    context of an untraced one, the trace of a traced one; nothing while a
    notifier writes its own points."""
    import contextvars
    from stacktrail.common import context
    from stacktrail.common import propagation

    def check():
        profiler.clean()
        propagation.untraced.set(None)
        assert not _base.carrying()
        propagation.untraced.set(propagation.W3CContext())
        assert _base.carrying()
        token = context.emitting.set(True)
        assert not _base.carrying()
        context.emitting.reset(token)
        propagation.untraced.set(None)
        profiler.init("a-key-of-sixteen-or-more")
        assert profiler.get() is not None
        assert _base.carrying()
        profiler.clean()

    contextvars.copy_context().run(check)


def test_a_flag_never_imports_its_library_for_the_service():
    # an armed service that does not use MongoDB never carries pymongo;
    # once it imports pymongo, its commands are traced
    assert fresh_process.output(
        "import sys\n"
        "from stacktrail import integrations\n"
        "print(integrations.apply({'trace_mongodb': True}))\n"
        "print('pymongo' in sys.modules)\n"
        "import pymongo\n"
        "from stacktrail.integrations import pymongo as traced\n"
        "print(traced.is_enabled())\n"
        "print(integrations.status()['trace_mongodb'])\n"
    ).split() == ["{'trace_mongodb':", "True}", "False", "True", "True"]


def test_a_flag_turned_off_before_its_library_is_imported_stays_off():
    assert fresh_process.output(
        "import sys\n"
        "from stacktrail import integrations\n"
        "integrations.apply({'trace_redis': True})\n"
        "integrations.apply({'trace_redis': False})\n"
        "import redis\n"
        "print('stacktrail.integrations.redis' in sys.modules)\n"
        "print(integrations.status()['trace_redis'])\n"
    ).split() == ["False", "False"]
