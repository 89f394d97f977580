"""``redis://`` and ``redissentinel://``: osprofiler's Redis key layout.

Keys (shared with osprofiler, so each reads the other's traces):

``osprofiler_opt:<base_id>``
    a list of the trace's JSON messages, LPUSHed: the oldest is at the tail.
``osprofiler_error:<base_id>``
    ``{"base_id", "timestamp"}`` of a trace that recorded an exception.

and one of our own, which osprofiler never looks at:

``stacktrail_traces``
    a sorted set, member ``<base_id>``, score the trace's earliest point in
    microseconds (``ZADD LT`` keeps the minimum even when a later process
    flushes first).  ``list_traces`` takes each trace's start time from it;
    traces written by osprofiler fall back to their list's oldest message.

A batch is one pipeline.  With ``retention`` (seconds) every
key written gets that TTL, refreshed as the trace grows, and old index
entries are pruned.
"""

import contextlib
import json
import time

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.drivers import base

PREFIX = "osprofiler_opt:"
ERROR_PREFIX = "osprofiler_error:"
INDEX = "stacktrail_traces"
DEFAULT_TIMEOUT = 5.0
SCAN_CHUNK = 500


def _import_redis():
    return base.require("redis", "redis")


def _db_number(path, connection_str):
    db = path.strip("/")
    if db and not db.isdigit():
        raise base.DriverError("bad redis database %r in %s (expected a "
                               "number)" % (db, logtext.mask_passwords(connection_str)))
    return int(db or 0)




class RedisDriver(base.Driver):
    """``redis://[:password@]host:port[/db]``."""

    def __init__(self, connection_str, *args, **kwargs):
        super().__init__(connection_str, *args, **kwargs)
        self.redis = _import_redis()
        self.retention = int(self.option("retention", 0) or 0)
        self.timeout = float(self.option("socket_timeout", DEFAULT_TIMEOUT))
        self.db = self._connect()

    @classmethod
    def get_name(cls):
        return "redis"

    def _connect(self):
        url = self.url
        try:
            port = url.port
        except ValueError:
            raise base.DriverError("bad port in %s"
                                   % logtext.mask_passwords(self.connection_str)) from None
        if not url.hostname:
            raise base.DriverError("redis:// needs a host, e.g. "
                                   "redis://127.0.0.1:6379/0")
        self.where = "%s:%s" % (url.hostname, port or 6379)
        _db_number(url.path, self.connection_str)
        # No I/O here: a service starts while its trace store is down.
        return self.redis.Redis.from_url(self.connection_str,
                                         **self._socket_options())

    def _socket_options(self):
        """Timeouts, and one immediate retry instead of redis-py's default
        backoff: the flusher has its own, and a dead store (or a dead
        sentinel in the list) must fail fast rather than stall every batch.
        """
        from redis import backoff
        from redis import retry
        return {"socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                "retry": retry.Retry(backoff.NoBackoff(), 1),
                # A lone surrogate in an id a hostile peer sent must not
                # make a batch fail for ever (the agent would retry it).
                "encoding_errors": "surrogatepass"}

    @contextlib.contextmanager
    def _store_errors(self):
        """Read-side failures as one line (the CLI prints it)."""
        try:
            yield
        except self.redis.RedisError as exc:
            raise base.DriverError("redis at %s: %s" % (
                self.where, str(exc).splitlines()[0] if str(exc) else
                type(exc).__name__)) from None

    # write side

    def write_points(self, batch):
        texts = self.format_json(batch)
        to_uuid = ids.to_uuid
        traces = {}
        for point, text in zip(batch, texts):
            base_id = to_uuid(point[2])
            us = point[5] // 1000
            entry = traces.get(base_id)
            if entry is None:
                entry = traces[base_id] = [[text], us, None]
            else:
                entry[0].append(text)
                if us < entry[1]:
                    entry[1] = us
            info = point[6]
            if (entry[2] is None and isinstance(info, dict)
                    and info.get("etype") is not None):
                entry[2] = clock.format_timestamp(point[5])
        self._store(traces)

    def write_messages(self, messages):
        traces = {}
        for message in messages:
            us = clock.parse_timestamp(message["timestamp"]) // 1000
            entry = traces.setdefault(message["base_id"], [[], us, None])
            entry[0].append(base.to_json(message))
            entry[1] = min(entry[1], us)
            if entry[2] is None and _is_error(message):
                entry[2] = message["timestamp"]
        self._store(traces)

    def notify(self, info, **kwargs):
        message = dict(info)
        message["project"] = self.project
        message["service"] = self.service
        self.write_messages([message])

    def _store(self, traces):
        """One pipeline: lists, start-time index, error markers, TTLs.

        ``traces``: base_id -> [JSON messages, earliest microsecond, time
        text of the first error or None].
        """
        pipe = self.db.pipeline(transaction=False)
        ttl = self.retention or None
        for base_id, (values, first_us, error_at) in traces.items():
            key = PREFIX + base_id
            pipe.lpush(key, *values)
            if ttl:
                pipe.expire(key, ttl)
            if error_at is not None:
                marker = json.dumps({"base_id": base_id,
                                     "timestamp": error_at})
                pipe.set(ERROR_PREFIX + base_id, marker, ex=ttl, nx=True)
            pipe.zadd(INDEX, {base_id: first_us}, lt=True)
        if ttl:
            pipe.expire(INDEX, ttl)
            cutoff = (time.time() - ttl) * 1_000_000
            pipe.zremrangebyscore(INDEX, "-inf", "(%d" % cutoff)
        pipe.execute()

    def close(self):
        self.db.close()

    # after fork: redis-py's connection pool notices the new pid and opens
    # fresh connections by itself, so the base no-op is enough.

    # read side

    def get_messages(self, base_id):
        with self._store_errors():
            raw = self.db.lrange(PREFIX + base_id, 0, -1)
        return [json.loads(r) for r in reversed(raw)]

    def _scan(self, prefix):
        """Keys with ``prefix`` in chunks, each with its base_id."""
        chunk = []
        for key in self.db.scan_iter(match=prefix + "*", count=SCAN_CHUNK):
            key = key.decode() if isinstance(key, bytes) else key
            chunk.append((key, key[len(prefix):]))
            if len(chunk) >= SCAN_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def list_traces(self, fields=None):
        fields = set(fields or ("base_id", "timestamp"))
        result = []
        with self._store_errors():
            for chunk in self._scan(PREFIX):
                pipe = self.db.pipeline(transaction=False)
                for key, base_id in chunk:
                    pipe.lindex(key, -1)  # oldest message: LPUSH adds at head
                    pipe.zscore(INDEX, base_id)
                replies = pipe.execute()
                for i in range(len(chunk)):
                    trace = self._first(replies[2 * i], replies[2 * i + 1])
                    if trace is not None:
                        result.append({k: v for k, v in trace.items()
                                       if k in fields})
        return sorted(result, key=lambda t: t.get("timestamp") or "")

    @staticmethod
    def _first(raw, start_us):
        if raw is None:  # expired between SCAN and LINDEX
            return None
        first = json.loads(raw)
        if start_us is not None:
            first["timestamp"] = clock.format_timestamp(int(start_us) * 1000)
        return first

    def list_error_traces(self):
        result = []
        with self._store_errors():
            for chunk in self._scan(ERROR_PREFIX):
                for raw in self.db.mget([key for key, _ in chunk]):
                    if raw is not None:
                        result.append(json.loads(raw))
        return sorted(result, key=lambda t: t.get("timestamp") or "")


