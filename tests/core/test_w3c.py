"""W3C Trace Context level 2: each requirement of the recommendation this
library implements, through the parsers and through the WSGI filter.

The external conformance harness (github.com/w3c/trace-context, ``test/``)
runs against ``tools/w3c_service.py``; these tests pin the same behaviour
(and what the harness cannot see) inside the suite.
"""

import re

import pytest
import webob

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import ids
from stacktrail.common import propagation
from stacktrail.common import settings
from stacktrail.common import signing

from tests.core.keys import K1

TRACE = "12345678901234567890123456789012"
SPAN = "1234567890123456"
STRICT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")


def tp(flags="01", trace=TRACE, span=SPAN, version="00"):
    return "%s-%s-%s-%s" % (version, trace, span, flags)


def live(sampling_rate=0.0, trust=True, formats=("osprofiler", "w3c"),
         keys=None):
    new = settings.Settings(max_triggered=0, max_sampled=0)
    new.sampling_rate = sampling_rate
    new.trust_traceparent = trust
    new.propagation = tuple(formats)
    new.set_keys(keys)
    settings.current = new
    return new


class Calls:
    """A WSGI app that makes ``n`` outgoing calls: records their headers."""

    def __init__(self, n=1, generator=False):
        self.n = n
        self.generator = generator
        self.sent = []

    def call(self):
        self.sent.append(propagation.outgoing_headers())

    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if self.generator:
            def body():
                for _ in range(self.n):
                    self.call()
                    yield b"x"
            return body()
        for _ in range(self.n):
            self.call()
        return [b"ok"]


def serve(headers=None, n=1, keys=None, generator=False):
    """Headers of the calls made while serving one request."""
    app = Calls(n, generator)
    middleware = web.WsgiMiddleware(app, hmac_keys=keys, enabled=True)
    request = webob.Request.blank("/", headers=list((headers or {}).items())
                                  if isinstance(headers, dict)
                                  else headers or [])
    response = request.get_response(middleware)
    assert response.status_int == 200
    response.body  # iterate and close the body, as a server does
    return app.sent


def parent_of(sent):
    match = STRICT.match(sent["traceparent"])
    assert match, sent["traceparent"]
    trace, span, flags = match.groups()
    return trace, span, int(flags, 16)


# --- traceparent parsing -----------------------------------------------------

@pytest.mark.parametrize("text", [
    " " + tp(), "\t" + tp(), tp() + " ", tp() + "\t", "\t " + tp() + " \t"])
def test_optional_whitespace_around_traceparent(text):
    assert propagation.parse_traceparent_fields(text)[0] == int(TRACE, 16)


@pytest.mark.parametrize("text", [
    tp() + "\n", "\n" + tp(), tp() + "\r", tp().replace("-", " - ", 1),
    tp(flags="0."), tp(flags=".0"), tp(flags="001"), tp(flags="1"),
    tp(version="0."), tp(version="000"), tp(version="ff"),
    tp(trace="0" * 32), tp(span="0" * 16), tp(trace=TRACE + "3"),
    tp(span=SPAN[:-1]), tp() + "-future", tp() + ".",
    tp(version="cc") + ".what-the-future-will-be-like",
    tp() + "," + tp(),                    # two headers, combined
    tp(trace="4bf92f3577b34da6a3ce929d0e0e4736").upper(),
    tp(span="00f067aa0ba902B7"), "\u00e9" + tp(), tp() * 20,
])
def test_invalid_traceparent_ignored(text):
    assert propagation.parse_traceparent_fields(text) is None


@pytest.mark.parametrize("text", [
    tp(version="cc"), tp(version="cc") + "-what-the-future-will-be-like"])
def test_future_version_read_as_00(text):
    trace, span, flags = propagation.parse_traceparent_fields(text)
    assert (trace, span & ids.LOW64, flags) == (int(TRACE, 16),
                                                int(SPAN, 16), 1)


