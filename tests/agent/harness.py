"""Run the real agent as a subprocess, and throwaway Redis servers, for the
agent tests and benchmarks."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from stacktrail.agent import protocol
from stacktrail.agent import spool as spool_mod
from stacktrail.agent import status as status_mod
from stacktrail.common import ids
from stacktrail.drivers import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
AGENT = os.path.join(os.path.dirname(sys.executable), "stacktrail-agent")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_dir(prefix="st-agent-"):
    """A short temp dir: Unix socket paths are limited to ~100 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


class Agent:
    """stacktrail-agent in a subprocess, configured by a config file."""

    def __init__(self, workdir, backends, listen=None, **options):
        self.workdir = workdir
        self.listen = listen or "unix://%s/agent.sock" % workdir
        self.spool_dir = os.path.join(workdir, "spool")
        self.conf_path = os.path.join(workdir, "agent.conf")
        self.options = dict(flush_interval=0.05, retry_max_interval=0.5,
                            shutdown_timeout=5)
        self.options.update(options)
        self.write_config(backends)
        self.proc = None
        self.log = os.path.join(workdir, "agent.log")

    @property
    def url(self):
        """The service side's connection string for this agent."""
        if self.listen.startswith("unix://"):
            return "agent://" + self.listen[len("unix://"):]
        scheme, rest = self.listen.split("://", 1)
        return "agent://%s%s" % (rest, "?transport=udp"
                                 if scheme == "udp" else "")

    def write_config(self, backends):
        lines = ["[agent]", "listen = " + self.listen,
                 "spool_dir = " + self.spool_dir]
        lines += ["connection_string = " + b for b in backends]
        lines += ["%s = %s" % item for item in self.options.items()]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, *extra, wait=True, preexec_fn=None):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [AGENT, "--config-file", self.conf_path] + list(extra),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                preexec_fn=preexec_fn)
        if wait:
            wait_for(self.ready, 15, what="agent start: " + self.log_tail())
        return self

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("agent exited %s: %s"
                                 % (self.proc.returncode, self.log_tail()))
        try:
            return self.status()
        except (OSError, ValueError):
            return None

    def status(self):
        return status_mod.fetch([self.conf_path], timeout=2)

    def log_tail(self, size=2000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-size:]
        except OSError:
            return ""

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def proc_status(self):
        """The agent's /proc status fields (VmRSS in kB, Threads ...)."""
        fields = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else ""
        return fields

    def rss_mib(self):
        return int(self.proc_status()["VmRSS"]) / 1024.0

    def cpu_seconds(self):
        """User + system CPU the agent used so far."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")

    def log_lines(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_written(self, count, timeout=20):
        return wait_for(lambda: self.status()["written"] >= count and
                        self.status(), timeout,
                        what="%d points written" % count)


class ThrowawayRedis:
    """A redis-server of our own on a fixed port, stoppable and restartable."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = short_dir("st-redis-")
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "3600 1", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _ping(client), 10, what="redis on %d" % self.port)
        return self

    def stop(self):
        """An outage: the port refuses connections until ``start``.

        SIGTERM makes redis save its data (``--save`` is set) and the
        restart loads it, so what was stored before the outage is there
        after it, as with a real store.
        """
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def close(self):
        self.stop()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def _ping(client):
    try:
        return client.ping()
    except Exception:
        return False


def make_points(n, pairs_per_trace=10):
    """n raw points: start/stop pairs, ``pairs_per_trace`` per trace."""
    out = []
    now = time.time_ns()
    base_id = None
    for i in range(n // 2):
        if i % pairs_per_trace == 0:
            base_id = ids.new_id()
        span = ids.new_id()
        out.append(("wsgi", 0, base_id, base_id, span, now + i * 1000,
                    {"request": {"path": "/v2/queues/q%d" % i}}))
        out.append(("wsgi", 1, base_id, base_id, span, now + i * 1000 + 500,
                    None))
    return out


def stored_points(redis_url):
    """Every (trace_id uuid, name) stored by the redis driver at the URL."""
    import redis
    client = redis.Redis.from_url(redis_url)
    found = []
    for key in client.scan_iter("osprofiler_opt:*", count=1000):
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            found.append((message["trace_id"], message["name"]))
    client.close()
    return found


def expected_points(batch):
    return sorted((ids.to_uuid(p[4]), p[0] + ("-start", "-stop")[p[1]])
                  for p in batch)


def send(url, batch, project="zaqar", service="api"):
    """Hand points to the agent the way a service does; returns the sink."""
    driver = base.get_driver(url, project=project, service=service)
    sink = driver.make_sink()
    for point in batch:
        sink.put(point)
    sink.flush(10)
    return sink


class IdleSpool:
    """What a writer tested on its own sees of the spool: empty, nothing
    acknowledged."""

    head = 0

    def load_ack(self, key):
        return 0


def spool_record(start, n_points):
    """A spool record of ``n_points`` points at offset ``start``."""
    return spool_mod.Record(start, start + 10, 0, n_points, None,
                            protocol.EMPTY)
