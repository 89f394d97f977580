"""The trace on the wire: osprofiler's signed headers (byte-compatible with
the real osprofiler), W3C Trace Context (interoperable with OpenTelemetry),
and the decisions that start a trace: signed header, trusted traceparent,
local sampling, under the rate limit."""

import hmac
import time
import uuid

import pytest
import webob
from oslo_config import cfg

from stacktrail import opts
from stacktrail import profiler
from stacktrail import web
from stacktrail.common import ids
from stacktrail.common import propagation
from stacktrail.common import sampling
from stacktrail.common import settings
from stacktrail.common import signing

from tests.core.keys import K1, K2, NEW, OLD, RETIRED

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"
GOLDEN_INFO = ("eyJiYXNlX2lkIjogIjcyNTNjYThjLTMzYjMtNGY4NC1iNGYxLWY1YTQzMTFk"
               "ZGZhNCIsICJwYXJlbnRfaWQiOiAiMDYzMjAzMjctMmMyYy00NWFlLTkyM2Et"
               "NTE1ZGU4OTAyNzZhIn0=")
GOLDEN_HMAC = "bfd45e0a7e8dcf04a73600009d5c8f712e15af69"
TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_HEX = "00f067aa0ba902b7"


def load_settings(**values):
    """Live settings from a real [profiler] group with these overrides."""
    conf = cfg.ConfigOpts()
    # A group object of this conf's own: stacktrail.opts registers its
    # module-level OptGroup, whose option table oslo.config shares between
    # every conf it is registered on (see test_opts: overrides leak).
    conf.register_group(cfg.OptGroup("profiler"))
    opts.register_opts(conf)
    conf(args=[], default_config_files=[])
    values.setdefault("enabled", True)
    for name, value in values.items():
        conf.set_override(name, value, group="profiler")
    return settings.load(conf)


class Recorder:
    """A WSGI app remembering the trace each request ran in."""

    def __init__(self):
        self.seen = []

    def __call__(self, environ, start_response):
        prof = profiler.get()
        self.seen.append(None if prof is None else {
            "base_id": prof.get_base_id(), "id": prof.get_id(),
            "hmac_key": prof.hmac_key,
            "headers": propagation.outgoing_headers()})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    @property
    def last(self):
        return self.seen[-1]


def request(app, headers=None, path="/"):
    response = webob.Request.blank(path, headers=headers or {}).get_response(
        app)
    assert response.status_int == 200
    return response


def middleware(hmac_keys=K1, **kwargs):
    app = Recorder()
    return app, web.WsgiMiddleware(app, hmac_keys=hmac_keys, enabled=True,
                                   **kwargs)


def signed(key, base_id=BASE, parent_id=PARENT):
    packed, mac = signing.pack({"base_id": base_id, "parent_id": parent_id},
                               key)
    return {web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac}


# --- osprofiler signed headers -----------------------------------------------

def test_golden_vector():
    assert signing.pack({"base_id": BASE, "parent_id": PARENT},
                        "SECRET_KEY") == (GOLDEN_INFO, GOLDEN_HMAC)
    profiler.init("SECRET_KEY", base_id=BASE, parent_id=PARENT)
    headers = web.get_trace_id_headers()
    assert headers[web.X_TRACE_INFO] == GOLDEN_INFO
    assert headers[web.X_TRACE_HMAC] == GOLDEN_HMAC
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC, ["SECRET_KEY"]) == (
        {"base_id": BASE, "parent_id": PARENT}, "SECRET_KEY")
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC, ["other"]) is None


def test_no_headers_without_a_trace():
    assert web.get_trace_id_headers() == {}
    assert propagation.outgoing_headers() == {}