@pytest.mark.parametrize("flags,kept", [
    ("00", 0), ("01", 1), ("02", 2), ("03", 3), ("ff", 3), ("fc", 0),
    ("05", 1), ("06", 2)])
def test_unknown_flags_dropped(flags, kept):
    assert propagation.parse_traceparent_fields(tp(flags))[2] == kept


# --- tracestate parsing ------------------------------------------------------

@pytest.mark.parametrize("text,clean", [
    ("foo=1,bar=2", "foo=1,bar=2"),
    ("foo=1 \t,\t bar=2", "foo=1,bar=2"),
    (" foo=1", "foo=1"), ("\tfoo=1", "foo=1"), ("foo=1 ", "foo=1"),
    ("foo=1\t", "foo=1"), ("\t foo=1 \t", "foo=1"),
    ("foo=1,,bar=2", "foo=1,bar=2"), (",foo=1,", "foo=1"),
    ("foo=1, ,\t,bar=2", "foo=1,bar=2"),
    ("foo= 1", "foo= 1"),                 # leading spaces are the value's
    ("foo=a b c", "foo=a b c"),
    ("foo@=1,bar=2", "foo@=1,bar=2"), ("foo@@bar=1", "foo@@bar=1"),
    ("foo@bar@baz=1", "foo@bar@baz=1"), ("0foo=1", "0foo=1"),
    ("a_b-c*d/e=1", "a_b-c*d/e=1"),
    ("foo=1,foo=2", "foo=1"),             # a duplicate keeps its first
    ("foo=1,bar=2,foo=1", "foo=1,bar=2"),
    ("foo=" + "".join(chr(c) for c in range(0x20, 0x7f)
                      if chr(c) not in ",= "), None),
])
def test_tracestate_members(text, clean):
    if clean is None:
        clean = text
    assert propagation.clean_tracestate(text) == clean


@pytest.mark.parametrize("text", [
    "foo =1", "FOO=1", "foo.bar=1", "@foo=1,bar=2", "foo=bar=baz",
    "foo=,bar=3", "foo", "=1", "foo=1,bar", "foo=1\r\nx-evil: 1",
    "foo=1\n", "foo=\u00e9", "foo=\t1", "f\u00f6o=1", "foo=1;bar=2",
    "z" * 257 + "=1", "foo=" + "v" * 257, "foo=1 2,bar\x7f=1",
])
def test_invalid_tracestate_dropped_whole(text):
    assert propagation.clean_tracestate(text) is None


def test_tracestate_key_and_value_length_limits():
    for key in ("z" * 256, "t" * 241 + "@" + "v" * 14, "t" * 242 + "@v",
                "t@" + "v" * 15):
        assert propagation.clean_tracestate("foo=1," + key + "=1") == \
            "foo=1," + key + "=1"
    assert propagation.clean_tracestate("foo=" + "v" * 256) == \
        "foo=" + "v" * 256


def test_tracestate_member_limit():
    members = ["bar%02d=%02d" % (n, n) for n in range(1, 34)]
    assert propagation.clean_tracestate(",".join(members[:32])) == \
        ",".join(members[:32])
    assert propagation.clean_tracestate(",".join(members)) is None
    # empty members do not count
    assert propagation.clean_tracestate(",".join(members[:32]) + ",,, ")


def test_tracestate_truncated_to_512_by_whole_entries():
    long_one = "big=" + "x" * 200                  # over 128: goes first
    small = ["k%02d=%s" % (n, "v" * 30) for n in range(20)]
    text = ",".join([small[0], long_one] + small[1:])
    clean = propagation.clean_tracestate(text)
    assert len(clean) <= propagation.TRACESTATE_MAX_LENGTH
    assert "big=" not in clean
    kept = clean.split(",")
    assert kept == small[:len(kept)]             # then from the right
    assert len(",".join(small[:len(kept) + 1])) > 512
    # a value that fits is never cut
    assert propagation.clean_tracestate(",".join(small[:14])) == \
        ",".join(small[:14])


