"""A real zaqar-server (Zaqar 23.0.1 from PyPI) for tests and benchmarks.

Typical use::

    with zaqar.zaqar_server(tmp_path, redis_url) as server:
        client = server.client()
        client.create_queue("q1")
        client.post_messages("q1", [{"body": {"n": 1}}])
        assert client.get_messages("q1").json()["messages"]

The pieces, usable on their own:

- ``zaqar_env()``: the cached virtual environment with Zaqar (tests/services/
  envs.py); stacktrail is not in it, pass ``overlay=`` to a server for that.
- ``write_config(dir, message_store_url, management_url, pooling=...,
  **sections)``: a ``zaqar.conf`` for a standalone server without auth, in
  admin mode, WSGI transport.  ``message_store_url`` is ``redis://`` (the
  fixtures' ``redis://host:port/N`` is rewritten to Zaqar's ``?dbid=N``: Zaqar
  ignores the path) or ``mongodb://`` (see /tmp/zaqar_notes.md: it does not
  run on nx-27017).  ``management_url`` is ``sqlite:///...`` (the default, a
  file in ``dir``), ``mysql+pymysql://...``, ``redis://`` or ``mongodb://``.
- ``create_schema(management_url)``: the SQL schema Zaqar expects and never
  creates itself (SQLite: from Zaqar's table metadata; MySQL/MariaDB:
  Zaqar's own migrations, ``zaqar-sql-db-manage upgrade head``).
- ``ZaqarServer(config_files, overlay=...)``: runs ``zaqar-server`` on a free
  port (an extra config file written next to the log sets bind/port), waits
  until ``GET /v2/ping`` answers, and always ends it (SIGTERM to its process
  group, SIGKILL after a grace period; the child also gets SIGKILL if the
  test process dies).  ``url``, ``port``, ``pid``, ``log_path``,
  ``log_text()``.
- ``ZaqarClient``: a few requests with ``Client-ID`` and ``X-Project-ID``
  set, each returning the ``requests.Response``; extra headers (trace
  headers) go through ``headers=``.
- Pooling: ``write_config(..., pooling=True)`` plus ``client.create_pool``
  (admin API, ``X-Roles: admin``); ``zaqar_server(..., pools=[url, ...])``
  does both.
"""

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib import parse

import requests

from tests import servers
from tests.services import envs

ZAQAR_REQUIREMENTS = ["zaqar[redis]==23.0.1", "pymongo", "PyMySQL",
                      "python-zaqarclient[websocket]==4.7.0",
                      # what Zaqar's own tests (in the wheel) import
                      "oslotest==6.1.1", "ddt==1.7.2", "testtools==2.9.1",
                      "fixtures==4.3.2"]
HOST = "127.0.0.1"
START_TIMEOUT = 60.0   # ready in ~0.8-1 s here; a loaded 2-core CI box, more
STOP_GRACE = 10.0
DEFAULT_PROJECT = "stacktrail-test"
ADMIN_HEADERS = {"X-Roles": "admin"}   # pools, flavors, health: role:admin


class ZaqarStartError(RuntimeError):
    """zaqar-server exited or did not answer; the message has its log."""


def zaqar_env():
    """The cached environment with Zaqar (built on first use; raises
    envs.EnvUnavailable when pip fails)."""
    return envs.ensure("zaqar", ZAQAR_REQUIREMENTS)


# --- configuration -------------------------------------------------------

def store_uri(url):
    """``url`` as Zaqar's storage drivers read it.

    Zaqar's Redis driver takes the db from ``?dbid=N`` and ignores the path,
    so ``redis://h:p/N`` becomes ``redis://h:p?dbid=N`` (other URLs pass
    unchanged)."""
    parts = parse.urlsplit(url)
    if parts.scheme != "redis":
        return url
    query = parse.parse_qsl(parts.query)
    db = parts.path.strip("/")
    if db and not any(key == "dbid" for key, _ in query):
        query.append(("dbid", db))
    return parse.urlunsplit(("redis", parts.netloc, "",
                             parse.urlencode(query), ""))


def _mongo_database(url):
    return parse.urlsplit(url).path.strip("/") or "zaqar"


