"""One request across real processes, switched flag by flag.

    HTTP client -> WSGI API (wsgiref + WsgiMiddleware) -> RPC over RabbitMQ
    -> server using PostgreSQL (SQLAlchemy), Redis and MongoDB-wire

Every process sends its points to a ``stacktrail-agent`` (``agent://``),
which stores them in Redis; the trace is read back with
``stacktrail trace show --json``.  Then each ``trace_*`` flag is switched
off in turn (the API and RPC server get it by SIGHUP, no restart) and only
that flag's spans disappear.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

KEY = "multi-service-key-4f1c2a"
SERVER_FLAGS = ("trace_rpc", "trace_sqlalchemy", "trace_redis",
                "trace_mongodb", "trace_requests")

COMMON = """
import json, signal, sys, time
from oslo_config import cfg
from stacktrail import initializer

conf = cfg.CONF
conf(["--config-file", sys.argv[1]], project="stacktrail-multiservice")
initializer.init_from_conf(conf, context={}, project="multiservice",
                           service=SERVICE, host=SERVICE + "-host")
signal.signal(signal.SIGHUP, lambda *a: conf.mutate_config_files())
"""

RPC_SERVER = COMMON.replace("SERVICE", "'rpc-server'") + """
import oslo_messaging as messaging
import pymongo, redis, sqlalchemy
from sqlalchemy import text
from stacktrail.integrations import rpc

rabbit, topic, pg_url, redis_url, mongo_url = sys.argv[2:7]
engine = sqlalchemy.create_engine(pg_url)
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE IF NOT EXISTS items (id INT)"))
store = redis.Redis.from_url(redis_url)
mongo = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
docs = mongo[mongo_url.rsplit("/", 1)[1]].items

class Endpoint:
    def handle(self, ctxt, key):
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM items")).scalar()
        store.set("data:" + key, "v")
        docs.insert_one({"key": key})
        return {"rows": count, "redis": store.get("data:" + key).decode(),
                "docs": docs.count_documents({})}

transport = messaging.get_rpc_transport(conf, url=rabbit)
server = messaging.get_rpc_server(
    transport, messaging.Target(topic=topic, server="s1"), [Endpoint()],
    executor="threading", serializer=rpc.TraceSerializer())
server.start()
print("ready", flush=True)
while True:
    time.sleep(0.5)
"""

API = COMMON.replace("SERVICE", "'api'") + """
import wsgiref.simple_server
import oslo_messaging as messaging
from stacktrail import web
from stacktrail.integrations import rpc

rabbit, topic = sys.argv[2:4]
transport = messaging.get_rpc_transport(conf, url=rabbit)
client = messaging.get_rpc_client(
    transport, messaging.Target(topic=topic), timeout=30,
    serializer=rpc.TraceSerializer())

def app(environ, start_response):
    body = json.dumps(client.call({}, "handle", key="k1")).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass

httpd = wsgiref.simple_server.make_server(
    "127.0.0.1", 0, web.WsgiMiddleware(app, enabled=True), handler_class=Quiet)
print("ready %d" % httpd.server_port, flush=True)
httpd.serve_forever()
"""

CLIENT = COMMON.replace("SERVICE", "'client'") + """
import requests
from stacktrail import notifier, profiler
from stacktrail.common import propagation

prof = profiler.init(conf.profiler.hmac_keys.split(",")[0])
profiler.start("client", {"purpose": "multi-service test"})
# As OpenStack's python clients do: pass the trace on explicitly; with
# trace_requests the http span replaces these headers with its own.
reply = requests.get(sys.argv[2], headers=propagation.outgoing_headers(),
                     timeout=30)