def test_empty_tracestate_not_sent():
    live()
    for state in ("", " ", ",", " , \t,"):
        sent, = serve({"traceparent": tp("00"), "tracestate": state})
        assert "tracestate" not in sent


def test_multiple_tracestate_headers_combined_in_order():
    live(sampling_rate=1.0)
    environ = webob.Request.blank("/").environ
    # what a WSGI server makes of three tracestate fields
    environ["HTTP_TRACEPARENT"] = tp("00")
    environ["HTTP_TRACESTATE"] = "foo=1,bar=2,rojo=1,congo=2,baz=3"
    app = Calls()
    web.WsgiMiddleware(app, enabled=True)(environ, lambda *a: None)
    assert app.sent[0]["tracestate"] == "foo=1,bar=2,rojo=1,congo=2,baz=3"


# --- mutation: traced requests -----------------------------------------------

@pytest.mark.parametrize("incoming,outgoing", [
    ("00", 0x01), ("01", 0x01), ("02", 0x03), ("03", 0x03), ("ff", 0x03)])
def test_traced_request_updates_parent_and_sampled_keeps_random(
        incoming, outgoing):
    live(sampling_rate=1.0)
    sent, = serve({"traceparent": tp(incoming), "tracestate": "foo=1"})
    trace, span, flags = parent_of(sent)
    assert trace == TRACE and span != SPAN
    assert flags == outgoing
    assert sent["tracestate"] == "foo=1"


def test_new_trace_sets_random_flag():
    live(sampling_rate=1.0)
    sent, = serve()
    trace, _, flags = parent_of(sent)
    assert flags == 0x03 and trace != TRACE
    assert "tracestate" not in sent          # no vendor entry of ours


def test_invalid_traceparent_restarts_and_drops_tracestate():
    live(sampling_rate=1.0)
    sent, = serve({"traceparent": tp(trace="0" * 32),
                   "tracestate": "foo=1"})
    assert parent_of(sent)[0] != "0" * 32
    assert "tracestate" not in sent


def test_tracestate_without_traceparent_discarded():
    for rate in (0.0, 1.0):
        live(sampling_rate=rate)
        sent, = serve({"tracestate": "foo=1"})
        assert "tracestate" not in sent


def test_signed_trigger_keeps_w3c_state_of_the_same_trace():
    live(keys=K1)
    base = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    packed, mac = signing.pack({"base_id": base, "parent_id": base}, K1)
    same = "00-%s-%s-02" % (base.replace("-", ""), SPAN)
    sent, = serve({"X-Trace-Info": packed, "X-Trace-HMAC": mac,
                   "traceparent": same, "tracestate": "foo=1"}, keys=K1)
    assert parent_of(sent)[2] == 0x03
    assert sent["tracestate"] == "foo=1"
    # another trace id: the W3C trace restarts, its tracestate is dropped
    sent, = serve({"X-Trace-Info": packed, "X-Trace-HMAC": mac,
                   "traceparent": tp("02"), "tracestate": "foo=1"}, keys=K1)
    trace, _, flags = parent_of(sent)
    assert trace == base.replace("-", "") and "tracestate" not in sent
    assert flags == 0x03     # a version 4 UUID: random