def _is_error(message):
    info = message.get("info")
    return isinstance(info, dict) and info.get("etype") is not None


class RedisSentinelDriver(RedisDriver):
    """``redissentinel://[:password@]host1:port1,host2:port2[/db]``.

    Options (keyword arguments, else ``[profiler]`` of ``conf``):
    ``sentinel_service_name`` (default ``mymaster``), ``socket_timeout``.
    The password, like osprofiler's, is the master's.
    """

    @classmethod
    def get_name(cls):
        return "redissentinel"

    def _connect(self):
        from redis import sentinel
        rest = self.connection_str.split("://", 1)[1]
        hosts, _, path = rest.partition("/")
        userinfo, _, hosts = hosts.rpartition("@")
        password = userinfo.partition(":")[2] or None
        sentinels = [self._host_port(h) for h in hosts.split(",") if h]
        if not sentinels:
            raise base.DriverError("redissentinel:// needs host:port[,...] "
                                   "of its sentinels")
        self.service_name = self.option("sentinel_service_name", "mymaster")
        self.where = "%s via sentinels %s" % (self.service_name, hosts)
        options = self._socket_options()
        watcher = sentinel.Sentinel(
            sentinels, password=password, sentinel_kwargs=options,
            db=_db_number(path.split("?")[0], self.connection_str),
            **options)
        return watcher.master_for(self.service_name, **options)

    def _host_port(self, text):
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise base.DriverError("bad sentinel address %r in %s (expected "
                                   "host:port)" % (text, logtext.mask_passwords(
                                       self.connection_str)))
        return host.strip("[]"), int(port)