profiler.stop()
reply.raise_for_status()
notifier.get().close(5)
print(json.dumps({"base_id": prof.get_base_id(), "reply": reply.json()}))
"""


def _write_conf(path, sock, flags):
    lines = ["[profiler]", "enabled = true", "hmac_keys = " + KEY,
             "connection_string = agent://" + sock, "trace_wsgi = true"]
    lines += ["%s = %s" % (flag, str(on).lower())
              for flag, on in flags.items()]
    path.write_text("\n".join(lines) + "\n")


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _bin(name):
    return os.path.join(os.path.dirname(sys.executable), name)


class Processes:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs = []

    def start(self, *args, wait_line=None):
        log = open(self.tmp_path / ("proc%d.log" % len(self.procs)), "w")
        proc = subprocess.Popen(list(args), stdout=subprocess.PIPE,
                                stderr=log, text=True)
        self.procs.append(proc)
        if wait_line:
            line = proc.stdout.readline()
            if not line.startswith(wait_line):
                raise AssertionError("%s did not start: %r, see %s"
                                     % (args[1], line, log.name))
            return line
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def cloud(tmp_path, redis_url, postgres_url, mongo_url, rabbit_url,
          unique_name):
    procs = Processes(tmp_path)
    sock = str(tmp_path / "agent.sock")
    conf = tmp_path / "profiler.conf"
    _write_conf(conf, sock, {f: True for f in SERVER_FLAGS})
    try:
        procs.start(_bin("stacktrail-agent"), "--agent-listen",
                    "unix://" + sock, "--agent-connection_string", redis_url,
                    "--agent-spool_dir", str(tmp_path / "spool"))
        _wait_for(lambda: os.path.exists(sock), "agent socket")
        procs.start(
            sys.executable, _script(tmp_path, "rpc_server.py", RPC_SERVER),
            str(conf), rabbit_url, unique_name, postgres_url, redis_url,
            mongo_url, wait_line="ready")
        line = procs.start(
            sys.executable, _script(tmp_path, "api.py", API), str(conf),
            rabbit_url, unique_name, wait_line="ready")
        yield Cloud(tmp_path, conf, sock, redis_url, procs,
                    "http://127.0.0.1:%s/v1/things" % line.split()[1])
    finally:
        procs.stop()


class Cloud:
    def __init__(self, tmp_path, conf, sock, redis_url, procs, url):
        self.tmp_path, self.conf, self.sock = tmp_path, conf, sock
        self.redis_url, self.procs, self.url = redis_url, procs, url
        self.client = _script(tmp_path, "client.py", CLIENT)

    def set_flags(self, flags):
        """Rewrite the config and SIGHUP the API and RPC server."""
        _write_conf(self.conf, self.sock, flags)
        for proc in self.procs.procs[1:]:
            proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)

    def request(self):
        out = subprocess.run([sys.executable, self.client, str(self.conf),
                              self.url], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["reply"]["redis"] == "v"
        return result["base_id"]

    def edges(self, base_id, expected, timeout=20):
        """{(span, parent span)} once the stored trace holds ``expected``."""
        deadline = time.monotonic() + timeout
        found = set()
        while time.monotonic() < deadline:
            found = _edges(self._show(base_id))
            if expected <= found:
                time.sleep(1.0)            # late points would show here
                return _edges(self._show(base_id))
            time.sleep(0.3)
        return found

    def _show(self, base_id):
        out = subprocess.run(
            [_bin("stacktrail"), "trace", "show", base_id, "--json",
             "--connection-string", self.redis_url],
            capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return {"children": []}
        return json.loads(out.stdout)


def _edges(report):
    edges = set()

    def walk(node, parent):
        for child in node.get("children", []):
            name = child["info"]["name"]
            edges.add((name, parent))
            walk(child, name)
    walk(report, "root")
    return edges


# The client side of the RPC under wsgi, the server side under it, and the
# server's statements and commands under that.
FULL = {("client", "root"), ("http", "client"), ("wsgi", "http"),
        ("rpc", "wsgi"), ("rpc", "rpc"), ("db", "rpc"), ("redis", "rpc"),
        ("mongodb", "rpc")}

# flag switched off -> the tree expected without its spans
WITHOUT = {
    "trace_requests": {("client", "root"), ("wsgi", "client"),
                       ("rpc", "wsgi"), ("rpc", "rpc"), ("db", "rpc"),
                       ("redis", "rpc"), ("mongodb", "rpc")},
    "trace_rpc": {("client", "root"), ("http", "client"), ("wsgi", "http"),
                  ("db", "wsgi"), ("redis", "wsgi"), ("mongodb", "wsgi")},
    "trace_sqlalchemy": FULL - {("db", "rpc")},
    "trace_redis": FULL - {("redis", "rpc")},
    "trace_mongodb": FULL - {("mongodb", "rpc")},
}


def test_one_trace_across_services_and_flags(cloud):
    base_id = cloud.request()
    assert cloud.edges(base_id, FULL) == FULL

    for flag, expected in WITHOUT.items():
        flags = {f: f != flag for f in SERVER_FLAGS}
        cloud.set_flags(flags)
        base_id = cloud.request()
        assert cloud.edges(base_id, expected) == expected, flag

    cloud.set_flags({f: True for f in SERVER_FLAGS})
    base_id = cloud.request()
    assert cloud.edges(base_id, FULL) == FULL


def _wait_for(predicate, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)
