"""Who may start a trace here: weak keys, RPC trace_info keys, expiring
signed data, and the two rate budgets."""

import base64
import hmac
import json
import logging
import os
import secrets
import time
import uuid

import pytest
import webob

from stacktrail import profiler
from stacktrail import web
from stacktrail.common import propagation
from stacktrail.common import settings
from stacktrail.common import signing

from tests.core.keys import K1, K2

BASE = "7253ca8c-33b3-4f84-b4f1-f5a4311ddfa4"
PARENT = "06320327-2c2c-45ae-923a-515de890276a"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def live(keys=K1, **values):
    new = settings.Settings(values.pop("max_triggered", 100),
                            values.pop("max_sampled", 100))
    for name, value in values.items():
        setattr(new, name, value)
    new.set_keys(keys)
    settings.current = new
    return new


def signed(key=K1, **data):
    data = data or {"base_id": BASE, "parent_id": PARENT}
    packed, mac = signing.pack(data, key)
    return {web.X_TRACE_INFO: packed, web.X_TRACE_HMAC: mac}


class App:
    def __init__(self):
        self.seen = []

    def __call__(self, environ, start_response):
        prof = profiler.get()
        self.seen.append(prof and prof.get_base_id())
        start_response("200 OK", [])
        return [b"ok"]


def get(middleware, headers):
    response = webob.Request.blank("/", headers=headers).get_response(
        middleware)
    assert response.status_int == 200
    response.body


# --- weak keys: length and entropy, not a list of names ----------------------

WEAK = ["SECRET_KEY", "SECRET-KEY", "secret_key", "changeme", "password",
        "a", "k1", "admin", "openstack", "swordfish", "stackstack",
        "passwordpassword", "changemechangeme", "aaaaaaaaaaaaaaaaaaaaaaaa",
        "1111111111111111", "0123456789abcdef0123", "abcdefghijklmnopqrst",
        "my_secret_hmac_key", "SECRET_KEY_SECRET_KEY_SECRET_KEY",
        "secretsecretsecretsecret", "changeme12345678", "conformance-secret"]


@pytest.mark.parametrize("key", WEAK)
def test_weak_keys_refused(key):
    assert signing.weakness(key) is not None
    assert signing.usable_keys(key) == []
    assert signing.usable_keys(key, allow_insecure=True) == [key]


RANDOM_KEYS = {
    "openssl rand -hex 16": lambda: secrets.token_hex(16),
    "openssl rand -base64 18": lambda: base64.b64encode(
        os.urandom(18)).decode(),
    "token_urlsafe()": lambda: secrets.token_urlsafe(),
    "token_urlsafe(16)": lambda: secrets.token_urlsafe(16),
    "uuidgen": lambda: str(uuid.uuid4()),
    "uuid hex": lambda: uuid.uuid4().hex,
}


@pytest.mark.parametrize("how", sorted(RANDOM_KEYS))
def test_random_keys_allowed(how):
    for _ in range(300):     # not by luck: every key of that recipe passes
        key = RANDOM_KEYS[how]()
        assert signing.weakness(key) is None, key


def test_random_key_with_repeated_neighbours_allowed():
    """A key openssl gave (seen in CI): 16 of its 31 neighbour pairs are
    equal or consecutive, which once counted it as a sequence."""
    assert signing.weakness("00667fde883dddf3d334456f01121604") is None


def test_weak_key_refusal_said_once_per_process(caplog):
    # a service reads its keys in several places (settings, the WSGI
    # switch, each filter) and again on every reload: one line, not four
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        live(keys="password," + K1)
        web.enable("password")
        web.WsgiMiddleware(App(), hmac_keys="password", enabled=True)
    said = [r.getMessage() for r in caplog.records
            if "weak HMAC key" in r.getMessage()]
    assert len(said) == 1, said
    assert signing.usable_keys("password") == []   # still refused


def test_weak_key_refused_everywhere_unless_allowed(caplog):
    caplog.set_level(logging.WARNING)
    assert live(keys="changeme," + K1).validation_keys == (K1,)
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys="password," + K1,
                                    enabled=True)
    get(middleware, signed("password"))
    get(middleware, signed(K1))
    assert app.seen == [None, BASE]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "weak HMAC key" in said
    assert "changeme" not in said and "password" not in said  # not logged
    # allow_insecure_hmac_keys still overrides
    app = App()
    get(web.WsgiMiddleware(app, hmac_keys="a", enabled=True,
                           allow_insecure_hmac_keys="true"), signed("a"))
    assert app.seen == [BASE]
    assert live(keys="a", allow_insecure_hmac_keys=True).signing_key == "a"


# --- RPC trace_info: only with one of our keys -------------------------------

def info(key=K1, base_id=BASE, parent_id=PARENT):
    return {"hmac_key": key, "base_id": base_id, "parent_id": parent_id}


def test_rpc_messages_continuing_a_trace_spend_no_budget():
    """An RPC message carrying a trace signed with our key continues it,
    whatever this process's budget for new triggered traces: the trace
    was let in where it entered the cloud."""
    live(max_triggered=1)
    for n in range(5):
        base_id = "00000000-0000-4000-8000-%012d" % n
        assert propagation.start_from_trace_info(info(K1, base_id=base_id))
        assert profiler.get().get_base_id() == base_id
        profiler.clean()


def test_trace_info_with_our_key_joins():
    live(keys=K2 + "," + K1)
    assert propagation.start_from_trace_info(info(K1))
    prof = profiler.get()
    assert prof.get_base_id() == BASE and prof.hmac_key == K1