def _store_sections(kind, url):
    """(driver name, {section: options}) for a message or management store."""
    scheme = parse.urlsplit(url).scheme.split("+")[0]
    if scheme == "redis":
        return "redis", {f"drivers:{kind}:redis": {"uri": store_uri(url)}}
    if scheme == "mongodb":
        return "mongodb", {f"drivers:{kind}:mongodb": {
            "uri": url, "database": _mongo_database(url)}}
    if kind == "management_store" and scheme in ("sqlite", "mysql"):
        return "sqlalchemy", {
            "drivers:management_store:sqlalchemy": {"uri": url}}
    raise ValueError(f"no Zaqar {kind} for {url!r}")


def write_config(directory, message_store_url=None, management_url=None, *,
                 pooling=False, name="zaqar.conf", **sections):
    """Write ``directory/name`` for a standalone zaqar-server; its path.

    No auth, ``admin_mode`` on (pools, flavors and /v2/health exist),
    ``[drivers] transport = wsgi``.  ``message_store_url``: Redis or MongoDB
    (required unless ``pooling``: a pooled server takes its stores from the
    pools).  ``management_url``: default
    ``sqlite:///<directory>/zaqar.sqlite``.
    A MongoDB store also sets ``unreliable = True`` (a single node is
    refused otherwise).  ``sections`` add or override options, e.g.
    ``profiler={"enabled": True}`` or
    ``**{"drivers:message_store:redis": {"reconnect_sleep": 0.1}}``.
    The port is not written here: ZaqarServer adds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if message_store_url is None and not pooling:
        raise ValueError("a non-pooled server needs a message_store_url")
    if management_url is None:
        management_url = "sqlite:///" + str(directory / "zaqar.sqlite")
    conf = {
        "DEFAULT": {"auth_strategy": "", "admin_mode": True,
                    "pooling": bool(pooling)},
        "drivers": {"transport": "wsgi"},
    }
    driver, extra = _store_sections("management_store", management_url)
    conf["drivers"]["management_store"] = driver
    conf.update(extra)
    urls = [management_url]
    if message_store_url is not None:
        driver, extra = _store_sections("message_store", message_store_url)
        conf["drivers"]["message_store"] = driver
        conf.update(extra)
        urls.append(message_store_url)
    else:
        # Only read in pooling mode with [pooling:catalog]
        # enable_virtual_pool; Zaqar's default is mongodb.
        conf["drivers"]["message_store"] = "redis"
    if any(u.startswith("mongodb") for u in urls):
        conf["DEFAULT"]["unreliable"] = True
    for section, options in sections.items():
        conf.setdefault(section, {}).update(options)
    path = directory / name
    path.write_text(render_conf(conf))
    return path


def profiler_section(connection_string, hmac_keys="SECRET_KEY", **options):
    """``[profiler]`` options that trace a request through Zaqar 23 with
    whatever answers to ``import osprofiler`` in the server: pass as
    ``profiler=profiler_section(...)``.

    Zaqar needs all of trace_wsgi_transport, trace_message_store and
    trace_management_store on: with ``enabled`` and a store flag off, its
    driver loader returns None and the server dies at start
    ("DataDriver.__init__() missing ... 'control_driver'")."""
    section = {"enabled": True, "hmac_keys": hmac_keys,
               "connection_string": connection_string,
               "trace_wsgi_transport": True, "trace_message_store": True,
               "trace_management_store": True}
    section.update(options)
    return section


FRAGMENT = envs.ROOT / "etc" / "zaqar" / "stacktrail.conf"


def fragment_sections(path=FRAGMENT, **profiler):
    """The shipped fragment's options as ``write_config`` sections, for a
    zaqar.conf that holds its lines itself (no file of their own);
    ``profiler`` adds or overrides ``[profiler]`` options."""
    import configparser
    # No default section: [DEFAULT] is read as the section it is.
    parser = configparser.ConfigParser(interpolation=None,
                                       default_section="\0")
    parser.read(path)
    sections = {name: dict(parser.items(name)) for name in parser.sections()}
    sections.setdefault("profiler", {}).update(profiler)
    return sections


def write_overrides(directory, overrides):
    """``directory``/overrides.conf holding ``[profiler]`` ``overrides``
    (to follow the fragment on the command line); its path."""
    path = Path(directory) / "overrides.conf"
    path.write_text(render_conf({"profiler": overrides}))
    return path


def render_conf(conf):
    """oslo.config INI text from ``{section: {option: value}}``."""
    lines = []
    for section, options in conf.items():
        lines.append(f"[{section}]")
        for key, value in options.items():
            if isinstance(value, bool):
                value = "True" if value else "False"
            elif isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            lines.append(f"{key} = {'' if value is None else value}")
        lines.append("")
    return "\n".join(lines)


def create_schema(management_url, env=None, timeout=120):
    """Create the tables of Zaqar's SQL management store (idempotent).

    Zaqar never creates them.  SQLite: ``tables.metadata.create_all``
    (Zaqar's migrations use MySQL-only ALTERs), done once per process into
    a template file that is then copied.  MySQL/MariaDB: Zaqar's migrations
    (``zaqar-sql-db-manage upgrade head``, ~0.9 s), as a deployment does.
    Other stores need nothing.  Runs in Zaqar's env.
    """
    scheme = parse.urlsplit(management_url).scheme.split("+")[0]
    env = env or zaqar_env()
    if scheme == "sqlite":
        path = _sqlite_path(management_url)
        if path is not None and not path.exists():
            # One create_all per env and process (it costs a Python start
            # and Zaqar's imports, ~0.6 s), then a file copy per server.
            template = _SQLITE_TEMPLATES.get(env.path)
            if template is None:
                template = Path(_template_dir()) / (
                    "zaqar-%d.sqlite" % len(_SQLITE_TEMPLATES))
                _create_sqlite_schema("sqlite:///" + str(template), env,
                                      timeout)
                _SQLITE_TEMPLATES[env.path] = template
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, path)
        else:
            _create_sqlite_schema(management_url, env, timeout)
    elif scheme == "mysql":
        with tempfile.TemporaryDirectory(prefix="st-zqdb-") as tmp:
            conf = Path(tmp) / "db.conf"
            conf.write_text(render_conf({
                "drivers:management_store:sqlalchemy":
                    {"uri": management_url}}))
            _run([env.bin("zaqar-sql-db-manage"), "--config-file", str(conf),
                  "upgrade", "head"], env, timeout)


_SQLITE_TEMPLATES = {}   # env path -> a schema-only SQLite file
_TEMPLATE_DIR = []


def _template_dir():
    if not _TEMPLATE_DIR:
        _TEMPLATE_DIR.append(tempfile.mkdtemp(prefix="st-zaqar-schema-"))
        atexit.register(shutil.rmtree, _TEMPLATE_DIR[0], True)
    return _TEMPLATE_DIR[0]


def _sqlite_path(url):
    """The file of a sqlite:///path URL; None for memory databases."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _create_sqlite_schema(url, env, timeout):
    _run([env.python, "-c",
          "import sys, sqlalchemy\n"
          "from zaqar.storage.sqlalchemy import tables\n"
          "engine = sqlalchemy.create_engine(sys.argv[1])\n"
          "tables.metadata.create_all(engine)\n"
          "engine.dispose()\n", url], env, timeout)


def _run(cmd, env, timeout):
    # cwd: ``python -c`` puts it first on sys.path (see envs.quiet_dir).
    res = subprocess.run(cmd, env=env.environ(), capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                         cwd=envs.quiet_dir())
    if res.returncode:
        raise RuntimeError("%s failed (%d): %s" % (
            os.path.basename(cmd[0]) if cmd[1] != "-c" else "schema",
            res.returncode, (res.stdout + res.stderr)[-1500:]))


# --- the server ------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _listens(pid, port):
    """Whether process ``pid`` holds a TCP socket listening on ``port``
    (so an answer on the port is ours, not a server that took it first).
    True where /proc cannot tell (not Linux)."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError):
                with open(table) as f:
                    for line in list(f)[1:]:
                        fields = line.split()
                        local, state, inode = fields[1], fields[3], fields[9]
                        if state == "0A" and int(local.rsplit(":", 1)[1],
                                                 16) == port:
                            inodes.add(f"socket:[{inode}]")
        if not inodes:
            return False
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(os.path.join(fd_dir, fd)) in inodes:
                    return True
        return False
    except OSError:
        return not os.path.isdir("/proc/self/fd")


def _die_with_parent():
    """preexec_fn: SIGKILL the server if the test process dies (Linux).

    Note: the kernel sends it when the *thread* that started the server
    exits, so start servers from a thread that outlives them."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG


class ZaqarServer:
    """``zaqar-server --config-file ...`` as a child process.

    A context manager (``with ZaqarServer(...) as server``) or
    ``start()``/``stop()``.  Each start picks a free port, written to
    ``<workdir>/listen.conf`` and passed as the last ``--config-file`` (so it
    wins over the others).  ``overlay``: a directory put on PYTHONPATH
    (envs.stacktrail_overlay), or None to run Zaqar as published.
    ``runner``: a command the server runs under (``valgrind ...``), which
    must keep its process id (exec it, as valgrind does).
    """

    def __init__(self, config_files, *, env=None, overlay=None, workdir=None,
                 start_timeout=START_TIMEOUT, extra_environ=None,
                 project=DEFAULT_PROJECT, runner=()):
        if isinstance(config_files, (str, os.PathLike)):
            config_files = [config_files]
        self.config_files = [Path(p) for p in config_files]
        if not self.config_files:
            raise ValueError("at least one config file")
        self.env = env or zaqar_env()
        self.overlay = overlay
        self.workdir = Path(workdir or self.config_files[0].parent)
        self.start_timeout = start_timeout
        self.extra_environ = dict(extra_environ or {})
        self.project = project
        self.runner = list(runner)
        self.log_path = self.workdir / "zaqar-server.log"
        self.proc = None
        self.port = None
        self.startup_seconds = None   # spawn to first answer, last start
        self._log_offset = 0

    # -- lifecycle --
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    @property
    def url(self):
        return f"http://{HOST}:{self.port}"

    @property
    def returncode(self):
        return self.proc.poll() if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        cmd = self.runner + [self.env.bin("zaqar-server")]
        for path in self.config_files + [self.workdir / "listen.conf"]:
            cmd += ["--config-file", str(path)]
        return cmd

    def start(self):
        """Start and wait until it answers; ZaqarStartError otherwise.

        Retries twice on a port taken between choosing and binding it."""
        if self.running():
            raise RuntimeError("already running")
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready()
                return self
            except ZaqarStartError:
                in_use = "Address already in use" in self.log_text()
                self.stop()
                if not in_use or attempt == 2:
                    raise
        return self

    def _spawn(self):
        self.port = free_port()
        (self.workdir / "listen.conf").write_text(render_conf(
            {"drivers:transport:wsgi": {"bind": HOST, "port": self.port}}))
        environ = self.env.environ(overlay=self.overlay, **self.extra_environ)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=str(self.workdir), env=environ,
                start_new_session=True, preexec_fn=_die_with_parent)
        _LIVE.add(self)

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ZaqarStartError(
                        "zaqar-server exited with %s at start; log %s:\n%s"
                        % (self.proc.returncode, self.log_path,
                           self.log_text()[-4000:]))
                if not _listens(self.proc.pid, self.port):
                    time.sleep(0.05)
                    continue
                with contextlib.suppress(requests.RequestException):
                    if client.ping(timeout=2).status_code == 204:
                        self.startup_seconds = (time.monotonic()
                                                - self._started_at)
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise ZaqarStartError(
            "zaqar-server did not answer within %.0f s; log %s:\n%s"
            % (self.start_timeout, self.log_path, self.log_text()[-4000:]))

    def stop(self, grace=STOP_GRACE):
        """SIGTERM its process group, SIGKILL after ``grace``; idempotent.

        Returns the exit code (None if it was never started)."""
        _LIVE.discard(self)
        proc = self.proc
        if proc is None:
            return None
        servers.end_group(proc, grace=grace)
        return proc.returncode

    def signal(self, signum):
        """Send ``signum`` to the server process (e.g. SIGHUP, SIGSTOP)."""
        os.kill(self.pid, signum)

    def log_text(self, whole=False):
        """The server's output (oslo.log on stderr plus wsgiref's access
        log) since the last start, or the whole file with ``whole``."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0 if whole else self._log_offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self, project=None, client_id=None, timeout=10):
        return ZaqarClient(self.url, project=project or self.project,
                           client_id=client_id, timeout=timeout)


_LIVE = set()


@atexit.register
def _stop_leftovers():
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(grace=2)


# --- the client ------------------------------------------------------------

class ZaqarClient:
    """Zaqar v2 requests; each returns the ``requests.Response``.

    ``Client-ID`` (a UUID, fixed per client) and ``X-Project-ID`` go with
    every request; ``headers=`` adds or overrides (trace headers, X-Roles).
    """

    def __init__(self, url, project=DEFAULT_PROJECT, client_id=None,
                 timeout=10):
        self.url = url.rstrip("/")
        self.project = project
        self.client_id = client_id or str(uuid.uuid4())
        self.timeout = timeout
        self.session = requests.Session()

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def headers(self, extra=None):
        headers = {"Client-ID": self.client_id, "X-Project-ID": self.project,
                   "Accept": "application/json"}
        headers.update(extra or {})
        return headers

    def request(self, method, path, headers=None, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return self.session.request(method, self.url + path,
                                    headers=self.headers(headers), **kwargs)

    def ping(self, headers=None, **kwargs):
        """GET /v2/ping: 204 when the storage answers (no role needed)."""
        return self.request("GET", "/v2/ping", headers, **kwargs)

    def health(self, headers=None):
        """GET /v2/health (detailed; admin_mode and ``X-Roles: admin``)."""
        return self.request("GET", "/v2/health",
                            dict(ADMIN_HEADERS, **(headers or {})))

    def create_queue(self, queue, metadata=None, headers=None):
        """PUT /v2/queues/<queue>: 201 created, 204 existed."""
        return self.request("PUT", f"/v2/queues/{queue}", headers,
                            json=metadata or {})

    def post_messages(self, queue, messages, headers=None):
        """POST /v2/queues/<queue>/messages; ``messages`` are message
        documents: ``{"body": ..., "ttl": s, "delay": s}`` (ttl, delay
        optional).  201 with ``{"resources": [...]}``."""
        return self.request("POST", f"/v2/queues/{queue}/messages", headers,
                            json={"messages": list(messages)})

    def get_messages(self, queue, echo=True, headers=None, **params):
        """GET /v2/queues/<queue>/messages?echo=...; ``echo=True`` includes
        this client's own messages.  200 with ``{"messages": [...]}``."""
        params["echo"] = "true" if echo else "false"
        return self.request("GET", f"/v2/queues/{queue}/messages", headers,
                            params=params)

    def create_pool(self, name, uri, weight=100, flavor=None, options=None,
                    headers=None):
        """PUT /v2/pools/<name> (pooling mode, admin): 201.  ``uri`` as in
        write_config (a fixture's redis://h:p/N is rewritten); Zaqar checks
        it can connect first (400 otherwise); a pool URI must be unique."""
        body = {"weight": weight, "uri": store_uri(uri)}
        if flavor is not None:
            body["flavor"] = flavor
        if options:
            body["options"] = options
        return self.request("PUT", f"/v2/pools/{name}",
                            dict(ADMIN_HEADERS, **(headers or {})), json=body)

    def create_flavor(self, name, pool_list, capabilities=None, headers=None):
        """PUT /v2/flavors/<name> with ``pool_list`` (admin): 201.  A queue
        created with metadata ``{"_flavor": name}`` lands in those pools."""
        body = {"pool_list": list(pool_list)}
        if capabilities is not None:
            body["capabilities"] = capabilities
        return self.request("PUT", f"/v2/flavors/{name}",
                            dict(ADMIN_HEADERS, **(headers or {})), json=body)


