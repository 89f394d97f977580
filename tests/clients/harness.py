"""What the client tests share: the client environments, the local cloud,
running client programs, and reading their traces back.

- ``clients_env(osprofiler=False)``: a cached virtual environment
  (tests/services/envs.py) with python-openstackclient, osc-lib,
  keystoneauth1, openstacksdk, python-novaclient, python-cinderclient and
  python-zaqarclient from PyPI, and with osprofiler too when asked: the
  ``openstack`` command must work both ways.  stacktrail reaches it through
  the overlay (its entry points, the ``openstack.cli.extension`` plugin
  among them, are found there as after ``pip install stacktrail``).
- ``CloudStub``: tests/clients/cloud_stub.py as a child process (Keystone,
  Swift, Nova, Cinder enough for the real clients; traced by
  ``stacktrail.web.WsgiMiddleware``), with the request log it writes.
- ``python(...)`` / ``openstack(...)``: a client program in a client env.
- ``wait_for_trace`` / ``spans``: the stored points of one trace.
"""

import base64
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.services import envs
from tests.services import tracing

CLIENT_REQUIREMENTS = [
    "python-openstackclient==10.5.0", "osc-lib==4.7.0",
    "keystoneauth1==5.18.1", "openstacksdk==4.22.0",
    "python-novaclient==18.13.1", "python-cinderclient==9.10.0",
    "python-zaqarclient==4.7.0",
    # stacktrail's own requirements (the overlay is installed --no-deps)
    "oslo.config", "stevedore", "wrapt",
]
OSPROFILER = "osprofiler==4.4.0"
STUB = Path(__file__).resolve().parent / "cloud_stub.py"
PROJECT = "stacktrail-test"
START_TIMEOUT = 60


def clients_env(osprofiler=False):
    """The cached client environment (built on first use; raises
    envs.EnvUnavailable when pip fails)."""
    if osprofiler:
        return envs.ensure("clients-osprofiler",
                           CLIENT_REQUIREMENTS + [OSPROFILER])
    return envs.ensure("clients", CLIENT_REQUIREMENTS)


# --- the local cloud ---------------------------------------------------------

class CloudStub:
    """cloud_stub.py on a free port, traced into ``store``; a context
    manager.  ``zaqar_url`` goes into its catalog as the messaging
    endpoint."""

    def __init__(self, workdir, store, key, zaqar_url=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.key = key
        self.zaqar_url = zaqar_url
        self.log_path = self.workdir / "requests.jsonl"
        self.stderr_path = self.workdir / "stub.log"
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def auth_url(self):
        return self.url + "/identity/v3"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        cmd = [sys.executable, str(STUB), "--store", self.store,
               "--key", self.key, "--log", str(self.log_path),
               "--workdir", str(self.workdir)]
        if self.zaqar_url:
            cmd += ["--zaqar", self.zaqar_url]
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=str(self.workdir))
        line = self.proc.stdout.readline()   # "ready <port>" or EOF
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError("cloud stub did not start:\n%s"
                               % self.stderr_path.read_text()[-3000:])
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)   # flushes, then exits
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def requests(self):
        """Every request served so far, oldest first (dicts: service,
        method, path, query and the trace headers it carried)."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in
                self.log_path.read_text().splitlines() if line]

    def requests_of(self, base_id):
        """The requests whose traceparent names trace ``base_id``."""
        hex_id = uuid.UUID(base_id).hex
        return [r for r in self.requests()
                if (r.get("traceparent") or "").split("-")[1:2] == [hex_id]]

    def credentials(self):
        """OS_* variables for the ``openstack`` command."""
        return {"OS_AUTH_URL": self.auth_url, "OS_USERNAME": "admin",
                "OS_PASSWORD": "secret-password", "OS_PROJECT_ID": PROJECT,
                "OS_USER_DOMAIN_ID": "default",
                "OS_REGION_NAME": "RegionOne"}


# --- client programs --------------------------------------------------------

def _environ(env, overlay, home, extra):
    environ = env.environ(overlay=overlay)
    for name in list(environ):
        if name.startswith(("OS_", "STACKTRAIL_")):
            del environ[name]   # the machine's cloud is not ours
    environ["HOME"] = str(home)   # no clouds.yaml of the machine's user
    environ.update({k: str(v) for k, v in extra.items()})
    return environ


def run(env, overlay, argv, home, timeout=120, **environ):
    """``argv`` in ``env`` with stacktrail from ``overlay``."""
    return subprocess.run(argv, env=_environ(env, overlay, home, environ),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL,
                          cwd=envs.quiet_dir())


def python(env, overlay, home, code, *args, **environ):
    """``python -c code args...``; its stdout parsed as JSON (the last
    line).  RuntimeError with the output when it fails."""
    res = run(env, overlay, [env.python, "-c", code, *map(str, args)],
              home, **environ)
    if res.returncode:
        raise RuntimeError("client program failed (%d):\n%s" % (
            res.returncode, (res.stdout + res.stderr)[-4000:]))
    return json.loads(res.stdout.strip().splitlines()[-1])


def openstack(env, overlay, home, stub, *args, **environ):
    """``openstack args...`` against the stub's Keystone."""
    environ = dict(stub.credentials(), **environ)
    return run(env, overlay, [env.bin("openstack"), *args], home, **environ)


def printed_trace_id(output):
    """The id osc-lib prints ("Trace ID: <id>"), or None."""
    for line in output.splitlines():
        if line.startswith("Trace ID: "):
            return line.split(": ", 1)[1].strip()
    return None


# --- traces -----------------------------------------------------------------

def spans(found):
    """{span id: {"name", "parent", "start", "stop", "service"}} of a
    trace's messages (start/stop are the recorded info dicts)."""
    result = {}
    for message in found:
        name = message["name"]
        phase = "start" if name.endswith("-start") else "stop"
        span = result.setdefault(message["trace_id"], {
            "name": name.rsplit("-", 1)[0], "parent": message["parent_id"],
            "start": None, "stop": None, "service": message.get("service")})
        span[phase] = message.get("info") or {}
    return result


def complete(found):
    """True when every span has its stop and every ``http`` span has the
    server span of the call under it (all have stopped)."""
    by_id = spans(found)
    if not by_id or any(s["start"] is None or s["stop"] is None
                        for s in by_id.values()):
        return False
    served = {s["parent"] for s in by_id.values() if s["name"] == "wsgi"}
    return all(span_id in served for span_id, s in by_id.items()
               if s["name"] == "http")


def wait_for_trace(store, base_id, ready=complete, timeout=20):
    """The trace's messages once ``ready(messages)`` says so (the
    services flush every 0.2 s); the last read on timeout."""
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        found = tracing.messages(store, base_id)
        if found and ready(found):
            return found
        time.sleep(0.1)
    return found


def signed_info(request):
    """The base_id/parent_id an X-Trace-Info header carried."""
    packed = request["X-Trace-Info"]
    return json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed)
                                                               % 4)))


def assert_both_formats(request, base_id, http_ids):
    """The request carried osprofiler's signed header and a traceparent,
    both naming the same client span (one of ``http_ids``)."""
    assert request["X-Trace-Info"] and request["X-Trace-HMAC"], request
    info = signed_info(request)
    assert info["base_id"] == base_id
    assert info["parent_id"] in http_ids, (info, request)
    version, trace_hex, span_hex, _ = request["traceparent"].split("-")
    assert trace_hex == uuid.UUID(base_id).hex
    assert span_hex == uuid.UUID(info["parent_id"]).hex[16:]
