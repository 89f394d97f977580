"""Never break Zaqar: a real zaqar-server while its trace store or agent fails.

Each case runs Zaqar 23 from PyPI traced from its configuration files alone
(``zaqar.conf`` + the shipped ``etc/zaqar/stacktrail.conf``), its message
store on the test Redis, and breaks only the tracing side, with a
redis-server or a stacktrail-agent of the test's own:

=====  ======================  ==========================================
case   connection_string       fault, injected while requests run
=====  ======================  ==========================================
(a)    ``redis://``            the trace store SIGKILLed, twice
(b)    ``redis://``            the trace store SIGSTOPped (hung), SIGCONT
(c)    ``redis://``            the trace store never started (port closed)
(d)    ``agent://``            the agent SIGKILLed, then started again
(e)    ``agent://``            the agent SIGSTOPped (hung), SIGCONT
(f)    ``agent://``            the agent's own store stopped for a while
=====  ======================  ==========================================

While the fault lasts, a loop sends signed (traced) requests and untraced
requests to the server, and the same untraced requests, interleaved in
random order, to a control server: the same traced Zaqar whose trace store
is healthy.  Every case then checks that

1. no request failed (every POST 201, every GET 200), the server process is
   the one started, and its log has no ERROR line and no traceback;
2. untraced requests were not slowed: their latencies beside the control's,
   sampled in the same seconds (medians and 90th percentiles, with slack for
   a noisy 2-core machine; never absolute times from another run); signed
   requests neither, with more slack;
3. each message is stored exactly once: read back from Zaqar page by page,
   exactly the bodies Zaqar accepted, none twice;
4. stacktrail logged one warning per outage (plus at most one "is back"),
   not one per request;
5. tracing recovers without a restart: once the store or agent answers
   again, a new signed request is traced, complete, by the same process.

Case (a) also checks the count in each "is back" line against the points
missing from that outage's traces, and case (f) the agent's promise: no
trace point lost across an outage of its store.  The issue asks for a 60 s
outage; (f) stops the store for ``OUTAGE_SECONDS`` (12 s) to keep the suite
fast, which still spans dozens of the agent's retries
(``retry_max_interval`` 0.5 s here); ``benchmarks/agent_faults.py`` runs the
60 s version.
"""

import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path
from urllib import parse

import pytest

from tests import servers
from tests.agent import harness
from tests.services import tracing
from tests.services import zaqar

FRAGMENT = zaqar.FRAGMENT
FAULT_SECONDS = 3.0       # requests sent while the store or agent is broken
OUTAGE_SECONDS = 12.0     # case (f): the agent's store is down this long
RECOVERY_TIMEOUT = 20.0   # the flusher's backoff is at most 5 s
MIN_STEPS = 15            # per fault phase, however slow the machine is
BATCH = 500               # the flusher's batch size (common.buffer)
PAGE = 10                 # messages a GET lists by default
AGENT_BATCH = 2000        # the agent's batch_size (default)

# Latency tolerance: a faulty server's untraced requests against the
# control's, sampled side by side (both ~15-25 ms a round trip here).  A
# request waiting on the store would cost at least the store's socket
# timeout (0.1 s by default, 1 s in the hung-store case), or the agent's
# send timeout (0.25 s), far beyond these.
MEDIAN_RATIO, MEDIAN_SLACK = 1.5, 0.015
P90_RATIO, P90_SLACK = 2.0, 0.05

# oslo.log: "2026-01-01 12:00:00.000 PID LEVEL logger [-] message"
_WARNING = re.compile(r"^\S+ \S+ \d+ (WARNING|ERROR|CRITICAL) ")
_ERROR = re.compile(r"^\S+ \S+ \d+ (ERROR|CRITICAL) ")
_LOST = re.compile(r"store is back; (\d+) points were lost")


# --- fixtures ---------------------------------------------------------------