# --- all in one --------------------------------------------------------------

@contextlib.contextmanager
def zaqar_server(directory, message_store_url=None, management_url=None, *,
                 pooling=False, pools=(), overlay=None, env=None,
                 extra_conf_files=(), start_timeout=START_TIMEOUT, runner=(),
                 **sections):
    """Write the config, create the SQL schema, start a ZaqarServer, and
    with ``pools`` (store URLs; implies pooling) register them as pools
    ``pool0``, ``pool1``... of weight 100; yields the running server.

    ``extra_conf_files`` follow zaqar.conf on the command line (they win).
    """
    env = env or zaqar_env()
    directory = Path(directory)
    pooling = pooling or bool(pools)
    conf = write_config(directory, message_store_url, management_url,
                        pooling=pooling, **sections)
    create_schema(management_url
                  or "sqlite:///" + str(directory / "zaqar.sqlite"), env=env)
    server = ZaqarServer([conf, *extra_conf_files], env=env, overlay=overlay,
                         workdir=directory, start_timeout=start_timeout,
                         runner=runner)
    with server:
        if pools:
            with server.client() as client:
                for i, uri in enumerate(pools):
                    resp = client.create_pool(f"pool{i}", uri)
                    if resp.status_code != 201:
                        raise ZaqarStartError(
                            "creating pool%d (%s) gave %s: %s\n%s"
                            % (i, uri, resp.status_code, resp.text,
                               server.log_text()[-3000:]))
        yield server


