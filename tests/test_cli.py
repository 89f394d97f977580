"""The ``stacktrail`` console script, run as a subprocess."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from stacktrail.cmd import cli
from tests.report import tracegen as tg

SCRIPT = pathlib.Path(sys.executable).with_name("stacktrail")
OTHER_BASE = "0b7c1d2e-0000-4000-8000-000000000000"


def run(*args, env=None, cwd=None):
    environ = {k: v for k, v in os.environ.items()
               if k != cli.ENV_CONNECTION}
    environ.update(env or {})
    command = [str(SCRIPT)] if SCRIPT.exists() else [
        sys.executable, "-m", "stacktrail.cmd.cli"]
    return subprocess.run(command + [str(a) for a in args], env=environ,
                          cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def assert_error(done, *fragments):
    """One clear line on stderr, nothing on stdout, a non-zero status."""
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line, done.stderr
    assert line.startswith("stacktrail: error: "), line
    for fragment in fragments:
        assert fragment in line
    return line


def trace_messages(base_id=tg.BASE):
    messages = tg.spans(("wsgi", "r", tg.BASE, 0, 100),
                        ("db-query", "a", "r", 10, 20),
                        ("rpc-call", "b", "r", 30, 90))
    for m in messages:
        m["base_id"] = base_id
    return messages


def write_jsonl(path, messages):
    path.write_text("".join(json.dumps(m) + "\n" for m in messages))
    return path


@pytest.fixture
def trace_file(tmp_path):
    return write_jsonl(tmp_path / "trace.jsonl", trace_messages())


@pytest.fixture
def store(tmp_path):
    """A file:// store holding two traces."""
    path = write_jsonl(tmp_path / "store.jsonl",
                       trace_messages() + trace_messages(OTHER_BASE))
    return "file://%s" % path


