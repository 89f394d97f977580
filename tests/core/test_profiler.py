"""The osprofiler-compatible API: messages, decorators and fixed defects."""

import asyncio
import datetime
import os
import re
import socket
import uuid

import pytest

from stacktrail import profiler

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"
KEYS = {"name", "base_id", "trace_id", "parent_id", "timestamp", "info"}


def names(messages):
    return [m["name"] for m in messages]


def by_name(messages, name):
    found = [m for m in messages if m["name"] == name]
    assert len(found) == 1, (name, names(messages))
    return found[0]


# --- message shape -----------------------------------------------------------

def test_start_stop_message_shape(messages):
    before = datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None)
    profiler.init("key", base_id=BASE, parent_id=PARENT)
    profiler.start("db", info={"statement": "SELECT 1"})
    profiler.stop(info={"rows": 1})
    after = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    assert names(messages) == ["db-start", "db-stop"]
    start, stop = messages
    for message in messages:
        assert set(message) == KEYS
        assert message["base_id"] == BASE
        assert message["parent_id"] == PARENT
        assert message["info"]["host"] == socket.gethostname()
        stamp = datetime.datetime.strptime(message["timestamp"],
                                           "%Y-%m-%dT%H:%M:%S.%f")
        # naive UTC, microseconds, within the call
        assert before - datetime.timedelta(seconds=1) <= stamp <= \
            after + datetime.timedelta(seconds=1)
        uuid.UUID(message["trace_id"])
    assert start["trace_id"] == stop["trace_id"]
    assert start["trace_id"] not in (BASE, PARENT)
    assert start["info"]["statement"] == "SELECT 1"
    assert stop["info"]["rows"] == 1
    assert start["timestamp"] <= stop["timestamp"]


def _span_ids(count):
    profiler.init("key")
    found = []
    for _ in range(count):
        profiler.start("x")
        found.append(profiler.get().get_id())
        profiler.stop()
    profiler.clean()
    return found


