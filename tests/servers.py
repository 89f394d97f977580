"""Find or start the servers the tests talk to.

Rule for every server: reuse the one listening on its standard port when it
answers; otherwise start a throwaway one on a free port, with its own data
directory under a private temp dir, as a child process that stop() ends.
The standard port of each can be moved with STACKTRAIL_TEST_<NAME>_PORT
(NAME: REDIS, POSTGRES, MYSQL, RABBIT, MONGO), e.g. to an unused port to
force the throwaway path.

Client libraries are imported inside functions so that this module loads
even where one of them is missing; that server is then reported as
unavailable instead of breaking every test.
"""

import atexit
import contextlib
import fcntl
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
STANDARD_PORTS = {
    "redis": 6379,
    "postgres": 5432,
    "mysql": 3306,
    "rabbit": 5672,
    "mongo": None,  # no MongoDB here: nx-27017 is always started unless set
}
START_TIMEOUT = 90.0  # RabbitMQ on a busy 2-core machine needs the most
LOCK_DIR = Path(tempfile.gettempdir()) / "stacktrail-test-locks"


class ServerUnavailable(Exception):
    """The server is down and a throwaway one could not be started."""


def configured_port(name):
    """The port to try first for server `name` (None: always start one)."""
    value = os.environ.get(f"STACKTRAIL_TEST_{name.upper()}_PORT")
    return int(value) if value else STANDARD_PORTS[name]


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def new_name(prefix="st_test_"):
    """Short unique name, valid as SQL/Mongo database name and Redis key."""
    return prefix + secrets.token_hex(4)


# --- a server we found or started ---------------------------------------

class Server:
    """host/port of a usable server; owned ones are stopped by stop()."""

    def __init__(self, name, port, proc=None, workdir=None, stopper=None,
                 stop_signal=signal.SIGTERM):
        self.name = name
        self.stop_signal = stop_signal
        self.host = HOST
        self.port = port
        self.proc = proc
        self.workdir = workdir
        self._stopper = stopper
        if self.owned:
            atexit.register(self.stop)  # in case pytest dies before teardown

    @property
    def owned(self):
        return self.proc is not None or self._stopper is not None

    def __repr__(self):
        kind = "started" if self.owned else "reused"
        return f"<Server {self.name} {self.host}:{self.port} {kind}>"

    def stop(self):
        if self._stopper is not None:
            with contextlib.suppress(Exception):
                self._stopper()
            self._stopper = None
        if self.proc is not None:
            end_group(self.proc, self.stop_signal)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def end_group(proc, sig=signal.SIGTERM, grace=20.0):
    """Signal ``proc``'s process group (servers fork helpers; a stopped
    group is continued, so that it can act on the signal), SIGKILL it if
    it lingers past ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
        os.killpg(proc.pid, signal.SIGCONT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _workdir(name):
    # Short paths: unix socket paths are limited to ~100 bytes.
    return Path(tempfile.mkdtemp(prefix=f"st-{name}-"))


def _spawn(cmd, workdir, env=None, user=None):
    """Start a server in its own process group, output to workdir/out.log."""
    if user is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--"] + cmd
    log = open(workdir / "out.log", "ab")
    try:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, cwd=workdir, env=env,
            start_new_session=True)
    finally:
        log.close()


def _run(cmd, workdir, user=None, env=None, timeout=120):
    """Run a setup step (initdb ...); raise with its output on failure."""
    if user is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--"] + cmd
    res = subprocess.run(cmd, cwd=workdir, env=env, timeout=timeout,
                         stdin=subprocess.DEVNULL, capture_output=True,
                         text=True)
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip()[-600:]
        raise ServerUnavailable(f"{cmd[0]} failed ({res.returncode}): {tail}")


def _log_tail(workdir, name="out.log", size=800):
    try:
        return (workdir / name).read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _wait_ready(server, ready, timeout=START_TIMEOUT):
    """Poll ready(port) until true; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            break
        with contextlib.suppress(Exception):
            if ready(server.port):
                return server
        time.sleep(0.2)
    tail = _log_tail(server.workdir) if server.workdir else ""
    server.stop()
    raise ServerUnavailable(
        f"{server.name} did not come up on port {server.port}: {tail}")