def test_osprofiler_headers_accepted_by_our_middleware(messages):
    import osprofiler.profiler
    import osprofiler.web

    theirs = osprofiler.profiler.init(K1, base_id=BASE, parent_id=PARENT)
    with osprofiler.profiler.Trace("client-call"):
        caller_span = theirs.get_id()
        headers = osprofiler.web.get_trace_id_headers()
    osprofiler.profiler.clean()

    app, mw = middleware(K1)
    request(mw, headers)
    assert app.last["base_id"] == BASE
    assert app.last["hmac_key"] == K1
    wsgi = [m for m in messages if m["name"] == "wsgi-start"][0]
    assert wsgi["base_id"] == BASE
    assert wsgi["parent_id"] == caller_span


def test_our_headers_accepted_by_osprofiler():
    import osprofiler._utils
    import osprofiler.notifier
    import osprofiler.profiler
    import osprofiler.web

    prof = profiler.init(K1)
    with profiler.Trace("client-call"):
        span = prof.get_id()
        headers = web.get_trace_id_headers()
    profiler.clean()

    assert osprofiler._utils.signed_unpack(
        headers[web.X_TRACE_INFO], headers[web.X_TRACE_HMAC], [K1]) == {
        "base_id": prof.get_base_id(), "parent_id": span, "hmac_key": K1}
    assert osprofiler._utils.signed_unpack(
        headers[web.X_TRACE_INFO], headers[web.X_TRACE_HMAC], [K2]) is None

    theirs = []
    osprofiler.notifier.set(theirs.append)
    seen = []

    def app(environ, start_response):
        p = osprofiler.profiler.get()
        seen.append(p and p.get_base_id())
        start_response("200 OK", [])
        return [b"ok"]

    theirs_mw = osprofiler.web.WsgiMiddleware(app, hmac_keys=K1,
                                              enabled=True)
    assert webob.Request.blank("/", headers=headers).get_response(
        theirs_mw).status_int == 200
    assert seen == [prof.get_base_id()]
    start = [m for m in theirs if m["name"] == "wsgi-start"][0]
    assert start["base_id"] == prof.get_base_id()
    assert start["parent_id"] == span


def test_key_rotation_the_validating_key_signs_downstream():
    import osprofiler._utils

    app, mw = middleware(NEW + "," + OLD)
    request(mw, signed(OLD))
    assert app.last["hmac_key"] == OLD
    out = app.last["headers"]
    assert osprofiler._utils.signed_unpack(
        out[web.X_TRACE_INFO], out[web.X_TRACE_HMAC], [OLD])
    assert osprofiler._utils.signed_unpack(
        out[web.X_TRACE_INFO], out[web.X_TRACE_HMAC], [NEW]) is None
    request(mw, signed(NEW))
    assert app.last["hmac_key"] == NEW
    request(mw, signed(RETIRED))
    assert app.last is None


def test_hmac_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(signing, "_VERIFIED", {})   # not verified before
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC,
                          ["wrong", "SECRET_KEY"]) is not None
    assert (signing.digest(GOLDEN_INFO, "SECRET_KEY"), GOLDEN_HMAC) in calls
    assert len(calls) == 2  # every key is compared the same way


def test_a_header_seen_before_is_not_verified_again(monkeypatch):
    monkeypatch.setattr(signing, "_VERIFIED", {})
    first = signing.unpack(GOLDEN_INFO, GOLDEN_HMAC, ["SECRET_KEY"])
    first[0]["base_id"] = "changed by the caller"
    real = signing.digest
    monkeypatch.setattr(signing, "digest", None)   # a hit computes nothing
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC, ["other", "SECRET_KEY"]) \
        == ({"base_id": BASE, "parent_id": PARENT}, "SECRET_KEY")
    monkeypatch.setattr(signing, "digest", real)
    # The key removed (SIGHUP): the pair it signed is refused at once.
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC, ["other"]) is None
    # A tampered signature never hits.
    assert signing.unpack(GOLDEN_INFO, GOLDEN_HMAC[:-1] + "0",
                          ["SECRET_KEY"]) is None