def drop_mongo_databases(mongo_url):
    """Drop the databases Zaqar derives from the URL's database name
    (``<db>_messages_p0``.., ``<db>_queues``, ...); the mongo_url fixture
    drops only ``<db>`` itself."""
    import pymongo
    name = _mongo_database(mongo_url)
    client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        for db in client.list_database_names():
            if db == name or db.startswith(name + "_"):
                client.drop_database(db)
    finally:
        client.close()


# --- other entry points, client programs -------------------------------------

def run_python(code, *args, env=None, overlay=None, timeout=120, **environ):
    """``python -c code args...`` in Zaqar's env (python-zaqarclient and
    websocket-client are there; stacktrail from ``overlay``); its stdout.
    RuntimeError with the output when it fails."""
    env = env or zaqar_env()
    res = subprocess.run([env.python, "-c", code, *map(str, args)],
                         env=env.environ(overlay=overlay, **environ),
                         capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL, cwd=envs.quiet_dir())
    if res.returncode:
        raise RuntimeError("client program failed (%d):\n%s" % (
            res.returncode, (res.stdout + res.stderr)[-4000:]))
    return res.stdout


_SERVE_APP = """\
import sys
from wsgiref import simple_server
from zaqar.transport.wsgi import app
simple_server.make_server(sys.argv[1], int(sys.argv[2]),
                          app.application).serve_forever()
"""


