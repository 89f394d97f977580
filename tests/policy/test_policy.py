"""The policy model: which rate applies, what is always kept, and clear
errors for a policy that cannot be used."""

import pytest

from stacktrail.common import policy

FULL = {
    "default_rate": 0.01,
    "rates": {"project": {"nova": 0.05}, "service": {"nova-api": 0.1},
              "operation": {"wsgi": 0.2}},
    "max_traces_per_second": 50,
    "always_keep": {"paths": ["/v2.1/servers*"], "operations": ["db"]},
    "slow_ms": {"default": 1000, "wsgi": 500},
}


def test_most_specific_rate_wins():
    p = policy.parse(FULL)
    assert p.rate_for() == 0.01
    assert p.rate_for(project="nova") == 0.05
    assert p.rate_for(project="nova", service="nova-api") == 0.1
    assert p.rate_for(project="nova", service="nova-api",
                      operation="wsgi") == 0.2
    assert p.rate_for(project="cinder", service="cinder-api") == 0.01


def test_always_keep_globs_and_slow_thresholds():
    p = policy.parse(FULL)
    assert p.always_keeps(path="/v2.1/servers/abc/action")
    assert not p.always_keeps(path="/v2.1/flavors")
    assert p.always_keeps(operation="db")
    assert not p.always_keeps()
    assert p.slow_threshold_ms("wsgi") == 500
    assert p.slow_threshold_ms("rpc") == 1000
    assert policy.parse({}).slow_threshold_ms("rpc") is None


def test_round_trip_through_json():
    p = policy.parse(FULL)
    assert policy.loads(p.dumps()) == p
    assert policy.parse({}).rate_for(service="x") == 0.0


@pytest.mark.parametrize("data, message", [
    ({"default_rate": 1.5}, "default_rate must be a number from 0 to 1"),
    ({"default_rate": "0.1"}, "default_rate must be a number"),
    ({"rates": {"service": {"api": -1}}}, "rates.service.api"),
    ({"rates": {"host": {}}}, "unknown rates kind(s) host"),
    ({"max_traces_per_second": -2}, "max_traces_per_second must be"),
    ({"always_keep": {"paths": "/v2"}}, "always_keep.paths must be a list"),
    ({"always_keep": {"users": []}}, "unknown always_keep kind(s) users"),
    ({"slow_ms": {"wsgi": True}}, "slow_ms.wsgi"),
    ({"defualt_rate": 0.1}, "unknown policy field(s) defualt_rate"),
    ([], "the policy must be an object"),
])
def test_invalid_policies_say_what_is_wrong(data, message):
    with pytest.raises(policy.PolicyError) as err:
        policy.parse(data)
    assert message in str(err.value)


def test_not_json():
    with pytest.raises(policy.PolicyError, match="not valid JSON"):
        policy.loads("{default_rate: 1")
