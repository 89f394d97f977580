"""The agent under hostile input, full disks, poison records and damage.

Every test runs the real ``stacktrail-agent`` as a subprocess against real
stores (Redis, PostgreSQL, the nx-27017 MongoDB server), with small limits
so that each edge is reached in a second or two: descriptor exhaustion,
idle and slow clients, a flood on the metrics port, points a store refuses
for their content, a full disk (a 1 MiB tmpfs), damaged and planted spool
files, a spool directory others can write to (with a second local user),
and an agent restart under load.
"""

import json
import os
import pwd
import resource
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import zlib

import pytest

from stacktrail.agent import protocol
from stacktrail.agent import spool as spool_mod
from stacktrail.agent import writer as writer_mod
from stacktrail.common import ids
from stacktrail.drivers import base
from tests.agent import harness

UNIT = os.path.join(harness.ROOT, "stacktrail", "agent",
                    "stacktrail-agent.service")


# --- helpers -----------------------------------------------------------------

def _nofile(soft, hard):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return limit


def _socket_path(agent):
    return agent.listen[len("unix://"):]


def _open_idle(path, count):
    """Up to ``count`` connections that send nothing (non-blocking
    connects: the listen queue may refuse some)."""
    opened = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            sock.close()
            continue
        opened.append(sock)
    return opened


def _closed_by_peer(sock):
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _close_all(socks):
    for sock in socks:
        sock.close()


def _raw_send(path, frames):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    for data in frames:
        sock.sendall(data)
    sock.close()


def _frames(batch, project="zaqar", service="api", host="node-1"):
    frames, lost = protocol.encode_batch(batch, project, service, host)
    assert not lost
    return [data for data, _ in frames]


def _stored_set(redis_url):
    return sorted(harness.stored_points(redis_url))


def _wait_stored(redis_url, batch, timeout=20):
    expected = harness.expected_points(batch)
    harness.wait_for(lambda: _stored_set(redis_url) == expected, timeout,
                     what="%d points stored" % len(batch))


# --- descriptors, idle and slow clients, the metrics port --------------------

def test_descriptor_exhaustion_neither_spins_nor_floods(agents, redis_url):
    """Soft and hard descriptor limit 128, 300 idle connections: the agent
    serves what fits, refuses the rest without a busy loop or a log flood,
    its status answers and a service's points are stored."""
    agent = agents([redis_url]).start(preexec_fn=_nofile(128, 128))
    idle = _open_idle(_socket_path(agent), 300)
    try:
        time.sleep(1.2)   # every open connection is idle by now
        cpu, started = agent.cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        busy = (agent.cpu_seconds() - cpu) / (time.monotonic() - started)
        assert busy < 0.3, "agent spins at %.0f %% CPU" % (busy * 100)
        lines = agent.log_lines()
        assert len(lines) < 15, "%d log lines: %s" % (len(lines),
                                                      lines[-3:])
        status = agent.status()            # the status socket answers
        batch = harness.make_points(30)
        sink = harness.send(agent.url, batch)
        assert sink.dropped == 0
        _wait_stored(redis_url, batch)
        assert status["refused_total"] > 0, status
        assert status["max_connections"] < 128
    finally:
        _close_all(idle)
    assert not any("Traceback" in line for line in agent.log_lines())


def test_idle_connections_are_closed_and_never_lock_senders_out(
        agents, redis_url):
    agent = agents([redis_url], max_connections=20, idle_timeout=2).start()
    idle = _open_idle(_socket_path(agent), 40)
    try:
        time.sleep(1.2)
        # All 20 slots are taken by idle clients: a service still gets in
        # (the connection idle the longest makes room).
        batch = harness.make_points(100)
        driver = base.get_driver(agent.url, project="p", service="s")
        sink = driver.make_sink()
        for point in batch:
            sink.put(point)
        assert sink.flush(5)
        _wait_stored(redis_url, batch)
        # Silent connections are closed after idle_timeout, the service's
        # own included: it reconnects on its next batch, losing nothing.
        harness.wait_for(lambda: all(_closed_by_peer(s) for s in idle), 8,
                         what="idle connections closed")
        refused = agent.status()["refused"]
        assert refused.get("too_many_connections", 0) >= 15, refused
        assert refused.get("evicted", 0) >= 1, refused
        assert refused["idle_timeout"] >= 1
        more = harness.make_points(100)
        for point in more:
            sink.put(point)
        assert sink.flush(5)
        assert sink.dropped == 0
        _wait_stored(redis_url, batch + more)
        sink.close(1)
    finally:
        _close_all(idle)
    # every refusal counted, logged at most once per reason and interval
    lines = agent.log_lines()
    for words in ("and none idle for",            # too_many_connections
                  "closed the one idle the longest",   # evicted
                  "connection(s) idle for"):      # idle_timeout
        assert sum(words in line for line in lines) == 1, (words, lines)


