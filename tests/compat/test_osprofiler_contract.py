"""osprofiler compatibility as a tested contract.

Every scenario here uses only osprofiler 4.x's public API (``profiler``,
``notifier``, ``web``, ``opts``, ``initializer``, ``sqlalchemy``) and runs
against both the real osprofiler 4.4.0 and stacktrail's modules of the same
names; their outcomes must be equal.  Where README.rst ("Using it") lists a
deliberate difference, a ``test_difference_*`` test asserts both sides of
it, and ``test_readme_lists_every_difference`` checks that the README names
it.  The scenarios follow osprofiler's own unit tests
(``osprofiler/tests/unit``), driven through messages, real webob requests
and real oslo.config objects instead of mocks of internals.
"""

import asyncio
import copy
import datetime
import importlib
import os
import re
import socket
import uuid

import pytest
import webob
from oslo_config import cfg

from tests import state

pytest.importorskip("osprofiler")

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"
K1 = "Qm9vW2xL9mZ4tW7yK3nB6cF1"
K2 = "Zt5pX8cV2bN7mQ4wE1rT9yU3"
MODULES = ("profiler", "notifier", "web", "opts", "initializer",
           "sqlalchemy")
README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "README.rst")


class Lib:
    """One library's public modules, under osprofiler's names."""

    def __init__(self, name):
        self.name = name
        for module in MODULES:
            setattr(self, module,
                    importlib.import_module("%s.%s" % (name, module)))

    def capture(self):
        """Messages the library emits, copied as they are sent (osprofiler
        hands out dicts it changes afterwards)."""
        received = []
        self.notifier.set(
            lambda info, *a, **k: received.append(copy.deepcopy(info)))
        return received


def both(scenario):
    """(osprofiler's outcome, stacktrail's outcome) of ``scenario(lib)``."""
    outcomes = []
    for name in ("osprofiler", "stacktrail"):
        state.reset()
        outcomes.append(scenario(Lib(name)))
    state.reset()
    return outcomes


def same(scenario):
    theirs, ours = both(scenario)
    assert ours == theirs
    return ours


def new_conf():
    """A ConfigOpts with its own [profiler] groups.  osprofiler registers
    its module-level OptGroup objects, which hold the values and defaults:
    two confs given to its ``set_defaults`` share them (a default set on
    one shows on the other), so each conf here gets fresh groups first."""
    conf = cfg.ConfigOpts()
    for name in ("profiler", "profiler_otlp", "profiler_jaeger"):
        conf.register_group(cfg.OptGroup(name))
    return conf


def outcome(call):
    try:
        return ("returned", call())
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def structure(messages, known=((BASE, "BASE"), (PARENT, "PARENT"))):
    """Messages with ids replaced by their order of appearance, timestamps
    checked and dropped, the recorded host checked and dropped, object
    addresses removed from recorded reprs."""
    ids = dict(known)
    out = []
    for message in messages:
        for key in ("base_id", "parent_id", "trace_id"):
            ids.setdefault(message[key], "id%d" % len(ids))
        datetime.datetime.strptime(message["timestamp"],
                                   "%Y-%m-%dT%H:%M:%S.%f")
        info = copy.deepcopy(message.get("info") or {})
        assert info.pop("host") == socket.gethostname()
        function = info.get("function")
        if isinstance(function, dict):
            for key in ("args", "kwargs", "result"):
                if key in function:
                    function[key] = re.sub(r" at 0x[0-9a-f]+", "",
                                           function[key])
        out.append((message["name"], sorted(message), ids[message["base_id"]],
                    ids[message["parent_id"]], ids[message["trace_id"]],
                    info))
    return out


# --- profiler: init, get, clean, start, stop ---------------------------------

def test_nothing_before_init():
    def scenario(lib):
        messages = lib.capture()
        lib.profiler.clean()
        before = lib.profiler.get()
        lib.profiler.start("name")
        lib.profiler.stop()
        return before, messages
    assert same(scenario) == (None, [])


@pytest.mark.parametrize("base_id, parent_id", [(BASE, PARENT), ("1", "2"),
                                                (BASE, None)])
def test_init_get_and_ids(base_id, parent_id):
    def scenario(lib):
        prof = lib.profiler.init(K1, base_id=base_id, parent_id=parent_id)
        return (lib.profiler.get() is prof, prof.hmac_key,
                prof.get_base_id(), prof.get_id(), prof.get_parent_id())
    ours = same(scenario)
    assert ours[2:] == (base_id, parent_id or base_id, base_id)


def test_init_without_ids_makes_a_uuid_base():
    def scenario(lib):
        prof = lib.profiler.init(K1)
        base = prof.get_base_id()
        uuid.UUID(base)
        return prof.get_id() == base, prof.get_parent_id() == base
    assert same(scenario) == (True, True)


def test_clean():
    def scenario(lib):
        lib.profiler.init(K1)
        lib.profiler.clean()
        return lib.profiler.get()
    assert same(scenario) is None