def _traced_server(directory, store, message_store, env, overlay,
                   overrides=None):
    """The context manager of a zaqar-server traced into ``store``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Every signed round trip must be traced whatever the machine's speed:
    # the per-process limit on triggered traces is not under test here.
    overrides = dict({"max_triggered_traces_per_second": 0},
                     **(overrides or {}))
    extra = [FRAGMENT, zaqar.write_overrides(directory, overrides)]
    return zaqar.zaqar_server(
        directory, message_store, env=env, overlay=overlay,
        extra_conf_files=extra,
        profiler={"connection_string": store, "hmac_keys": tracing.KEY})


@pytest.fixture(scope="module")
def control(tmp_path_factory, _redis, zaqar_env, stacktrail_overlay):
    """The reference server: the same traced Zaqar, trace store healthy (a
    file), message store a Redis db of its own.  Only untraced requests go
    to it, interleaved with the faulty server's."""
    directory = tmp_path_factory.mktemp("control")
    with servers.redis_db(_redis) as db:
        url = "redis://%s:%d/%d" % (_redis.host, _redis.port, db)
        with _traced_server(directory, "file://%s" % (directory / "t.jsonl"),
                            url, zaqar_env, stacktrail_overlay) as server:
            yield server


@pytest.fixture
def start(tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    """start(store, overrides=None) -> a running traced zaqar-server."""
    with contextlib.ExitStack() as stack:
        def start(store, overrides=None):
            directory = tmp_path / "server"
            return stack.enter_context(_traced_server(
                directory, store, redis_url, zaqar_env, stacktrail_overlay,
                overrides))
        yield start


class DurableRedis(harness.ThrowawayRedis):
    """A redis-server of our own on a fixed port that keeps every write it
    acknowledged across a SIGKILL (append-only file, fsync always), so that
    what the store lacks afterwards is only what stacktrail never wrote."""

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            harness.wait_for(lambda: _ping(client), 10,
                             what="redis on %d" % self.port)
        finally:
            client.close()
        return self


def _ping(client):
    try:
        return client.ping()
    except Exception:
        return False


@pytest.fixture
def trace_redis():
    """trace_redis(start=True) -> a DurableRedis, ended with the test."""
    made = []

    def make(start=True):
        store = DurableRedis()
        made.append(store)
        return store.start() if start else store

    yield make
    for store in made:
        _resume(store.proc)
        store.close()


@pytest.fixture
def agent_for():
    """agent_for(*stores) -> a running stacktrail-agent writing to each
    store (objects with ``url``, or connection strings)."""
    made = []

    def make(*stores):
        agent = harness.Agent(harness.short_dir(), [
            getattr(store, "url", store) for store in stores])
        made.append(agent)
        return agent.start()

    yield make
    for agent in made:
        if agent.proc is not None and agent.proc.poll() is None:
            _resume(agent.proc)
            agent.proc.kill()
            agent.proc.wait(10)
        shutil.rmtree(agent.workdir, ignore_errors=True)


def _resume(proc):
    """SIGCONT a process we stopped (stopped, it would not act on SIGTERM)."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)


def _kill(proc):
    proc.kill()
    proc.wait(10)


# --- load: signed and untraced requests, side by side -----------------------

class Load:
    """Round trips (POST one message, GET) against the server under test,
    each step one signed and one untraced, plus an untraced one against the
    control server, in random order."""

    def __init__(self, server, control, queue):
        self.server = server
        self.client = server.client()
        self.reference = control.client()
        self.queue = queue
        self.pid = server.pid
        assert self.client.create_queue(queue).status_code == 201
        assert self.reference.create_queue(queue).status_code in (201, 204)
        self.posted = []                               # bodies Zaqar took
        self.failures = []                             # (what, status, text)
        self.latency = collections.defaultdict(list)   # (phase, kind)
        self.traces = collections.defaultdict(list)    # phase -> base_ids
        self.count = 0
        # A full page from the start: every GET lists PAGE messages, so
        # every signed round trip records the same number of points.
        for client in (self.client, self.reference):
            bodies = [self._body("prefill", "prefill") for _ in range(PAGE)]
            resp = client.post_messages(queue, [{"body": b, "ttl": 900}
                                                for b in bodies])
            assert resp.status_code == 201, resp.text
            if client is self.client:
                self.posted += bodies

    def _body(self, kind, phase):
        self.count += 1
        return {"n": self.count, "kind": kind, "phase": phase}

    def _round_trip(self, client, kind, phase, headers=None):
        body = self._body(kind, phase)
        began = time.perf_counter()
        posted = client.post_messages(self.queue, [{"body": body,
                                                    "ttl": 900}],
                                      headers=headers)
        got = client.get_messages(self.queue, headers=headers)
        self.latency[phase, kind].append(time.perf_counter() - began)
        if posted.status_code != 201:
            self.failures.append(("POST %s %s" % (kind, phase),
                                  posted.status_code, posted.text[:200]))
        elif client is self.client:
            self.posted.append(body)
        if got.status_code != 200:
            self.failures.append(("GET %s %s" % (kind, phase),
                                  got.status_code, got.text[:200]))

    def step(self, phase):
        """One signed round trip, then the untraced pair; the trace id."""
        base_id, headers = tracing.signed_headers()
        self.traces[phase].append(base_id)
        self._round_trip(self.client, "signed", phase, headers)
        pair = [(self.client, "untraced"), (self.reference, "reference")]
        random.shuffle(pair)
        for client, kind in pair:
            self._round_trip(client, kind, phase)
        return base_id

    def run(self, phase, seconds, min_steps=MIN_STEPS):
        deadline = time.monotonic() + seconds
        steps = 0
        while time.monotonic() < deadline or steps < min_steps:
            self.step(phase)
            steps += 1

    # -- checks --

    def assert_no_failure(self):
        """Every request answered as it should, by the same process, and
        nothing in its log at ERROR or above, no traceback."""
        assert self.failures == [], self.failures[:5]
        assert self.server.running() and self.server.pid == self.pid
        log = self.server.log_text(whole=True)
        assert [line for line in log.splitlines()
                if _ERROR.search(line)] == []
        assert "Traceback" not in log

    def assert_not_slowed(self, *phases):
        """Untraced requests as fast as the control's, sampled in the same
        seconds; signed ones too, with more slack (tracing's own cost)."""
        ref = self._latencies(phases, "reference")
        for kind, ratio, slack in (("untraced", 1, 1), ("signed", 1.5, 2)):
            mine = self._latencies(phases, kind)
            summary = "%s: %s; control: %s (%d samples)" % (
                kind, _summary(mine), _summary(ref), len(mine))
            assert statistics.median(mine) <= ratio * (
                MEDIAN_RATIO * statistics.median(ref) + slack * MEDIAN_SLACK
            ), summary
            assert _p90(mine) <= ratio * (
                P90_RATIO * _p90(ref) + slack * P90_SLACK), summary

    def _latencies(self, phases, kind):
        return [t for phase in phases for t in self.latency[phase, kind]]

    def assert_stored_once(self):
        """Zaqar holds exactly the messages it accepted, each once."""
        stored = stored_bodies(self.client, self.queue)
        counts = collections.Counter(body["n"] for body in stored)
        assert [n for n, c in counts.items() if c > 1] == []
        assert sorted(stored, key=lambda b: b["n"]) == self.posted


def _p90(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _summary(values):
    return "median %.1f ms, p90 %.1f ms, max %.1f ms" % (
        1000 * statistics.median(values), 1000 * _p90(values),
        1000 * max(values))


def stored_bodies(client, queue):
    """Every message body in ``queue``, read page by page (echo on)."""
    bodies, marker = [], None
    for _ in range(10000):
        params = {"limit": 20}
        if marker:
            params["marker"] = marker
        resp = client.get_messages(queue, **params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        if not page["messages"]:
            return bodies
        bodies += [m["body"] for m in page["messages"]]
        href = page["links"][0]["href"]
        marker = dict(parse.parse_qsl(parse.urlsplit(href).query))["marker"]
    raise AssertionError("no end to the listing of %s" % queue)


# --- traces and logs --------------------------------------------------------

def complete(found):
    """Whether a round trip's trace is all there: the POST and GET spans,
    every span started and stopped."""
    names = [m["name"] for m in found]
    starts = {m["trace_id"] for m in found if m["name"].endswith("-start")}
    stops = {m["trace_id"] for m in found if m["name"].endswith("-stop")}
    return (names.count("wsgi-start") == 2 and names.count("wsgi-stop") == 2
            and starts == stops)


def assert_traced(load, store_url, phase="warmup"):
    """Tracing works (before the fault): a signed round trip, complete."""
    base_id = load.step(phase)
    found = tracing.wait_for_messages(store_url, base_id, settle=0.5)
    assert complete(found), tracing.span_names(found)
    return found


def assert_recovers(load, store_url, phase="after",
                    timeout=RECOVERY_TIMEOUT):
    """Signed requests are traced again by the same process: keep sending
    until one reaches the store, then one more must arrive complete."""
    deadline = time.monotonic() + timeout
    while True:
        load.step(phase)
        time.sleep(0.2)
        if any(tracing.messages(store_url, b) for b in load.traces[phase]):
            break
        assert time.monotonic() < deadline, \
            "no trace reached the store %.0f s after it came back" % timeout
    assert_traced(load, store_url, phase)
    assert load.server.running() and load.server.pid == load.pid


def stacktrail_lines(server):
    """stacktrail's warning and error lines in the server's log."""
    return [line for line in server.log_text(whole=True).splitlines()
            if _WARNING.search(line) and "stacktrail" in line]


def assert_one_line_per_outage(server, outages=1):
    """One "cannot write" warning per outage and at most one "is back",
    nothing else from stacktrail, no traceback."""
    lines = stacktrail_lines(server)
    down = [line for line in lines if "cannot write" in line]
    back = [line for line in lines if "is back" in line]
    assert len(down) == outages, lines
    assert len(back) <= outages, lines
    assert len(lines) == len(down) + len(back), lines
    assert "Traceback" not in server.log_text(whole=True)


# --- redis:// ---------------------------------------------------------------

def test_redis_store_killed_mid_requests(start, control, trace_redis):
    """(a) The trace store's redis-server is SIGKILLed while requests run
    and started again on its port, twice: two outages, two warnings.

    Each "is back" line says how many points that outage lost: exactly
    the points missing from the traces sent around it (every round trip
    records as many points as the warm-up's, and the store keeps every
    write it acknowledged, fsync always), or up to one batch more (a batch
    redis took just before it died still counts as lost).
    ``buffer_size`` is small so that an outage also drops points at a full
    buffer, not only in failed batches."""
    store = trace_redis()
    server = start(store.url, {"buffer_size": 1000})
    load = Load(server, control, "killed")
    size = len(assert_traced(load, store.url))
    for outage in (1, 2):
        load.run("before%d" % outage, 1.0, min_steps=5)
        _kill(store.proc)
        load.run("fault%d" % outage, FAULT_SECONDS)
        store.start()
        assert_recovers(load, store.url, "after%d" % outage)

    load.assert_no_failure()
    load.assert_not_slowed("fault1", "fault2")
    load.assert_stored_once()
    assert_one_line_per_outage(server, outages=2)

    found = {b: len(tracing.messages(store.url, b))
             for phase in load.traces for b in load.traces[phase]}
    assert max(found.values()) == size            # none stored twice
    reported = [int(n) for n in _LOST.findall(server.log_text(whole=True))]
    assert len(reported) == 2
    for outage, lost in zip((1, 2), reported):
        missing = sum(size - found[b]
                      for phase in ("before", "fault", "after")
                      for b in load.traces["%s%d" % (phase, outage)])
        assert missing > 0
        assert missing <= lost <= missing + BATCH, \
            "outage %d: %d points reported lost, %d missing" % (
                outage, lost, missing)


def test_redis_store_hung_mid_requests(start, control, trace_redis):
    """(b) The trace store is SIGSTOPped (it accepts connections, answers
    nothing) while requests run, then SIGCONTed.  Its socket timeout is
    raised to 1 s (default 0.1 s) so that a request ever waiting on the
    store would stand out."""
    store = trace_redis()
    server = start(store.url, {"socket_timeout": 1.0})
    load = Load(server, control, "hung")
    size = len(assert_traced(load, store.url))
    load.run("before", 0.5, min_steps=3)
    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        load.run("fault", FAULT_SECONDS + 1.0)
    finally:
        _resume(store.proc)
    assert_recovers(load, store.url)

    load.assert_no_failure()
    load.assert_not_slowed("fault")
    load.assert_stored_once()
    assert_one_line_per_outage(server)
    # A write that timed out was not sent again: no point stored twice.
    assert max(len(tracing.messages(store.url, b))
               for phase in load.traces for b in load.traces[phase]) == size


def test_redis_store_never_started(start, control, trace_redis):
    """(c) The service starts while nothing listens on the store's port;
    the store appears later."""
    store = trace_redis(start=False)
    server = start(store.url)
    load = Load(server, control, "absent")
    load.run("fault", FAULT_SECONDS)
    store.start()
    assert_recovers(load, store.url)

    load.assert_no_failure()
    load.assert_not_slowed("fault")
    load.assert_stored_once()
    assert_one_line_per_outage(server)


# --- agent:// ---------------------------------------------------------------

def test_agent_killed_mid_requests(start, control, trace_redis, agent_for):
    """(d) The agent is SIGKILLed while requests run and started again (it
    replaces its stale socket)."""
    store = trace_redis()
    agent = agent_for(store)
    server = start(agent.url)
    load = Load(server, control, "agentkilled")
    assert_traced(load, store.url)
    load.run("before", 0.5, min_steps=3)
    _kill(agent.proc)
    load.run("fault", FAULT_SECONDS)
    agent.start()
    assert_recovers(load, store.url)

    load.assert_no_failure()
    load.assert_not_slowed("fault")
    load.assert_stored_once()
    assert_one_line_per_outage(server)


def test_agent_hung_mid_requests(start, control, trace_redis, agent_for):
    """(e) The agent is SIGSTOPped while requests run, then SIGCONTed.  Its
    socket buffer takes a few seconds of points, so nothing need be lost or
    logged; a longer hang would drop batches with one warning."""
    store = trace_redis()
    agent = agent_for(store)
    server = start(agent.url)
    load = Load(server, control, "agenthung")
    assert_traced(load, store.url)
    load.run("before", 0.5, min_steps=3)
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        load.run("fault", FAULT_SECONDS)
    finally:
        _resume(agent.proc)
    assert_recovers(load, store.url)

    load.assert_no_failure()
    load.assert_not_slowed("fault")
    load.assert_stored_once()
    lines = stacktrail_lines(server)
    assert len(lines) <= 2, lines
    if lines:
        assert_one_line_per_outage(server)


def test_agent_store_outage_loses_no_point(start, control, trace_redis,
                                           agent_for):
    """(f) The agent's store is stopped for OUTAGE_SECONDS (12 s; the issue
    says 60 s, shortened to keep the suite fast) while signed requests run
    continuously, then started again: every span of every trace is stored.

    Every trace must reach the agent whole (every span started and
    stopped), and the witness, a file store the same agent writes to and
    which stays up (each backend has its own offset in the spool), holds
    each point the agent received once and says which points: each trace
    in Redis must hold the points the witness holds, none missing, none
    foreign (a point may repeat: delivery is at least once, so a write the
    store half did as it stopped is redone)."""
    store = trace_redis()
    witness = Path(harness.short_dir("st-witness-")) / "traces.jsonl"
    try:
        agent = agent_for(store, "file://%s" % witness)
        server = start(agent.url)
        load = Load(server, control, "outage")
        assert_traced(load, store.url)
        load.run("before", 1.0, min_steps=5)
        store.stop()
        load.run("fault", OUTAGE_SECONDS)
        store.start()
        load.run("after", 1.5, min_steps=5)

        harness.wait_for(lambda: _caught_up(agent), RECOVERY_TIMEOUT,
                         what="the agent to catch up: %s" % agent.status())
        # A point still on its way (a server's flusher that fell behind on
        # a loaded machine) is late, not lost: wait for whole traces, then
        # judge what arrived (what is still missing is for the assertions
        # below to report).
        with contextlib.suppress(AssertionError):
            harness.wait_for(
                lambda: _whole(witness, load) and _caught_up(agent),
                RECOVERY_TIMEOUT, interval=0.2)
        status = agent.status()
        expected = _by_trace(_file_messages(witness))
        stored = _by_trace(_redis_messages(store.url))
        agent_log = Path(agent.log).read_text(errors="replace")
    finally:
        shutil.rmtree(witness.parent, ignore_errors=True)
    assert status["dropped_total"] == 0, status
    backend = [b for b in status["backends"] if b["name"].startswith("redis")]
    assert backend[0]["backend_errors"] > 0, status  # it saw the outage
    assert backend[0]["spooled"] > 0, status         # and spooled meanwhile
    # The agent, too, logs the outage once, not once per retry.
    assert agent_log.count("failed, spooling") == 1, agent_log[-2000:]

    traces = [b for phase in ("warmup", "before", "fault", "after")
              for b in load.traces[phase]]
    assert len(load.traces["fault"]) >= MIN_STEPS
    # The agent got every point of every trace (each trace whole) and the
    # witness holds each point it received once: nothing lost in the agent.
    incomplete = [b for b in traces if not complete(expected.get(b, []))]
    sizes = collections.Counter(len(expected.get(b, ())) for b in traces)
    assert incomplete == [], "the agent got %d of %d traces incomplete " \
        "(points a trace: %s; the server said: %s)" % (
            len(incomplete), len(traces), sizes, stacktrail_lines(server)[:3])
    assert sum(map(len, expected.values())) == status["received"], (
        status["received"], sizes)
    # ... and wrote each to Redis too.
    differ = {b: (len(expected[b]), len(stored.get(b, ()))) for b in traces
              if set(_keys(stored.get(b, ()))) != set(_keys(expected[b]))}
    assert differ == {}, "%d of %d traces differ (points in witness, " \
        "redis): %s" % (len(differ), len(traces), list(differ.items())[:3])
    assert set(stored) == set(expected)              # nothing else either
    # Delivery is at least once: a write the store half did as it went
    # down is written again whole, so at most one batch may repeat.
    repeated = sum(map(len, stored.values())) - \
        sum(map(len, expected.values()))
    assert 0 <= repeated <= AGENT_BATCH

    load.assert_no_failure()
    load.assert_not_slowed("fault")
    load.assert_stored_once()
    assert stacktrail_lines(server) == []   # the agent took it all


def _whole(witness, load):
    """Every trace the load made is complete in the witness file."""
    try:
        found = _by_trace(_file_messages(witness))
    except ValueError:   # read while a line was being written
        return False
    return all(complete(found.get(b, [])) for phase in load.traces.values()
               for b in phase)


def _caught_up(agent):
    """Every backend has everything the agent received, and nothing more
    is arriving."""
    def settled(status):
        return all(b["state"] == "ok" and not b["pending_bytes"]
                   and not b["lag"] for b in status["backends"])
    first = agent.status()
    if not settled(first):
        return False
    time.sleep(0.5)
    second = agent.status()
    return settled(second) and second["received"] == first["received"]


def _file_messages(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _redis_messages(url):
    import redis
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(raw)
                for key in client.scan_iter("osprofiler_opt:*", count=1000)
                for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()


def _by_trace(messages):
    """base_id -> the messages of that trace."""
    traces = collections.defaultdict(list)
    for message in messages:
        traces[message["base_id"]].append(message)
    return traces


def _keys(messages):
    """What identifies each point of a trace, sorted (duplicates kept)."""
    return sorted((m["trace_id"], m["name"], m["timestamp"])
                  for m in messages)