class WsgiAppServer(ZaqarServer):
    """``zaqar.transport.wsgi.app:application`` (what uwsgi, gunicorn or
    mod_wsgi host) served by wsgiref.  The application reads only the
    default config locations: ``home`` becomes the process's HOME and
    should hold ``.zaqar/zaqar.conf`` and ``.zaqar/zaqar.conf.d/*.conf``
    (write_config(home / ".zaqar") writes the first).  The port goes on
    the command line (``listen.conf`` is not read)."""

    def __init__(self, home, **kwargs):
        home = Path(home)
        kwargs.setdefault("extra_environ", {})["HOME"] = str(home)
        super().__init__([home / ".zaqar" / "zaqar.conf"], workdir=home,
                         **kwargs)

    def command(self):
        return [self.env.python, "-c", _SERVE_APP, HOST, str(self.port)]


class WebsocketServer(ZaqarServer):
    """zaqar-server with ``[drivers] transport = websocket`` (autobahn) on
    a free port; ``url`` is ``ws://...``.  Ready once it listens (it
    answers no HTTP ping); the notification endpoint takes any free port
    on HOST."""

    @property
    def url(self):
        return f"ws://{HOST}:{self.port}"

    def command(self):
        path = self.workdir / "websocket.conf"
        path.write_text(render_conf({
            "drivers": {"transport": "websocket"},
            "drivers:transport:websocket": {
                "bind": HOST, "port": self.port,
                "notification_bind": HOST, "notification_port": 0}}))
        return super().command() + ["--config-file", str(path)]

    def _wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ZaqarStartError(
                    "zaqar-server exited with %s at start; log %s:\n%s"
                    % (self.proc.returncode, self.log_path,
                       self.log_text()[-4000:]))
            if _listens(self.proc.pid, self.port):
                self.startup_seconds = time.monotonic() - self._started_at
                return
            time.sleep(0.05)
        raise ZaqarStartError(
            "zaqar-server did not listen within %.0f s; log %s:\n%s"
            % (self.start_timeout, self.log_path, self.log_text()[-4000:]))
