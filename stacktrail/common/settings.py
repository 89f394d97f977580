"""The live ``[profiler]`` values the request path reads.

Reading an oslo.config attribute costs microseconds, so the values are
copied once into a plain object; ``load`` builds a new one on start and on
every config reload (SIGHUP) and swaps it in with one assignment.
"""

from stacktrail.common import flags as _flags
from stacktrail.common import sampling
from stacktrail.common import signing


class Settings:
    enabled = True
    validation_keys = ()
    signing_key = None
    propagation = ("osprofiler", "w3c")
    sampling_rate = 0.0
    # The central sampling policy (common.policy.Policy) the node's agent
    # serves, when there is one: its operation rates and always-keep rules
    # refine sampling_rate per request (propagation.head_rate).
    policy = None
    trust_traceparent = False
    show_sql_parameters = False
    rpc_signed_trace_info = False
    rpc_accept_plaintext_key = True
    signed_token_ttl = 600
    allow_insecure_hmac_keys = False

    def __init__(self, max_triggered=100.0, max_sampled=100.0):
        # Separate budgets: signed triggers (osprofiler headers, RPC
        # tokens) and unauthenticated ones (traceparent, local sampling).
        self.signed_limiter = sampling.RateLimiter(max_triggered)
        self.sampled_limiter = sampling.RateLimiter(max_sampled)
        self.limiter = self.signed_limiter  # the name before the split
        self.flags = dict(_flags.DEFAULTS)

    def set_keys(self, hmac_keys):
        """Keys that validate incoming headers and the key that signs."""
        self.validation_keys = tuple(signing.usable_keys(
            hmac_keys, self.allow_insecure_hmac_keys))
        self.signing_key = (self.validation_keys[0]
                            if self.validation_keys else None)


def _option(group, name, default):
    """``group.<name>``, or ``default`` when the option is not registered
    (a conf prepared by an older release of an adapter)."""
    try:
        return group[name]
    except Exception:
        return default


def from_conf(conf, declared=None, aliases=None):
    """Settings from ``conf``'s ``[profiler]`` group.

    ``declared``: the flags to read (default: every registered ``Flag``);
    ``aliases``: flag name -> the option that sets it in this project.
    """
    group = conf.profiler
    aliases = aliases or {}
    new = Settings(group.max_triggered_traces_per_second,
                   _option(group, "max_sampled_traces_per_second", 100.0))
    new.enabled = group.enabled
    new.propagation = tuple(group.propagation)
    new.sampling_rate = group.sampling_rate
    new.trust_traceparent = group.trust_traceparent
    new.show_sql_parameters = group.show_sql_parameters
    new.rpc_signed_trace_info = group.rpc_signed_trace_info
    new.rpc_accept_plaintext_key = _option(
        group, "rpc_accept_plaintext_key", Settings.rpc_accept_plaintext_key)
    new.signed_token_ttl = _option(group, "signed_token_ttl",
                                   Settings.signed_token_ttl)
    new.allow_insecure_hmac_keys = group.allow_insecure_hmac_keys
    new.set_keys(group.hmac_keys)
    for flag in declared if declared is not None else _flags.every():
        option = aliases.get(flag.name, flag.name)
        new.flags[flag.name] = bool(group.enabled and group[option])
    return new


current = Settings()


def load(conf, declared=None, aliases=None):
    """Replace the live settings with the values of ``conf``."""
    global current
    current = from_conf(conf, declared, aliases)
    return current