def test_start_stop_nesting_messages():
    def scenario(lib):
        messages = lib.capture()
        prof = lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        lib.profiler.start("outer", info={"x": 1})
        outer = prof.get_id()
        lib.profiler.start("inner")
        inner_parent = prof.get_parent_id() == outer
        lib.profiler.stop(info={"rows": 3})
        prof.start("sibling", info={"y": 2})    # the profiler's own methods
        prof.stop()
        lib.profiler.stop()
        return structure(messages), inner_parent, prof.get_id()
    shape, inner_parent, last = same(scenario)
    assert inner_parent and last == PARENT
    assert [m[0] for m in shape] == ["outer-start", "inner-start",
                                     "inner-stop", "sibling-start",
                                     "sibling-stop", "outer-stop"]


def test_stray_stop_sends_nothing():
    def scenario(lib):
        messages = lib.capture()
        lib.profiler.init(K1)
        lib.profiler.stop()
        lib.profiler.start("a")
        lib.profiler.stop()
        lib.profiler.stop(info={"x": 1})
        return [m["name"] for m in messages]
    assert same(scenario) == ["a-start", "a-stop"]


def test_get_shorten_id():
    def scenario(lib):
        prof = lib.profiler.init(K1, base_id="1", parent_id="2")
        return (prof.get_shorten_id("4e3e0ec6-2938-40b1-8504-09eb1d4b0dee"),
                prof.get_shorten_id(42))
    assert same(scenario) == ("850409eb1d4b0dee", "2a")


# --- @trace ------------------------------------------------------------------

def _traced_functions(lib):
    trace = lib.profiler.trace

    @trace("function", info={"info": "some_info"})
    def traced_func(i):
        return i

    @trace("hide_args", hide_args=True)
    def hide_args_func(a, i=10):
        return (a, i)

    @trace("foo", hide_args=True)
    def fn_exc():
        raise ValueError()

    @trace("bar")
    def fn_exc_text(a):
        raise ValueError("bar %s" % a)

    @trace("hide_result", hide_result=False)
    def with_result_func(a, i=10):
        return (a, i)

    return traced_func, hide_args_func, fn_exc, fn_exc_text, with_result_func


def test_trace_decorator_messages():
    """osprofiler's TraceDecoratorTestCase, with every call written with
    all its arguments positional (recorded alike by both; see
    test_difference_arguments_recorded_as_bound)."""
    def scenario(lib):
        messages = lib.capture()
        plain, hidden, fails, fails_text, with_result = _traced_functions(lib)
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        results = [outcome(lambda: plain(1)),
                   outcome(lambda: hidden(1, 2)),
                   outcome(fails), outcome(lambda: fails_text(7)),
                   outcome(lambda: with_result(1, 2))]
        return results, structure(messages)
    results, shape = same(scenario)
    assert results[0] == ("returned", 1)
    assert results[2] == ("raised", ValueError, "")
    start = shape[0][5]
    assert start["info"] == "some_info"
    assert start["function"]["name"].endswith(
        "_traced_functions.<locals>.traced_func")
    assert (start["function"]["args"], start["function"]["kwargs"]) == \
        ("(1,)", "{}")
    assert shape[2][5] == {"function": {"name": shape[2][5]["function"][
        "name"]}}                                   # hide_args: name only
    assert shape[5][5] == {"etype": "ValueError", "message": ""}
    assert shape[7][5] == {"etype": "ValueError", "message": "bar 7"}
    assert shape[9][5] == {"function": {"result": "(1, 2)"}}


def test_trace_untraced_calls_send_nothing():
    def scenario(lib):
        messages = lib.capture()
        plain, _, fails, _, with_result = _traced_functions(lib)
        return (outcome(lambda: plain(5)), outcome(fails),
                outcome(lambda: with_result(1, i=3)), messages)
    assert same(scenario) == (("returned", 5), ("raised", ValueError, ""),
                              ("returned", (1, 3)), [])


def test_trace_metadata_and_multiple_trace():
    def scenario(lib):
        def documented(a, b=2):
            """Docs."""
            return a + b

        once = lib.profiler.trace("a")(documented)
        twice = lib.profiler.trace("b")(once)
        refused = outcome(lambda: lib.profiler.trace(
            "c", allow_multiple_trace=False)(twice))
        return (once.__name__, once.__qualname__, once.__doc__,
                once.__module__, once.__wrapped__ is documented,
                getattr(documented, "__traced__", None),
                getattr(once, "__traced__", None), refused[:2],
                twice(1), twice(1, b=3))
    ours = same(scenario)
    assert ours[5:8] == (1, 2, ("raised", ValueError))


# --- trace_cls ---------------------------------------------------------------

