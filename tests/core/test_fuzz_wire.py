"""The wire parsers fuzzed (hypothesis, a few seconds each): they never
raise, whatever a peer sends, and what we send on is always valid for its
protocol."""

import base64
import json
import re

import webob
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import propagation
from stacktrail.common import settings
from stacktrail.common import signing

from tests.core.keys import K1

FUZZ = hsettings(max_examples=300, deadline=None, database=None)
STRICT_TRACEPARENT = re.compile(
    r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]\Z")

# Text near the grammar, and anything at all.
_tp_alphabet = st.sampled_from(
    list("0123456789abcdefABCDEF-xz .,\t\r\n\u00e9"))
_near_traceparent = st.one_of(
    st.builds(lambda v, t, s, f, rest: "%s-%s-%s-%s%s" % (v, t, s, f, rest),
              st.text("0123456789abcdef", min_size=1, max_size=3),
              st.text("0123456789abcdef", min_size=31, max_size=33),
              st.text("0123456789abcdef", min_size=15, max_size=17),
              st.text("0123456789abcdef", min_size=1, max_size=3),
              st.text(max_size=8)),
    st.text(_tp_alphabet, max_size=70))
_anything = st.one_of(st.none(), st.integers(), st.floats(), st.binary(),
                      st.text(), st.lists(st.text(max_size=5), max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(),
                                      max_size=2))
_member = st.builds(
    lambda k, v, ows: "%s%s=%s%s" % (ows, k, v, ows),
    st.text("abcz09_-*/@", min_size=1, max_size=12) |
    st.text(min_size=0, max_size=5),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
            max_size=12) | st.text(max_size=5),
    st.sampled_from(["", " ", "\t", " \t"]))
_near_tracestate = st.lists(_member | st.just(""), max_size=40).map(
    ",".join)


@FUZZ
@given(text=_near_traceparent | _anything)
def test_traceparent_parser_never_raises(text):
    fields = propagation.parse_traceparent_fields(text)
    if fields is not None:
        trace, span, flags = fields
        assert 0 < trace < 1 << 128 and span & ((1 << 64) - 1)
        assert flags in (0, 1, 2, 3)
        # what we send for it is strictly valid
        assert STRICT_TRACEPARENT.match(propagation.format_traceparent(
            trace, span, bool(flags & 1), bool(flags & 2)))


@FUZZ
@given(text=_near_tracestate | _anything)
def test_tracestate_cleaning_never_raises_and_is_valid(text):
    clean = propagation.clean_tracestate(text)
    if clean is not None:
        assert clean.isascii() and clean.isprintable()
        assert len(clean) <= 512
        members = clean.split(",")
        assert 0 < len(members) <= 32
        assert len({m.split("=", 1)[0] for m in members}) == len(members)
        assert propagation.clean_tracestate(clean) == clean  # a fixpoint


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
    st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) |
    st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=10)


@FUZZ
@given(packed=_anything | st.text(max_size=200), mac=_anything,
       keys=st.lists(_anything, max_size=3))
def test_signed_unpack_never_raises_on_garbage(packed, mac, keys):
    signing.unpack(packed, mac, keys)
    propagation.unpack_trace_info(packed, mac, keys)
    propagation.unpack_trace_info(packed, mac, keys, require_expiry=True)


@FUZZ
@given(data=_json | st.dictionaries(st.sampled_from(
    ["base_id", "parent_id", "exp"]), _json, max_size=3))
def test_validly_signed_anything_never_raises(data):
    packed = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    mac = signing.digest(packed, K1)
    found = propagation.unpack_trace_info(packed, mac, [K1])
    if found is not None:
        base_id, parent_id, key = found
        assert isinstance(base_id, str) and key == K1


def _decoded_as_osprofiler_does(packed):
    try:
        data = json.loads(base64.urlsafe_b64decode(packed.encode()))
    except (ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# JSON text as a client could pack it: blanks or a BOM around it, in any
# of the encodings json.loads reads from bytes.
_payloads = st.builds(
    lambda data, pad, encoding: (
        pad + json.dumps(data) + pad.strip("\ufeff")).encode(encoding),
    _json, st.sampled_from(["", " ", "\n\t", "\ufeff"]),
    st.sampled_from(["utf-8", "utf-16", "utf-32"]))
_packed = st.one_of(
    _payloads.map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    _payloads.map(lambda raw: base64.urlsafe_b64encode(raw).decode()
                  .rstrip("=")),
    st.binary(max_size=40).map(
        lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.text("abcdefXYZ0129-_=+/ {}", max_size=40))


@FUZZ
@given(packed=_packed)
def test_signed_payload_decodes_as_osprofiler_decodes_it(packed):
    # The same dict (or refusal) as osprofiler's signed_unpack makes of
    # the payload, whatever its encoding, padding or surrounding blanks.
    assert signing._decode(packed) == _decoded_as_osprofiler_does(packed)


def test_deeply_nested_signed_json_never_raises():
    for depth in (100, 1000, 1500):
        for text in ("[" * depth + "]" * depth,
                     '{"a":' * depth + "1" + "}" * depth):
            packed = base64.urlsafe_b64encode(text.encode()).decode()
            assert propagation.unpack_trace_info(
                packed, signing.digest(packed, K1), [K1]) is None


_header_names = st.sampled_from(["traceparent", "tracestate",
                                 "X-Trace-Info", "X-Trace-HMAC"])
_header_values = st.one_of(
    _near_traceparent, _near_tracestate,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff),
            max_size=200))


@FUZZ
@given(headers=st.dictionaries(_header_names, _header_values, max_size=4),
       trusted=st.booleans(), rate=st.sampled_from([0.0, 1.0]))
def test_wsgi_filter_never_fails_and_sends_only_valid_headers(
        headers, trusted, rate):
    live = settings.Settings(max_triggered=0, max_sampled=0)
    live.trust_traceparent = trusted
    live.sampling_rate = rate
    live.set_keys(K1)
    settings.current = live
    sent = []

    def app(environ, start_response):
        sent.append(propagation.outgoing_headers())
        start_response("200 OK", [])
        return [b"ok"]

    environ = webob.Request.blank("/").environ
    for name, value in headers.items():
        # what a WSGI server hands over: latin-1 text
        environ["HTTP_" + name.upper().replace("-", "_")] = \
            value.encode("utf-8", "surrogatepass").decode("latin-1")
    body = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)(
        environ, lambda *a: None)
    list(body)
    getattr(body, "close", lambda: None)()
    out, = sent
    assert STRICT_TRACEPARENT.match(out["traceparent"])
    for value in out.values():
        assert value.isascii() and value.isprintable()
    if "tracestate" in out:
        assert propagation.clean_tracestate(out["tracestate"]) == \
            out["tracestate"]
    assert profiler.get() is None
