"""Tail sampling: the agent decides which traces reach the store after
seeing them.

With ``[agent] tail_sampling = true`` services record every request (head
sampling rate 1 in their policy or ``[profiler]``), and the agent holds
each trace's points in memory until it can decide:

* at once, when a point says to keep it: an error (a stop with ``etype``
  or ``error``), a span slower than its operation's threshold
  (``slow_ms`` of the policy: per operation name, ``default`` for the
  request's root span), or an ``always_keep`` rule (operation name, or
  the path of a ``wsgi`` request);
* ``tail_settle`` seconds after the root span stopped (so that the other
  nodes' agents had time to say they keep it), by the policy's rate for
  the root's project, service and operation.  The rate is applied to a
  hash of the trace id, so every agent draws the same lot;
* ``tail_timeout`` seconds after the first point, whatever happened.

A trace any agent keeps is published in the shared store (a Redis key
per trace, expiring); before dropping a trace an agent asks whether
another kept it, so a trace kept on one node is kept on every node.
Points of a trace already decided pass (kept) or are dropped at once.

Memory is bounded: past ``tail_max_traces`` held traces or
``tail_max_points`` held points, the oldest traces are decided early.
Every dropped point is counted by reason (``tail_sampled_out``: the trace
was not kept; ``tail_late``: it came after its trace was dropped).
"""

import collections
import logging
import threading
import time
import zlib

from stacktrail.agent import protocol
from stacktrail.common import ids
from stacktrail.common import logtext
from stacktrail.common import policy as policy_mod

LOG = logging.getLogger(__name__)

TICK = 0.1
KEY = "stacktrail:tail:kept:"
DECIDED_MEMORY = 200000    # recently decided trace ids remembered


def lot(base_id):
    """A number in [0, 1) from the trace id, the same on every agent
    whether the id came as an integer or as UUID text."""
    return zlib.crc32(ids.to_uuid(base_id).encode()) / 4294967296.0


class Held:
    """One trace's points on this node while its fate is open."""

    __slots__ = ("points", "n", "first", "reason", "root", "starts")

    def __init__(self, now):
        self.points = {}      # origin (project, service, host) -> points
        self.n = 0
        self.first = now
        self.reason = None    # why it is kept, once known
        self.root = None      # (project, service, name) of the root span
        self.starts = {}      # span id -> (start ns, is the root span)


class RedisDecisions:
    """Kept trace ids shared by every agent writing to one Redis."""

    def __init__(self, url, ttl, timeout=1.0):
        import redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.ttl = max(1, int(ttl))

    def publish(self, base_ids):
        pipe = self.client.pipeline(transaction=False)
        for base_id in base_ids:
            pipe.set(KEY + ids.to_uuid(base_id), 1, ex=self.ttl)
        pipe.execute()

    def kept(self, base_ids):
        pipe = self.client.pipeline(transaction=False)
        for base_id in base_ids:
            pipe.exists(KEY + ids.to_uuid(base_id))
        return {b for b, found in zip(base_ids, pipe.execute()) if found}

    def close(self):
        self.client.close()


class LocalDecisions:
    """No shared store: this agent's own decisions only."""

    def publish(self, base_ids):
        pass

    def kept(self, base_ids):
        return set()

    def close(self):
        pass


