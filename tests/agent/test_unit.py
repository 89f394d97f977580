"""``stacktrail agent install-unit``: a systemd unit that starts this
install's agent, that systemd accepts, that does not restart a refused
configuration and that lets the agent write its stores."""

import grp
import os
import shlex
import shutil
import subprocess

import pytest

from tests.agent import harness

STACKTRAIL = os.path.join(os.path.dirname(harness.AGENT), "stacktrail")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
GROUP = grp.getgrgid(os.getgid()).gr_name   # one that exists here


def _install_unit(*args):
    return subprocess.run([STACKTRAIL, "agent", "install-unit"] + list(args),
                          capture_output=True, text=True, timeout=60)


def _service(text):
    """The [Service] section: key -> list of values."""
    values = {}
    section = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    for line in section.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


@pytest.fixture
def installed(workdir):
    """A unit for an agent writing to a file and a SQLite store."""
    stores = os.path.join(workdir, "stores")
    os.mkdir(stores)
    conf = os.path.join(workdir, "agent.conf")
    with open(conf, "w") as f:
        f.write("[agent]\nlisten = unix:///run/stacktrail/agent.sock\n"
                "connection_string = file://%s/traces.jsonl\n"
                "connection_string = sqlite:///%s/db/traces.db\n"
                "connection_string = redis://:pw@127.0.0.1:6379/0\n"
                "spool_dir = %s/spool\n" % (stores, stores, workdir))
    unit = os.path.join(workdir, "stacktrail-agent.service")
    done = _install_unit("--config-file", conf, "--output", unit,
                         "--group", GROUP)
    assert done.returncode == 0, done.stderr
    with open(unit) as f:
        return conf, unit, f.read(), stores


def test_unit_runs_the_installed_script_and_keeps_config_errors_down(
        installed, workdir):
    conf, _, text, _ = installed
    service = _service(text)
    command = shlex.split(service["ExecStart"][0])
    assert command[0] == os.path.realpath(harness.AGENT)
    assert command[1:] == ["--config-file", conf,
                           "--agent-socket_group", GROUP]
    assert service["Group"] == [GROUP]
    assert service["RestartPreventExitStatus"] == ["2"]
    assert service["Restart"] == ["on-failure"]
    # What systemd would start exits 2 on a refused configuration, which
    # the unit does not restart.
    with open(conf, "a") as f:
        f.write("metrics_listen = 0.0.0.0:9467\n")
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and "loopback" in done.stderr


def test_unit_lets_the_agent_write_its_stores(installed, workdir):
    _, _, text, stores = installed
    service = _service(text)
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == [
        os.path.join(workdir, "spool"), stores,
        os.path.join(stores, "db")]
    # The stores are in /tmp: the host's, not a private one.
    assert service["PrivateTmp"] == ["no"]
    # /run/stacktrail is created by systemd for the socket
    assert service["RuntimeDirectory"] == ["stacktrail"]
    assert "StateDirectory" not in service


def test_missing_store_directory_is_named(installed):
    conf, unit, _, stores = installed
    os.rename(stores, stores + ".away")
    done = _install_unit("--config-file", conf, "--output", unit)
    assert done.returncode == 0
    assert "create %s" % stores in done.stderr


@pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                    reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(installed, workdir):
    _, unit, _, _ = installed
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", unit],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # the check is real: a unit naming a script that is not there fails
    with open(unit) as f:
        text = f.read()
    broken = os.path.join(workdir, "broken", "stacktrail-agent.service")
    os.mkdir(os.path.dirname(broken))
    with open(broken, "w") as f:
        f.write(text.replace(os.path.realpath(harness.AGENT),
                             "/usr/bin/stacktrail-agent-missing"))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", broken],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_without_a_config_file_one_line(workdir):
    done = _install_unit("--config-file", os.path.join(workdir, "no.conf"),
                         "--output", os.path.join(workdir, "u.service"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no config file" in done.stderr
    assert not os.path.exists(os.path.join(workdir, "u.service"))