def test_rpc_trace_info_round_trip():
    load_settings(hmac_keys=K1)
    assert propagation.rpc_trace_info() is None
    prof = profiler.init(K1)
    with profiler.Trace("rpc-call"):
        info = propagation.rpc_trace_info()
        span = prof.get_id()
    assert info == {"hmac_key": K1, "base_id": prof.get_base_id(),
                    "parent_id": span}
    profiler.clean()
    assert propagation.start_from_trace_info(info)
    assert profiler.get().get_base_id() == prof.get_base_id()
    assert profiler.get().get_id() == span
    profiler.clean()
    assert not propagation.start_from_trace_info({"parent_id": span})
    assert not propagation.start_from_trace_info(None)
    assert profiler.get() is None


# --- W3C Trace Context -------------------------------------------------------

VALID = "00-%s-%s-01" % (TRACE_HEX, SPAN_HEX)


def test_parse_valid_traceparent():
    trace_id, span_id, sampled = propagation.parse_traceparent(VALID)
    assert trace_id == int(TRACE_HEX, 16)
    assert span_id & ids.LOW64 == int(SPAN_HEX, 16)
    assert sampled is True
    assert propagation.parse_traceparent(VALID[:-2] + "00")[2] is False


@pytest.mark.parametrize("text", [
    VALID.upper(),
    "00-%s-%s-01" % (TRACE_HEX.upper(), SPAN_HEX),
    "00-%s-%s-01" % (TRACE_HEX, SPAN_HEX.upper()),
    "00-%s-%s-01" % ("0" * 32, SPAN_HEX),
    "00-%s-%s-01" % (TRACE_HEX, "0" * 16),
    "ff-%s-%s-01" % (TRACE_HEX, SPAN_HEX),
    "00-%s-%s-01" % (TRACE_HEX[:-1], SPAN_HEX),
    "00-%s-%s-01" % (TRACE_HEX + "a", SPAN_HEX),
    "00-%s-%s-01" % (TRACE_HEX, SPAN_HEX[:-1]),
    "00-%s-%s-1" % (TRACE_HEX, SPAN_HEX),
    "0-%s-%s-01" % (TRACE_HEX, SPAN_HEX),
    VALID + "-extra",
    VALID + "x",
    "00_%s_%s_01" % (TRACE_HEX, SPAN_HEX),
    "zz-%s-%s-01" % (TRACE_HEX, SPAN_HEX),
    "",
    None,
    "garbage",
])
def test_parse_invalid_traceparent(text):
    assert propagation.parse_traceparent(text) is None


def test_future_version_may_append_fields():
    parsed = propagation.parse_traceparent(
        "cc-%s-%s-01-what-the-future-brings" % (TRACE_HEX, SPAN_HEX))
    assert parsed is not None and parsed[0] == int(TRACE_HEX, 16)


def test_id_mapping_both_ways():
    # base_id UUID <-> 32 hex trace id; span UUID low 64 bits = span id
    assert ids.trace_id_hex(BASE) == BASE.replace("-", "")
    assert ids.to_uuid(int(BASE.replace("-", ""), 16)) == BASE
    assert ids.span_id_hex(PARENT) == PARENT.replace("-", "")[16:]
    text = propagation.format_traceparent(BASE, PARENT)
    assert text == "00-%s-%s-01" % (BASE.replace("-", ""),
                                    PARENT.replace("-", "")[16:])
    trace_id, span_id, _ = propagation.parse_traceparent(text)
    assert ids.to_uuid(trace_id) == BASE
    assert ids.span_id_hex(span_id) == ids.span_id_hex(PARENT)


def test_outgoing_traceparent_matches_the_profiler():
    prof = profiler.init(K1)
    with profiler.Trace("call"):
        parent = propagation.outgoing_headers()["traceparent"]
        span = prof.get_id()
    version, trace_hex, span_hex, flags = parent.split("-")
    # sampled, and random: the trace id is a fresh version 4 UUID
    assert version == "00" and flags == "03"
    assert trace_hex == prof.get_base_id().replace("-", "")
    assert span_hex == span.replace("-", "")[16:]


