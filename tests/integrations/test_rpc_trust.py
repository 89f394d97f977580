"""The RPC request context: who may start a trace from it, expiring signed
tokens, the W3C keys it carries (traced or not), and an extract that never
raises.  The context dicts are built and read directly; the last tests go
through the local RabbitMQ."""

import time

import oslo_messaging as messaging
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stacktrail import profiler
from stacktrail.common import ids
from stacktrail.common import propagation
from stacktrail.common import signing
from stacktrail.integrations import rpc

from tests.integrations.conftest import KEY

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"
TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C = "00-%s-00f067aa0ba902b7-01" % TRACE_HEX


def joined(ctxt):
    profiler.clean()
    propagation.untraced.set(None)
    ok = rpc.extract(ctxt)
    prof = profiler.get()
    return ok, prof and prof.get_base_id()


# --- trace_info: only with one of our keys -----------------------------------

@pytest.mark.parametrize("trace_info", [
    {"hmac_key": "SECRET_KEY", "base_id": BASE, "parent_id": PARENT},
    {"base_id": BASE, "parent_id": PARENT},
    {"hmac_key": None, "base_id": "attacker-chosen", "parent_id": "x"},
    {"hmac_key": "guess-" + KEY, "base_id": BASE},
    {"hmac_key": 1, "base_id": BASE}, "text", None, [KEY],
])
def test_trace_info_without_our_key_starts_nothing(live, trace_info):
    assert joined({"trace_info": trace_info}) == (False, None)


def test_trace_info_with_our_key_joins(live):
    ok, base = joined({"trace_info": {"hmac_key": KEY, "base_id": BASE,
                                      "parent_id": PARENT}})
    assert ok and base == BASE


def test_signed_mode_does_not_open_the_plaintext_door(live):
    live.rpc_signed_trace_info = True
    assert joined({"trace_info": {"hmac_key": "SECRET_KEY",
                                  "base_id": BASE}}) == (False, None)


def test_plaintext_keys_can_be_switched_off(live):
    profiler.init(KEY)
    plain = rpc.inject({}, signed=False)
    token = rpc.inject({}, signed=True)
    profiler.clean()
    assert joined(plain)[0] is True
    live.rpc_accept_plaintext_key = False
    assert joined(plain) == (False, None)
    assert joined(token)[0] is True


def test_refused_trace_info_falls_back_to_the_traceparent_rules(live):
    ctxt = {"trace_info": {"hmac_key": "SECRET_KEY", "base_id": BASE},
            "traceparent": W3C}
    assert joined(ctxt) == (False, None)        # not trusted, not sampled
    assert propagation.untraced.get() is not None   # but passed on
    live.trust_traceparent = True
    ok, base = joined(ctxt)
    assert ok and ids.trace_id_hex(base) == TRACE_HEX


# --- trace_token: signed, and expiring ---------------------------------------

def test_token_carries_an_expiry_and_our_receiver_checks_it(live,
                                                            monkeypatch):
    live.signed_token_ttl = 60
    prof = profiler.init(KEY)
    ctxt = rpc.inject({}, signed=True)
    profiler.clean()
    data, _ = signing.unpack(ctxt["trace_token"]["packed"],
                             ctxt["trace_token"]["hmac"], [KEY])
    assert time.time() < data["exp"] <= time.time() + 60
    assert joined(ctxt) == (True, prof.get_base_id())
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert joined(ctxt) == (False, None)


def test_token_without_expiry_refused(live):
    packed, mac = signing.pack({"base_id": BASE, "parent_id": PARENT}, KEY)
    assert joined({"trace_token": {"packed": packed, "hmac": mac}}) == (
        False, None)


@pytest.mark.parametrize("token", [
    {"packed": 12, "hmac": 34}, {"packed": None, "hmac": None},
    {"packed": ["a"], "hmac": {"b": 1}}, {"packed": "e30=", "hmac": "\u00e9"},
    {"packed": "\ud800" * 10, "hmac": "00"}, {"packed": "x" * 10 ** 6,
                                              "hmac": "0" * 40},
    {}, "token", 5,
])
def test_malformed_tokens_never_raise(live, token):
    assert joined({"trace_token": token}) == (False, None)


def test_deeply_nested_signed_token_never_raises(live):
    nested = "[" * 2000 + "]" * 2000
    import base64
    packed = base64.urlsafe_b64encode(
        ('{"base_id": %s}' % nested).encode()).decode()
    token = {"packed": packed, "hmac": signing.digest(packed, KEY)}
    assert joined({"trace_token": token}) == (False, None)
    packed = base64.urlsafe_b64encode(b"[" * 3000).decode()
    assert joined({"trace_token": {"packed": packed,
                                   "hmac": signing.digest(packed, KEY)}}) \
        == (False, None)


# --- W3C keys in the context -------------------------------------------------