def test_span_ids_are_distinct_v4_uuids_with_a_w3c_span_id(messages):
    found = _span_ids(2000)
    assert len(set(found)) == 2000
    for text in found:
        value = uuid.UUID(text)
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert value.int & ((1 << 64) - 1) != 0      # a valid W3C span-id
    # The low halves (W3C span-ids) are what tells spans apart.
    assert len({uuid.UUID(t).int & ((1 << 64) - 1) for t in found}) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_its_own_span_ids(messages):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: its span ids, then out without cleanup
        os.close(read)
        os.write(write, " ".join(_span_ids(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    mine = _span_ids(50)
    assert len(child) == 50
    assert not set(child) & set(mine)
    high = {uuid.UUID(t).int >> 64 for t in child}
    assert not high & {uuid.UUID(t).int >> 64 for t in mine}


def test_nesting_parent_ids(messages):
    prof = profiler.init("key")
    base = prof.get_base_id()
    assert prof.get_id() == base and prof.get_parent_id() == base
    profiler.start("outer")
    outer_id = prof.get_id()
    assert prof.get_parent_id() == base
    profiler.start("inner")
    assert prof.get_parent_id() == outer_id
    profiler.stop()
    profiler.start("inner2")
    profiler.stop()
    profiler.stop()
    assert names(messages) == ["outer-start", "inner-start", "inner-stop",
                               "inner2-start", "inner2-stop", "outer-stop"]
    outer = by_name(messages, "outer-start")
    assert outer["parent_id"] == base and outer["trace_id"] == outer_id
    for child in ("inner-start", "inner-stop", "inner2-start",
                  "inner2-stop"):
        assert by_name(messages, child)["parent_id"] == outer_id
    assert by_name(messages, "inner-start")["trace_id"] != \
        by_name(messages, "inner2-start")["trace_id"]
    assert by_name(messages, "outer-stop")["trace_id"] == outer_id
    assert {m["base_id"] for m in messages} == {base}
    # back at the root after the spans closed
    assert prof.get_id() == base


def test_profiler_object_and_clean():
    assert profiler.get() is None
    prof = profiler.init("k1", base_id=BASE, parent_id=PARENT)
    assert profiler.get() is prof
    assert prof.hmac_key == "k1"
    assert prof.get_base_id() == BASE
    assert prof.get_id() == PARENT
    assert prof.get_parent_id() == BASE
    profiler.clean()
    assert profiler.get() is None


def test_nothing_recorded_without_a_trace(messages):
    profiler.start("x")
    profiler.stop()

    @profiler.trace("f")
    def f(a):
        return a * 2

    assert f(21) == 42
    with profiler.Trace("block"):
        pass
    assert messages == []


def test_non_uuid_ids_from_a_peer_are_kept(messages):
    profiler.init("k", base_id="not-a-uuid", parent_id="parent-text")
    profiler.start("x")
    profiler.stop()
    assert messages[0]["base_id"] == "not-a-uuid"
    assert messages[0]["parent_id"] == "parent-text"


# --- trace decorator ---------------------------------------------------------

def test_trace_records_args_and_hides_result_by_default(messages):
    @profiler.trace("calc", info={"kind": "math"})
    def add(a, b, scale=1):
        return (a + b) * scale

    profiler.init("key")
    assert add(1, 2, scale=3) == 9
    start, stop = messages
    assert start["name"] == "calc-start" and stop["name"] == "calc-stop"
    assert start["info"]["kind"] == "math"
    function = start["info"]["function"]
    assert function["name"].endswith("add")
    # Recorded as bound to the signature: however the call was written.
    assert function["args"] == str((1, 2, 3))
    assert function["kwargs"] == str({})
    assert "function" not in stop["info"]


def test_trace_records_defaults_and_keyword_only_args(messages):
    @profiler.trace("calc")
    def scaled(a, b=2, *rest, scale=1, **extra):
        return (a + b + sum(rest)) * scale

    profiler.init("key")
    assert scaled(1) == 3
    assert scaled(1, 2, 3, scale=2, note="x") == 12
    first, second = messages[0]["info"]["function"], \
        messages[2]["info"]["function"]
    assert (first["args"], first["kwargs"]) == ("(1, 2)", str({"scale": 1}))
    assert (second["args"], second["kwargs"]) == (
        "(1, 2, 3)", str({"scale": 2, "note": "x"}))


def test_resting_wrapper_keeps_the_signature_and_packs_nothing():
    import inspect

    def plain(a, b=2, *, c=3):
        return a + b + c

    traced = profiler.trace("calc")(plain)
    assert inspect.signature(traced) == inspect.signature(plain)
    assert traced(1, c=4) == 7 and traced.__name__ == "plain"
    with pytest.raises(TypeError):
        traced(1, 2, 3)  # c is keyword-only, as in the original
    # No *args/**kwargs on the wrapper: no tuple or dict built per call.
    varargs = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
    assert traced.__code__.co_flags & varargs == 0


def test_trace_hide_args_and_show_result(messages):
    @profiler.trace("calc", hide_args=True, hide_result=False)
    def secret(password):
        return {"ok": True}

    profiler.init("key")
    secret("hunter2")
    start, stop = messages
    assert "args" not in start["info"]["function"]
    assert "kwargs" not in start["info"]["function"]
    assert "hunter2" not in repr(start)
    assert stop["info"]["function"]["result"] == repr({"ok": True})


def test_trace_exception_recorded_and_reraised(messages):
    class Boom(Exception):
        pass

    @profiler.trace("fails")
    def fails():
        raise Boom("went wrong")

    profiler.init("key")
    with pytest.raises(Boom, match="went wrong"):
        fails()
    stop = by_name(messages, "fails-stop")
    assert stop["info"]["etype"].endswith("Boom")
    assert stop["info"]["message"] == "went wrong"
    # the span was closed: we are back at the root
    assert profiler.get().get_id() == profiler.get().get_base_id()


def test_trace_builtin_exception_name(messages):
    @profiler.trace("fails")
    def fails():
        raise ValueError("bad")

    profiler.init("key")
    with pytest.raises(ValueError):
        fails()
    assert by_name(messages, "fails-stop")["info"]["etype"] == "ValueError"


def test_allow_multiple_trace_false_raises():
    @profiler.trace("once")
    def f():
        pass

    profiler.trace("twice")(f)  # allowed by default
    with pytest.raises(ValueError):
        profiler.trace("again", allow_multiple_trace=False)(f)


def test_trace_keeps_function_metadata():
    @profiler.trace("x")
    def documented():
        """Docs."""

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs."


# --- osprofiler defects not reproduced ---------------------------------------

def test_callers_info_dict_not_mutated(messages):
    info = {"a": 1}
    profiler.init("key")
    profiler.start("x", info=info)
    profiler.stop(info=info)
    assert info == {"a": 1}
    with profiler.Trace("y", info=info):
        pass
    assert info == {"a": 1}


def test_decorator_info_not_shared_across_calls(messages):
    info = {"static": "v"}

    @profiler.trace("f", info=info)
    def f(x):
        return x

    profiler.init("key")
    f(1)
    messages[0]["info"]["injected"] = True  # a consumer changes its copy
    f(2)
    assert info == {"static": "v"}
    starts = [m for m in messages if m["name"] == "f-start"]
    assert starts[0]["info"] is not starts[1]["info"]
    assert starts[0]["info"]["function"] is not starts[1]["info"]["function"]
    assert "injected" not in starts[1]["info"]
    assert starts[1]["info"]["function"]["args"] == "(2,)"


def test_second_init_starts_afresh(messages):
    first = profiler.init("key")
    profiler.start("left-open")  # a request that never cleaned up
    second = profiler.init("key")
    assert second.get_base_id() != first.get_base_id()
    assert second.get_id() == second.get_base_id()
    profiler.start("next")
    profiler.stop()
    nxt = by_name(messages, "next-start")
    assert nxt["base_id"] == second.get_base_id()
    assert nxt["parent_id"] == second.get_base_id()
    # a stop of the new trace never closes the old one's span
    assert [m for m in messages if m["name"] == "left-open-stop"] == []


def test_stray_stop_is_harmless(messages):
    profiler.stop()  # no trace at all
    prof = profiler.init("key")
    profiler.stop()  # trace but no span
    profiler.start("a")
    profiler.stop()
    profiler.stop()  # one too many
    profiler.stop({"x": 1})
    assert names(messages) == ["a-start", "a-stop"]
    assert profiler.get() is prof
    profiler.start("b")
    profiler.stop()
    assert by_name(messages, "b-start")["parent_id"] == prof.get_base_id()


# --- Trace context manager ---------------------------------------------------

def test_trace_context_manager(messages):
    prof = profiler.init("key")
    with profiler.Trace("outer", info={"k": "v"}):
        outer_id = prof.get_id()
        with profiler.Trace("inner"):
            pass
    assert names(messages) == ["outer-start", "inner-start", "inner-stop",
                               "outer-stop"]
    assert messages[0]["info"]["k"] == "v"
    assert messages[1]["parent_id"] == outer_id


def test_trace_context_manager_records_exception(messages):
    profiler.init("key")
    with pytest.raises(KeyError):
        with profiler.Trace("block"):
            raise KeyError("missing")
    stop = by_name(messages, "block-stop")
    assert stop["info"]["etype"] == "KeyError"
    assert "missing" in stop["info"]["message"]


# --- trace_cls and TracedMeta ------------------------------------------------

def _make_class():
    class Service:
        def public(self, x):
            return x + 1

        def _private(self):
            return "p"

        def __dunder(self):
            return "d"

        def call_dunder(self):
            return self.__dunder()

        @staticmethod
        def static(x):
            return x * 2

        @classmethod
        def klass(cls, x):
            return (cls.__name__, x)

    return Service


def traced_names(messages):
    return [m["info"]["function"]["name"].rsplit(".", 1)[-1]
            for m in messages if m["name"].endswith("-start")]


def test_trace_cls_public_methods_only_by_default(messages):
    Service = profiler.trace_cls("svc")(_make_class())
    profiler.init("key")
    obj = Service()
    assert obj.public(1) == 2
    assert obj._private() == "p"
    assert obj.call_dunder() == "d"
    assert Service.static(2) == 4
    assert Service.klass(3) == ("Service", 3)
    assert traced_names(messages) == ["public", "call_dunder"]
    assert {m["name"] for m in messages} == {"svc-start", "svc-stop"}


def test_trace_cls_private(messages):
    Service = profiler.trace_cls("svc", trace_private=True)(_make_class())
    profiler.init("key")
    assert Service()._private() == "p"
    assert traced_names(messages) == ["_private"]


def test_trace_cls_static_methods(messages):
    Service = profiler.trace_cls("svc",
                                 trace_static_methods=True)(_make_class())
    profiler.init("key")
    assert Service.static(2) == 4
    assert Service().static(3) == 6
    assert traced_names(messages) == ["static", "static"]


def test_trace_cls_class_methods(messages):
    Service = profiler.trace_cls("svc",
                                 trace_class_methods=True)(_make_class())
    profiler.init("key")
    assert Service.klass(3) == ("Service", 3)
    assert traced_names(messages) == ["klass"]


def test_trace_cls_hide_result_false(messages):
    Service = profiler.trace_cls("svc", hide_result=False)(_make_class())
    profiler.init("key")
    Service().public(1)
    assert by_name(messages, "svc-stop")["info"]["function"]["result"] == "2"


def test_trace_cls_allow_multiple_trace_false():
    Service = profiler.trace_cls("svc")(_make_class())
    with pytest.raises(ValueError):
        profiler.trace_cls("again", allow_multiple_trace=False)(Service)


def test_traced_meta(messages):
    class Base(metaclass=profiler.TracedMeta):
        __trace_args__ = {"name": "rpc", "info": {"a": 1}}

        def method(self, x):
            return x

        def _hidden(self):
            return 1

    profiler.init("key")
    assert Base().method(5) == 5
    Base()._hidden()
    assert names(messages) == ["rpc-start", "rpc-stop"]
    assert messages[0]["info"]["a"] == 1
    assert messages[0]["info"]["function"]["args"].endswith("5)")


def test_traced_meta_trace_private_and_subclasses(messages):
    class Base(metaclass=profiler.TracedMeta):
        __trace_args__ = {"name": "rpc", "trace_private": True}

        def _hidden(self):
            return 1

    class Child(Base):
        def extra(self):
            return 2

    profiler.init("key")
    assert Child()._hidden() == 1
    assert Child().extra() == 2
    assert traced_names(messages) == ["_hidden", "extra"]


def test_traced_meta_requires_name():
    with pytest.raises(TypeError):
        class Bad(metaclass=profiler.TracedMeta):
            __trace_args__ = {"info": {}}

            def method(self):
                pass


# --- async def functions -----------------------------------------------------

def test_async_function_traced_around_the_await(messages):
    @profiler.trace("coro", hide_result=False)
    async def work(delay):
        with profiler.Trace("inside"):
            await asyncio.sleep(delay)
        return "done"

    async def main():
        profiler.init("key")
        return await work(0.02)

    assert asyncio.run(main()) == "done"
    assert names(messages) == ["coro-start", "inside-start", "inside-stop",
                               "coro-stop"]
    coro_start, inside_start, _, coro_stop = messages
    assert inside_start["parent_id"] == coro_start["trace_id"]
    assert coro_stop["info"]["function"]["result"] == "'done'"
    start = datetime.datetime.strptime(coro_start["timestamp"],
                                       "%Y-%m-%dT%H:%M:%S.%f")
    stop = datetime.datetime.strptime(coro_stop["timestamp"],
                                      "%Y-%m-%dT%H:%M:%S.%f")
    assert stop - start >= datetime.timedelta(milliseconds=15)


def test_async_function_exception(messages):
    @profiler.trace("coro")
    async def fails():
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    async def main():
        profiler.init("key")
        await fails()

    with pytest.raises(RuntimeError):
        asyncio.run(main())
    stop = by_name(messages, "coro-stop")
    assert stop["info"] == {"etype": "RuntimeError", "message": "async boom",
                            "host": socket.gethostname()}


def test_async_function_is_still_a_coroutine_function():
    import inspect

    @profiler.trace("coro")
    async def work():
        return 1

    assert inspect.iscoroutinefunction(work)
    assert asyncio.run(work()) == 1


# --- same structure as the real osprofiler -----------------------------------

def _run_scenario(mod):
    """The same traced code, written once, for osprofiler or stacktrail."""

    @mod.trace("func", info={"static": 1}, hide_result=False)
    def func(a, b=2):
        with mod.Trace("block", info={"k": "v"}):
            return a + b

    @mod.trace("err")
    def err():
        raise ValueError("nope")

    @mod.trace_cls("cls")
    class Obj:
        def method(self):
            return func(1, 3)  # args are recorded bound, so pass them so

    mod.init("key", base_id=BASE, parent_id=PARENT)
    mod.start("outer", info={"x": 1})
    Obj().method()
    try:
        err()
    except ValueError:
        pass
    mod.stop()
    mod.clean()


def _structure(messages):
    """Message structure with the random parts replaced by positions."""
    ids = {BASE: "BASE", PARENT: "PARENT"}
    for m in messages:
        if m["name"].endswith("-start"):
            ids.setdefault(m["trace_id"], "span%d" % len(ids))
    out = []
    for m in messages:
        info = dict(m["info"])
        assert info.pop("host")
        function = info.get("function")
        if function and "name" in function:
            info["function"] = dict(function,
                                    name=function["name"].rsplit(".", 1)[-1])
            if "args" in function:
                info["function"]["args"] = re.sub(
                    r" at 0x[0-9a-f]+", "", function["args"])
        out.append((m["name"], sorted(m), ids[m["base_id"]],
                    ids[m["parent_id"]], ids[m["trace_id"]], info))
        datetime.datetime.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%S.%f")
    return out


def test_same_messages_as_real_osprofiler():
    import osprofiler.notifier
    import osprofiler.profiler

    from stacktrail import notifier

    theirs, ours = [], []
    osprofiler.notifier.set(theirs.append)
    notifier.set(ours.append)
    _run_scenario(osprofiler.profiler)
    _run_scenario(profiler)
    assert len(ours) == len(theirs) == 10
    assert _structure(ours) == _structure(theirs)


def test_no_argument_formatting_when_no_trace_is_active(messages):
    formatted = []

    class Loud:
        def __repr__(self):
            formatted.append("repr")
            return "Loud()"

        __str__ = __repr__

    @profiler.trace("f", hide_result=False)
    def f(arg):
        return arg

    @profiler.trace("g")
    async def g(arg):
        return arg

    loud = Loud()

    async def main():  # loud is neither argument nor result of the task
        return await g(loud) is loud

    assert f(loud) is loud
    assert asyncio.run(main()) is True
    assert formatted == [] and messages == []
    profiler.init("key")
    f(loud)
    assert formatted  # formatted only once tracing is on


def test_info_that_is_not_a_dict_never_raises(messages):
    profiler.init("key")
    profiler.start("odd", info="plain text")
    profiler.stop(info=[1, 2, 3])
    start, stop = messages
    assert start["info"]["info"] == repr("plain text")
    assert stop["info"]["info"] == repr([1, 2, 3])


def test_an_unprintable_exception_still_propagates(messages):
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    @profiler.trace("calc")
    def fail():
        raise Unprintable()

    profiler.init("key")
    with pytest.raises(Unprintable):
        fail()
    assert messages[1]["info"]["message"] == "<unprintable Unprintable>"