def _fake_classes(lib):
    class FakeTracedCls:
        def method1(self, a, b, c=10):
            return a + b + c

        def method2(self, d, e):
            return d - e

        def method3(self, g=10, h=20):
            return g * h

        def _method(self, i):
            return i

        @staticmethod
        def static_method(arg):
            return arg

        @classmethod
        def class_method(cls, arg):
            return arg

    def sub(**kwargs):
        return lib.profiler.trace_cls(**kwargs)(
            type("FakeTracedCls", (FakeTracedCls,), {}))
    return sub


def test_trace_cls_messages():
    def scenario(lib):
        messages = lib.capture()
        sub = _fake_classes(lib)
        with_info = sub(name="rpc", info={"a": 10})
        hide_args = sub(name="a", info={"b": 20}, hide_args=True)
        private = sub(name="rpc", trace_private=True)
        static = sub(name="rpc", trace_static_methods=True)
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        results = (with_info().method1(5, 15, 10), with_info().method3(5, 10),
                   hide_args().method1(5, 15, 20), hide_args()._method(10),
                   private()._method(5), with_info.static_method(25),
                   with_info.class_method("foo"), static.static_method(25),
                   static().static_method(26))
        return results, structure(messages)
    results, shape = same(scenario)
    assert results == (30, 50, 40, 10, 5, 25, "foo", 25, 26)
    names = [s[5].get("function", {}).get("name", "").rsplit(".", 1)[-1]
             for s in shape if s[0].endswith("-start")]
    assert names == ["method1", "method3", "method1", "_method",
                     "static_method", "static_method"]


def test_trace_cls_allow_multiple_trace():
    def scenario(lib):
        sub = _fake_classes(lib)
        traced = sub(name="rpc")
        return outcome(lambda: lib.profiler.trace_cls(
            "again", allow_multiple_trace=False)(traced))[:2]
    assert same(scenario) == ("raised", ValueError)


# --- TracedMeta --------------------------------------------------------------

def test_traced_meta():
    def scenario(lib):
        messages = lib.capture()

        class Base(metaclass=lib.profiler.TracedMeta):
            __trace_args__ = {"name": "rpc", "info": {"a": 10}}

            def method1(self, a, b, c=10):
                return a + b + c

            def _method(self, i):
                return i

        class HideArgs(Base):
            __trace_args__ = {"name": "a", "info": {"b": 20},
                              "hide_args": True}

            def method5(self, k, m):
                return k + m

        class Private(Base):
            __trace_args__ = {"name": "rpc", "trace_private": True}

            def _new_private_method(self, m):
                return 2 * m

        def no_name():
            class NoName(metaclass=lib.profiler.TracedMeta):
                def method(self):
                    pass

        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        results = (Base().method1(5, 15, 10), HideArgs()._method(10),
                   HideArgs().method5(5, 15),
                   Private()._new_private_method(5),
                   outcome(no_name)[:2])
        return results, structure(messages)
    results, shape = same(scenario)
    assert results == (30, 10, 20, 10, ("raised", TypeError))
    assert [s[0] for s in shape] == ["rpc-start", "rpc-stop", "a-start",
                                     "a-stop", "rpc-start", "rpc-stop"]


# --- Trace -------------------------------------------------------------------

def test_trace_context_manager():
    def scenario(lib):
        messages = lib.capture()
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        with lib.profiler.Trace("a", info={"a": 1}):
            with lib.profiler.Trace("b", info={"b": 1}):
                pass
        result = outcome(lambda: _raise_in_trace(lib, ValueError("bar")))
        return result[:2], structure(messages)
    result, shape = same(scenario)
    assert result == ("raised", ValueError)
    assert shape[-1][5] == {"etype": "ValueError", "message": "bar"}


def _raise_in_trace(lib, error):
    with lib.profiler.Trace("foo"):
        raise error


# --- notifier ----------------------------------------------------------------

def test_notifier_set_get_notify():
    def scenario(lib):
        seen = []

        def callback(info):
            seen.append(info)

        default = lib.notifier.get()
        default_call = default({"name": "x"})
        lib.notifier.set(callback)
        got = lib.notifier.get() is callback
        lib.notifier.notify(10)
        return callable(default), default_call, got, seen
    assert same(scenario) == (True, None, True, [10])


def test_notifier_create_passes_arguments_and_caches(monkeypatch):
    def scenario(lib):
        calls = []

        class Driver:
            def notify(self, info, context=None):
                pass

            def make_sink(self):   # stacktrail's drivers make a sink
                from stacktrail.common import sink
                return sink.NoopSink()

        base = importlib.import_module(
            "osprofiler.drivers.base" if lib.name == "osprofiler" else
            "stacktrail.drivers.base")

        def get_driver(*args, **kwargs):
            calls.append((args, kwargs))
            return Driver()
        monkeypatch.setattr(base, "get_driver", get_driver)
        first = lib.notifier.create("test://", 10, b=20)
        second = lib.notifier.create("test://", 10, b=20)
        return calls, callable(first), first is second
    assert same(scenario) == ([(("test://", 10), {"b": 20})], True, True)