def _binary(name, *patterns):
    """Path of a server binary: on PATH or under one of the glob patterns."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]  # the newest version sorts last
    raise ServerUnavailable(f"{name} is not installed")


# --- health probes: "does a usable server answer on this port?" ----------

def redis_ready(port):
    import redis
    client = redis.Redis(host=HOST, port=port, socket_timeout=2,
                         socket_connect_timeout=1)
    try:
        return client.ping()
    finally:
        client.close()


def postgres_ready(port):
    import psycopg2
    conn = psycopg2.connect(host=HOST, port=port, user="postgres",
                            dbname="postgres", connect_timeout=2)
    conn.close()
    return True


def mysql_ready(port):
    import pymysql
    conn = pymysql.connect(host=HOST, port=port, user="root", password="",
                           connect_timeout=2)
    conn.close()
    return True


def rabbit_ready(port):
    import amqp
    conn = amqp.Connection(host=f"{HOST}:{port}", userid="guest",
                           password="guest", connect_timeout=2)
    try:
        conn.connect()
        return True
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def mongo_ready(port):
    import pymongo
    client = pymongo.MongoClient(HOST, port, serverSelectionTimeoutMS=2000,
                                 connectTimeoutMS=2000)
    try:
        return bool(client.admin.command("ping").get("ok"))
    finally:
        client.close()


# --- throwaway servers --------------------------------------------------

def start_redis():
    binary = _binary("redis-server", "/usr/bin/redis-server")
    port, workdir = free_port(), _workdir("redis")
    proc = _spawn([binary, "--port", str(port), "--bind", HOST,
                   "--save", "", "--appendonly", "no",
                   "--dir", str(workdir)], workdir)
    return _wait_ready(Server("redis", port, proc, workdir), redis_ready)


def start_postgres():
    initdb = _binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    bindir = Path(initdb).parent
    port, workdir = free_port(), _workdir("pg")
    datadir = workdir / "data"
    user = "postgres" if os.geteuid() == 0 else None  # initdb refuses root
    if user:
        shutil.chown(workdir, user)
    _run([initdb, "-D", str(datadir), "-U", "postgres", "-A", "trust",
          "-E", "UTF8", "--no-sync"], workdir, user=user)
    # Run postgres itself (not pg_ctl) so the child we hold is the server.
    proc = _spawn([str(bindir / "postgres"), "-D", str(datadir),
                   "-p", str(port), "-k", str(workdir),
                   "-c", f"listen_addresses={HOST}", "-c", "fsync=off"],
                  workdir, user=user)
    # SIGINT is the "fast" shutdown: SIGTERM would wait for leaked clients.
    server = Server("postgres", port, proc, workdir, stop_signal=signal.SIGINT)
    return _wait_ready(server, postgres_ready)


def start_mysql():
    install = _binary("mariadb-install-db", "/usr/bin/mariadb-install-db")
    server = _binary("mariadbd", "/usr/sbin/mariadbd")
    port, workdir = free_port(), _workdir("my")
    datadir = workdir / "data"
    # --no-defaults: the system my.cnf pins port, socket and datadir.
    _run([install, "--no-defaults", f"--datadir={datadir}", "--user=root",
          "--auth-root-authentication-method=normal", "--skip-test-db"],
         workdir)
    proc = _spawn([server, "--no-defaults", f"--datadir={datadir}",
                   f"--port={port}", f"--bind-address={HOST}",
                   f"--socket={workdir}/my.sock",
                   f"--pid-file={workdir}/my.pid",
                   "--user=root", "--skip-log-bin",
                   "--innodb-buffer-pool-size=32M"], workdir)
    return _wait_ready(Server("mysql", port, proc, workdir), mysql_ready)


def start_rabbit():
    # The Debian wrapper in /usr/sbin switches to the rabbitmq user and
    # drops our environment, so call the real script directly.
    script = _binary("rabbitmq-server-real",
                     "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/"
                     "rabbitmq-server")
    port, dist_port, workdir = free_port(), free_port(), _workdir("mq")
    # Own config files: the system ones pin the listener to 5672 and the
    # node name to rabbit@localhost, and may enable plugins with fixed ports.
    (workdir / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = {HOST}:{port}\nloopback_users = none\n")
    (workdir / "env.conf").write_text("")
    (workdir / "plugins").write_text("[].\n")
    env = dict(os.environ,
               HOME=str(workdir),  # its erlang cookie goes here
               RABBITMQ_NODENAME=f"st{port}@localhost",
               RABBITMQ_NODE_IP_ADDRESS=HOST,
               RABBITMQ_NODE_PORT=str(port),
               RABBITMQ_DIST_PORT=str(dist_port),
               RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq.conf"),
               RABBITMQ_CONF_ENV_FILE=str(workdir / "env.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "plugins"),
               RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
               RABBITMQ_LOG_BASE=str(workdir / "log"),
               RABBITMQ_PID_FILE=str(workdir / "rabbit.pid"),
               ERL_EPMD_ADDRESS=HOST)
    proc = _spawn([script], workdir, env=env)
    return _wait_ready(Server("rabbit", port, proc, workdir), rabbit_ready)


def start_mongo():
    here = Path(sys.executable).parent / "nx-27017"
    binary = str(here) if here.exists() else _binary("nx-27017")
    port, workdir = free_port(), _workdir("nx")
    proc = _spawn([binary, "--host", HOST, "--port", str(port),
                   "--data-dir", str(workdir / "data"),
                   "--log-file", str(workdir / "nx.log"),
                   "--pid-file", str(workdir / "nx.pid")], workdir)
    return _wait_ready(Server("mongo", port, proc, workdir), mongo_ready)


PROBES = {"redis": redis_ready, "postgres": postgres_ready,
          "mysql": mysql_ready, "rabbit": rabbit_ready, "mongo": mongo_ready}
STARTERS = {"redis": start_redis, "postgres": start_postgres,
            "mysql": start_mysql, "rabbit": start_rabbit, "mongo": start_mongo}


def ensure(name):
    """A usable server `name`: the one on its configured port, or a new one.

    Raises ServerUnavailable (with the reason) when neither works.
    """
    port = configured_port(name)
    if port is not None and port_open(port):
        with contextlib.suppress(Exception):
            if PROBES[name](port):
                return Server(name, port)
    try:
        return STARTERS[name]()
    except ServerUnavailable:
        raise
    except Exception as exc:  # missing client library, unexpected OSError
        raise ServerUnavailable(
            f"{name}: {type(exc).__name__}: {exc}") from exc


# --- per-test resources -------------------------------------------------

@contextlib.contextmanager
def redis_db(server, first=1, last=15):
    """Own one Redis db number (never 0) for the block, flushed first.

    A file lock per (port, db) keeps concurrent pytest runs on the same
    machine from sharing a db; the start rotates so consecutive tests get
    different dbs.
    """
    import redis
    LOCK_DIR.mkdir(exist_ok=True)
    dbs = list(range(first, last + 1))
    start = next(_rotation) % len(dbs)
    dbs = dbs[start:] + dbs[:start]
    handle, db = _lock_any(dbs, server.port)
    try:
        client = redis.Redis(host=server.host, port=server.port, db=db)
        try:
            client.flushdb()
        finally:
            client.close()
        yield db
    finally:
        handle.close()  # releases the lock


def _counter():
    n = 0
    while True:
        yield n
        n += 1


_rotation = _counter()


def _lock_any(dbs, port):
    """Lock the first free db; when all are busy, wait for the first."""
    for blocking in (False, True):
        for db in dbs:
            handle = open(LOCK_DIR / f"redis-{port}-{db}.lock", "w")
            try:
                flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
                fcntl.flock(handle, flags)
                return handle, db
            except BlockingIOError:
                handle.close()
    raise AssertionError("unreachable: the blocking pass always returns")


@contextlib.contextmanager
def postgres_database(server):
    """A fresh PostgreSQL database for the block; dropped afterwards."""
    import psycopg2
    name = new_name()
    admin = psycopg2.connect(host=server.host, port=server.port,
                             user="postgres", dbname="postgres",
                             connect_timeout=5)
    admin.autocommit = True  # CREATE/DROP DATABASE refuse transactions
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
        with admin.cursor() as cur:
            # FORCE: a test that leaked a connection must not block cleanup.
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@contextlib.contextmanager
def mysql_database(server):
    """A fresh MariaDB database for the block; dropped afterwards."""
    import pymysql
    name = new_name()
    admin = pymysql.connect(host=server.host, port=server.port, user="root",
                            password="", connect_timeout=5, autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
        _drop_mysql_database(admin, name)
    finally:
        admin.close()


def _drop_mysql_database(admin, name):
    # A leaked connection holding a metadata lock would make DROP wait for
    # a year (lock_wait_timeout's default): end such sessions first.
    with admin.cursor() as cur:
        cur.execute("SELECT id FROM information_schema.processlist "
                    "WHERE db = %s AND id <> CONNECTION_ID()", (name,))
        for (conn_id,) in cur.fetchall():
            with contextlib.suppress(Exception):
                cur.execute(f"KILL {int(conn_id)}")
        cur.execute("SET SESSION lock_wait_timeout = 30")
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextlib.contextmanager
def mongo_database(server):
    """A database name of its own on the MongoDB server; dropped after."""
    import pymongo
    name = new_name()
    yield name
    client = pymongo.MongoClient(server.host, server.port,
                                 serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()