def test_traced_context_carries_w3c_keys_and_keeps_random_flag(live):
    live.trust_traceparent = True
    assert propagation.start_from_headers(
        {"traceparent": "00-%s-00f067aa0ba902b7-00" % TRACE_HEX,
         "tracestate": "congo=t61rcWkgMzE"}.get) is None   # unsampled
    profiler.clean()
    propagation.start_from_headers(
        {"traceparent": "00-%s-00f067aa0ba902b7-03" % TRACE_HEX,
         "tracestate": "congo=t61rcWkgMzE"}.get)
    ctxt = rpc.inject({})
    assert ctxt["trace_info"]["hmac_key"] == KEY
    assert ctxt["traceparent"].startswith("00-%s-" % TRACE_HEX)
    assert ctxt["traceparent"].endswith("-03")
    assert ctxt["tracestate"] == "congo=t61rcWkgMzE"
    profiler.clean()
    live.trust_traceparent = False
    assert joined(ctxt)[0]        # by trace_info, with the W3C state
    again = rpc.inject({})
    assert again["traceparent"].endswith("-03")
    assert again["tracestate"] == "congo=t61rcWkgMzE"


def test_oslo_messaging_traceparent_is_kept(live, trace):
    ctxt = rpc.inject({"traceparent": W3C})
    assert ctxt["traceparent"] == W3C and "trace_info" in ctxt


def test_untraced_message_passes_the_w3c_context_on(live):
    assert joined({"traceparent": W3C, "tracestate": "foo=1"}) == (
        False, None)
    sent = rpc.inject({})
    assert "trace_info" not in sent and "trace_token" not in sent
    assert sent["traceparent"].startswith("00-%s-" % TRACE_HEX)
    assert sent["traceparent"].endswith("-00")
    assert sent["tracestate"] == "foo=1"


@pytest.mark.parametrize("state", [
    "foo=1\r\nX-Injected: 1", "foo=\u00e9t\u00e9", "foo=1\nbar=2",
    "foo=\x00", 5, ["foo=1"]])
def test_bad_tracestate_from_a_context_is_never_sent(live, state):
    for trusted in (False, True):
        live.trust_traceparent = trusted
        joined({"traceparent": W3C, "tracestate": state})
        out = propagation.outgoing_headers()
        assert out["traceparent"].split("-")[1] == TRACE_HEX
        assert "tracestate" not in out
        assert "tracestate" not in rpc.inject({})


def test_serializer_forgets_the_previous_messages_context(live):
    serializer = rpc.TraceSerializer()
    serializer.deserialize_context({"traceparent": W3C})
    assert propagation.untraced.get() is not None
    serializer.deserialize_context({})
    assert propagation.untraced.get() is None
    assert propagation.outgoing_headers() == {}


# --- extract never raises ----------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() |
    st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_KEYS = st.sampled_from(["trace_info", "trace_token", "traceparent",
                         "tracestate", "hmac_key", "base_id", "parent_id",
                         "packed", "hmac", "exp", "other"])
_contexts = st.dictionaries(_KEYS, _values | st.dictionaries(
    _KEYS, _values, max_size=5), max_size=5)


@hsettings(max_examples=400, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctxt=_contexts, trusted=st.booleans(), rate=st.sampled_from([0, 1]))
def test_extract_never_raises(live, ctxt, trusted, rate):
    live.trust_traceparent = trusted
    live.sampling_rate = rate
    joined(ctxt)
    out = propagation.outgoing_headers()
    for value in out.values():
        assert value.isascii() and value.isprintable()
    if profiler.get() is not None:
        rpc.inject({})
    profiler.clean()


@hsettings(max_examples=200, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.sampled_from(
    ["base_id", "parent_id", "exp", "hmac_key", "x"]), _values, max_size=4))
def test_extract_validly_signed_anything_never_raises(live, data):
    packed, mac = signing.pack(data, KEY)
    joined({"trace_token": {"packed": packed, "hmac": mac}})
    joined({"trace_info": dict(data, hmac_key=KEY)})


# --- over RabbitMQ -----------------------------------------------------------

@pytest.fixture
def transport(rabbit_url):
    from oslo_config import cfg
    tr = messaging.get_rpc_transport(cfg.CONF, url=rabbit_url)
    yield tr
    tr.cleanup()


def test_untraced_dispatch_passes_the_callers_context_on(transport,
                                                         unique_name, live):
    rpc.enable()
    seen = []

    class Endpoint:
        def work(self, ctxt):
            seen.append((profiler.get(), propagation.outgoing_headers()))
            return "done"

    target = messaging.Target(topic=unique_name, server="srv")
    server = messaging.get_rpc_server(transport, target, [Endpoint()],
                                      executor="threading")
    server.start()
    try:
        client = messaging.get_rpc_client(
            transport, messaging.Target(topic=unique_name), timeout=10)
        client.call({"traceparent": W3C, "tracestate": "foo=1"}, "work")
        client.call({}, "work")
    finally:
        server.stop()
        server.wait()
    (prof, out), (prof2, out2) = seen
    assert prof is None and out["traceparent"].split("-")[1] == TRACE_HEX
    assert out["tracestate"] == "foo=1"
    assert prof2 is None and out2 == {}   # no context came: none made