def test_notifier_create_with_a_failing_driver_gives_a_no_op():
    def scenario(lib):
        made = lib.notifier.create("nosuchdriver://host")
        return callable(made), made({"name": "x"})
    assert same(scenario) == (True, None)


# --- web: headers ------------------------------------------------------------

def test_get_trace_id_headers_without_a_trace():
    def scenario(lib):
        return lib.web.get_trace_id_headers()
    assert same(scenario) == {}


def test_get_trace_id_headers_signed_alike():
    from osprofiler import _utils

    def scenario(lib):
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        headers = lib.web.get_trace_id_headers()
        info, mac = headers["X-Trace-Info"], headers["X-Trace-HMAC"]
        return (info, mac,
                _utils.signed_unpack(info, mac, [K1]),
                (lib.web.X_TRACE_INFO, lib.web.X_TRACE_HMAC))
    ours = same(scenario)
    assert ours[2] == {"base_id": BASE, "parent_id": PARENT, "hmac_key": K1}
    assert ours[3] == ("X-Trace-Info", "X-Trace-HMAC")


def test_web_enable_disable():
    def scenario(lib):
        states = []
        lib.web.disable()
        states.append(lib.web._ENABLED)
        lib.web.enable("%s,%s" % (K1, K2))
        states.append((lib.web._ENABLED, list(lib.web._HMAC_KEYS)))
        lib.web.enable()
        states.append((lib.web._ENABLED, list(lib.web._HMAC_KEYS)))
        return states
    assert same(scenario) == [False, (True, [K1, K2]), (True, [])]


# --- web: the middleware -----------------------------------------------------

