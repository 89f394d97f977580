"""The sampling policy on the agent's side: where it lives, and serving it.

The policy (``stacktrail.common.policy``) lives in one place every agent
reads: a JSON file (``sampling_policy_file``, e.g. on configuration
management's path) or a key in the shared Redis store
(``sampling_policy_store``), so one ``stacktrail sampling set`` reaches
every node.  Each agent re-reads it every ``POLL_INTERVAL`` seconds and
serves the last valid one on ``<listen socket>.policy``, a Unix socket with
the listen socket's mode and group: connect, read one JSON document.  A
policy that fails to parse is logged and the previous one is kept.

Every change made through ``stacktrail sampling set`` records who and
when in the policy itself and appends a line to the change log (the file
``<policy file>.log``, or the Redis list ``<key>:log``).
"""

import datetime
import getpass
import json
import logging
import os
import tempfile
import threading

from stacktrail.agent import listener as listener_mod
from stacktrail.agent import metrics
from stacktrail.agent import protocol
from stacktrail.common import logtext
from stacktrail.common import policy as policy_mod

LOG = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
REDIS_KEY = "stacktrail:sampling_policy"
LOG_LENGTH = 1000
MAX_BYTES = policy_mod.MAX_BYTES


def socket_path(listen_path):
    """Where services find the policy of the agent at ``listen_path``."""
    return listen_path + policy_mod.SOCKET_SUFFIX


class FileStore:
    """The policy as a JSON file, replaced atomically on write."""

    def __init__(self, path):
        self.path = path
        self.where = path

    def read(self):
        """The policy text, or None when there is no file."""
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_BYTES).decode("utf-8")
        except FileNotFoundError:
            return None

    def write(self, text, entry):
        # Rename over the old file: an agent never reads half a policy.
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".policy-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        with open(self.path + ".log", "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def history(self, limit):
        try:
            with open(self.path + ".log") as f:
                lines = f.readlines()[-limit:]
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in reversed(lines) if line.strip()]

    def close(self):
        pass


class RedisStore:
    """The policy as a key of the shared Redis store (``redis://`` URL)."""

    def __init__(self, url, timeout=2.0):
        import redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.where = "%s key %s" % (url, REDIS_KEY)

    def read(self):
        value = self.client.get(REDIS_KEY)
        return value.decode("utf-8") if value is not None else None

    def write(self, text, entry):
        pipe = self.client.pipeline()
        pipe.set(REDIS_KEY, text)
        pipe.lpush(REDIS_KEY + ":log", json.dumps(entry, sort_keys=True))
        pipe.ltrim(REDIS_KEY + ":log", 0, LOG_LENGTH - 1)
        pipe.execute()

    def history(self, limit):
        return [json.loads(item) for item in
                self.client.lrange(REDIS_KEY + ":log", 0, limit - 1)]

    def close(self):
        self.client.close()


def store_for(policy_file="", policy_store=""):
    """The configured store, or None; ValueError for a bad choice."""
    if policy_file and policy_store:
        raise ValueError("set sampling_policy_file or sampling_policy_store, "
                         "not both")
    if policy_store:
        if not policy_store.startswith(("redis://", "rediss://",
                                        "unix://")):
            raise ValueError("sampling_policy_store must be a redis:// URL, "
                             "got %r" % policy_store)
        return RedisStore(policy_store)
    if policy_file:
        return FileStore(policy_file)
    return None


def change(store, policy, user=None, now=None):
    """Write ``policy`` to ``store`` stamped with who and when."""
    policy.updated_by = user or getpass.getuser()
    policy.updated_at = (now or datetime.datetime.now(
        datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = {"user": policy.updated_by, "at": policy.updated_at,
             "policy": policy.to_dict()}
    store.write(policy.dumps(), entry)
    LOG.info("sampling policy in %s changed by %s", store.where,
             policy.updated_by)
    return policy


class Watcher:
    """Re-reads the store in a daemon thread; ``current`` is the last valid
    policy (None until one was read)."""

    def __init__(self, store, interval=POLL_INTERVAL, log_interval=60.0):
        self.store = store
        self.interval = interval
        self.current = None
        self.text = None
        self.errors = 0
        self._throttle = logtext.Throttle(log_interval)
        self._stop = threading.Event()
        self.poll()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stacktrail-policy")
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self):
        try:
            text = self.store.read()
            if text is None or text == self.text:
                return
            self.current = policy_mod.loads(text)
            self.text = text
            LOG.info("sampling policy loaded from %s (by %s at %s)",
                     self.store.where, self.current.updated_by or "?",
                     self.current.updated_at or "?")
        except Exception as exc:
            self.errors += 1
            self._throttle.log(LOG, logging.WARNING, "policy",
                               "keeping the previous sampling policy: %s",
                               logtext.one_line(exc))

    def close(self):
        self._stop.set()
        self._thread.join(2.0)
        self.store.close()


class PolicySocket(metrics._SmallServer):
    """``<listen>.policy``: connect, read the current policy as JSON (an
    empty reply while there is none)."""

    refused_reason = "policy_busy"

    def __init__(self, path, current, mode=0o600, group=""):
        self.path = path
        self.current = current
        # the listen socket's own binding: same checks, mode and group
        sock = listener_mod.bind(protocol.Address("unix", path), mode, group)
        super().__init__(sock, "stacktrail-policy-socket")

    def reply(self, request):
        policy = self.current()
        return policy.dumps().encode() if policy is not None else b""


class Serving:
    """What the agent holds for the policy: the watcher and the socket."""

    def __init__(self, watcher, tail=False):
        self.watcher = watcher
        self.tail = tail
        self.server = None

    def start(self):
        if self.server is not None:
            self.server.start()

    def current(self):
        return self.watcher.current

    def for_services(self):
        """What the services follow.  With tail sampling they record every
        request (rate 1, the cap kept) and the agent applies the rates."""
        policy = self.watcher.current
        if policy is None or not self.tail:
            return policy
        return policy_mod.Policy(
            default_rate=1.0,
            max_traces_per_second=policy.max_traces_per_second,
            updated_by=policy.updated_by, updated_at=policy.updated_at)

    def status(self):
        policy = self.watcher.current
        return {"source": self.watcher.store.where,
                "loaded": policy is not None,
                "updated_by": policy.updated_by if policy else "",
                "updated_at": policy.updated_at if policy else "",
                "errors": self.watcher.errors}

    def close(self):
        if self.server is not None:
            self.server.close()
        self.watcher.close()


def serve(group, address, mode):
    """Start watching and serving the policy of ``group`` (the ``[agent]``
    options), or None when no policy is configured.  ValueError/OSError
    when the configuration or the socket is unusable."""
    store = store_for(group.sampling_policy_file, group.sampling_policy_store)
    if store is None:
        return None
    serving = Serving(Watcher(store, log_interval=group.log_interval),
                      tail=group.tail_sampling)
    if address.kind != "unix":
        LOG.warning("the sampling policy is served to services only on a "
                    "unix:// listen address; %s has none", address)
        return serving
    try:
        serving.server = PolicySocket(socket_path(address.target),
                                      serving.for_services, mode,
                                      group.socket_group)
    except BaseException:
        serving.close()
        raise
    return serving