class TailStage:
    """Holds points per trace and hands kept traces to ``emit(payload,
    frame, n_points)`` (the agent's spool path), from its own thread."""

    def __init__(self, emit, policy, decisions, timeout=5.0, settle=1.0,
                 max_traces=100000, max_points=2000000, log_interval=60.0):
        self.emit = emit
        self.policy = policy          # callable: the current Policy or None
        self.decisions = decisions
        self.timeout = timeout
        self.settle = settle
        self.max_traces = max_traces
        self.max_points = max_points
        self.held = collections.OrderedDict()   # base id -> Held, oldest 1st
        self.held_points = 0
        self.decided = collections.OrderedDict()  # base id -> kept (bool)
        self.passing = []             # (origin, point) of kept traces
        self._early = []              # evicted when memory was full
        # what may be ready, so that a pass looks only at those: traces
        # with a reason to keep, and root ends in time order
        self._flagged = []
        self._ended = collections.deque()
        self.kept = collections.Counter()       # reason -> traces
        self.dropped = collections.Counter()    # reason -> points
        self.dropped_traces = 0
        self.shared_errors = 0
        self._lock = threading.Lock()
        self._throttle = logtext.Throttle(log_interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="stacktrail-tail")

    def start(self):
        self._thread.start()

    # --- listener thread ---------------------------------------------------

    def offer(self, frame):
        """Take the points of a decoded frame."""
        origin = tuple(frame.origin)
        policy = self.policy() or policy_mod.Policy()
        now = time.monotonic()
        with self._lock:
            for point in frame.points():
                try:
                    self._take(origin, point, policy, now)
                except Exception:   # one odd point must not stop the rest
                    self.dropped["tail_error"] += 1
            while len(self.held) > self.max_traces or \
                    self.held_points > self.max_points:
                # the oldest are decided early (they may still be kept)
                base_id, held = self.held.popitem(last=False)
                self.held_points -= held.n
                self._early.append((base_id, held))

    def _take(self, origin, point, policy, now):
        base_id = point[2]
        fate = self.decided.get(base_id)
        if fate is not None:
            if fate:
                self.passing.append((origin, point))
            else:
                self.dropped["tail_late"] += 1
            return
        held = self.held.get(base_id)
        if held is None:
            held = self.held[base_id] = Held(now)
        held.points.setdefault(origin, []).append(point)
        held.n += 1
        self.held_points += 1
        if held.reason is None:
            held.reason = self._reason(origin, point, held, policy, now)
            if held.reason is not None:
                self._flagged.append(base_id)

    def _reason(self, origin, point, held, policy, now):
        """Why this point makes its trace worth keeping, or None."""
        name, phase, base_id, parent_id, span_id, ns, info = point
        info = info if info.__class__ is dict else {}
        if policy.always_keeps(operation=name):
            return "always"
        is_root = parent_id == base_id
        if phase == 0:
            request = info.get("request")
            if request.__class__ is dict and \
                    policy.always_keeps(path=request.get("path")):
                return "always"
            if is_root or name in policy.slow_ms:
                held.starts[span_id] = (ns, is_root)
            return None
        if "etype" in info or info.get("error"):
            return "error"
        started = held.starts.pop(span_id, None)
        if is_root:
            held.root = (origin[0], origin[1], name)
            self._ended.append((now, base_id))
        if started is not None:
            threshold = policy.slow_ms.get(name)
            if threshold is None and started[1]:
                threshold = policy.slow_ms.get("default")
            if threshold is not None and \
                    (ns - started[0]) / 1e6 > threshold:
                return "slow"
        return None

    # --- tail thread -------------------------------------------------------

    def _run(self):
        while not self._stop.wait(TICK):
            try:
                self.decide(time.monotonic())
            except Exception:   # never stop deciding over one bad trace
                LOG.exception("tail sampling pass failed")

    def decide(self, now, everything=False):
        """One pass: decide what is ready, emit what is kept."""
        policy = self.policy() or policy_mod.Policy()
        with self._lock:
            ready = []
            due = self._flagged
            self._flagged = []
            ended = self._ended
            while ended and (everything or now - ended[0][0] >= self.settle):
                due.append(ended.popleft()[1])
            held = self.held
            for base_id in due:
                trace = held.pop(base_id, None)
                if trace is not None:
                    ready.append((base_id, trace))
            # held is in order of first point: the timed out lead it
            while held and (everything or now - next(iter(
                    held.values())).first >= self.timeout):
                ready.append(held.popitem(last=False))
            for _, trace in ready:
                self.held_points -= trace.n
            ready += self._early     # already subtracted when evicted
            self._early = []
            passing, self.passing = self.passing, []
        keep, undecided = [], []
        for base_id, held in ready:
            if held.reason is None and held.root is not None and \
                    lot(base_id) < policy.rate_for(*held.root):
                held.reason = "rate"
            (keep if held.reason else undecided).append((base_id, held))
        self._share(keep, undecided)
        with self._lock:
            for base_id, held in keep:
                self.kept[held.reason] += 1
                self._remember(base_id, True)
            for base_id, held in undecided:
                self.dropped["tail_sampled_out"] += held.n
                self.dropped_traces += 1
                self._remember(base_id, False)
        self._emit(passing, keep)

    def _share(self, keep, undecided):
        """Publish what we keep; keep what another agent kept.  Each step
        on its own: a failed publish must not skip the lookup."""
        mine = [b for b, h in keep if h.reason != "shared"]
        if mine:
            self._shared(self.decisions.publish, mine)
        if undecided:
            theirs = self._shared(self.decisions.kept,
                                  [b for b, _ in undecided]) or ()
            for base_id, held in list(undecided):
                if base_id in theirs:
                    held.reason = "shared"
                    undecided.remove((base_id, held))
                    keep.append((base_id, held))

    def _shared(self, call, base_ids):
        """``call(base_ids)`` on the shared store; None when unreachable."""
        try:
            return call(base_ids)
        except Exception as exc:
            self.shared_errors += 1
            self._throttle.log(LOG, logging.WARNING, "shared",
                               "tail sampling: the shared decisions are "
                               "not reachable, deciding alone: %s",
                               logtext.one_line(exc))
            return None

    def _remember(self, base_id, kept):
        self.decided[base_id] = kept
        if len(self.decided) > DECIDED_MEMORY:
            self.decided.popitem(last=False)

    def _emit(self, passing, keep):
        by_origin = collections.defaultdict(list)
        for origin, point in passing:
            by_origin[origin].append(point)
        for _, held in keep:
            for origin, points in held.points.items():
                by_origin[origin].extend(points)
        for origin, points in by_origin.items():
            # version 1: the points are already decoded (text ids)
            frames, lost = protocol.encode_batch(points, *origin, parts=True,
                                                 version=1)
            if lost:
                self.dropped["tail_unencodable"] += lost
            for data, n, part in frames:
                payload = data[protocol.HEADER.size:]
                self.emit(payload, protocol.Frame(
                    origin, n, 1, list(origin) + [part]), n)

    # --- status and stop -----------------------------------------------------

    def status(self):
        with self._lock:
            return {"held_traces": len(self.held),
                    "held_points": self.held_points,
                    "kept_traces": dict(self.kept),
                    "dropped_traces": self.dropped_traces,
                    "shared_errors": self.shared_errors}

    def drops(self):
        with self._lock:
            return dict(self.dropped)

    def close(self):
        """Stop the thread and decide everything still held."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.decide(time.monotonic(), everything=True)
        self.decisions.close()


def create(group, emit, serving=None):
    """The tail stage of ``group`` (the ``[agent]`` options), or None.
    ``serving``: the agent's sampling policy (``agent.policy.Serving``)."""
    if not group.tail_sampling:
        return None
    current_policy = serving.current if serving is not None else \
        (lambda: None)
    url = group.tail_decision_store or next(
        (c for c in group.connection_string
         if c.startswith(("redis://", "rediss://"))), "")
    if url:
        decisions = RedisDecisions(url, ttl=max(60.0, 4 * group.tail_timeout))
    else:
        LOG.warning("tail_sampling without a redis:// store: decisions are "
                    "not shared with other agents (a trace may be kept on "
                    "one node only)")
        decisions = LocalDecisions()
    return TailStage(emit, current_policy, decisions,
                     timeout=group.tail_timeout, settle=group.tail_settle,
                     max_traces=group.tail_max_traces,
                     max_points=group.tail_max_points,
                     log_interval=group.log_interval)
