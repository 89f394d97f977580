"""The service side (buffer, flusher, drivers) and the CLI against stores
that misbehave: poison points, a hung PostgreSQL (SIGSTOP), a locked
MariaDB table, a Redis that stalls between a write and its reply, junk
records, outages; and the counters that say what it cost."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from stacktrail import opts
from stacktrail.common import buffer
from stacktrail.common import ids
from stacktrail.common import points
from stacktrail.drivers import base
from tests import servers
from tests.agent import harness

CLI = os.path.join(os.path.dirname(sys.executable), "stacktrail")


# --- helpers -----------------------------------------------------------------

def _point(base_id, name="op", phase=points.START, info=None):
    return (name, phase, base_id, base_id, ids.new_id(), time.time_ns(),
            info)


def _batch(count, base_id=None):
    base_id = base_id or ids.new_id()
    return [_point(base_id, "op%d" % i) for i in range(count)]


def _tree(pid):
    """``pid`` and all its descendants (the server's own processes)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def _signal_tree(pid, sig):
    for each in _tree(pid):
        try:
            os.kill(each, sig)
        except ProcessLookupError:
            pass


def _cli(*args, timeout=60):
    started = time.monotonic()
    done = subprocess.run([CLI] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items()
                               if k != "STACKTRAIL_CONNECTION_STRING"})
    return done, time.monotonic() - started


def _one_error_line(done, *fragments):
    assert done.returncode == 1, (done.stdout, done.stderr)
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, done.stderr
    assert line.startswith("stacktrail: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith(
                "stacktrail")]


# --- poison points on the service side ---------------------------------------

@pytest.fixture(params=["postgres", "mongo"])
def picky_store(request):
    """A store that refuses NUL bytes or lone surrogates in some places."""
    return request.getfixturevalue(request.param + "_url")


def test_a_poison_point_does_not_drop_its_batch(picky_store):
    driver = base.get_driver(picky_store, project="p", service="s")
    sink = buffer.BufferedSink(driver, batch_size=100, interval=60)
    base_id = ids.new_id()
    batch = _batch(98, base_id)
    batch.insert(10, _point(base_id, "nul\x00name", info={"k\x00": "v"}))
    batch.insert(50, _point(base_id, "lone\ud800surrogate"))
    for point in batch:
        sink.put(point)
    assert sink.flush(10)
    status = sink.status()
    assert status["dropped"] == 0 and status["written"] == 100, status
    assert status["sanitized"] == 2
    names = sorted(m["name"] for m in driver.get_messages(
        ids.to_uuid(base_id)))
    assert len(names) == 100
    assert "nul\ufffdname-start" in names
    assert "lone\ufffdsurrogate-start" in names
    sink.close(2)


def test_a_point_redis_refuses_is_dropped_alone_and_counted(redis_url,
                                                            caplog):
    import redis
    victim = ids.new_id()
    client = redis.Redis.from_url(redis_url)
    client.set("osprofiler_opt:" + ids.to_uuid(victim), "junk")
    driver = base.get_driver(redis_url)
    sink = buffer.BufferedSink(driver, batch_size=100, interval=60)
    good = ids.new_id()
    batch = _batch(99, good)
    batch.insert(40, _point(victim, "refused"))
    for point in batch:
        sink.put(point)
    sink.flush(10)
    assert client.llen("osprofiler_opt:" + ids.to_uuid(good)) == 99
    assert sink.written == 99 and sink.dropped == 1
    assert sink.status()["drops"] == {"rejected": 1}
    assert any("refused 1 trace point" in w and "WRONGTYPE" in w
               for w in _warnings(caplog))
    client.close()
    sink.close(2)


# --- a hung PostgreSQL, a locked MariaDB -------------------------------------