def _app(lib, seen):
    def app(environ, start_response):
        prof = lib.profiler.get()
        seen.append(prof and (prof.hmac_key, prof.get_base_id(),
                              prof.get_parent_id()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"yeah!"]
    return app


def _headers(key=K1, data=None, mac=None):
    from osprofiler import _utils
    packed, signature = _utils.signed_pack(
        data if data is not None else {"base_id": BASE, "parent_id": PARENT},
        key)
    headers = {"a": "1", "X-Trace-Info": packed.decode()}
    if mac is not False:
        headers["X-Trace-HMAC"] = mac or signature
    return headers


def test_factory():
    def scenario(lib):
        app = object()
        filter_ = lib.web.WsgiMiddleware.factory(None, enabled=True,
                                                 hmac_keys=K1)
        wsgi = filter_(app)
        return (wsgi.application is app, wsgi.name, wsgi.enabled,
                list(wsgi.hmac_keys))
    assert same(scenario) == (True, "wsgi", True, [K1])


MIDDLEWARE_CASES = {
    "disabled": (dict(enabled=False), _headers, None),
    "no trace": (dict(), lambda: {"a": "1"}, None),
    "garbage headers": (dict(), lambda: {"X-Trace-Info": "abbababababa",
                                         "X-Trace-HMAC": "abbababababa"},
                        None),
    "no hmac": (dict(), lambda: _headers(mac=False), None),
    "invalid hmac": (dict(), lambda: _headers(mac="not valid hmac"), None),
    "trace info a list": (dict(), lambda: _headers(
        data=[{"base_id": BASE}, {"parent_id": PARENT}]), None),
    "unknown key": (dict(), lambda: _headers(key=K2), None),
    "valid": (dict(), _headers, K1),
    "key passthrough": (dict(hmac_keys="%s,%s" % (K2, K1)), _headers, K1),
    "key passthrough 2": (dict(hmac_keys="%s,%s" % (K1, K2)),
                          lambda: _headers(key=K2), K2),
}


@pytest.mark.parametrize("form", ["request", "wsgi"])
@pytest.mark.parametrize("case", sorted(MIDDLEWARE_CASES))
def test_middleware(case, form):
    options, headers, traced_with = MIDDLEWARE_CASES[case]

    def scenario(lib):
        messages = lib.capture()
        seen = []
        kwargs = dict(dict(hmac_keys=K1, enabled=True), **options)
        middleware = lib.web.WsgiMiddleware(_app(lib, seen), **kwargs)
        request = webob.Request.blank("/path?query=1", headers=headers())
        if form == "request":     # osprofiler's is a webob.dec.wsgify
            response = middleware(request)
        else:
            response = request.get_response(middleware)
        return ((type(response), response.status, response.body), seen,
                [m["name"] for m in messages], lib.profiler.get())
    ours = same(scenario)
    assert ours[0] == (webob.Response, "200 OK", b"yeah!")
    if traced_with:
        assert ours[1] == [(traced_with, BASE, PARENT)]
        assert ours[2] == ["wsgi-start", "wsgi-stop"]
    else:
        assert ours[1:3] == ([None], [])
    assert ours[3] is None


@pytest.mark.parametrize("switch", ["disable", "enable"])
def test_middleware_process_switch(switch):
    def scenario(lib):
        seen = []
        if switch == "disable":
            lib.web.disable()
            middleware = lib.web.WsgiMiddleware(_app(lib, seen), K1,
                                                enabled=True)
            headers = _headers()
        else:
            lib.web.enable("%s,%s" % (K1, K2))
            middleware = lib.web.WsgiMiddleware(_app(lib, seen), enabled=True)
            headers = _headers(key=K2)
        middleware(webob.Request.blank("/", headers=headers))
        return seen
    expected = [None] if switch == "disable" else [(K2, BASE, PARENT)]
    assert same(scenario) == expected


def test_middleware_request_info_common_fields():
    def scenario(lib):
        messages = lib.capture()
        middleware = lib.web.WsgiMiddleware(_app(lib, []), K1, enabled=True)
        middleware(webob.Request.blank("/v2/queues?limit=5&marker=m",
                                       headers=_headers(),
                                       POST={"x": "1"}))
        request = messages[0]["info"]["request"]
        return {k: request[k] for k in ("path", "query", "method", "scheme")}
    assert same(scenario) == {"path": "/v2/queues",
                              "query": "limit=5&marker=m", "method": "POST",
                              "scheme": "http"}


# --- opts --------------------------------------------------------------------

def test_opts_defaults_and_readers():
    def scenario(lib):
        conf = new_conf()
        lib.opts.set_defaults(conf)
        conf([])
        return (conf.profiler.enabled, conf.profiler.trace_sqlalchemy,
                conf.profiler.connection_string, conf.profiler.socket_timeout,
                conf.profiler.sentinel_service_name,
                conf.profiler.filter_error_trace, conf.profiler.trace_requests,
                lib.opts.is_trace_enabled(conf),
                lib.opts.is_db_trace_enabled(conf))
    assert same(scenario) == (False, False, "messaging://", 0.1, "mymaster",
                              False, False, False, False)


def test_opts_set_defaults_overrides():
    def scenario(lib):
        conf = new_conf()
        lib.opts.set_defaults(conf, enabled=True, trace_sqlalchemy=True,
                              hmac_keys="MY_KEY",
                              connection_string="redis://h:6379",
                              es_doc_type="d", es_scroll_time="1m",
                              es_scroll_size=5, socket_timeout=2.0,
                              sentinel_service_name="m2")
        conf([])
        group = conf.profiler
        return (group.enabled, group.trace_sqlalchemy, group.hmac_keys,
                group.connection_string, group.es_doc_type,
                group.es_scroll_time, group.es_scroll_size,
                group.socket_timeout, group.sentinel_service_name,
                lib.opts.is_trace_enabled(conf),
                lib.opts.is_db_trace_enabled(conf))
    assert same(scenario) == (True, True, "MY_KEY", "redis://h:6379", "d",
                              "1m", 5, 2.0, "m2", True, True)


@pytest.mark.parametrize("enabled", [False, True])
def test_opts_enable_disable_web_trace(enabled, monkeypatch):
    def scenario(lib):
        calls = []
        monkeypatch.setattr(lib.web, "enable",
                            lambda *a: calls.append(("enable",) + a))
        monkeypatch.setattr(lib.web, "disable",
                            lambda *a: calls.append(("disable",) + a))
        conf = new_conf()
        lib.opts.set_defaults(conf, enabled=enabled, hmac_keys="MY_KEY")
        conf([])
        lib.opts.enable_web_trace(conf)
        lib.opts.disable_web_trace(conf)
        return calls
    expected = [("enable", "MY_KEY"), ("disable",)] if enabled else []
    assert same(scenario) == expected


def test_opts_list_opts_profiler_group():
    def scenario(lib):
        groups = {getattr(group, "name", group): opts
                  for group, opts in lib.opts.list_opts()}
        return groups
    theirs, ours = both(scenario)
    for name, options in theirs.items():
        if name in ours:
            assert {o.name for o in options} <= {o.name for o in ours[name]}
    assert "profiler" in ours and "profiler_otlp" in ours


# --- initializer -------------------------------------------------------------

def test_init_from_conf(monkeypatch):
    def scenario(lib):
        calls = []
        sink = object()

        def create(*args, **kwargs):
            calls.append(("create", args, kwargs))
            return sink
        monkeypatch.setattr(lib.notifier, "create", create)
        monkeypatch.setattr(lib.notifier, "set",
                            lambda n: calls.append(("set", n is sink)))
        monkeypatch.setattr(lib.web, "enable",
                            lambda keys=None: calls.append(("enable", keys)))
        conf = new_conf()
        lib.opts.set_defaults(conf, enabled=True, hmac_keys=K1,
                              connection_string="noop://")
        conf([])
        context = {"user": "u"}
        lib.initializer.init_from_conf(conf, context, "my-project",
                                       "my-service", "my-host")
        return [c if c[0] != "create" else
                (c[0], c[1], {k: v for k, v in c[2].items() if k != "conf"},
                 c[2].get("conf") is conf) for c in calls]
    assert same(scenario) == [
        ("create", ("noop://",), {"context": {"user": "u"},
                                  "project": "my-project",
                                  "service": "my-service",
                                  "host": "my-host"}, True),
        ("set", True), ("enable", K1)]


# --- sqlalchemy --------------------------------------------------------------

def _engine():
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    return sqlalchemy, engine


def _sql_scenario(lib, hide_result=True, session=False):
    sqlalchemy, engine = _engine()
    messages = lib.capture()
    if session:
        from sqlalchemy import orm
        with lib.sqlalchemy.wrap_session(sqlalchemy,
                                         orm.Session(engine)) as s:
            lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
            s.execute(sqlalchemy.text("SELECT x FROM t"))
    else:
        lib.sqlalchemy.add_tracing(sqlalchemy, engine, "db",
                                   hide_result=hide_result)
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT x FROM t"))
            try:
                conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
            except sqlalchemy.exc.IntegrityError:
                pass
    engine.dispose()
    lib.profiler.clean()
    return structure(messages)


def _common_db(shape):
    """What both record for SQL: names, ids, statement, result, errors."""
    out = []
    for name, keys, base, parent, trace, info in shape:
        db = dict(info.get("db") or {})
        db.pop("params", None)       # osprofiler's: always recorded
        db.pop("system", None)       # stacktrail's: the dialect
        db.pop("sqlstate", None)     # stacktrail's: SQLSTATE / error name
        out.append((name, keys, base, parent, trace,
                    dict(info, db=db) if "db" in info else info))
    return out


def test_sqlalchemy_add_tracing():
    theirs, ours = both(lambda lib: _common_db(_sql_scenario(lib)))
    assert ours == theirs
    assert [m[0] for m in ours] == ["db-start", "db-stop", "db-start",
                                    "db-stop"]
    assert ours[0][5]["db"]["statement"] == "SELECT x FROM t"
    assert ours[3][5]["etype"] == "sqlite3.IntegrityError"
    assert ours[3][5]["message"] == "UNIQUE constraint failed: t.x"


def test_sqlalchemy_wrap_session():
    theirs, ours = both(lambda lib: _common_db(_sql_scenario(
        lib, session=True)))
    assert ours == theirs
    assert [m[0] for m in ours] == ["db-start", "db-stop"]


def test_sqlalchemy_disable_enable():
    def scenario(lib):
        sqlalchemy, engine = _engine()
        messages = lib.capture()
        lib.sqlalchemy.disable()
        lib.sqlalchemy.add_tracing(sqlalchemy, engine, "db")
        lib.sqlalchemy.enable()
        lib.profiler.init(K1)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT x FROM t"))
        engine.dispose()
        return messages
    assert same(scenario) == []


# --- the deliberate differences (README.rst, "Using it") ---------------------

# Each difference and the words README.rst uses for it.
DIFFERENCES = {
    "default keys": "no default ``hmac_keys``",
    "weak keys": "weak keys",
    "traceparent": "``traceparent``",
    "arguments": "bound to the signature",
    "call unchanged": "own parameter list",
    "failing hooks": "never fails the call",
    "descriptors": "stay descriptors",
    "coroutines": "coroutine function",
    "info dict": "never changed or shared",
    "second init": "a second ``init()`` starts a new trace",
    "exceptions": "``str(exception)``",
    "base exceptions": "``BaseException``",
    "sql": "SQL parameters",
    "paste enabled": "``enabled = false``",
    "wsgi info": "the response status",
    "wsgi span": "after the body",
    "init_from_conf": "``init_from_conf`` with ``enabled = false``",
    "list_opts": "``profiler_jaeger``",
    "notifier": "``notifier.create``",
    "context": "``contextvars``",
}


def test_readme_lists_every_difference():
    with open(README) as f:
        text = " ".join(f.read().split())
    start = text.index("except for these deliberate differences")
    section = text[start:text.index("A service gets everything", start)]
    missing = [name for name, words in DIFFERENCES.items()
               if " ".join(words.split()) not in section]
    assert not missing


def test_difference_default_and_weak_keys():
    """osprofiler's default hmac_keys is SECRET_KEY, which anyone can sign
    with; stacktrail has none and refuses weak keys (such as SECRET_KEY)
    for triggered tracing unless allow_insecure_hmac_keys."""
    def defaults(lib):
        conf = new_conf()
        lib.opts.set_defaults(conf)
        conf([])
        return conf.profiler.hmac_keys
    assert both(defaults) == ["SECRET_KEY", None]

    def weak(lib):
        seen = []
        middleware = lib.web.WsgiMiddleware(_app(lib, seen), "SECRET_KEY",
                                            enabled=True)
        middleware(webob.Request.blank("/", headers=_headers("SECRET_KEY")))
        return [s and s[0] for s in seen], list(middleware.hmac_keys)
    assert both(weak) == [(["SECRET_KEY"], ["SECRET_KEY"]), ([None], [])]


def test_difference_traceparent_header():
    def scenario(lib):
        lib.profiler.init(K1, base_id=BASE, parent_id=PARENT)
        with_key = lib.web.get_trace_id_headers()
        lib.profiler.init(None, base_id=BASE, parent_id=PARENT)
        lib.profiler.clean()
        lib.profiler.init(None, base_id=BASE, parent_id=PARENT)
        return sorted(with_key), sorted(lib.web.get_trace_id_headers())
    theirs, ours = both(scenario)
    assert theirs == (["X-Trace-HMAC", "X-Trace-Info"], [])
    assert ours == (["X-Trace-HMAC", "X-Trace-Info", "traceparent"],
                    ["traceparent"])


def test_difference_arguments_recorded_as_bound():
    def scenario(lib):
        messages = lib.capture()

        @lib.profiler.trace("f")
        def f(a, b=2, *rest, c=3, **extra):
            return a

        lib.profiler.init(K1)
        f(1)
        f(a=1, b=5, c=4, d=6)
        return [(m["info"]["function"]["args"],
                 m["info"]["function"]["kwargs"])
                for m in messages if m["name"] == "f-start"]
    theirs, ours = both(scenario)
    assert theirs == [("(1,)", "{}"),
                      ("()", str({"a": 1, "b": 5, "c": 4, "d": 6}))]
    assert ours == [("(1, 2)", str({"c": 3})),
                    ("(1, 5)", str({"c": 4, "d": 6}))]


def test_difference_call_never_changed():
    """osprofiler's wrapper takes (*args, **kwargs): calls pass, but a bad
    call fails inside it; stacktrail's has the function's own parameters.
    Both pass calls through unchanged; the wrapper's signature differs."""
    import inspect

    def scenario(lib):
        def f(a, b=2, *, c):
            return (a, b, c)
        traced = lib.profiler.trace("f")(f)
        return (str(inspect.signature(traced, follow_wrapped=False)),
                traced(1, c=3), outcome(lambda: traced(1, 2, 3))[:2])
    theirs, ours = both(scenario)
    assert theirs[0].startswith("(*args") and "**kwargs" in theirs[0]
    assert theirs[1:] == ((1, 2, 3), ("raised", TypeError))
    assert ours == ("(a, b=2, *, c)", (1, 2, 3), ("raised", TypeError))


def test_difference_descriptors_stay_descriptors():
    def scenario(lib):
        class K:
            s = lib.profiler.trace("s")(staticmethod(lambda x: x))
            c = lib.profiler.trace("c")(classmethod(lambda cls, x: x))

        class M:
            @classmethod
            def c(cls, x):
                return x
        lib.profiler.trace_cls("m", trace_class_methods=True)(M)
        return (outcome(lambda: K().s(1))[:2], outcome(lambda: K.c(2))[:2],
                outcome(lambda: M.c(3))[:2])
    theirs, ours = both(scenario)
    assert ours == (("returned", 1), ("returned", 2), ("returned", 3))
    assert theirs == (("raised", TypeError),) * 3


def test_difference_coroutine_functions():
    import inspect

    def scenario(lib):
        messages = lib.capture()

        @lib.profiler.trace("coro")
        async def work():
            with lib.profiler.Trace("inside"):
                await asyncio.sleep(0)
            return 1

        async def main():
            lib.profiler.init(K1)
            return await work()

        result = asyncio.run(main())
        return (inspect.iscoroutinefunction(work), result,
                [m["name"] for m in messages])
    theirs, ours = both(scenario)
    assert theirs == (False, 1, ["coro-start", "coro-stop", "inside-start",
                                 "inside-stop"])
    assert ours == (True, 1, ["coro-start", "inside-start", "inside-stop",
                              "coro-stop"])


def test_difference_info_dicts_never_changed_or_shared():
    def scenario(lib):
        lib.capture()
        info = {"a": 1}
        decorator_info = {"static": 1}

        @lib.profiler.trace("f", info=decorator_info)
        def f(x):
            return x

        lib.profiler.init(K1)
        lib.profiler.start("x", info=info)
        lib.profiler.stop()
        f(1)
        return info, decorator_info, "host" in info
    theirs, ours = both(scenario)
    assert ours == ({"a": 1}, {"static": 1}, False)
    assert theirs[0] != {"a": 1} and theirs[2]


def test_difference_second_init_starts_afresh():
    def scenario(lib):
        first = lib.profiler.init(K1, base_id=BASE)
        second = lib.profiler.init(K2)
        return second is first, second.get_base_id() == BASE
    assert both(scenario) == [(True, True), (False, False)]


def test_difference_exception_messages():
    def scenario(lib):
        messages = lib.capture()
        lib.profiler.init(K1)
        for error in (KeyError("missing"), OSError(2, "No such file"),
                      RuntimeError()):
            try:
                _raise_in_trace(lib, error)
            except Exception:
                pass
        return [m["info"].get("message") for m in messages
                if m["name"] == "foo-stop"]
    theirs, ours = both(scenario)
    assert theirs == ["missing", 2, None]
    assert ours == ["'missing'", "[Errno 2] No such file", ""]


def test_difference_base_exceptions_recorded():
    def scenario(lib):
        messages = lib.capture()

        @lib.profiler.trace("f")
        def interrupted():
            raise KeyboardInterrupt()

        lib.profiler.init(K1)
        try:
            interrupted()
        except KeyboardInterrupt:
            pass
        return messages[-1]["info"].get("etype")
    assert both(scenario) == [None, "KeyboardInterrupt"]


def test_difference_sql_parameters_and_errors():
    def scenario(lib):
        sqlalchemy, engine = _engine()
        messages = lib.capture()
        lib.sqlalchemy.add_tracing(sqlalchemy, engine, "db")
        lib.profiler.init(K1)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT x FROM t WHERE x = :v"),
                         {"v": "S3cr3t"})
        engine.dispose()
        return repr(messages).count("S3cr3t"), \
            messages[0]["info"]["db"].get("system")
    assert both(scenario) == [(1, None), (0, "sqlite")]


