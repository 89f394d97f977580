"""The gate job: ``.zuul.yaml`` and its post-run playbook.

The job's structure is checked against what it runs (the devstack plugin's
settings, the tempest plugin's test ids); the playbook passes
``ansible-playbook --syntax-check`` (ansible-core from PyPI, in a cached
environment) and is run for real on this machine against a store holding
a few traces, as the job runs it on the devstack node; the script it runs
is checked on its own.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.services import envs

ROOT = Path(__file__).resolve().parents[2]
ZUUL = ROOT / ".zuul.yaml"
PLAYBOOK = ROOT / "playbooks" / "stacktrail-traces.yaml"
SAVE = ROOT / "playbooks" / "files" / "save_traces.py"
CLI = Path(sys.executable).parent / "stacktrail"
ANSIBLE_REQUIREMENTS = ["ansible-core==2.19.14"]
JOB = "stacktrail-tempest-devstack"


@pytest.fixture(scope="module")
def ansible_env():
    try:
        return envs.ensure("ansible", ANSIBLE_REQUIREMENTS)
    except envs.EnvUnavailable as exc:
        pytest.skip("ansible-core unavailable: %s" % exc)


def zuul_config():
    return yaml.safe_load(ZUUL.read_text())


def the_job():
    jobs = [item["job"] for item in zuul_config() if "job" in item]
    job, = [j for j in jobs if j["name"] == JOB]
    return job


def plugin_test_ids():
    """Every test id of the tempest plugin (read from its source: tempest
    is not installed in the suite's environment)."""
    ids = []
    tests = ROOT / "stacktrail_tempest_plugin" / "tests"
    for path in sorted(tests.glob("test_*.py")):
        module = "stacktrail_tempest_plugin.tests.%s" % path.stem
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                ids += ["%s.%s.%s" % (module, node.name, f.name)
                        for f in node.body
                        if isinstance(f, ast.FunctionDef) and
                        f.name.startswith("test_")]
    return ids


def test_the_job_runs_both_plugins_and_votes_in_check():
    job = the_job()
    assert job["parent"] == "devstack-tempest"
    assert (ROOT / job["post-run"]).resolve() == PLAYBOOK
    variables = job["vars"]
    assert "stacktrail" in variables["devstack_plugins"]
    assert "zaqar" in variables["devstack_plugins"]
    assert variables["tempest_plugins"] == ["stacktrail"]
    for service in ("zaqar-wsgi", "zaqar-websocket"):
        assert variables["devstack_services"][service] is True
    # Every plugin setting it sets is one the plugin reads.
    settings = (ROOT / "devstack" / "settings").read_text()
    for name in variables["devstack_localrc"]:
        if name.startswith("STACKTRAIL_"):
            assert re.search(r"(?<![\w${])%s=" % name, settings), name
    # It selects every test of the tempest plugin and nothing of tempest's.
    regex = re.compile(variables["tempest_test_regex"])
    ids = plugin_test_ids()
    assert len(ids) >= 6
    assert all(regex.match(i) for i in ids)
    assert not regex.match("tempest.api.compute.servers.test_servers")

    project, = [item["project"] for item in zuul_config()
                if "project" in item]
    for pipeline in ("check", "gate"):
        assert JOB in project[pipeline]["jobs"]
    assert job.get("voting", True) is True


def test_the_playbook_passes_ansibles_syntax_check(ansible_env, tmp_path):
    inventory = tmp_path / "inventory"
    inventory.write_text("controller ansible_connection=local\n")
    res = subprocess.run(
        [ansible_env.bin("ansible-playbook"), "--syntax-check", "-i",
         str(inventory), str(PLAYBOOK)],
        capture_output=True, text=True, timeout=120,
        env=ansible_env.environ(HOME=str(tmp_path),
                                ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp")))
    assert res.returncode == 0, res.stdout + res.stderr


# --- traces to save --------------------------------------------------------

def _points(base_id, span, parent, name, start, stop, start_info=None,
            stop_info=None, service="osapi_volume"):
    common = {"base_id": base_id, "trace_id": span, "parent_id": parent,
              "project": "cinder", "service": service, "host": "node1"}
    found = [dict(common, name=name + "-start",
                  timestamp="2026-11-29T10:00:%09.6f" % start,
                  info=start_info or {})]
    if stop is not None:
        found.append(dict(common, name=name + "-stop",
                          timestamp="2026-11-29T10:00:%09.6f" % stop,
                          info=stop_info or {}))
    return found


OK = "11111111-1111-4111-8111-111111111111"
FAILED = "22222222-2222-4222-8222-222222222222"
UNFINISHED = "33333333-3333-4333-8333-333333333333"


def write_store(path):
    points = []
    points += _points(OK, "a1", OK, "wsgi", 1.0, 1.25, {
        "request": {"method": "POST", "path": "/v3/volumes<script>"}},
        {"response": {"status": 202}})
    points += _points(OK, "a2", "a1", "db", 1.05, 1.10,
                      {"db": {"statement": "SELECT 1 FROM volumes"}})
    points += _points(FAILED, "b1", FAILED, "rpc", 2.0, 2.5, {},
                      {"etype": "VolumeBackendAPIException",
                       "message": "no space"}, service="cinder-volume")
    points += _points(UNFINISHED, "c1", UNFINISHED, "driver", 3.0, None,
                      service="cinder-volume")
    path.write_text("".join(json.dumps(p) + "\n" for p in points))


def check_saved(out):
    index = json.loads((out / "index.json").read_text())
    by_id = {row["base_id"]: row for row in index}
    assert set(by_id) == {OK, FAILED, UNFINISHED}
    assert [row["base_id"] for row in index] == [OK, FAILED, UNFINISHED]
    ok, failed, unfinished = by_id[OK], by_id[FAILED], by_id[UNFINISHED]
    assert ok["duration_ms"] == pytest.approx(250.0)
    assert (ok["spans"], ok["errors"], ok["error_trace"]) == (2, 0, False)
    assert (failed["errors"], failed["error_trace"]) == (1, True)
    assert failed["duration_ms"] == pytest.approx(500.0)
    assert unfinished["open"] == 1
    for base_id in by_id:
        report = json.loads((out / ("%s.json" % base_id)).read_text())
        assert report["info"]["base_id"] == base_id
        page = (out / ("%s.html" % base_id)).read_text()
        assert page.lstrip().lower().startswith("<!doctype html")
    page = (out / "index.html").read_text()
    for base_id in by_id:
        assert 'href="%s.html"' % base_id in page
        assert 'href="%s.json"' % base_id in page
    assert "250.0" in page and "500.0" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'class="error"' in page
    assert "3 traces, 1 with errors" in page


def test_save_traces_writes_every_report_and_an_index(tmp_path):
    store = tmp_path / "traces.jsonl"
    write_store(store)
    conf = tmp_path / "stacktrail.conf"
    conf.write_text("[profiler]\nconnection_string = file://%s\n" % store)
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, str(SAVE), "--out", str(out), "--config-file",
         str(conf), "--cli", "/nonexistent/stacktrail", "--cli", str(CLI)],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 traces saved" in res.stdout
    check_saved(out)


def test_save_traces_fails_when_the_store_cannot_be_listed(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SAVE), "--out", str(tmp_path / "out"),
         "--connection-string", "redis://127.0.0.1:1/0", "--cli", str(CLI)],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.startswith("save_traces: ")


def test_the_playbook_saves_the_traces_of_the_run(ansible_env, tmp_path):
    """The post-run playbook, run on this machine as on the devstack node
    (local connection; no privilege escalation needed here)."""
    store = tmp_path / "traces.jsonl"
    write_store(store)
    conf = tmp_path / "stacktrail.conf"
    conf.write_text("[profiler]\nconnection_string = file://%s\n" % store)
    home = tmp_path / "home"
    inventory = tmp_path / "inventory"
    inventory.write_text(
        "controller ansible_connection=local ansible_python_interpreter=%s\n"
        % ansible_env.python)
    extra = {"stacktrail_conf": str(conf),
             "stacktrail_cli_candidates": [str(CLI)],
             "ansible_user_dir": str(home),
             "ansible_become": False}
    res = subprocess.run(
        [ansible_env.bin("ansible-playbook"), "-i", str(inventory),
         "-e", json.dumps(extra), str(PLAYBOOK)],
        capture_output=True, text=True, timeout=300,
        env=ansible_env.environ(HOME=str(tmp_path),
                                ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
                                ANSIBLE_REMOTE_TEMP=str(tmp_path / "rtmp"),
                                ANSIBLE_NOCOLOR="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 traces saved" in res.stdout, res.stdout
    check_saved(home / "zuul-output" / "logs" / "stacktrail-traces")
