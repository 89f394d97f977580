"""The README's first command: the demo shows one trace across two services."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_shows_one_trace_through_both_services(tmp_path):
    env = dict(os.environ, STACKTRAIL_DEMO_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools",
                                                       "demo.py")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "services: api-a, api-b, client" in text
    # client -> wsgi (api-a) -> 2 x http -> wsgi (api-b) -> db, + compute
    assert text.count("wsgi") >= 3 and text.count("db ") >= 2
    assert "api-b@demo-host" in text and "Critical path" in text
    assert (tmp_path / "traces.db").exists()
