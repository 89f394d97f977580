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

and, for exactly-once writes:

``stacktrail_batches``
    a sorted set of the ids of the batches written in the last hour (the
    id is a hash of the batch's messages), score the time written.

A batch is one call of a Lua script, so Redis applies it whole and alone:
it first looks the batch's id up in ``stacktrail_batches`` and does
nothing when the batch is there already.  A write that timed out or lost
its connection after the command was sent may or may not have been
applied; it is sent once more (within ``store_timeout``), and whichever
copy Redis runs first is the only one stored; the agent's writer retries a
failed batch with the same messages, which Redis recognises the same way.
redis-py never retries a write blindly (``Retry(..., 0)``).  When both
attempts failed that way, the batch's id is kept and asked about with the
next batch: if it was stored after all, ``take_confirmed`` tells the
flusher, which then counts those points written rather than lost.

A key of the wrong type (a junk value where a trace's list should be) makes
that trace's points fail alone (``base.Rejected``, also a
``redis.ResponseError``); the rest of the batch is stored.  Reading skips
records that are not JSON and lists them in ``skipped``.

With ``retention`` (seconds) every key written gets that TTL, refreshed as
the trace grows, and old index entries are pruned.
"""

import array
import collections
import contextlib
import functools
import hashlib
import itertools
import json
import time

from stacktrail.common import clock
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.common import points
from stacktrail.drivers import base
from stacktrail.drivers import codec

PREFIX = "osprofiler_opt:"
READ_CHUNK = 20_000     # list items one LRANGE of the read side fetches
ERROR_PREFIX = "osprofiler_error:"
INDEX = "stacktrail_traces"
BATCHES = "stacktrail_batches"
DEDUPE_WINDOW = 3600
DEFAULT_TIMEOUT = 5.0
# ``[profiler] socket_timeout``'s default, meant for Sentinel connections.
SENTINEL_TIMEOUT = 0.1
SCAN_CHUNK = 500
# A write whose reply was lost is sent once more after this pause; when
# that fails too the flusher (or the agent) decides, and the batch's id is
# asked about with the next batch.
WRITE_ATTEMPTS = 2
RETRY_PAUSE = 0.05

# ARGV: batch id, now (s), dedupe window (s), ttl (0: none), index cutoff
# (us), D, D ids of earlier doubtful batches, T, then per trace: base_id,
# first microsecond, error marker JSON or "", N; last, every trace's N
# messages one after another, each ended by "\n" (JSON text never holds a
# raw newline): one argument instead of one per message, which is most of
# redis-py's cost per call.
# Returns {applied (1) or already there (0), ids of the doubtful batches
# found, {base_id, error, ...} of traces that could not be written}.
STORE_SCRIPT = """
local batches = 'stacktrail_batches'
local now = tonumber(ARGV[2])
local i = 6
local confirmed = {}
for d = 1, tonumber(ARGV[i]) do
  if redis.call('ZSCORE', batches, ARGV[i + d]) then
    confirmed[#confirmed + 1] = ARGV[i + d]
  end
end
i = i + tonumber(ARGV[i]) + 1
if redis.call('ZSCORE', batches, ARGV[1]) then
  return {0, confirmed, {}}
end
redis.call('ZADD', batches, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', batches, '-inf', now - tonumber(ARGV[3]))
local ttl = tonumber(ARGV[4])
local messages = ARGV[#ARGV]
local pos = 1
local find = string.find
local sub = string.sub
local failed = {}
local traces = tonumber(ARGV[i])
i = i + 1
for t = 1, traces do
  local base = ARGV[i]
  local first = ARGV[i + 1]
  local marker = ARGV[i + 2]
  local left = tonumber(ARGV[i + 3])
  local key = 'osprofiler_opt:' .. base
  i = i + 4
  local err = nil
  while left > 0 do
    local chunk = {}
    for c = 1, math.min(left, 1000) do
      local stop = find(messages, '\\n', pos, true)
      chunk[c] = sub(messages, pos, stop - 1)
      pos = stop + 1
    end
    left = left - #chunk
    if not err then
      local reply = redis.pcall('LPUSH', key, unpack(chunk))
      if type(reply) == 'table' and reply.err then
        err = reply.err
      end
    end
  end
  if err then
    failed[#failed + 1] = base
    failed[#failed + 1] = err
  else
    if ttl > 0 then redis.pcall('EXPIRE', key, ttl) end
    if marker ~= '' then
      if ttl > 0 then
        redis.pcall('SET', 'osprofiler_error:' .. base, marker, 'EX', ttl,
                    'NX')
      else
        redis.pcall('SET', 'osprofiler_error:' .. base, marker, 'NX')
      end
    end
    redis.pcall('ZADD', 'stacktrail_traces', 'LT', first, base)
  end
end
if ttl > 0 then
  redis.pcall('EXPIRE', 'stacktrail_traces', ttl)
  redis.pcall('ZREMRANGEBYSCORE', 'stacktrail_traces', '-inf',
              '(' .. ARGV[5])
end
return {1, confirmed, failed}
"""


def _import_redis():
    return base.require("redis", "redis")


def _db_number(path, connection_str):
    db = path.strip("/")
    if db and not db.isdigit():
        raise base.DriverError("bad redis database %r in %s (expected a "
                               "number)"
                               % (db, logtext.mask_passwords(connection_str)))
    return int(db or 0)


class RedisDriver(base.Driver):
    """``redis://[:password@]host:port[/db]``."""

    def __init__(self, connection_str, *args, **kwargs):
        super().__init__(connection_str, *args, **kwargs)
        self.redis = _import_redis()
        self.retention = int(self.option("retention", 0) or 0)
        # One socket operation; a write as a whole, retries included, gets
        # ``store_timeout``.
        self.timeout = float(self._socket_timeout())
        self._doubtful = collections.deque(maxlen=256)  # (batch id, points)
        self._confirmed = 0
        self.db = self._connect()
        self._script = self.db.register_script(STORE_SCRIPT)

    @classmethod
    def get_name(cls):
        return "redis"

    def _socket_timeout(self):
        """A ``socket_timeout`` keyword, else ``[profiler] socket_timeout``
        when set to other than its default, else DEFAULT_TIMEOUT.  That
        default (0.1 s) is osprofiler's for Sentinel connections: a plain
        store given it would fail any batch or report that keeps Redis
        busy longer than that."""
        value = self.options.get("socket_timeout")
        if value is None:
            value = self.option("socket_timeout")
            if value is None or float(value) == SENTINEL_TIMEOUT:
                value = DEFAULT_TIMEOUT
        return value

    def _connect(self):
        url = self.url
        try:
            port = url.port
        except ValueError:
            raise base.DriverError(
                "bad port in %s"
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
                "socket_connect_timeout": min(self.timeout,
                                              self.store_timeout),
                # Never a blind retry: a write whose reply was lost is sent
                # again by ``_run_script`` only, where it is idempotent.
                "retry": retry.Retry(backoff.NoBackoff(), 0),
                # A lone surrogate in an id a hostile peer sent must not
                # make a batch fail for ever (the agent would retry it).
                "encoding_errors": "surrogatepass"}

    @contextlib.contextmanager
    def _store_errors(self, key=None):
        """Read-side failures as one line (the CLI prints it)."""
        try:
            yield
        except self.redis.RedisError as exc:
            raise base.DriverError("redis at %s%s: %s" % (
                self.where, " (key %s)" % key if key else "",
                str(exc).splitlines()[0] if str(exc) else
                type(exc).__name__)) from None

    # write side

    def write_points(self, batch):
        texts = self.format_json(batch)
        if batch.__class__ is points.Batch:
            _, _, bases, _, _, times, infos = batch.columns
        else:
            to_uuid = ids.to_uuid
            bases = [to_uuid(p[2]) for p in batch]
            times = [p[5] for p in batch]
            infos = [p[6] for p in batch]
        errors = {}
        for index, info in enumerate(infos):
            if info and isinstance(info, dict) and \
                    info.get("etype") is not None and \
                    bases[index] not in errors:
                errors[bases[index]] = clock.format_timestamp(times[index])
        self._store(texts, _by_trace(bases, times, errors), batch)

    def write_messages(self, messages):
        errors = {}
        for message in messages:
            if _is_error(message):
                errors.setdefault(message["base_id"], message["timestamp"])
        self._store(list(map(base.to_json, messages)), _by_trace(
            [m["base_id"] for m in messages],
            [clock.parse_timestamp(m["timestamp"]) for m in messages],
            errors), messages)

    def notify(self, info, **kwargs):
        message = dict(info)
        message["project"] = self.project
        message["service"] = self.service
        self.write_messages([message])

    def content_error(self, exc):
        if isinstance(exc, self.redis.DataError):
            return True
        if isinstance(exc, self.redis.RedisError):
            return False
        return super().content_error(exc)

    def take_confirmed(self):
        """Points of batches that failed with a lost reply and were found
        stored since (the flusher counts them written, not lost)."""
        count, self._confirmed = self._confirmed, 0
        return count

    def _store(self, texts, traces, source):
        """One script call: lists, start-time index, error markers, TTLs,
        applied once even when sent several times.

        ``texts``: the JSON message of each point of ``source``;
        ``traces``: what ``_by_trace`` made of them.  The messages go as
        UTF-8 bytes (a lone surrogate a hostile peer sent is passed
        through, never a batch that fails for ever), trace by trace in one
        argument, and the batch's id is the hash of that argument.
        """
        ordered, entries = traces
        ttl = self.retention or 0
        now = time.time()
        if "\n" in "".join(texts):
            # The script would cut the messages wrong: refused for the
            # content (``base.deliver`` isolates the point), never sent.
            # (Joined and searched at memory speed: counting the blob's
            # newlines cost the agent a tenth of its time.)
            raise ValueError("a message holds a raw newline")
        # each message followed by "\n" (nothing at all for no message)
        messages = itertools.chain(map(texts.__getitem__, ordered), ("",))
        blob = "\n".join(messages).encode("utf-8", "surrogatepass")
        batch_id = _batch_id(blob, source, (self.project, self.service,
                                            self.host))
        body = []
        for base_id, first_us, error_at, members in entries:
            marker = ""
            if error_at is not None:
                marker = json.dumps({"base_id": base_id,
                                     "timestamp": error_at})
            body += [_bytes(base_id), first_us, marker, len(members)]
        doubtful = list(self._doubtful)
        args = [batch_id, "%.6f" % now, DEDUPE_WINDOW, ttl,
                "%d" % ((now - ttl) * 1_000_000) if ttl else 0,
                len(doubtful)] + [d for d, _ in doubtful]
        args += [len(entries)] + body + [blob]
        reply = self._run_script(args, batch_id, len(ordered))
        found = {_text(d) for d in reply[1]}
        for entry in doubtful:
            try:
                self._doubtful.remove(entry)
            except ValueError:
                pass
            if entry[0] in found:
                self._confirmed += entry[1]
        failed = reply[2]
        if failed:
            members_of = {entry[0]: entry[3] for entry in entries}
            rejected = []
            errors = []
            for index in range(0, len(failed), 2):
                base_id = _text(failed[index])
                error = _text(failed[index + 1])
                errors.append(error)
                rejected += [(source[i], "%s: %s" % (PREFIX + base_id,
                                                     error))
                             for i in members_of.get(base_id, ())]
            raise _RejectedReply(
                "%s (key %s%s)" % (errors[0], PREFIX, _text(failed[0])),
                rejected)

    def _run_script(self, args, batch_id, count):
        """Run the store script; when its reply was lost, send it once
        more (safe: a batch is applied once) within ``store_timeout``."""
        redis = self.redis
        deadline = time.monotonic() + self.store_timeout
        attempt = 0
        sent_once = False
        while True:
            try:
                return self._script(args=args)
            except (redis.TimeoutError, redis.ConnectionError) as exc:
                # Refused at connect: nothing was sent, the store is down.
                sent = "connecting" not in str(exc).lower() \
                    and not isinstance(exc, redis.BusyLoadingError)
                sent_once = sent_once or sent
                attempt += 1
                if not sent or attempt >= WRITE_ATTEMPTS or \
                        time.monotonic() + RETRY_PAUSE >= deadline:
                    if sent_once:   # it may have been applied: ask later
                        self._doubtful.append((batch_id, count))
                    raise
                time.sleep(RETRY_PAUSE)

    def close(self):
        self.db.close()

    # after fork: redis-py's connection pool notices the new pid and opens
    # fresh connections by itself, so the base no-op is enough.

    # read side

    def get_messages(self, base_id):
        """The trace's messages, oldest first.  Read READ_CHUNK items at a
        time from the tail (where the oldest are, and where indexes stay
        put while a service LPUSHes more), each chunk decoded before the
        next is read: a million-point trace never holds all of its raw
        bytes and all of its messages at once."""
        key = PREFIX + base_id
        messages = []
        stop = -1
        while True:
            with self._store_errors(key):
                raw = self.db.lrange(key, stop - READ_CHUNK + 1, stop)
            raw.reverse()   # LPUSHed: the oldest message is at the tail
            values, bad = codec.loads_each(raw)
            for index in bad:
                self._skip(key, "item %d is not JSON" % (index - stop - 1))
            messages += values
            if len(raw) < READ_CHUNK:
                return messages
            stop -= READ_CHUNK

    def _scan(self, prefix):
        """Keys with ``prefix`` in chunks, each with its base_id."""
        chunk = []
        for key in self.db.scan_iter(match=prefix + "*", count=SCAN_CHUNK):
            key = key.decode("utf-8", "replace") \
                if isinstance(key, bytes) else key
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
                replies = pipe.execute(raise_on_error=False)
                for i, (key, _) in enumerate(chunk):
                    raw, start = replies[2 * i], replies[2 * i + 1]
                    if isinstance(raw, Exception):
                        self._skip(key, logtext.one_line(raw, with_type=False))
                        continue
                    try:
                        trace = self._first(raw, None if isinstance(
                            start, Exception) else start)
                    except (ValueError, TypeError, AttributeError):
                        self._skip(key, "not a JSON message")
                        continue
                    if trace is not None:
                        result.append({k: v for k, v in trace.items()
                                       if k in fields})
        return sorted(result, key=lambda t: str(t.get("timestamp") or ""))

    @staticmethod
    def _first(raw, start_us):
        if raw is None:  # expired between SCAN and LINDEX
            return None
        first = json.loads(raw)
        if not isinstance(first, dict):
            raise TypeError("not a message")
        if start_us is not None:
            first["timestamp"] = clock.format_timestamp(int(start_us) * 1000)
        return first

    def list_error_traces(self):
        result = []
        with self._store_errors():
            for chunk in self._scan(ERROR_PREFIX):
                pipe = self.db.pipeline(transaction=False)
                for key, _ in chunk:
                    pipe.get(key)
                replies = pipe.execute(raise_on_error=False)
                for (key, _), raw in zip(chunk, replies):
                    if raw is None:
                        continue
                    try:
                        if isinstance(raw, Exception):
                            raise ValueError(logtext.one_line(
                                raw, with_type=False))
                        marker = json.loads(raw)
                        if not isinstance(marker, dict):
                            raise ValueError("not a JSON object")
                    except ValueError as exc:
                        self._skip(key, str(exc) or "not JSON")
                        continue
                    result.append(marker)
        return sorted(result, key=lambda t: str(t.get("timestamp") or ""))


def _text(value):
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return value.decode("utf-8", "surrogateescape")


def _bytes(text):
    return text.encode("utf-8", "surrogatepass") \
        if isinstance(text, str) else text


@functools.lru_cache(maxsize=None)
def _rejected_reply_class():
    redis = _import_redis()

    class RejectedReply(base.Rejected, redis.ResponseError):
        """Some traces of a batch could not be written (a key of the wrong
        type); the others were."""

    return RejectedReply


def _RejectedReply(message, rejected):
    return _rejected_reply_class()(message, rejected)


def _is_error(message):
    info = message.get("info")
    return isinstance(info, dict) and info.get("etype") is not None


def _batch_id(blob, source, origin):
    """What recognises a batch sent again: the hash of its text, or for a
    batch with columns (what the agent writes) of who sent it and its
    points' span ids, phases and clocks, which tell its points apart as
    well with a tenth of the bytes to hash."""
    if source.__class__ is points.Batch:
        _, phases, _, _, traces, times, _ = source.columns
        try:
            clocks = array.array("Q", times)
        except (OverflowError, TypeError):
            pass   # hand-made columns: the general way
        else:
            digest = hashlib.sha1(json.dumps([origin, len(clocks)]).encode())
            digest.update("\n".join(traces).encode("utf-8",
                                                   "surrogatepass"))
            digest.update(bytes(phases))
            digest.update(clocks)
            return digest.hexdigest()[:32]
    return hashlib.sha1(blob).hexdigest()[:32]


def _by_trace(bases, times, errors):
    """The points of a batch grouped by trace: (ordered, entries).

    ``ordered``: the indexes of the points, trace by trace (traces in
    order of first appearance, points in batch order within one);
    ``entries``: per trace (base_id, earliest microsecond, ``errors``'
    time text for it or None, the indexes of its points).  C-level passes
    (a stable sort on each point's trace rank), not a Python loop per
    point.
    """
    rank = dict(zip(dict.fromkeys(bases), itertools.count()))
    keys = list(map(rank.__getitem__, bases))
    ordered = sorted(range(len(keys)), key=keys.__getitem__)
    ordered_times = list(map(times.__getitem__, ordered))
    sizes = collections.Counter(keys)
    entries = []
    start = 0
    for base_id, key in rank.items():
        end = start + sizes[key]
        entries.append((base_id, min(ordered_times[start:end]) // 1000,
                        errors.get(base_id), ordered[start:end]))
        start = end
    return ordered, entries


class RedisSentinelDriver(RedisDriver):
    """``redissentinel://[:password@]host1:port1,host2:port2[/db]``.

    Options (keyword arguments, else ``[profiler]`` of ``conf``):
    ``sentinel_service_name`` (default ``mymaster``), ``socket_timeout``.
    The password, like osprofiler's, is the master's.
    """

    @classmethod
    def get_name(cls):
        return "redissentinel"

    def _socket_timeout(self):
        return self.option("socket_timeout", DEFAULT_TIMEOUT)

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
                                   "host:port)"
                                   % (text, logtext.mask_passwords(
                                       self.connection_str)))
        return host.strip("[]"), int(port)