def test_random_flag_of_an_osprofiler_trace_id():
    live()
    profiler.init(K1, base_id="4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
    assert parent_of(propagation.outgoing_headers())[2] == 0x03
    profiler.init(K1, base_id="4bf92f35-77b3-1da6-a3ce-929d0e0e4736")
    assert parent_of(propagation.outgoing_headers())[2] == 0x01
    profiler.init(K1, base_id="not-a-uuid")
    assert parent_of(propagation.outgoing_headers())[2] == 0x01


# --- participating without tracing -------------------------------------------

def test_untraced_request_forwards_the_callers_context():
    live(trust=False)
    sent = serve({"traceparent": tp("01"), "tracestate": "foo=1,bar=2"},
                 n=3)
    spans = set()
    for one in sent:
        trace, span, flags = parent_of(one)
        assert trace == TRACE and span != SPAN
        assert flags == 0x00             # nothing recorded here
        assert one["tracestate"] == "foo=1,bar=2"
        assert "X-Trace-Info" not in one
        spans.add(span)
    assert len(spans) == 3


def test_untraced_request_keeps_the_random_flag():
    live(trust=False)
    sent, = serve({"traceparent": tp("03")})
    assert parent_of(sent)[2] == 0x02


def test_untraced_request_without_context_creates_one():
    live(trust=False)
    sent = serve(n=3)
    traces = {parent_of(s)[0] for s in sent}
    spans = {parent_of(s)[1] for s in sent}
    assert len(traces) == 1 and len(spans) == 3
    assert {parent_of(s)[2] for s in sent} == {0x02}
    other = serve(n=1)
    assert parent_of(other[0])[0] not in traces   # a new one per request


def test_untraced_invalid_traceparent_restarts():
    live(trust=False)
    sent, = serve({"traceparent": tp(span="0" * 16), "tracestate": "foo=1"})
    assert parent_of(sent)[0] != TRACE and "tracestate" not in sent


def test_untraced_generator_body_carries_the_context():
    live(trust=False)
    sent = serve({"traceparent": tp("01")}, n=2, generator=True)
    assert [parent_of(s)[0] for s in sent] == [TRACE, TRACE]


def test_no_context_outside_a_request_or_after_it():
    live(trust=False)
    serve({"traceparent": tp("01")})
    assert propagation.outgoing_headers() == {}
    assert web.get_trace_id_headers() == {}
    assert propagation.untraced.get() is None


def test_untraced_context_never_leaks_into_the_next_request():
    live(trust=False)
    app = Calls()
    middleware = web.WsgiMiddleware(app, enabled=True)
    for headers in ({"traceparent": tp("01")}, {}):
        webob.Request.blank("/", headers=headers).get_response(middleware)
    assert parent_of(app.sent[0])[0] == TRACE
    assert parent_of(app.sent[1])[0] != TRACE


def test_without_w3c_propagation_nothing_is_created():
    live(trust=False, formats=("osprofiler",))
    assert serve({"traceparent": tp("01")}) == [{}]
    assert serve() == [{}]
    live(sampling_rate=1.0, formats=("osprofiler",), keys=K1)
    sent, = serve({"traceparent": tp("01")})
    assert "traceparent" not in sent and "X-Trace-Info" in sent


def test_disabled_filter_does_not_participate():
    live(trust=False)
    app = Calls()
    middleware = web.WsgiMiddleware(app, enabled=False)
    webob.Request.blank("/", headers={"traceparent": tp()}).get_response(
        middleware)
    assert app.sent == [{}]


# --- what we send is always valid --------------------------------------------

def test_garbage_tracestate_on_a_profiler_is_never_sent():
    live()
    prof = profiler.init(K1)
    for state in ("foo=1\r\nSet-Cookie: x=1", "foo=\u00e9", "a=1\n"):
        prof.tracestate = state
        assert "tracestate" not in propagation.outgoing_headers()


@pytest.mark.parametrize("span_id", [
    "4bf92f35-77b3-4da6-0000-000000000000", 1 << 64, 0, "x"])
def test_traceparent_never_has_a_zero_span_id(span_id):
    text = propagation.format_traceparent(
        "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", span_id)
    assert propagation.parse_traceparent(text) is not None


def test_sampled_flag_follows_our_decision_not_the_callers():
    live(trust=False)                      # sampled caller, not traced here
    assert parent_of(serve({"traceparent": tp("01")})[0])[2] & 1 == 0
    live(sampling_rate=1.0, trust=False)   # unsampled caller, traced here
    assert parent_of(serve({"traceparent": tp("00")})[0])[2] & 1 == 1