def test_slow_partial_frames_cannot_grow_the_agent(agents, redis_url):
    """100 connections each send 400 KiB of a 500 KiB frame and stall:
    memory stays under max_buffered_bytes, they are closed (oldest partial
    frames first, and all once frame_timeout passed), and a service is
    served meanwhile."""
    agent = agents([redis_url], max_frame_bytes=512 << 10,
                   max_buffered_bytes=2 << 20, frame_timeout=2).start()
    before = agent.rss_mib()
    header = protocol.HEADER.pack(protocol.MAGIC, 500 << 10)
    body = b"[" + b" " * (400 << 10)
    stalled = []
    for _ in range(100):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(_socket_path(agent))
        try:
            sock.sendall(header + body)
        except OSError:    # the agent closed it already: also fine
            pass
        stalled.append(sock)
    try:
        time.sleep(0.5)
        grown = agent.rss_mib() - before
        assert grown < 16, "agent grew by %.0f MiB" % grown
        batch = harness.make_points(50)
        assert harness.send(agent.url, batch).dropped == 0
        _wait_stored(redis_url, batch)
        harness.wait_for(lambda: all(_closed_by_peer(s) for s in stalled),
                         8, what="stalled connections closed")
        status = agent.status()
        refused = status["refused"]
        assert refused.get("memory_limit", 0) + refused.get(
            "slow_frame", 0) >= 100, refused
        assert status["buffered_bytes"] == 0
        assert status["dropped"]["truncated"] >= 100
        assert agent.rss_mib() - before < 16
    finally:
        _close_all(stalled)


def test_metrics_port_is_bounded(agents, redis_url):
    port = harness.free_port()
    agent = agents([redis_url],
                   metrics_listen="127.0.0.1:%d" % port).start()
    flood = []
    for _ in range(300):
        try:
            flood.append(socket.create_connection(("127.0.0.1", port),
                                                  timeout=1))
        except OSError:
            pass
    try:
        time.sleep(0.5)
        threads = int(agent.proc_status()["Threads"])
        assert threads < 30, "%d threads" % threads

        def scrape():
            try:
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d/metrics" % port,
                        timeout=1) as reply:
                    return reply.read().decode()
            except OSError:
                return None

        body = harness.wait_for(scrape, 10, interval=0.2,
                                what="/metrics while flooded")
        assert 'stacktrail_agent_refused_total{reason="metrics_busy"}' \
            in body
        assert agent.status()["refused"]["metrics_busy"] > 0
    finally:
        _close_all(flood)
    busy = [line for line in agent.log_lines() if "stacktrail-metrics has"
            in line]
    assert len(busy) == 1, busy


def test_unit_sets_limit_nofile_and_the_agent_raises_its_soft_limit(
        agents, redis_url):
    with open(UNIT) as f:
        unit = f.read()
    service = unit.split("[Service]", 1)[1].split("[Install]", 1)[0]
    limits = [line.split("=", 1)[1] for line in service.splitlines()
              if line.startswith("LimitNOFILE=")]
    assert limits and int(limits[0]) >= 4096
    agent = agents([redis_url]).start(preexec_fn=_nofile(256, 4096))
    status = agent.status()
    assert status["nofile"] == 4096
    assert status["max_connections"] == 1024


# --- poison records ----------------------------------------------------------

def _poison(now):
    base_id = ids.new_id()
    return [("bad\x00name", 0, base_id, base_id, ids.new_id(), now,
             {"key\x00": "value\x00", "text": "lone \ud800 surrogate"}),
            ("bad\ud800name", 1, base_id, base_id, ids.new_id(), now + 1000,
             {"host": "h\x00st"})]


