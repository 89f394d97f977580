"""A call never changes because it is traced.

``@trace``, ``trace_cls`` and ``TracedMeta`` pass every call through exactly
as written, traced (a trace active) or not: the same result, the same
exception with the same message, raised at the same moment.  Decorators
that take other arguments than what they wrap (``functools.wraps`` around a
function that injects ``context`` or consumes ``timeout=``, or a
``__signature__`` that tells something else) included.  The property test
generates the callables; the tests before it name the cases that broke.
"""

import asyncio
import functools
import inspect

import pytest
import webob

from stacktrail import notifier
from stacktrail import profiler
from stacktrail import web
from stacktrail.common import signing

KEY = "Qm9vW2xL9mZ4tW7yK3nB6cF1"


def _both(call):
    """``call()``'s outcome untraced, then with a trace active."""
    outcomes = []
    for active in (False, True):
        profiler.clean()
        if active:
            profiler.init(KEY)
        try:
            outcomes.append(("returned", call()))
        except Exception as exc:
            outcomes.append(("raised", type(exc), str(exc)))
    profiler.clean()
    return outcomes


# --- decorators that change the arguments ------------------------------------

def injects_context(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn("ctx", *args, **kwargs)
    return wrapper


def adds_context(fn):
    """A method decorator injecting the ``context`` keyword."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        return fn(self, *args, context="ctx", **kwargs)
    return wrapper


def consumes_timeout(fn):
    @functools.wraps(fn)
    def wrapper(*args, timeout=None, **kwargs):
        return fn(*args, **kwargs), timeout
    return wrapper


def tells_the_inner_signature(fn):
    """A decorator that says (``__signature__``) it takes what it wraps,
    but injects the first argument itself."""
    def wrapper(*args, **kwargs):
        return fn("ctx", *args, **kwargs)
    functools.update_wrapper(wrapper, fn)
    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


def test_decorated_functions_called_as_written(messages):
    @injects_context
    def get(context, volume_id, read_deleted="no"):
        return (context, volume_id, read_deleted)

    @consumes_timeout
    def fetch(url):
        return url

    @tells_the_inner_signature
    def lookup(context, name):
        return (context, name)

    cases = [(get, lambda f: f("v1")), (get, lambda f: f("v1", "yes")),
             (get, lambda f: f(volume_id="v1")),
             (fetch, lambda f: f("u", timeout=3)), (fetch, lambda f: f("u")),
             (lookup, lambda f: f("n")), (lookup, lambda f: f(name="n")),
             (lookup, lambda f: f())]
    for fn, call in cases:
        expected = _both(lambda: call(fn))
        traced = profiler.trace("x")(fn)
        assert _both(lambda: call(traced)) == expected
    assert expected[0][0] == "raised"   # lookup() lacks name: as untraced
    assert len(messages) == 2 * (len(cases) - 1) + 2


def test_trace_cls_and_traced_meta_with_such_decorators():
    class Manager:
        @adds_context
        def create(self, name, size=1, *, context):
            return (context, name, size)

        @consumes_timeout
        def wait(self, ident):
            return ident

    def calls(obj):
        return [obj.create("n"), obj.create("n", size=2), obj.wait(1),
                obj.wait(1, timeout=5)]

    expected = _both(lambda: calls(Manager()))
    Traced = profiler.trace_cls("rpc")(type("Manager", (Manager,), {}))
    assert _both(lambda: calls(Traced())) == expected

    Meta = profiler.TracedMeta("Manager", (), {
        "__trace_args__": {"name": "rpc"},
        "create": Manager.__dict__["create"],
        "wait": Manager.__dict__["wait"]})
    assert _both(lambda: calls(Meta())) == expected


def test_descriptors_given_to_trace_stay_descriptors(messages):
    class Plain:
        def _v(self):
            return 1

        @staticmethod
        def s(x):
            return x

        @classmethod
        def c(cls, x):
            return (cls.__name__, x)

        p = property(_v)

    class Traced:
        def _v(self):
            return 1

        s = profiler.trace("x")(staticmethod(lambda x: x))
        c = profiler.trace("x")(classmethod(
            lambda cls, x: (cls.__name__, x)))
        p = profiler.trace("x")(property(_v))

    for name in ("Plain", "Traced"):
        klass = locals()[name]
        assert _both(lambda: (klass.s(1), klass().s(2), klass.c(3)[1],
                              klass().c(4)[1], klass().p)) == \
            [("returned", (1, 2, 3, 4, 1))] * 2
    assert len(messages) == 10   # five spans, traced once each


def test_trace_cls_on_an_instance_with_class_and_static_methods():
    class Service:
        @classmethod
        def klass(cls, x):
            return (cls.__name__, x)

        @staticmethod
        def static(x):
            return x

        def method(self, x):
            return x

    obj = profiler.trace_cls("svc", trace_class_methods=True,
                             trace_static_methods=True)(Service())
    assert _both(lambda: (obj.klass(1), obj.static(2), obj.method(3))) == \
        [("returned", (("Service", 1), 2, 3))] * 2


def test_bad_arguments_raise_at_the_same_moment_for_coroutines():
    async def work(a, *, b):
        return (a, b)

    traced = profiler.trace("x")(work)
    for fn in (work, traced):
        with pytest.raises(TypeError) as info:
            fn(1)   # not awaited: binding fails at the call, as untraced
        assert str(info.value) == \
            "%s() missing 1 required keyword-only argument: 'b'" % (
                work.__qualname__)
    assert inspect.iscoroutinefunction(traced)
    assert asyncio.run(traced(1, b=2)) == (1, 2)


def test_unusual_names_and_reserved_parameters(messages):
    def odd(_st_fn, _st_current=2):
        return (_st_fn, _st_current)

    def named():
        return "ok"
    named.__name__ = "class"   # a keyword: no def can have it
    named.__qualname__ = "class"

    for fn, call in ((odd, lambda f: f(1)), (named, lambda f: f()),
                     (functools.partial(odd, 5), lambda f: f()),
                     (len, lambda f: f("abc"))):
        traced = profiler.trace("x")(fn)
        assert _both(lambda: call(traced)) == _both(lambda: call(fn))


def test_the_resting_wrapper_of_a_method_packs_nothing():
    class API:
        def get(self, context, volume_id, read_deleted="no"):
            return volume_id

    traced = profiler.trace("db")(API.get)
    varargs = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
    assert traced.__code__.co_flags & varargs == 0
    bound = profiler.trace("db")(API().get)     # trace_cls on an instance
    assert bound.__code__.co_flags & varargs == 0
    assert bound("c", "v") == "v"


# --- WsgiMiddleware called with a webob Request (osprofiler's form) ----------

def _app(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain"),
                                   ("X-App", "1")])
    return [b"made ", b"it"]


def _signed_request(path="/v1/things?limit=2"):
    packed, mac = signing.pack({"base_id": "7253ca8c-33b3-4f84-b4f1-"
                                           "f5a4311ddfa4"}, KEY)
    return webob.Request.blank(path, headers={
        web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac})


def _response(response):
    return (type(response), response.status, response.body,
            response.headers.get("X-App"))


@pytest.mark.parametrize("enabled", [True, False])
def test_middleware_called_with_a_request_as_osprofilers(enabled, messages):
    osprofiler_web = pytest.importorskip("osprofiler.web")
    theirs = osprofiler_web.WsgiMiddleware(_app, KEY, enabled=enabled)
    ours = web.WsgiMiddleware(_app, KEY, enabled=enabled)
    expected = _response(theirs(_signed_request()))
    assert expected[:3] == (webob.Response, "201 Created", b"made it")
    assert _response(ours(_signed_request())) == expected
    names = [m["name"] for m in messages]
    assert names == (["wsgi-start", "wsgi-stop"] if enabled else [])
    if enabled:
        assert messages[1]["info"]["response"]["status"] == 201
    assert profiler.get() is None
    # and still a plain WSGI application
    assert _response(_signed_request().get_response(ours)) == expected


def test_middleware_request_form_records_a_raising_app(messages):
    def broken(environ, start_response):
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        web.WsgiMiddleware(broken, KEY, enabled=True)(_signed_request())
    assert [m["name"] for m in messages] == ["wsgi-start", "wsgi-stop"]
    assert messages[1]["info"]["etype"] == "RuntimeError"
    assert profiler.get() is None


def test_middleware_with_an_environ_but_no_start_response():
    with pytest.raises(TypeError):
        web.WsgiMiddleware(_app, KEY, enabled=True)(
            _signed_request().environ)


# --- the property: generated callables ---------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

VALUES = st.one_of(st.integers(-2, 2), st.sampled_from(["x", "boom"]))
SHAPES = ["function", "injects", "consumes", "tells", "method", "trace_cls",
          "traced_meta", "classmethod", "staticmethod", "coroutine",
          "generator"]


class Boom(Exception):
    pass


@st.composite
def signatures(draw):
    """Parameter groups: positional-only, positional-or-keyword, *args,
    keyword-only, **kwargs, with defaults."""
    posonly = ["a%d" % i for i in range(draw(st.integers(0, 2)))]
    positional = ["b%d" % i for i in range(draw(st.integers(0, 2)))]
    keyword = ["c%d" % i for i in range(draw(st.integers(0, 2)))]
    defaults = draw(st.integers(0, len(posonly) + len(positional)))
    kw_defaults = [draw(st.booleans()) for _ in keyword]
    return {"posonly": posonly, "positional": positional,
            "varargs": draw(st.booleans()), "keyword": keyword,
            "varkw": draw(st.booleans()), "defaults": defaults,
            "kw_defaults": kw_defaults}


def _source(spec, first=None, kind="def"):
    """A function whose result is every argument it got; it raises Boom
    when one of them is "boom"."""
    posonly = list(spec["posonly"])
    positional = list(spec["positional"])
    if first:   # self, cls or an injected context: always the first
        (posonly if posonly else positional).insert(0, first)
    ordered = posonly + positional
    params = []
    first_default = len(ordered) - spec["defaults"]
    for index, name in enumerate(ordered):
        default = index >= max(first_default, 1 if first else 0)
        params.append("%s=%r" % (name, "d_" + name) if default else name)
        if posonly and name == posonly[-1]:
            params.append("/")
    if spec["varargs"]:
        params.append("*rest")
    elif spec["keyword"]:
        params.append("*")
    for name, has_default in zip(spec["keyword"], spec["kw_defaults"]):
        params.append("%s=%r" % (name, "d_" + name) if has_default else name)
    if spec["varkw"]:
        params.append("**extra")
    names = [n for n in ordered if n not in ("self", "cls")] + \
        spec["keyword"] + (["rest"] if spec["varargs"] else []) + \
        (["extra"] if spec["varkw"] else [])
    values = "(%s)" % "".join("%s, " % n for n in names)
    body = ("    values = %s\n"
            "    if 'boom' in repr(values):\n"
            "        raise Boom(values)\n" % values)
    if kind == "generator":
        body += "    yield values\n    yield len(values)\n"
    else:
        body += "    return values\n"
    prefix = "async def" if kind == "async" else "def"
    return "%s f(%s):\n%s" % (prefix, ", ".join(params), body)


def _function(spec, first=None, kind="def"):
    namespace = {"Boom": Boom}
    exec(_source(spec, first, kind), namespace)
    return namespace["f"]


def _pair(shape, spec):
    """(untraced callable, traced callable) of one shape."""
    trace = profiler.trace("prop")
    if shape == "function":
        fn = _function(spec)
        return fn, trace(fn)
    if shape in ("injects", "consumes", "tells"):
        if shape == "consumes":
            fn = consumes_timeout(_function(spec))
        elif shape == "injects":
            fn = injects_context(_function(spec, "context"))
        else:
            fn = tells_the_inner_signature(_function(spec, "context"))
        return fn, trace(fn)
    if shape in ("coroutine", "generator"):
        fn = _function(spec, kind="async" if shape == "coroutine" else
                       "generator")
        return fn, trace(fn)
    if shape == "staticmethod":
        fn = _function(spec)
        plain = type("K", (), {"m": staticmethod(fn)})
        traced = type("K", (), {"m": trace(staticmethod(fn))})
        by_cls = profiler.trace_cls("prop", trace_static_methods=True)(
            type("K", (), {"m": staticmethod(fn)}))
        return _instance_and_class(plain, traced, by_cls)
    if shape == "classmethod":
        fn = _function(spec, "cls")
        plain = type("K", (), {"m": classmethod(fn)})
        traced = type("K", (), {"m": trace(classmethod(fn))})
        by_cls = profiler.trace_cls("prop", trace_class_methods=True)(
            type("K", (), {"m": classmethod(fn)}))
        return _instance_and_class(plain, traced, by_cls)
    fn = _function(spec, "self")
    plain = type("K", (), {"m": fn})
    if shape == "method":
        traced = type("K", (), {"m": trace(fn)})
    elif shape == "trace_cls":
        traced = profiler.trace_cls("prop")(type("K", (), {"m": fn}))
    else:
        traced = profiler.TracedMeta("K", (), {
            "__trace_args__": {"name": "prop"}, "m": fn})
    return (lambda *a, **k: plain().m(*a, **k),
            lambda *a, **k: traced().m(*a, **k))


def _instance_and_class(plain, *traced):
    def calls(klass):
        return lambda *a, **k: (_outcome(klass.m, a, k),
                                _outcome(klass().m, a, k))
    return calls(plain), [calls(t) for t in traced]


def _outcome(fn, args, kwargs):
    """What a call did: returned, raised at the call, raised later (a
    coroutine or generator), with the exception's type and message."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return ("call raised", type(exc), str(exc))
    try:
        if inspect.iscoroutine(result):
            try:
                result.send(None)
            except StopIteration as stop:
                return ("returned", stop.value)
            raise AssertionError("the coroutine suspended")
        if inspect.isgenerator(result):
            return ("yielded", list(result))
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("returned", result)


@hypothesis.settings(max_examples=400, deadline=None, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(shape=st.sampled_from(SHAPES), spec=signatures(),
                  args=st.lists(VALUES, max_size=5),
                  kwargs=st.dictionaries(st.sampled_from(
                      ["a0", "a1", "b0", "b1", "c0", "c1", "rest", "extra",
                       "self", "cls", "context", "timeout", "zz"]),
                      VALUES, max_size=4))
def test_traced_callables_behave_exactly_as_untraced(shape, spec, args,
                                                     kwargs):
    plain, traced = _pair(shape, spec)
    received = []
    notifier.set(received.append)
    expected = _outcome(plain, args, kwargs)
    for candidate in traced if isinstance(traced, list) else [traced]:
        for active in (False, True):
            profiler.clean()
            if active:
                prof = profiler.init(KEY)
            assert _outcome(candidate, args, kwargs) == expected, \
                (shape, _source(spec), args, kwargs, active)
            if active:   # every span closed, back at the root
                assert prof.get_id() == prof.get_base_id()
    profiler.clean()
    starts = [m for m in received if m["name"] == "prop-start"]
    assert len(starts) * 2 == len(received)