def test_difference_a_failing_hook_never_fails_the_call():
    """add_tracing(hide_result=False): osprofiler reads ``cursor._rows``,
    which SQLite's cursor lacks, and the query raises; stacktrail records
    the row count instead."""
    def scenario(lib):
        return outcome(lambda: _sql_scenario(lib, hide_result=False))[:2]
    theirs, ours = both(scenario)
    assert theirs == ("raised", AttributeError) and ours[0] == "returned"


def test_difference_paste_enabled_false():
    def scenario(lib):
        seen = []
        middleware = lib.web.WsgiMiddleware(_app(lib, seen), K1,
                                            enabled="false")
        middleware(webob.Request.blank("/", headers=_headers()))
        off = lib.web.WsgiMiddleware(_app(lib, seen), K1, enabled=False)
        lib.web.enable(K1)
        off(webob.Request.blank("/", headers=_headers()))
        return [bool(s) for s in seen]
    assert both(scenario) == [[True, True], [False, False]]


def test_difference_wsgi_span_info():
    def scenario(lib):
        messages = lib.capture()
        middleware = lib.web.WsgiMiddleware(_app(lib, []), K1, enabled=True)
        middleware(webob.Request.blank("/p?token=abc&limit=1",
                                       headers=_headers()))
        start, stop = messages
        stop_info = dict(stop["info"])
        stop_info.pop("host")
        return start["info"]["request"]["query"], stop_info
    assert both(scenario) == [("token=abc&limit=1", {}),
                              ("token=***&limit=1",
                               {"response": {"status": 200}})]


