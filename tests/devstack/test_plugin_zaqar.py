"""What the devstack plugin writes, used for real: a zaqar-server started as
devstack starts it (``--config-file zaqar.conf``, nothing else) finds the
plugin's ``zaqar.conf.d/stacktrail.conf``, sends its points to the agent the
plugin's systemd unit would run, and the agent writes them to the store.
"""

import contextlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.devstack import stack as st
from tests.services import tracing
from tests.services import zaqar


def _accepts(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


@contextlib.contextmanager
def agent_from_unit(unit_path, socket_path, log_path):
    """Run the ExecStart of the plugin's devstack@stacktrail-agent unit."""
    command = shlex.split(st.read_ini(unit_path)["Service"]["ExecStart"])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not _accepts(socket_path):
            assert proc.poll() is None, Path(log_path).read_text()
            assert time.monotonic() < deadline, "the agent did not listen"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_zaqar_server_traced_as_the_plugin_configured_it(
        tmp_path, redis_url, zaqar_env, stacktrail_overlay):
    # devstack's order: stacktrail's post-config before zaqar.conf exists.
    plugins = ("stacktrail", "zaqar")
    home = tmp_path / "home"
    template = zaqar.write_config(tmp_path / "template", redis_url)
    zaqar.create_schema("sqlite:///%s" % (tmp_path / "template" /
                                          "zaqar.sqlite"), env=zaqar_env)
    store = tmp_path / "traces.jsonl"
    # Unix socket paths (the agent's, its status socket in the spool
    # directory) must stay under 108 bytes.
    short = Path(tempfile.mkdtemp(prefix="st-dev-"))
    socket_path = short / "agent.sock"
    stack = st.Stack(tmp_path / "stack", plugins=plugins,
                     STACKTRAIL_STORE="file",
                     STACKTRAIL_CONNECTION_STRING="file://%s" % store,
                     STACKTRAIL_AGENT_SOCKET=socket_path,
                     STACKTRAIL_DATA_DIR=short / "data",
                     STACKTRAIL_AGENT_METRICS="",
                     ZAQAR_CONF_DIR=home / ".zaqar")
    stack.env["FAKE_BIN_DIR"] = str(Path(sys.executable).parent)
    stack.run(("stack", "install"), ("stack", "post-config"),
              FAKE_ZAQAR_TEMPLATE=template)
    zaqar_conf = home / ".zaqar" / "zaqar.conf"
    assert (home / ".zaqar" / "zaqar.conf.d" / "stacktrail.conf").exists()
    assert "profiler" not in st.read_ini(zaqar_conf)

    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        with agent_from_unit(stack.path("unit"), socket_path,
                             tmp_path / "agent.log"), \
                zaqar.ZaqarServer([zaqar_conf], env=zaqar_env,
                                  overlay=stacktrail_overlay, workdir=workdir,
                                  extra_environ={"HOME": str(home)}) as server:
            client = server.client()
            assert client.create_queue("q1").status_code == 201
            base_id, headers = tracing.signed_headers(stack.key())
            posted = client.post_messages("q1", [{"body": {"n": 1}}],
                                          headers=headers)
            assert posted.status_code == 201, posted.text
            found = tracing.wait_for_messages("file://%s" % store, base_id)
    finally:
        shutil.rmtree(short, ignore_errors=True)

    names = tracing.span_names(found)
    assert names.get("wsgi") == 1, (names, server.log_text(whole=True)[-3000:])
    assert names.get("redis_message_controller") and names.get("redis")
    assert tracing.unclosed(found) == []
    assert stack.key() not in str(found)
