"""A sampling policy: which share of requests to trace, managed centrally.

One JSON document, served by the node agent to the services of its node
and changed with ``stacktrail sampling set``::

    {"default_rate": 0.01,
     "rates": {"project": {"nova": 0.05},
               "service": {"nova-api": 0.1},
               "operation": {"wsgi": 0.2}},
     "max_traces_per_second": 50,
     "always_keep": {"paths": ["/v2.1/servers*"], "operations": ["db"]},
     "slow_ms": {"default": 1000, "wsgi": 500}}

The most specific rate wins (operation, then service, then project, then
the default).  ``always_keep`` patterns are shell globs.  ``slow_ms``:
the duration past which the agent's tail stage keeps a trace.
"""

import fnmatch
import json

# the agent serves the policy next to its listen socket, at most this big
SOCKET_SUFFIX = ".policy"
MAX_BYTES = 1 << 20

KINDS = ("project", "service", "operation")
KEEP = ("paths", "operations")
FIELDS = ("default_rate", "rates", "max_traces_per_second", "always_keep",
          "slow_ms", "updated_by", "updated_at")


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the field."""


def _rate(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value <= 1.0:
        raise PolicyError("%s must be a number from 0 to 1, got %r"
                          % (where, value))
    return float(value)


def _non_negative(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value < 0:
        raise PolicyError("%s must be a number >= 0, got %r"
                          % (where, value))
    return float(value)


def _table(value, where):
    if not isinstance(value, dict):
        raise PolicyError("%s must be an object, got %r" % (where, value))
    return value


def _patterns(value, where):
    if not isinstance(value, list) or \
            not all(isinstance(p, str) and p for p in value):
        raise PolicyError("%s must be a list of non-empty strings, got %r"
                          % (where, value))
    return tuple(value)


class Policy:
    """A validated policy; build it with ``parse`` or ``loads``."""

    def __init__(self, default_rate=0.0, rates=None,
                 max_traces_per_second=0.0, always_keep=None, slow_ms=None,
                 updated_by="", updated_at=""):
        self.default_rate = default_rate
        self.rates = rates or {kind: {} for kind in KINDS}
        self.max_traces_per_second = max_traces_per_second
        self.always_keep = always_keep or {key: () for key in KEEP}
        self.slow_ms = slow_ms or {}
        self.updated_by = updated_by
        self.updated_at = updated_at

    def rate_for(self, project=None, service=None, operation=None):
        """The share of requests to trace; the most specific rule wins."""
        for kind, name in (("operation", operation), ("service", service),
                           ("project", project)):
            if name is not None and name in self.rates[kind]:
                return self.rates[kind][name]
        return self.default_rate

    def always_keeps(self, path=None, operation=None):
        """True when a rule says to keep every such request."""
        return _matches(path, self.always_keep["paths"]) or \
            _matches(operation, self.always_keep["operations"])

    def slow_threshold_ms(self, operation=None):
        """Duration (ms) past which a trace counts as slow; None: never."""
        if operation is not None and operation in self.slow_ms:
            return self.slow_ms[operation]
        return self.slow_ms.get("default")

    def to_dict(self):
        return {
            "default_rate": self.default_rate,
            "rates": {kind: dict(self.rates[kind]) for kind in KINDS},
            "max_traces_per_second": self.max_traces_per_second,
            "always_keep": {key: list(self.always_keep[key])
                            for key in KEEP},
            "slow_ms": dict(self.slow_ms),
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }

    def dumps(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __eq__(self, other):
        return isinstance(other, Policy) and \
            self.to_dict() == other.to_dict()


def _matches(value, patterns):
    if not patterns or value is None:   # the common case, per point
        return False
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def parse(data):
    """A Policy from a decoded JSON document; PolicyError when invalid."""
    _table(data, "the policy")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise PolicyError("unknown policy field(s) %s; known: %s"
                          % (", ".join(unknown), ", ".join(FIELDS)))
    rates = _table(data.get("rates", {}), "rates")
    bad = sorted(set(rates) - set(KINDS))
    if bad:
        raise PolicyError("unknown rates kind(s) %s; use %s"
                          % (", ".join(bad), ", ".join(KINDS)))
    keep = _table(data.get("always_keep", {}), "always_keep")
    bad = sorted(set(keep) - set(KEEP))
    if bad:
        raise PolicyError("unknown always_keep kind(s) %s; use %s"
                          % (", ".join(bad), ", ".join(KEEP)))
    slow = _table(data.get("slow_ms", {}), "slow_ms")
    return Policy(
        default_rate=_rate(data.get("default_rate", 0.0), "default_rate"),
        rates={kind: {str(name): _rate(value, "rates.%s.%s" % (kind, name))
                      for name, value in _table(
                          rates.get(kind, {}), "rates." + kind).items()}
               for kind in KINDS},
        max_traces_per_second=_non_negative(
            data.get("max_traces_per_second", 0.0), "max_traces_per_second"),
        always_keep={key: _patterns(keep.get(key, []), "always_keep." + key)
                     for key in KEEP},
        slow_ms={str(op): _non_negative(ms, "slow_ms." + str(op))
                 for op, ms in slow.items()},
        updated_by=str(data.get("updated_by", "")),
        updated_at=str(data.get("updated_at", "")))


def loads(text):
    """A Policy from JSON text; PolicyError when invalid."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PolicyError("the policy is not valid JSON: %s" % exc) from None
    return parse(data)