def test_difference_wsgi_span_ends_after_the_body():
    def scenario(lib):
        messages = lib.capture()
        order = []

        def app(environ, start_response):
            start_response("200 OK", [])

            def body():
                order.append(len(messages))
                yield b"x"
            return body()
        middleware = lib.web.WsgiMiddleware(app, K1, enabled=True)
        webob.Request.blank("/", headers=_headers()).get_response(
            middleware).body
        return order
    # messages sent when the body was iterated: osprofiler already closed
    assert both(scenario) == [[2], [1]]


def test_difference_init_from_conf_enabled_false():
    def scenario(lib):
        conf = new_conf()
        lib.opts.set_defaults(conf, enabled=False, hmac_keys=K1,
                              connection_string="nosuchdriver://")
        conf([])
        lib.initializer.init_from_conf(conf, {}, "p", "s", "h")
        return lib.web._ENABLED
    assert both(scenario) == [True, False]


def test_difference_list_opts_groups():
    def scenario(lib):
        return sorted(getattr(group, "name", group)
                      for group, _ in lib.opts.list_opts())
    assert both(scenario) == [["profiler", "profiler_jaeger",
                               "profiler_otlp"],
                              ["profiler", "profiler_otlp"]]


def test_difference_notifier_create_returns_a_sink():
    def scenario(lib):
        made = lib.notifier.create("messaging://", project="p", service="s",
                                   host="h", conf=cfg.ConfigOpts())
        return type(made).__name__
    theirs, ours = both(scenario)
    assert theirs == "method" and ours == "BufferedSink"


def test_difference_context_per_task():
    """osprofiler's trace is thread-local, so asyncio tasks of one thread
    share it; stacktrail's lives in contextvars."""
    def scenario(lib):
        async def task(key):
            lib.profiler.init(key)
            await asyncio.sleep(0.01)
            return lib.profiler.get().hmac_key

        async def main():
            return await asyncio.gather(task(K1), task(K2))
        return asyncio.run(main())
    assert both(scenario) == [[K1, K1], [K1, K2]]