@pytest.mark.parametrize("trace_info", [
    info("SECRET_KEY"), info("not-one-of-ours-9f8e7d6c5b4a"), info(None),
    info(""), info(12345), info(["k"]), info({"k": 1}), info(K1 + " "),
    info(K1[:-1]), {"base_id": BASE, "parent_id": PARENT},
    info("SECRET_KEY", base_id="attacker-chosen"),
    info(None, base_id="attacker-chosen"),
    info(K1, base_id=None), info(K1, base_id=7), info(K1, base_id="x" * 65),
    info(K1, base_id="bad\nid"), None, [], "trace",
])
def test_trace_info_without_our_key_is_ignored(trace_info):
    live(keys=K1)
    assert propagation.start_from_trace_info(trace_info) is False
    assert profiler.get() is None


def test_default_looking_key_refused_over_rpc_even_when_configured():
    live(keys="SECRET_KEY")
    assert not propagation.start_from_trace_info(info("SECRET_KEY"))
    live(keys="SECRET_KEY", allow_insecure_hmac_keys=True)
    assert propagation.start_from_trace_info(info("SECRET_KEY"))


def test_trace_info_key_compared_in_constant_time(monkeypatch):
    live(keys=K1 + "," + K2)
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert propagation.start_from_trace_info(info(K1))
    assert len(calls) == 2  # every key, also after the match
    calls.clear()
    assert not propagation.start_from_trace_info(info("x" * 24))
    assert len(calls) == 2


# --- signed data expires -----------------------------------------------------

def token(key=K1, **extra):
    data = {"base_id": BASE, "parent_id": PARENT}
    data.update(extra)
    return signing.pack(data, key)


def test_token_needs_a_fresh_expiry():
    live(signed_token_ttl=600)
    now = int(time.time())
    assert propagation.unpack_trace_info(*token(), [K1],
                                         require_expiry=True) is None
    for exp in (now - 1, now - 3600, now + 600 + 3600, "%d" % (now + 10),
                True, None, float(now + 10), [now + 10]):
        assert propagation.unpack_trace_info(
            *token(exp=exp), [K1], require_expiry=True) is None, exp
    assert propagation.unpack_trace_info(
        *token(exp=now + 60), [K1], require_expiry=True) == (BASE, PARENT, K1)


def test_signed_token_round_trip_and_expiry(monkeypatch):
    live(signed_token_ttl=30)
    packed, mac = propagation.signed_token(BASE, PARENT, K1)
    assert propagation.unpack_trace_info(packed, mac, [K1],
                                         require_expiry=True)
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    assert propagation.unpack_trace_info(packed, mac, [K1],
                                         require_expiry=True) is None


def test_osprofiler_header_without_expiry_still_accepted():
    """osprofiler peers sign no expiry: their headers stay readable (the
    signed budget bounds a replayed one)."""
    live()
    app = App()
    get(web.WsgiMiddleware(app, hmac_keys=K1, enabled=True), signed())
    assert app.seen == [BASE]


def test_header_with_a_passed_expiry_refused():
    live()
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)
    now = int(time.time())
    get(middleware, signed(base_id=BASE, parent_id=PARENT, exp=now - 5))
    get(middleware, signed(base_id=BASE, parent_id=PARENT, exp=now + 60))
    assert app.seen == [None, BASE]


# --- two budgets -------------------------------------------------------------

def test_traceparent_flood_cannot_starve_a_signed_trigger():
    live(max_triggered=2, max_sampled=2, trust_traceparent=True)
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)
    for _ in range(50):
        get(middleware, {"traceparent": TRACEPARENT})
    # Its own budget is spent: two a second, and two more that the trace
    # it let in borrows from the next second.
    assert len([s for s in app.seen if s]) <= 4
    get(middleware, signed())
    assert app.seen[-1] == BASE


def test_sampling_cannot_starve_a_signed_trigger():
    live(max_triggered=2, max_sampled=2, sampling_rate=1.0)
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)
    for _ in range(50):
        get(middleware, {})
    assert 2 <= len([s for s in app.seen if s]) <= 3
    get(middleware, signed())
    assert app.seen[-1] == BASE


def test_signed_triggers_do_not_use_the_sampled_budget():
    live(max_triggered=2, max_sampled=2, trust_traceparent=True)
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)
    for _ in range(20):
        get(middleware, signed())
    get(middleware, {"traceparent": TRACEPARENT})
    assert app.seen[-1] is not None


def test_budgets_from_the_configuration():
    from oslo_config import cfg
    from stacktrail import opts

    conf = cfg.ConfigOpts()
    conf.register_group(cfg.OptGroup("profiler"))
    opts.register_opts(conf)
    conf(args=[], default_config_files=[])
    conf.set_override("max_triggered_traces_per_second", 7, "profiler")
    conf.set_override("max_sampled_traces_per_second", 3, "profiler")
    conf.set_override("rpc_accept_plaintext_key", False, "profiler")
    conf.set_override("signed_token_ttl", 42, "profiler")
    new = settings.from_conf(conf)
    assert new.signed_limiter.rate == 7 and new.sampled_limiter.rate == 3
    assert new.rpc_accept_plaintext_key is False
    assert new.signed_token_ttl == 42


def test_signed_header_data_must_be_a_flat_id_pair():
    live()
    app = App()
    middleware = web.WsgiMiddleware(app, hmac_keys=K1, enabled=True)
    deep = {"base_id": BASE, "parent_id": PARENT}
    for _ in range(20):
        deep = {"base_id": BASE, "parent_id": deep}
    for data in (deep, {"base_id": BASE, "exp": "soon"},
                 {"base_id": [BASE]}, {"base_id": BASE, "parent_id": 5}):
        packed = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
        get(middleware, {web.X_TRACE_INFO: packed,
                         web.X_TRACE_HMAC: signing.digest(packed, K1)})
    assert app.seen == [None] * 4