def test_poison_points_do_not_block_postgresql_or_mongodb(
        agents, postgres_url, mongo_url):
    """A NUL byte (name, host, info key) or a lone surrogate: PostgreSQL
    and BSON refuse them.  Both backends clean those points, store them and
    everything sent after them."""
    agent = agents([postgres_url, mongo_url]).start()
    first, last = harness.make_points(100), harness.make_points(100)
    poison = _poison(time.time_ns())
    _raw_send(_socket_path(agent), _frames(first) + _frames(
        poison, host="bad\x00host") + _frames(last))
    total = len(first) + len(poison) + len(last)
    harness.wait_for(lambda: all(
        b["written"] == total for b in agent.status()["backends"]), 20,
        what="every point written: %s" % (agent.status(),))
    status = agent.status()
    assert all(b["state"] == "ok" for b in status["backends"]), status
    assert all(b["sanitized"] >= 2 for b in status["backends"]), status

    import sqlalchemy as sa
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        names = [row[0] for row in conn.execute(sa.text(
            "SELECT name FROM stacktrail_points"))]
        hosts = {row[0] for row in conn.execute(sa.text(
            "SELECT host FROM stacktrail_points"))}
    engine.dispose()
    assert len(names) == total
    assert "bad\ufffdname-start" in names and "bad\ufffdname-stop" in names
    assert "bad\ufffdhost" in hosts and "h\ufffdst" in hosts

    import pymongo
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        docs = list(client.get_database().profiler.find({}, {"_id": 0}))
    finally:
        client.close()
    assert len(docs) == total
    bad = [d for d in docs if d["name"] == "bad\ufffdname-start"]
    assert bad and bad[0]["info"]["key\ufffd"] == "value\ufffd"


def test_a_point_refused_for_good_goes_to_the_dead_letter_file(
        agents, redis_url):
    """A junk value where a trace's list should be (WRONGTYPE): that
    trace's point is set aside in the dead-letter file and counted; the
    points around it are stored, and the backend goes on."""
    import redis
    agent = agents([redis_url]).start()
    victim = ids.new_id()
    client = redis.Redis.from_url(redis_url)
    client.set("osprofiler_opt:" + ids.to_uuid(victim), "junk")
    client.close()
    good = harness.make_points(100)
    refused = ("x", 0, victim, victim, ids.new_id(), time.time_ns(), None)
    harness.send(agent.url, good[:50] + [refused] + good[50:])
    status = agent.wait_written(100)
    (backend,) = status["backends"]
    assert backend["dead_lettered"] == 1 and backend["state"] == "ok"
    assert status["dead_lettered"] == 1
    key = writer_mod.backend_key(redis_url)
    path = os.path.join(agent.spool_dir, "dead-letter-%s.jsonl" % key)
    with open(path) as f:
        (line,) = f.read().splitlines()
    letter = json.loads(line)
    assert "WRONGTYPE" in letter["reason"]
    assert letter["point"][2] == victim
    client = redis.Redis.from_url(redis_url)
    client.delete("osprofiler_opt:" + ids.to_uuid(victim))   # for reading
    client.close()
    _wait_stored(redis_url, good)
    more = harness.make_points(40)
    harness.send(agent.url, more)
    _wait_stored(redis_url, good + more)
    # after a restart nothing is retried: it was acknowledged
    assert agent.stop() == 0
    agent.start()
    time.sleep(0.5)
    assert agent.status()["backends"][0]["backend_errors"] == 0


# --- a full disk -------------------------------------------------------------

