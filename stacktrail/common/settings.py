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
    trust_traceparent = False
    show_sql_parameters = False
    rpc_signed_trace_info = False
    allow_insecure_hmac_keys = False

    def __init__(self, max_triggered=100.0):
        self.limiter = sampling.RateLimiter(max_triggered)
        self.flags = dict(_flags.DEFAULTS)

    def set_keys(self, hmac_keys):
        """Keys that validate incoming headers and the key that signs."""
        self.validation_keys = tuple(signing.usable_keys(
            hmac_keys, self.allow_insecure_hmac_keys))
        self.signing_key = (self.validation_keys[0]
                            if self.validation_keys else None)


def from_conf(conf, declared=None, aliases=None):
    """Settings from ``conf``'s ``[profiler]`` group.

    ``declared``: the flags to read (default: every registered ``Flag``);
    ``aliases``: flag name -> the option that sets it in this project.
    """
    group = conf.profiler
    aliases = aliases or {}
    new = Settings(group.max_triggered_traces_per_second)
    new.enabled = group.enabled
    new.propagation = tuple(group.propagation)
    new.sampling_rate = group.sampling_rate
    new.trust_traceparent = group.trust_traceparent
    new.show_sql_parameters = group.show_sql_parameters
    new.rpc_signed_trace_info = group.rpc_signed_trace_info
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