@pytest.fixture(scope="module")
def own_postgres():
    """A throwaway PostgreSQL of our own, so that it can be SIGSTOPped."""
    try:
        server = servers.start_postgres()
    except servers.ServerUnavailable as exc:
        pytest.skip("cannot start a PostgreSQL of our own: %s" % exc)
    try:
        with servers.postgres_database(server) as name:
            yield server, "postgresql://postgres@%s:%d/%s" % (
                server.host, server.port, name)
    finally:
        _signal_tree(server.proc.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def hung_postgres(own_postgres):
    """(server, url) with a trace already stored; call hang()/resume()."""
    server, url = own_postgres
    driver = base.get_driver(url)
    base_id = ids.new_id()
    driver.write_points([_point(base_id, "before")])
    driver.close()
    state = {"stopped": False}

    def hang():
        _signal_tree(server.proc.pid, signal.SIGSTOP)
        state["stopped"] = True

    def resume():
        _signal_tree(server.proc.pid, signal.SIGCONT)
        state["stopped"] = False

    try:
        yield url, ids.to_uuid(base_id), hang, resume
    finally:
        if state["stopped"]:
            resume()


def test_a_hung_postgresql_costs_the_service_nothing(hung_postgres, caplog):
    url, _, hang, resume = hung_postgres
    caplog.set_level(logging.WARNING)
    driver = base.get_driver(url, project="p", service="s",
                             store_timeout=1.0)
    sink = buffer.BufferedSink(driver, batch_size=50, interval=0.05,
                               max_points=1000)
    sink.put(_point(ids.new_id(), "warm-up"))
    assert sink.flush(5)   # a pooled connection, then the server hangs
    hang()
    worst = 0.0
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        for point in _batch(20):
            t = time.perf_counter()
            sink.put(point)
            worst = max(worst, time.perf_counter() - t)
        time.sleep(0.02)
    assert worst < 0.01, "put took %.3f s" % worst
    # The flusher gave up on the hung store (said so once, counted by
    # reason) while it was still hung.
    down = [w for w in _warnings(caplog) if "cannot write" in w]
    assert len(down) == 1 and "did not answer within 1.0 s" in down[0], \
        _warnings(caplog)
    assert sink.status()["drops"].get("store_timeout", 0) > 0, sink.status()
    assert sink.status()["state"] == "failing"
    resume()
    after = ids.new_id()

    def delivered():
        sink.put(_point(after, "after"))
        sink.flush(3)
        return driver.get_messages(ids.to_uuid(after))

    harness.wait_for(delivered, 20, interval=0.5, what="points after")
    assert any("is back" in w for w in _warnings(caplog))
    sink.close(2)


def test_the_cli_answers_within_its_timeout_against_a_hung_postgresql(
        hung_postgres):
    url, base_id, hang, resume = hung_postgres
    hang()
    for args in (("trace", "list"), ("trace", "show", base_id)):
        done, took = _cli(*args, "--connection-string", url,
                          "--timeout", 2)
        assert took < 6, "%s took %.1f s" % (args, took)
        _one_error_line(done, "did not answer within 2")
    resume()
    done, _ = _cli("trace", "list", "--connection-string", url,
                   "--timeout", 10)
    assert done.returncode == 0 and base_id in done.stdout, done.stderr


def test_the_cli_answers_within_its_timeout_against_a_locked_mariadb(
        mysql_url):
    import pymysql
    driver = base.get_driver(mysql_url)
    base_id = ids.new_id()
    driver.write_points([_point(base_id, "x")])
    driver.close()
    name = mysql_url.rsplit("/", 1)[1]
    locker = pymysql.connect(host="127.0.0.1", port=int(
        mysql_url.split(":")[2].split("/")[0]), user="root", password="",
        database=name, autocommit=True)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES stacktrail_points WRITE")
        done, took = _cli("trace", "list", "--connection-string", mysql_url,
                          "--timeout", 2)
        assert took < 6, "took %.1f s" % took
        _one_error_line(done)
        # the CLI's deadline, the driver's watchdog or PyMySQL's own
        # read timeout: whichever comes first says so
        assert "did not answer within 2" in done.stderr or \
            "timed out" in done.stderr
    finally:
        locker.close()


# --- Redis: a stall between a write and its reply ----------------------------

@pytest.fixture
def stalling_redis(throwaway_redis):
    store = throwaway_redis()

    def stall(seconds):
        """SIGSTOP now, SIGCONT after ``seconds`` (in the background)."""
        store.proc.send_signal(signal.SIGSTOP)
        timer = threading.Timer(seconds, store.proc.send_signal,
                                (signal.SIGCONT,))
        timer.start()
        return timer

    yield store, stall
    if store.proc is not None and store.proc.poll() is None:
        store.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def throwaway_redis():
    made = []

    def make():
        server = harness.ThrowawayRedis().start()
        made.append(server)
        return server

    yield make
    for server in made:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.close()


def _stored(url):
    return harness.stored_points(url)


def test_a_resent_redis_batch_lands_once(stalling_redis):
    """The reply of a write is late (0.45 s against a 0.3 s socket
    timeout): the batch is sent again, Redis runs both, stores it once,
    and the write is counted once."""
    store, stall = stalling_redis
    driver = base.get_driver(store.url, socket_timeout=0.3,
                             store_timeout=3)
    sink = buffer.BufferedSink(driver, batch_size=1000, interval=60)
    batch = _batch(100)
    driver.write_points([_point(ids.new_id(), "connect")])
    for point in batch:
        sink.put(point)
    timer = stall(0.45)
    assert sink.flush(5)
    timer.join()
    assert sink.written == 100 and sink.dropped == 0
    stored = [p for p in _stored(store.url) if p[1] != "connect-start"]
    assert sorted(stored) == harness.expected_points(batch)
    sink.close(2)


def test_a_redis_batch_stored_after_its_reply_was_lost_is_not_counted_lost(
        stalling_redis):
    """Both attempts time out (1.2 s stall, 0.3 s timeout): the flusher
    counts the batch lost; Redis stores it when it resumes, and the next
    batch finds that out: written, not lost."""
    store, stall = stalling_redis
    driver = base.get_driver(store.url, socket_timeout=0.3,
                             store_timeout=3)
    sink = buffer.BufferedSink(driver, batch_size=1000, interval=60)
    driver.write_points([_point(ids.new_id(), "connect")])
    batch = _batch(100)
    for point in batch:
        sink.put(point)
    timer = stall(1.2)
    assert sink.flush(5) is False
    assert sink.dropped == 100
    timer.join()
    time.sleep(0.2)
    late = _point(ids.new_id(), "late")
    sink.put(late)
    assert sink.flush(5)
    assert sink.written == 101 and sink.dropped == 0, sink.stats()
    stored = [p for p in _stored(store.url) if p[1] != "connect-start"]
    assert sorted(stored) == harness.expected_points(batch + [late])
    sink.close(2)


# --- junk records ------------------------------------------------------------

def test_junk_records_do_not_break_trace_list(redis_url):
    import redis
    driver = base.get_driver(redis_url)
    base_id = ids.new_id()
    driver.write_points([_point(base_id, "ok")])
    client = redis.Redis.from_url(redis_url)
    client.set("osprofiler_opt:junk-string", "not a list")
    client.rpush("osprofiler_opt:junk-item", b"\xff not json")
    client.close()
    done, _ = _cli("trace", "list", "--connection-string", redis_url)
    assert done.returncode == 0, done.stderr
    assert ids.to_uuid(base_id) in done.stdout
    (warning,) = done.stderr.strip().splitlines()
    assert warning.startswith("stacktrail: warning: skipped 2 unreadable")
    assert "osprofiler_opt:junk-string" in warning
    assert "osprofiler_opt:junk-item" in warning
    done, _ = _cli("trace", "show", ids.to_uuid(base_id),
                   "--connection-string", redis_url)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


# --- honest accounting -------------------------------------------------------

def test_every_drop_is_counted_by_reason_and_each_outage_reports_its_own(
        throwaway_redis, caplog):
    """Points arrive at 1,000/s through two store outages of 2 s: each
    "is back" line counts that outage's losses (failed batches and a full
    buffer, also while the backlog drained), nothing is lost unreported,
    and the counters say why each point was lost."""
    caplog.set_level(logging.WARNING)
    store = throwaway_redis()
    driver = base.get_driver(store.url, store_timeout=1)
    sink = buffer.BufferedSink(driver, batch_size=50, interval=0.01,
                               max_points=200)
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            sink.put(_point(ids.new_id(), "load"))
            time.sleep(0.001)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        for _ in range(2):
            time.sleep(0.5)
            store.stop()
            time.sleep(2.0)
            store.start()
            back = time.monotonic()
            harness.wait_for(lambda: sink._failing_since is None, 10,
                             what="the store back")
            # used again within about the flusher's longest pause (1 s)
            assert time.monotonic() - back < 3.0
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert sink.flush(5)
    backs = [w for w in _warnings(caplog) if "is back" in w]
    assert len(backs) == 2, _warnings(caplog)
    reported = [int(w.split("is back; ")[1].split()[0]) for w in backs]
    assert all(n > 0 for n in reported)
    assert sum(reported) == sink.dropped, (backs, sink.dropped)
    drops = sink.drops
    assert set(drops) == {"buffer_full", "store_error"}, drops
    assert sum(drops.values()) == sink.dropped
    for line in backs:
        assert "buffer_full:" in line and "store_error:" in line, line
    status = sink.status()
    # every point accepted is written, dropped after it was taken,
    # buffered or held
    assert status["queued"] == status["written"] + status["dropped"] - \
        drops["buffer_full"] + status["buffered"] + status["held"]
    sink.close(2)


def test_the_default_buffer_is_the_documented_one_and_overflow_is_logged(
        tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    documented = {o.name: o.default for o in opts.ALL_OPTS}["buffer_size"]
    driver = base.get_driver("file://%s" % (tmp_path / "t.jsonl"))
    sink = driver.make_sink()          # no config at all
    assert sink.max_points == documented == 10000
    small = buffer.BufferedSink(driver, max_points=100, batch_size=10,
                                interval=0.01, status_interval=0.2)
    small._flush_lock.acquire()        # a flusher that is behind
    for i in range(1000):
        small.put(_point(1, "p%d" % i))
    small._flush_lock.release()
    assert small.flush(5) is False or small.dropped == 900
    # This sink's lines (100 points): a sink another test left running
    # may log its own.
    full = "buffer is full (100 points)"
    harness.wait_for(lambda: any(full in w for w in _warnings(caplog)), 5,
                     what="an overflow warning")
    assert small.drops == {"buffer_full": 900}
    harness.wait_for(lambda: any("900 trace points dropped" in w
                                 for w in _warnings(caplog)), 5,
                     what="the interval report")
    overflow = [w for w in _warnings(caplog) if full in w]
    assert len(overflow) == 1
    small.close(1)
    sink.close(1)


SERVICE = textwrap.dedent("""
    import sys, time
    from stacktrail.drivers import base
    from stacktrail.common import points
    driver = base.get_driver(sys.argv[1], project="zaqar", service="api",
                             status_dir=sys.argv[2], status_interval=0.1,
                             buffer_size=100)
    sink = driver.make_sink()
    sink._flush_lock.acquire()          # 150 points for 100 slots
    for i in range(150):
        sink.put(("x", points.START, 1, 1, i + 1, time.time_ns(), None))
    sink._flush_lock.release()
    sink.flush(5)
    time.sleep(0.5)
    print("ok")
    sys.stdout.flush()
    time.sleep(float(sys.argv[3]))
""")


def test_the_counters_are_readable_from_outside_the_service(tmp_path):
    status_dir = tmp_path / "status"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE, "file://%s" % (tmp_path / "t.jsonl"),
         str(status_dir), "30"], stdout=subprocess.PIPE, text=True,
        cwd=harness.ROOT)
    try:
        assert proc.stdout.readline().strip() == "ok"
        done, _ = _cli("status", "--status-dir", status_dir)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        (process,) = report["processes"]
        assert process["pid"] == proc.pid and process["running"]
        assert process["service"] == "api" and process["store"] == "file"
        assert process["written"] == 100 and process["dropped"] == 50
        assert process["drops"] == {"buffer_full": 50}
        assert report["total"]["dropped"] == 50
        # the same through the service's own config file
        conf = tmp_path / "service.conf"
        conf.write_text("[profiler]\nstatus_dir = %s\n" % status_dir)
        done, _ = _cli("--config-file", conf, "status")
        assert done.returncode == 0 and json.loads(done.stdout)[
            "total"]["written"] == 100
    finally:
        proc.kill()
        proc.wait(10)