@pytest.fixture
def small_disk(workdir):
    """A 1 MiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path = os.path.join(workdir, "disk")
    os.mkdir(path, 0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700",
                           "tmpfs", path], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.strip())
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True)


def _disk_free(path):
    st = os.statvfs(path)
    return st.f_bavail / st.f_blocks


def test_full_disk_is_counted_freed_and_loses_nothing_accepted(
        agents, throwaway_redis, small_disk):
    store = throwaway_redis()
    store.stop()
    agent = agents([store.url], spool_fsync_interval=0)
    agent.spool_dir = os.path.join(small_disk, "spool")
    agent.write_config([store.url])
    agent.start()
    driver = base.get_driver(agent.url + "?timeout=2", project="p",
                             service="s")
    sent = []
    for _ in range(60):          # about 2 MiB of frames for 1 MiB of disk
        batch = harness.make_points(400)
        driver.write_points(batch)
        sent += batch
    status = harness.wait_for(
        lambda: agent.status()["received"] == len(sent) and agent.status(),
        10, what="every frame read")
    full = status["dropped"].get("disk_full", 0)
    assert 0 < full < len(sent), status
    assert status["spool_state"] == "disk_full"
    assert status["status"] == "degraded"
    accepted = len(sent) - full
    refusals = [line for line in agent.log_lines()
                if "cannot append" in line]
    assert len(refusals) == 1, refusals
    assert not any("Traceback" in line for line in agent.log_lines())

    # The store comes back: everything accepted is delivered, and the spool
    # gives the disk back once the backend acknowledged it.
    store.start()
    agent.wait_written(accepted, timeout=30)
    assert len(harness.stored_points(store.url)) == accepted
    harness.wait_for(lambda: _disk_free(small_disk) > 0.8, 10,
                     what="spool space freed: %.2f free"
                     % _disk_free(small_disk))
    fresh = harness.make_points(200)
    driver.write_points(fresh)
    agent.wait_written(accepted + 200, timeout=20)
    assert agent.status()["spool_state"] == "ok"
    assert agent.status()["dropped"].get("disk_full") == full

    # Accepted while the store is away, then the agent is killed: the
    # restart delivers it all, once.
    store.stop()
    later = harness.make_points(300)
    driver.write_points(later)
    harness.wait_for(lambda: agent.status()["received"] == 300 + len(sent)
                     + 200, 10, what="later points received")
    agent.stop(signal.SIGKILL)
    store.start()
    agent.start()
    agent.wait_written(300, timeout=20)
    stored = harness.stored_points(store.url)
    assert len(stored) == accepted + 200 + 300
    assert set(harness.expected_points(fresh + later)) <= set(stored)
    driver.close()


# --- damaged and planted spool files -----------------------------------------

def _records(path):
    """(start, payload start, length, n_points) of each record of a
    segment file."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    pos = 0
    while pos + spool_mod.RECORD.size <= len(data):
        length, _, _, n_points = spool_mod.RECORD.unpack_from(data, pos)
        out.append((pos, pos + spool_mod.RECORD.size, length, n_points))
        pos += spool_mod.RECORD.size + length
    return out


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_damaged_and_planted_spool_files(agents, throwaway_redis):
    """Two records with damaged payloads, one with a damaged length, a
    whole record that is no frame, a planted segment far ahead: each bad
    record is skipped on its own and counted, the planted file is moved
    aside, and every other point is delivered."""
    store = throwaway_redis()
    store.stop()
    agent = agents([store.url]).start()
    driver = base.get_driver(agent.url, project="p", service="s")
    batches = [harness.make_points(10) for _ in range(30)]
    for batch in batches:
        driver.write_points(batch)      # one frame each
    harness.wait_for(lambda: agent.status()["received"] == 300, 10)
    assert agent.stop() == 0
    (segment,) = [os.path.join(agent.spool_dir, n)
                  for n in os.listdir(agent.spool_dir)
                  if n.startswith("seg-")]
    records = _records(segment)
    assert len(records) == 30
    for index in (5, 17):                 # payload bytes flipped
        _, payload, length, _ = records[index]
        _poke(segment, payload + length // 2, b"\xff\xfe")
    _poke(segment, records[25][0], b"\x7f\xff\xff\xff")   # its length
    # a whole record with a valid crc that is not a frame
    junk = b'{"not": "a frame"}'
    with open(segment, "ab") as f:
        f.write(spool_mod.RECORD.pack(len(junk), zlib.crc32(junk),
                                      int(time.time() * 1000), 7) + junk)
    planted = os.path.join(agent.spool_dir, "seg-%020d.log" % (10 ** 19))
    with open(planted, "wb") as f:
        f.write(b"x" * 100)

    store.start()
    agent.start()
    good = [p for i, batch in enumerate(batches) if i not in (5, 17, 25)
            for p in batch]
    _wait_stored(store.url, good)
    status = agent.status()
    assert status["spool_corrupt_records"] == 4, status
    assert status["dropped"]["spool_corrupt"] >= 27, status
    assert status["spool_quarantined"] == 1
    assert os.path.exists(os.path.join(
        agent.spool_dir, "quarantine-" + os.path.basename(planted)))
    more = harness.make_points(50)
    driver.write_points(more)
    _wait_stored(store.url, good + more)
    assert "spool_full" not in agent.status()["dropped"]
    driver.close()


# --- trust: the spool directory and the listen path --------------------------

@pytest.fixture(scope="module")
def other_user():
    """A second local user, created for these tests and removed after."""
    if os.geteuid() != 0:
        pytest.skip("creating a second user needs root")
    name = "st-hard-" + secrets.token_hex(3)
    done = subprocess.run(["useradd", "--system", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", name],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("cannot create a second user: %s" % done.stderr.strip())
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def _refused_start(args, *fragments):
    done = subprocess.run([harness.AGENT] + args, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, done.stderr
    for fragment in fragments:
        assert fragment in line, line
    return line


def _args(workdir, spool, redis_url, listen=None):
    return ["--agent-listen", listen or "unix://%s/a.sock" % workdir,
            "--agent-spool_dir", spool,
            "--agent-connection_string", redis_url]


def test_spool_dir_others_could_write_to_is_refused(
        workdir, redis_url, other_user):
    """Another user plants a link named like an offset file in a
    world-writable spool directory: the agent refuses the directory in one
    line and the link's target is never written."""
    victim = os.path.join(workdir, "precious")
    with open(victim, "w") as f:
        f.write("keep me\n")
    spool = os.path.join(workdir, "spool")
    os.mkdir(spool)
    os.chmod(spool, 0o1777)
    key = writer_mod.backend_key(redis_url)
    os.chmod(workdir, 0o755)   # the other user may reach the directory
    done = subprocess.run(["runuser", "-u", other_user.pw_name, "--", "ln",
                           "-s", victim, os.path.join(spool, "ack-%s.tmp"
                                                      % key)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _refused_start(_args(workdir, spool, redis_url), "world-writable", spool)
    with open(victim) as f:
        assert f.read() == "keep me\n"

    # owned by another user: refused too
    theirs = os.path.join(workdir, "theirs")
    os.mkdir(theirs, 0o700)
    os.chown(theirs, other_user.pw_uid, other_user.pw_gid)
    _refused_start(_args(workdir, theirs, redis_url), "owned by uid %d"
                   % other_user.pw_uid)
    # a symbolic link to a directory: refused
    real = os.path.join(workdir, "real")
    os.mkdir(real, 0o700)
    link = os.path.join(workdir, "link")
    os.symlink(real, link)
    _refused_start(_args(workdir, link, redis_url), "symbolic link")


def test_no_link_in_the_spool_is_followed(agents, redis_url, workdir):
    victim = os.path.join(workdir, "precious")
    with open(victim, "w") as f:
        f.write("keep me\n")
    agent = agents([redis_url])
    os.mkdir(agent.spool_dir, 0o700)
    key = writer_mod.backend_key(redis_url)
    os.symlink(victim, os.path.join(agent.spool_dir, "ack-%s.tmp" % key))
    agent.start()
    batch = harness.make_points(100)
    harness.send(agent.url, batch)
    agent.wait_written(100)
    assert agent.stop() == 0
    with open(victim) as f:
        assert f.read() == "keep me\n"
    ack = os.path.join(agent.spool_dir, "ack-" + key)
    assert os.path.isfile(ack) and not os.path.islink(ack)


def test_listen_path_must_be_a_socket_and_private(workdir, redis_url,
                                                  agents):
    spool = os.path.join(workdir, "spool")
    path = os.path.join(workdir, "a.sock")
    with open(path, "w") as f:
        f.write("not a socket\n")
    _refused_start(_args(workdir, spool, redis_url), path,
                   "not a socket", "regular file")
    with open(path) as f:                  # left alone
        assert f.read() == "not a socket\n"
    os.unlink(path)
    shared = os.path.join(workdir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    _refused_start(_args(workdir, spool, redis_url,
                         listen="unix://%s/a.sock" % shared),
                   "world-writable")
    # socket_mode 0666 is accepted, with a warning
    agent = agents([redis_url], socket_mode="0666").start()
    assert any("socket_mode 0666" in line and "WARNING" in line
               for line in agent.log_lines())
    assert os.stat(_socket_path(agent)).st_mode & 0o777 == 0o666


# --- an agent restart under load ---------------------------------------------

def test_agent_restart_of_five_seconds_at_1000_points_per_second_loses_nothing(
        agents, redis_url):
    agent = agents([redis_url]).start()
    sink = base.get_driver(agent.url, project="p", service="s").make_sink()
    points = harness.make_points(12000)
    produced = []
    stop = threading.Event()

    def produce():
        started = time.monotonic()
        while not stop.is_set() and len(produced) < len(points):
            due = min(len(points), int((time.monotonic() - started) * 1000))
            for point in points[len(produced):due]:
                sink.put(point)
                produced.append(point)
            time.sleep(0.005)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        time.sleep(1.0)
        down = time.monotonic()
        assert agent.stop() == 0
        time.sleep(4.3)               # + the agent's own start-up: ~5 s
        agent.start()
        outage = time.monotonic() - down
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join()
    assert outage >= 4.5, outage
    assert sink.flush(15)
    assert sink.dropped == 0, sink.stats()
    _wait_stored(redis_url, produced, timeout=30)
    assert len(produced) >= 7000
    sink.close(1)