def test_opentelemetry_extracts_our_traceparent():
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import \
        TraceContextTextMapPropagator

    prof = profiler.init(K1)
    with profiler.Trace("call"):
        headers = propagation.outgoing_headers()
        span = prof.get_id()
    ctx = TraceContextTextMapPropagator().extract(carrier=headers)
    span_context = trace.get_current_span(ctx).get_span_context()
    assert span_context.is_valid
    assert span_context.trace_id == int(prof.get_base_id().replace("-", ""),
                                        16)
    assert span_context.span_id == int(span.replace("-", "")[16:], 16)
    assert span_context.trace_flags.sampled


def _otel_headers(sampled=True, state=None):
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import \
        TraceContextTextMapPropagator

    span_context = trace.SpanContext(
        trace_id=int(TRACE_HEX, 16), span_id=int(SPAN_HEX, 16),
        is_remote=False,
        trace_flags=trace.TraceFlags(1 if sampled else 0),
        trace_state=trace.TraceState(state or []))
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
    headers = {}
    TraceContextTextMapPropagator().inject(headers, context=ctx)
    return headers


def test_trusted_opentelemetry_traceparent_continues_the_trace(messages):
    load_settings(trust_traceparent=True)
    app, mw = middleware(None)
    request(mw, _otel_headers())
    assert app.last["base_id"].replace("-", "") == TRACE_HEX
    wsgi = [m for m in messages if m["name"] == "wsgi-start"][0]
    assert wsgi["base_id"].replace("-", "") == TRACE_HEX
    assert ids.span_id_hex(wsgi["parent_id"]) == SPAN_HEX
    # downstream still speaks the same trace id
    assert app.last["headers"]["traceparent"].split("-")[1] == TRACE_HEX


def test_trusted_but_unsampled_traceparent_is_not_traced():
    load_settings(trust_traceparent=True)
    app, mw = middleware(None)
    request(mw, _otel_headers(sampled=False))
    assert app.last is None


def test_untrusted_traceparent_never_starts_a_trace():
    load_settings()  # trust_traceparent off by default, sampling_rate 0
    assert settings.current.trust_traceparent is False
    app, mw = middleware(None)
    for _ in range(5):
        request(mw, _otel_headers())
    assert app.seen == [None] * 5


def test_local_sampling_joins_the_callers_trace(messages):
    load_settings(sampling_rate=1.0)
    app, mw = middleware(None)
    request(mw, _otel_headers())
    assert app.last["base_id"].replace("-", "") == TRACE_HEX
    wsgi = [m for m in messages if m["name"] == "wsgi-start"][0]
    assert ids.span_id_hex(wsgi["parent_id"]) == SPAN_HEX


def test_tracestate_passed_through():
    load_settings(trust_traceparent=True)
    app, mw = middleware(None)
    request(mw, _otel_headers(state=[("vendor", "abc"), ("other", "x1")]))
    assert app.last["headers"]["tracestate"] == "vendor=abc,other=x1"


def test_malformed_tracestate_dropped():
    load_settings(trust_traceparent=True)
    app, mw = middleware(None)
    request(mw, {"traceparent": VALID, "tracestate": "no-equals-sign"})
    assert app.last is not None
    assert "tracestate" not in app.last["headers"]


@pytest.mark.parametrize("formats,expected", [
    (["osprofiler"], {web.X_TRACE_INFO, web.X_TRACE_HMAC}),
    (["w3c"], {"traceparent"}),
    (["osprofiler", "w3c"], {web.X_TRACE_INFO, web.X_TRACE_HMAC,
                             "traceparent"}),
])
def test_propagation_option(formats, expected):
    load_settings(propagation=formats)
    profiler.init(K1)
    assert set(propagation.outgoing_headers()) == expected


