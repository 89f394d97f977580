"""The committed sample files are what the options generate: a changed
option without a regenerated sample fails here."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _genconfig():
    spec = importlib.util.spec_from_file_location(
        "genconfig", os.path.join(ROOT, "tools", "genconfig.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_samples_are_regenerated():
    outputs = _genconfig().outputs()
    assert sorted(outputs) == [
        "etc/stacktrail/stacktrail-agent.conf.sample",
        "etc/stacktrail/stacktrail.conf.sample",
        "stacktrail/agent/stacktrail-agent.service"]
    for path, text in outputs.items():
        with open(os.path.join(ROOT, path)) as f:
            assert f.read() == text, (
                "%s is stale: run .venv/bin/python tools/genconfig.py" % path)


def test_samples_hold_every_option():
    from stacktrail.agent import opts
    with open(os.path.join(ROOT, "etc/stacktrail/"
                           "stacktrail-agent.conf.sample")) as f:
        agent = f.read()
    assert "[agent]" in agent
    for opt in opts.AGENT_OPTS:
        assert "\n#%s =" % opt.name in agent
    with open(os.path.join(ROOT, "etc/stacktrail/"
                           "stacktrail.conf.sample")) as f:
        service = f.read()
    assert "[profiler]" in service and "\n#connection_string =" in service