@pytest.fixture
def fake_env(tmp_path):
    """A driver for scheme fake:// registered only for this test's
    subprocesses (an entry point in a throwaway distribution)."""
    plugin = tmp_path / "plugin"
    dist = plugin / "stacktrail_fakestore-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stacktrail-fakestore\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[stacktrail.drivers]\nfake = stacktrail_fakestore:FakeDriver\n")
    (plugin / "stacktrail_fakestore.py").write_text(textwrap.dedent('''
        import json
        from stacktrail.drivers import base

        class FakeDriver(base.Driver):
            """fake://MODE/PATH: messages from a JSON file, or failures."""

            def _check(self):
                if self.url.netloc == "boom":
                    raise RuntimeError("store exploded\\nsecond line")
                if self.url.netloc == "refuse":
                    raise base.DriverError("fake store refused us")

            def get_messages(self, base_id):
                self._check()
                with open(self.url.path) as f:
                    return [m for m in json.load(f)
                            if m["base_id"] == base_id]

            def list_traces(self, fields=None):
                self._check()
                return [{"base_id": "t%d" % i,
                         "timestamp": "2024-05-01T12:00:0%d.000000" % i}
                        for i in range(5)]

            def list_error_traces(self):
                return [{"base_id": "t3",
                         "timestamp": "2024-05-01T12:00:03.000000"}]
        '''))
    return {"PYTHONPATH": str(plugin),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_version():
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "stacktrail 0.1.0"


def test_show_file_as_text(trace_file):
    done = run("trace", "show", trace_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Trace %s" % tg.BASE)
    assert "* db-query" in done.stdout and "* rpc-call" in done.stdout
    assert "Bottleneck" in done.stdout


def test_show_big_report_is_written_whole(tmp_path):
    """The console command ends without freeing its report: all of the
    output still arrives, through a pipe and into --out."""
    specs = [("wsgi", "r", tg.BASE, 0, 5000)] + [
        ("db", "s%d" % i, "r", i, i + 0.5) for i in range(3000)]
    path = write_jsonl(tmp_path / "big.jsonl", tg.spans(*specs))
    done = run("trace", "show", path)
    assert done.returncode == 0, done.stderr
    assert sum(" db" in line for line in done.stdout.splitlines()) >= 3000
    assert "Most self time" in done.stdout
    out = tmp_path / "report.json"
    done = run("trace", "show", path, "--json", "--out", out)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(out.read_text())["children"][0]["children"]) \
        == 3000


def test_show_under_a_profiler_ends_normally(trace_file, tmp_path):
    """The quick exit is skipped when a profiler runs: it writes its
    results at exit, and they must not be lost."""
    profile = tmp_path / "show.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m",
         "stacktrail.cmd.cli", "trace", "show", str(trace_file)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "* rpc-call" in done.stdout
    assert profile.stat().st_size > 0


def test_show_called_as_a_library_leaves_the_collector_on(trace_file,
                                                          capsys):
    """Only the console command, which ends once its report is written,
    leaves the cyclic collector off; a caller of ``main`` keeps it."""
    import gc
    assert gc.isenabled()
    assert cli.main(["trace", "show", str(trace_file)]) == 0
    assert "* rpc-call" in capsys.readouterr().out
    assert gc.isenabled()


@pytest.mark.parametrize("fmt,check", [
    ("--json", lambda out: json.loads(out)["children"][0]["children"][0][
        "info"]["name"] == "db-query"),
    ("--html", lambda out: out.startswith("<!DOCTYPE html>")),
    ("--dot", lambda out: out.startswith("digraph trace {")),
    ("--text", lambda out: "* wsgi" in out),
])
def test_show_formats_to_out_file(trace_file, tmp_path, fmt, check):
    out = tmp_path / "out"
    done = run("trace", "show", trace_file, fmt, "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert check(out.read_text())


def test_show_json_list_and_saved_report(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(trace_messages()))
    done = run("trace", "show", listed, "--json")
    saved = tmp_path / "report.json"
    saved.write_text(done.stdout)
    again = run("trace", "show", saved)
    assert again.returncode == 0 and "* rpc-call" in again.stdout
    # A report saved by osprofiler (milliseconds, no analysis) works too.
    osprofiler = tmp_path / "osprofiler.json"
    osprofiler.write_text(json.dumps({
        "info": {"name": "total", "started": 0, "finished": 5},
        "children": [{"info": {"name": "wsgi", "started": 0, "finished": 5},
                      "trace_id": "x", "parent_id": "y", "children": []}],
        "stats": {"wsgi": {"count": 1, "duration": 5}}}))
    done = run("trace", "show", osprofiler)
    assert done.returncode == 0 and "* wsgi" in done.stdout


def test_show_from_store_by_option_env_and_config(store, tmp_path):
    assert "* rpc-call" in run("trace", "show", OTHER_BASE,
                               "--connection-string", store).stdout
    assert run("trace", "show", OTHER_BASE,
               env={cli.ENV_CONNECTION: store}).returncode == 0
    config = tmp_path / "stacktrail.conf"
    config.write_text("[profiler]\nconnection_string = %s\n" % store)
    done = run("--config-file", config, "trace", "show", OTHER_BASE)
    assert done.returncode == 0, done.stderr
    done = run("trace", "show", OTHER_BASE, "--config-file", config)
    assert done.returncode == 0, done.stderr


def test_connection_string_precedence(store, tmp_path):
    config = tmp_path / "stacktrail.conf"
    config.write_text("[profiler]\nconnection_string = file://%s\n"
                      % (tmp_path / "config.jsonl"))
    env = {cli.ENV_CONNECTION: "file://%s" % (tmp_path / "env.jsonl")}
    # The option wins over the environment, which wins over the file.
    assert run("--config-file", config, "trace", "show", tg.BASE,
               "--connection-string", store, env=env).returncode == 0
    assert "env.jsonl" in assert_error(
        run("--config-file", config, "trace", "show", tg.BASE, env=env))
    assert "config.jsonl" in assert_error(
        run("--config-file", config, "trace", "show", tg.BASE))


def test_file_with_several_traces_says_how_to_pick_one(store):
    path = store[len("file://"):]
    assert_error(run("trace", "show", path), "2 traces", "--connection-string")


@pytest.mark.parametrize("args,fragments", [
    (["trace", "show", "./missing.json"], ["no such file"]),
    (["trace", "show", "abc"], ["no trace store given"]),
    (["trace", "show", "abc", "--connection-string", "nonsense"],
     ["bad connection string"]),
    (["trace", "show", "abc", "--connection-string", "nosuch://x"],
     ["unknown connection string scheme"]),
    (["trace", "show", "abc", "--connection-string",
      "redis://user:hunter2@127.0.0.1:1"], ["127.0.0.1:1"]),
    (["trace", "list", "--connection-string", "file:///nonexistent/x"],
     ["/nonexistent/x"]),
    (["--config-file", "/nonexistent.conf", "trace", "list"],
     ["/nonexistent.conf"]),
])
def test_errors_are_one_line(args, fragments):
    line = assert_error(run(*args), *fragments)
    assert "hunter2" not in line


def test_unknown_trace(store):
    assert_error(run("trace", "show", "no-such-trace",
                     "--connection-string", store), "no-such-trace",
                 "not found")


def test_bad_config_file(tmp_path):
    config = tmp_path / "bad.conf"
    config.write_text("this is not ini\n[[[")
    assert_error(run("--config-file", config, "trace", "list"),
                 "config file")


def test_fake_driver_failures_are_one_line(fake_env, tmp_path):
    data = tmp_path / "messages.json"
    data.write_text(json.dumps(trace_messages()))
    done = run("trace", "show", tg.BASE, "--connection-string",
               "fake://ok%s" % data, env=fake_env)
    assert done.returncode == 0, done.stderr
    assert "* rpc-call" in done.stdout
    # Only the first line: drivers put statements and parameters after it.
    failed = run("trace", "show", tg.BASE, "--connection-string",
                 "fake://boom/x", env=fake_env)
    assert_error(failed, "store exploded")
    assert "second line" not in failed.stderr
    assert_error(run("trace", "show", tg.BASE, "--connection-string",
                     "fake://refuse/x", env=fake_env),
                 "fake store refused us")
    assert_error(run("trace", "list", "--connection-string", "fake://boom/x",
                     env=fake_env), "store exploded")


def test_list_limit_and_errors(fake_env, tmp_path):
    # A third-party driver with only osprofiler's read side (list_traces,
    # get_messages) is listed through it.
    messages = []
    for i in range(5):
        for m in trace_messages("t%d" % i):
            m["timestamp"] = m["timestamp"].replace(":00.", ":0%d." % i)
            if i == 3:
                m["info"]["etype"] = "KeyError"
            messages.append(m)
    data = tmp_path / "messages.json"
    data.write_text(json.dumps(messages))
    done = run("trace", "list", "--limit", "2", "--connection-string",
               "fake://ok%s" % data, env=fake_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[-1] for line in lines[1:]] == ["t4", "t3"]
    done = run("trace", "list", "--error-trace", "--json",
               "--connection-string", "fake://ok%s" % data, env=fake_env)
    assert [t["base_id"] for t in json.loads(done.stdout)] == ["t3"]


def test_list_file_store(store):
    done = run("trace", "list", "--connection-string", store)
    assert done.returncode == 0, done.stderr
    assert tg.BASE in done.stdout and OTHER_BASE in done.stdout


def test_usage_errors_exit_2():
    for args in (["trace"], ["trace", "list", "--limit", "0"],
                 ["trace", "show", "x", "--json", "--dot"], ["bogus"]):
        done = run(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr


def test_agent_status_help_comes_from_the_agent():
    done = run("agent", "status", "--help")
    assert done.returncode == 0, done.stderr
    assert "--config-file" in done.stdout


def test_agent_status_delegates(monkeypatch, capsys):
    import types
    calls = []
    fake = types.ModuleType("stacktrail.agent.status")
    fake.add_arguments = lambda p: p.add_argument("--config-file",
                                                  action="append")
    fake.run = lambda args: calls.append(args) or 3
    monkeypatch.setitem(sys.modules, "stacktrail.agent.status", fake)
    # The global --config-file reaches the agent unless it is given its own.
    assert cli.main(["--config-file", "g.conf", "agent", "status"]) == 3
    assert cli.main(["agent", "status", "--config-file", "a.conf"]) == 3
    assert [c.config_file for c in calls] == [["g.conf"], ["a.conf"]]
    # Without the module: one line, exit 1.
    monkeypatch.setitem(sys.modules, "stacktrail.agent.status", None)
    assert cli.main(["agent", "status"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("stacktrail: error: agent status is not available")
    assert "\n" not in err


# --- trace headers: a request traced by hand -------------------------------

def _served_trace_id(headers, key):
    """The trace a WSGI service with ``key`` starts from ``headers``."""
    from stacktrail import profiler
    from stacktrail import web
    seen = []

    def app(environ, start_response):
        prof = profiler.get()
        seen.append(prof.get_base_id() if prof else None)
        start_response("200 OK", [])
        return [b""]
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    body = web.WsgiMiddleware(app, hmac_keys=key, enabled=True)(
        environ, lambda *a: None)
    list(body)
    if hasattr(body, "close"):   # as a WSGI server does
        body.close()
    return seen[0]


def test_trace_headers_start_a_trace_a_service_accepts(tmp_path):
    key = "a3f1" + os.urandom(14).hex()
    done = run("trace", "headers", "--hmac-key", key)
    assert done.returncode == 0, done.stderr
    # one "Name: value" a line (curl -H @FILE), the id on stderr only
    headers = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert set(headers) == {"X-Trace-Info", "X-Trace-HMAC", "traceparent"}
    trace_id = done.stderr.split()[2]
    assert _served_trace_id(headers, key) == trace_id
    # a service with another key does not trace it
    assert _served_trace_id(headers, "b4e2" + os.urandom(14).hex()) is None
    # the key from a service's config file (its first hmac_keys), as JSON
    conf = tmp_path / "service.conf"
    conf.write_text("[profiler]\nhmac_keys = %s,%s\n"
                    % (key, "c5d3" + os.urandom(14).hex()))
    done = run("--config-file", conf, "trace", "headers", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert _served_trace_id(found["headers"], key) == found["id"]


def test_trace_headers_without_a_key_is_one_clear_error():
    done = run("trace", "headers", env={"OS_PROFILE": ""})
    assert_error(done, "no HMAC key", "--hmac-key")