def test_both_formats_by_default():
    load_settings()
    profiler.init(K1)
    assert set(propagation.outgoing_headers()) == {
        web.X_TRACE_INFO, web.X_TRACE_HMAC, "traceparent"}


# --- sampling and the rate limit ---------------------------------------------

def test_rate_limit_on_signed_requests():
    load_settings(max_triggered_traces_per_second=2)
    app, mw = middleware(K1)
    for _ in range(10):
        request(mw, signed(K1, base_id=str(uuid.uuid4())))
    traced = [s for s in app.seen if s is not None]
    assert 2 <= len(traced) <= 3, len(traced)
    assert len(app.seen) == 10  # every request was served


def test_a_trace_let_in_is_not_cut_in_half_by_the_rate_limit():
    """The budget spent, new traces are refused, but the later requests of
    a trace already let in (a client's POST, then its GET) still join it,
    borrowing from the next second (never more than a second's worth),
    and those of a trace refused stay out even once the budget is back."""
    load_settings(max_triggered_traces_per_second=4)
    app, mw = middleware(K1)
    first, second, third, fourth, late = (str(uuid.uuid4())
                                          for _ in range(5))
    for base_id in (first, second, third, fourth, late):
        request(mw, signed(K1, base_id=base_id))
    assert [s and s["base_id"] for s in app.seen] == [
        first, second, third, fourth, None]
    del app.seen[:]
    time.sleep(0.3)   # budget for one more trace: not for the one refused
    for base_id in (late, first, second):
        request(mw, signed(K1, base_id=base_id))
    assert [s and s["base_id"] for s in app.seen] == [None, first, second]
    # The debt stops at one second of the rate: a replayed header does not
    # trace more than the budget, averaged over a couple of seconds.
    del app.seen[:]
    for _ in range(10):
        request(mw, signed(K1, base_id=first))
    assert 1 <= len([s for s in app.seen if s is not None]) <= 3, app.seen


def test_the_rate_limits_memory_of_traces_stays_bounded():
    """A flood of distinct traces never grows what the limiter keeps
    beyond its bound, and it keeps deciding."""
    limiter = sampling.RateLimiter(5)
    allowed = sum(limiter.allow(str(uuid.uuid4()))
                  for _ in range(sampling.FOLLOWED_MAX * 2 + 7))
    assert 5 <= allowed <= 6
    assert len(limiter._decided) <= sampling.FOLLOWED_MAX


def test_rate_limit_on_trusted_traceparent():
    load_settings(max_sampled_traces_per_second=2, trust_traceparent=True)
    app, mw = middleware(None)
    for _ in range(10):
        request(mw, {"traceparent": "00-%s-b7ad6b7169203331-01"
                     % uuid.uuid4().hex})
    assert 2 <= len([s for s in app.seen if s is not None]) <= 3


def test_rate_limit_zero_means_unlimited():
    load_settings(max_triggered_traces_per_second=0)
    app, mw = middleware(K1)
    for _ in range(20):
        request(mw, signed(K1))
    assert None not in app.seen


@pytest.mark.parametrize("rate,expected", [(0.0, False), (1.0, True)])
def test_sampling_rate(rate, expected):
    load_settings(sampling_rate=rate, hmac_keys=K1)
    app, mw = middleware(K1)
    for _ in range(20):
        request(mw)
    assert [s is not None for s in app.seen] == [expected] * 20
    if expected:
        # locally started traces are fresh and signed with the first key
        assert len({s["base_id"] for s in app.seen}) == 20
        assert {s["hmac_key"] for s in app.seen} == {K1}


def test_partial_sampling_rate():
    load_settings(sampling_rate=0.5)
    app, mw = middleware(None)
    for _ in range(200):
        request(mw)
    traced = len([s for s in app.seen if s is not None])
    assert 50 < traced < 150
