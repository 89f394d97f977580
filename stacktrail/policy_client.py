"""A service following the sampling policy its node agent serves.

When ``[profiler] connection_string`` is a Unix ``agent://`` socket, a
daemon thread asks ``<socket>.policy`` for the policy every
``POLL_INTERVAL`` seconds and, when it changed, applies it to the live
settings: the sampling rate for this service (``Policy.rate_for``) and
the policy's cap on sampled traces a second.  The ``[profiler]`` values
stay the base: a config reload rebuilds the settings and the last policy
is applied on top again.  An agent that does not answer, or answers with
nothing or garbage, changes nothing: the service keeps its last policy
(or its ``[profiler]`` defaults).  Nothing here raises into the service.

The follower is an OS thread reading an unpatched socket, as the flusher
is: in a service eventlet patched, a green follower's poll went through
the hub, about 25 times the CPU of the same read in a thread of its own.
"""

import copy
import logging
import os

from stacktrail.common import policy as policy_mod
from stacktrail.common import sampling
from stacktrail.common import settings
from stacktrail.common import unpatched

LOG = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
TIMEOUT = 1.0

# the follower's thread and the service's (green or not) threads share it;
# nothing done while holding it can switch green threads
_lock = unpatched.module("threading").RLock()
_follower = None
_policy = None        # the last policy received
_base = None          # the settings built from [profiler], before a policy
_identity = {}        # project and service names of this process


def fetch(path, timeout=TIMEOUT):
    """The policy served at ``path``; None when the agent has none.
    OSError or PolicyError when it cannot be read."""
    return parse(read(path, timeout))


def read(path, timeout=TIMEOUT):
    """The agent's reply at ``path``, as text.  OSError when it cannot be
    read."""
    socket = unpatched.module("socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        chunks = []
        size = 0
        while size <= policy_mod.MAX_BYTES:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def parse(text):
    """The policy in an agent's reply; None for an empty one."""
    return policy_mod.loads(text) if text.strip() else None


class Follower:
    """Polls the agent at ``path`` in an OS thread of its own."""

    def __init__(self, path, interval=POLL_INTERVAL):
        self.path = path
        self.interval = interval
        self.stopped = unpatched.module("threading").Event()
        self.failures = 0
        self.text = None        # the last reply read

    def start(self):
        unpatched.module("threading").Thread(
            target=self.run, daemon=True,
            name="stacktrail-policy-follower").start()

    def run(self):
        while True:
            self.poll()
            if self.stopped.wait(self.interval):
                return

    def poll(self):
        try:
            text = read(self.path)
            # the reply rarely changes: parse it only when it did
            policy = parse(text) if text != self.text else None
        except Exception as exc:
            # keep what we have; say so once per outage, not every poll
            if not self.failures:
                LOG.info("stacktrail: sampling policy not available from "
                         "%s, keeping the current one: %s", self.path, exc)
            self.failures += 1
            return
        self.failures = 0
        self.text = text
        if policy is not None and policy != _policy:
            use(policy)


def derive(base, policy, project=None, service=None):
    """``base`` settings with ``policy``'s rate and cap for this service."""
    live = copy.copy(base)
    live.sampling_rate = policy.rate_for(project, service)
    live.policy = policy
    if policy.max_traces_per_second:
        live.sampled_limiter = sampling.RateLimiter(
            policy.max_traces_per_second)
    return live


def use(policy):
    """Apply ``policy`` to the live settings (also from tests)."""
    global _policy
    with _lock:
        _policy = policy
        _reapply()
    LOG.info("stacktrail: sampling policy applied (rate %.4g, set by %s at "
             "%s)", settings.current.sampling_rate,
             policy.updated_by or "?", policy.updated_at or "?")


def _reapply():
    if _policy is not None and _base is not None:
        settings.current = derive(_base, _policy, _identity.get("project"),
                                  _identity.get("service"))


def policy_path(connection_string):
    """``<socket>.policy`` for a Unix ``agent://`` string, else None."""
    if not (connection_string or "").startswith("agent://"):
        return None
    from stacktrail.agent import protocol
    try:
        address, _ = protocol.parse_agent_url(connection_string)
    except ValueError:
        return None
    return address.target + policy_mod.SOCKET_SUFFIX \
        if address.kind == "unix" else None


def follow(connection_string, target):
    """Called after every (re)load of ``[profiler]``: the settings just
    loaded become the base, the last policy is applied on top, and the
    follower polls the agent of ``connection_string`` (or stops)."""
    global _base, _identity, _follower
    path = policy_path(connection_string) if settings.current.enabled \
        else None
    with _lock:
        _base = settings.current
        _identity = {k: target.get(k) for k in ("project", "service")}
        if path is not None:
            _reapply()
        if _follower is not None and _follower.path != path:
            _follower.stopped.set()
            _follower = None
        if path is not None and _follower is None:
            _follower = Follower(path)
            _follower.start()


def _after_fork():
    """Threads do not survive fork(): a worker starts its own follower."""
    global _follower
    old = _follower
    if old is not None:
        _follower = Follower(old.path, old.interval)
        _follower.start()


def stop():
    """Stop following and forget the policy (tests)."""
    global _follower, _policy, _base
    with _lock:
        if _follower is not None:
            _follower.stopped.set()
        _follower = _policy = _base = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
