"""The devstack plugin, stage by stage, without a cloud.

Each test lays out what devstack has on disk when the plugin's stages run
(``stack.Stack``), runs the stages in bash with devstack's functions
(``fake_devstack.sh``: iniset/iniget edit the files for real, the commands
that would install or start something are recorded) and checks the
resulting configuration files and commands.  The files are read back as
oslo.config reads them where it matters (the agent's configuration, Zaqar's
config directory).
"""

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.devstack import stack as st

NOVA_CONFS = ("nova", "nova_cell1")
OSPROFILER_CONFS = ("keystone", "glance", "neutron", "placement")


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """A default devstack (zaqar's plugin too) after the three stack
    stages, in one process as stack.sh runs them (read, never changed)."""
    stack = st.Stack(tmp_path_factory.mktemp("stacked"))
    stack.stack()
    return stack


def agent_socket(stack):
    return stack.data / "stacktrail" / "agent.sock"


# --- install ---------------------------------------------------------------

def test_without_the_fast_extra_only_the_stores_is_installed(tmp_path):
    for store, installed in (("redis", (str(st.ROOT), "redis")),
                             ("file", (str(st.ROOT),))):
        stack = st.Stack(tmp_path / store, STACKTRAIL_STORE=store,
                         STACKTRAIL_FAST="False")
        stack.stack()
        assert stack.calls("setup_develop") == [installed]


def test_install_stacktrail_the_store_and_the_agent(stacked):
    assert stacked.calls("setup_develop") == [(str(st.ROOT), "redis,fast")]
    assert stacked.calls("install_package") == [("redis-server",)]
    assert stacked.calls("start_service") == [("redis-server",)]

    agent = "%s/stacktrail-agent --config-file %s" % (
        stacked.bin, stacked.path("agent"))
    assert stacked.calls("run_process") == [("stacktrail-agent", agent)]
    unit = stacked.ini("unit")["Service"]
    assert unit["ExecStart"] == agent and unit["User"] == st._user()
    assert ("enable", "devstack@stacktrail-agent.service") in \
        stacked.calls("systemctl")

    from stacktrail.agent import opts
    conf = opts.make_conf(["--config-file", str(stacked.path("agent"))])
    assert conf.agent.listen == "unix://%s" % agent_socket(stacked)
    assert conf.agent.connection_string == ["redis://127.0.0.1:6379/0"]
    assert conf.agent.spool_dir == str(stacked.data / "stacktrail" / "spool")


def test_a_random_key_is_written_where_tempest_and_the_cli_read_it(
        stacked, tmp_path):
    key = stacked.key()
    assert re.fullmatch("[0-9a-f]{64}", key)
    assert stacked.path("stacktrail").stat().st_mode & 0o077 == 0o040
    assert stacked.ini("stacktrail")["profiler"]["connection_string"] == \
        "redis://127.0.0.1:6379/0"
    tempest = stacked.ini("tempest")
    assert tempest["stacktrail_tracing"]["hmac_key"] == key
    assert tempest["profiler"]["key"] == key
    for name in NOVA_CONFS + ("cinder", "zaqar.d") + OSPROFILER_CONFS:
        assert stacked.ini(name)["profiler"]["hmac_keys"] == key, name
    # The key stays out of the commands run and of the agent's file.
    assert key not in stacked.calls_log.read_text()
    assert key not in stacked.path("agent").read_text()

    other = st.Stack(tmp_path / "other")
    other.stack()
    assert other.key() != key


def test_the_key_survives_stages_run_apart_and_a_restack(tmp_path):
    stack = st.Stack(tmp_path)
    stack.run(("stack", "install"))
    key = stack.key()
    stack.run(("stack", "post-config"))
    stack.run(("stack", "test-config"))
    assert stack.ini("cinder")["profiler"]["hmac_keys"] == key
    assert stack.ini("tempest")["stacktrail_tracing"]["hmac_key"] == key
    stack.stack()
    assert stack.key() == key


# Random keys the services accept (see common/signing.weakness).
STRONG = "Qm9vW2xL9mZ4tW7yK3nB6cF1"
STRONG2 = "Zt5pX8cV2bN7mQ4wE1rT9yU3"
STRONG3 = "Hd3kR8wQ1zL6vN9pT2mB5xC7"


@pytest.mark.parametrize("keys, expected", [
    ("SECRET_KEY", None),
    ("secret_key," + STRONG, STRONG),
    ("Secret,SECRET_HMAC_KEY", None),
    # Weak although not a known default: the services would refuse it.
    ("swordfish", None),
])
def test_weak_keys_are_never_used(tmp_path, keys, expected):
    stack = st.Stack(tmp_path, STACKTRAIL_HMAC_KEYS=keys)
    stack.stack()
    key = stack.key()
    if expected:
        assert key == expected
    else:
        assert re.fullmatch("[0-9a-f]{64}", key)
    assert "ignoring the weak HMAC key" in stack.output
    refused = {"secret_key", "secret", "secret_hmac_key", "swordfish"}
    for name in ("nova", "cinder", "zaqar.d", "keystone"):
        used = stack.ini(name)["profiler"]["hmac_keys"].split(",")
        assert not refused & {k.lower() for k in used}, name
    assert stack.ini("tempest")["stacktrail_tracing"]["hmac_key"].lower() \
        not in refused


def test_osprofiler_settings_are_aliases(tmp_path):
    stack = st.Stack(tmp_path, OSPROFILER_HMAC_KEYS=STRONG + "," + STRONG2,
                     OSPROFILER_COLLECTOR="mongodb",
                     OSPROFILER_CONNECTION_STRING="mongodb://db.example:27017",
                     OSPROFILER_TRACE_SQLALCHEMY="False")
    stack.stack()
    assert stack.key() == STRONG + "," + STRONG2
    assert stack.calls("setup_develop") == [(str(st.ROOT), "mongodb,fast")]
    nova = stack.ini("nova")["profiler"]
    assert nova["hmac_keys"] == STRONG + "," + STRONG2
    assert nova["trace_sqlalchemy"] == "False"
    assert stack.ini("keystone")["profiler"]["connection_string"] == \
        "mongodb://db.example:27017"
    tempest = stack.ini("tempest")
    assert tempest["stacktrail_tracing"]["hmac_key"] == STRONG
    assert tempest["stacktrail_tracing"]["connection_string"] == \
        "mongodb://db.example:27017"

    # stacktrail's own names win over osprofiler's.
    both = st.Stack(tmp_path / "both", OSPROFILER_HMAC_KEYS=STRONG,
                    STACKTRAIL_HMAC_KEYS=STRONG3,
                    OSPROFILER_COLLECTOR="mongodb", STACKTRAIL_STORE="file",
                    OSPROFILER_TRACE_SQLALCHEMY="False",
                    STACKTRAIL_TRACE_SQLALCHEMY="True")
    both.stack()
    assert both.key() == STRONG3
    assert both.calls("setup_develop") == [(str(st.ROOT), "fast")]
    assert both.ini("cinder")["profiler"]["trace_sqlalchemy"] == "True"


@pytest.mark.parametrize("store, extra, connection, osprofiler", [
    ("redis", "redis", "redis://127.0.0.1:6379/0", True),
    ("sql", "sql", "mysql+pymysql://root:dbpass@127.0.0.1/stacktrail"
                   "?charset=utf8", False),
    ("mongodb", "mongodb", "mongodb://127.0.0.1:27017", True),
    ("file", None, "file://{data}/stacktrail/traces.jsonl", False),
    ("otlp", "otlp", "otlp://127.0.0.1:4318", False),
])
def test_each_store(tmp_path, store, extra, connection, osprofiler):
    stack = st.Stack(tmp_path, STACKTRAIL_STORE=store)
    stack.stack()
    connection = connection.format(data=stack.data)
    assert stack.calls("setup_develop") == [
        (str(st.ROOT), extra + ",fast" if extra else "fast")]
    assert bool(stack.calls("install_package")) == (store == "redis")
    assert stack.calls("recreate_database") == (
        [("stacktrail",)] if store == "sql" else [])

    from stacktrail.agent import opts
    agent = opts.make_conf(["--config-file", str(stack.path("agent"))]).agent
    readable = connection
    if store == "otlp":
        # Write-only: the agent also writes a file the gate can read.
        readable = "file://%s/stacktrail/traces.jsonl" % stack.data
        assert agent.connection_string == [connection, readable]
    else:
        assert agent.connection_string == [connection]
    assert stack.ini("stacktrail")["profiler"]["connection_string"] == \
        readable
    assert stack.ini("tempest")["stacktrail_tracing"]["connection_string"] \
        == readable
    extra_pip = "[%s]" % extra if extra else ""
    assert stack.calls("tempest-pip")[0][-1] == "%s%s" % (st.ROOT, extra_pip)

    # Services traced by osprofiler write to the store directly, where
    # osprofiler writes what stacktrail reads.
    for name in OSPROFILER_CONFS:
        profiler = stack.ini(name)["profiler"] \
            if stack.ini(name).has_section("profiler") else None
        if osprofiler:
            assert profiler["connection_string"] == connection
        else:
            assert profiler is None, name
    assert (stack.calls("reload_service") == [("devstack@keystone",)]) == \
        osprofiler


def test_without_the_agent_services_write_to_the_store(tmp_path):
    stack = st.Stack(tmp_path, STACKTRAIL_USE_AGENT="False")
    stack.stack()
    assert stack.calls("run_process") == []
    assert not stack.path("agent").exists()
    for name in NOVA_CONFS + ("cinder", "zaqar.d"):
        assert stack.ini(name)["profiler"]["connection_string"] == \
            "redis://127.0.0.1:6379/0"


# --- post-config -------------------------------------------------------------

def test_services_with_an_adapter_take_stacktrails_config_source(stacked):
    socket = "agent://%s" % agent_socket(stacked)
    for name, adapter in (("nova", "nova"), ("nova_cell1", "nova"),
                          ("cinder", "cinder")):
        conf = stacked.ini(name)
        assert conf["DEFAULT"]["config_source"] == "stacktrail", name
        assert conf["DEFAULT"]["debug"] == "True"     # the rest is kept
        assert dict(conf["stacktrail"]) == {"driver": "stacktrail",
                                            "adapter": adapter}
        profiler = conf["profiler"]
        assert profiler["enabled"] == "True"
        assert profiler["connection_string"] == socket
        assert profiler["trace_sqlalchemy"] == "True"
        assert profiler["sampling_rate"] == "0.0"
        assert profiler["trust_traceparent"] == "False"
    # The shipped fragment's switches are there (etc/cinder/stacktrail.conf).
    cinder = stacked.ini("cinder")["profiler"]
    fragment = st.read_ini(st.ROOT / "etc" / "cinder" / "stacktrail.conf")
    for option, value in fragment["profiler"].items():
        if option not in ("enabled", "trace_sqlalchemy"):
            assert cinder[option] == value, option
    # nova-cpu.conf is copied from nova.conf when nova-compute starts.
    assert not stacked.path("nova-cpu").exists()


def test_services_without_an_adapter_get_osprofilers_section(stacked):
    key = stacked.key()
    for name in OSPROFILER_CONFS:
        conf = stacked.ini(name)
        assert dict(conf["profiler"]) == {
            "enabled": "True", "hmac_keys": key,
            "connection_string": "redis://127.0.0.1:6379/0",
            "trace_sqlalchemy": "True"}, name
        assert not conf.has_option("DEFAULT", "config_source")
        assert not conf.has_section("stacktrail")
        assert "Traced by osprofiler's own code paths" in \
            stacked.path(name).read_text()
    # Keystone was running already: reloaded to read it.
    assert stacked.calls("reload_service") == [("devstack@keystone",)]
    # heat is not enabled: untouched.
    assert stacked.path("heat").read_text() == st.CONF_TEXT


def test_a_project_whose_adapter_is_not_installed_stays_on_osprofiler(
        tmp_path):
    stack = st.Stack(tmp_path, adapters="cinder zaqar")
    stack.stack()
    for name in NOVA_CONFS:
        conf = stack.ini(name)
        assert not conf.has_option("DEFAULT", "config_source")
        assert conf["profiler"]["connection_string"] == \
            "redis://127.0.0.1:6379/0"
    assert stack.ini("tempest")["stacktrail_tracing"]["services"] == \
        "zaqar,cinder"


def test_adapters_are_found_in_the_installed_stacktrail(tmp_path):
    installed = {e.name for e in
                 metadata.entry_points(group="stacktrail.adapters")}
    assert {"zaqar", "cinder"} <= installed
    stack = st.Stack(tmp_path, adapters=None)
    stack.stack()
    for name, project in (("nova", "nova"), ("cinder", "cinder")):
        conf = stack.ini(name)
        assert conf.has_option("DEFAULT", "config_source") == \
            (project in installed), name
    assert stack.ini("zaqar.d")["stacktrail"]["adapter"] == "zaqar"


def test_every_cell_conductor_and_the_compute_conf(tmp_path):
    stack = st.Stack(tmp_path, NOVA_NUM_CELLS=2,
                     extra_confs=("nova/nova_cell2.conf",
                                  "nova/nova-cpu.conf"))
    stack.stack()
    for name in ("nova", "nova_cell1", "nova_cell2", "nova-cpu"):
        conf = stack.ini(name)
        assert conf["DEFAULT"]["config_source"] == "stacktrail", name
        assert conf["stacktrail"]["adapter"] == "nova"
        assert conf["profiler"]["enabled"] == "True"


def test_an_existing_config_source_is_kept(tmp_path):
    stack = st.Stack(tmp_path)
    stack.write_conf("cinder/cinder.conf",
                     "[DEFAULT]\nconfig_source = vault\n\n[vault]\n"
                     "driver = remote_file\n")
    stack.stack()
    stack.stack()           # a second run changes nothing
    assert stack.ini("cinder")["DEFAULT"]["config_source"] == \
        "vault,stacktrail"


@pytest.mark.parametrize("plugins", [("stacktrail", "zaqar"),
                                     ("zaqar", "stacktrail")])
def test_zaqar_is_configured_whatever_the_plugin_order(tmp_path, plugins):
    stack = st.Stack(tmp_path, plugins=plugins)
    stack.run(("stack", "install"), ("stack", "post-config"))
    zaqar, fragment = stack.path("zaqar"), stack.path("zaqar.d")
    assert zaqar.exists() and fragment.exists()
    # zaqar-server --config-file zaqar.conf reads the directory first and
    # zaqar.conf after it; the uwsgi application reads zaqar.conf first.
    for order in ((fragment, zaqar), (zaqar, fragment)):
        conf = st.merged(*order)
        assert conf["DEFAULT"]["config_source"] == "stacktrail"
        assert conf["DEFAULT"]["admin_mode"] == "True"     # zaqar's own
        assert conf["stacktrail"] == {"driver": "stacktrail",
                                      "adapter": "zaqar"}
        assert conf["profiler"]["enabled"] == "True"
        assert conf["profiler"]["hmac_keys"] == stack.key()
        assert conf["profiler"]["trace_message_store"] == "true"
    assert "profiler" not in st.read_ini(zaqar)


def test_zaqar_reads_its_config_directory_with_an_explicit_config_file(
        tmp_path):
    """What makes the zaqar.conf.d fragment work for zaqar-server, which
    devstack starts with --config-file zaqar.conf: oslo.config still reads
    the default config directories."""
    from oslo_config import cfg
    stack = st.Stack(tmp_path)
    stack.run(("stack", "install"), ("stack", "post-config"))
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.BoolOpt("enabled"), group="profiler")
    conf(["--config-file", str(stack.path("zaqar"))], project=None,
         default_config_files=[],
         default_config_dirs=[str(stack.path("zaqar.d").parent)])
    assert conf.profiler.enabled is True
    assert conf.config_source == ["stacktrail"]


def test_a_zaqar_conf_listing_other_sources_gets_stacktrail_too(tmp_path):
    stack = st.Stack(tmp_path, plugins=("zaqar", "stacktrail"))
    template = stack.write_conf("template.conf",
                                "[DEFAULT]\nconfig_source = vault\n")
    stack.run(("stack", "install"), ("stack", "post-config"),
              FAKE_ZAQAR_TEMPLATE=template)
    assert stack.ini("zaqar")["DEFAULT"]["config_source"] == \
        "vault,stacktrail"


def test_services_that_are_not_enabled_are_left_alone(tmp_path):
    stack = st.Stack(tmp_path, services="key,g-api,mysql,rabbit",
                     plugins=("stacktrail",))
    stack.stack()
    for name in ("nova", "nova_cell1", "cinder", "neutron", "placement",
                 "heat"):
        assert stack.path(name).read_text() == st.CONF_TEXT, name
    assert not stack.path("zaqar.d").exists()
    assert stack.ini("glance")["profiler"]["enabled"] == "True"
    # tempest is not enabled either: its stage does nothing.
    assert not stack.ini("tempest").has_section("stacktrail_tracing")
    assert stack.calls("tempest-pip") == []


# --- test-config -----------------------------------------------------------

def test_tempest_gets_the_plugin_and_its_options(stacked):
    (install, flag, constraints, what), = stacked.calls("tempest-pip")
    assert (install, flag, what) == ("install", "-c", "%s[redis]" % st.ROOT)
    assert stacked.calls("set_tempest_venv_constraints") == [()]
    assert not Path(constraints).exists()       # a temporary file
    tracing = stacked.ini("tempest")["stacktrail_tracing"]
    assert dict(tracing) == {
        "hmac_key": stacked.key(),
        "connection_string": "redis://127.0.0.1:6379/0",
        "services": "zaqar,cinder,nova",
        "sampling_rate": "0.0",
        "trust_traceparent": "False",
        "poll_timeout": "60",
    }
    assert stacked.ini("tempest")["auth"]["use_dynamic_credentials"] == "True"


def test_settings_reach_services_and_tempest(tmp_path):
    stack = st.Stack(tmp_path, STACKTRAIL_SAMPLING_RATE="0.25",
                     STACKTRAIL_TRUST_TRACEPARENT="True",
                     STACKTRAIL_TEMPEST_TRACE_ALL="False",
                     STACKTRAIL_TEMPEST_POLL_TIMEOUT="120")
    stack.stack()
    for name in NOVA_CONFS + ("cinder", "zaqar.d"):
        profiler = stack.ini(name)["profiler"]
        assert profiler["sampling_rate"] == "0.25"
        assert profiler["trust_traceparent"] == "True"
    tempest = stack.ini("tempest")
    assert tempest["stacktrail_tracing"]["trust_traceparent"] == "True"
    assert tempest["stacktrail_tracing"]["sampling_rate"] == "0.25"
    assert tempest["stacktrail_tracing"]["poll_timeout"] == "120"
    assert not tempest.has_section("profiler")


# --- unstack and clean -------------------------------------------------------

def test_unstack_stops_the_agent_and_clean_removes_what_stack_wrote(
        tmp_path):
    stacked = st.Stack(tmp_path)
    stacked.stack()
    stacked.run(("unstack",))
    assert stacked.calls("stop_process") == [("stacktrail-agent",)]
    assert ("stop", "devstack@stacktrail-agent.service") in \
        stacked.calls("systemctl")
    assert stacked.path("stacktrail").exists()

    stacked.run(("clean",))
    assert not stacked.path("stacktrail").parent.exists()
    assert not (stacked.data / "stacktrail").exists()
    assert not stacked.path("zaqar.d").exists()
    assert stacked.path("zaqar").exists()       # zaqar's own file stays


def test_a_bad_store_stops_the_stack(tmp_path):
    stack = st.Stack(tmp_path, STACKTRAIL_STORE="elasticsearch")
    res = stack.run(("stack", "install"), check=False)
    assert res.returncode != 0
    assert "STACKTRAIL_STORE=elasticsearch" in stack.output


# --- style -----------------------------------------------------------------

def test_bashate_passes_with_devstacks_settings():
    bashate = (shutil.which("bashate") or
               str(Path(sys.executable).parent / "bashate"))
    if not Path(bashate).exists():
        pytest.skip("bashate is not installed (the test extra has it)")
    # devstack's tox.ini: bashate -v -iE006 -eE005,E042
    res = subprocess.run([bashate, "-v", "-iE006", "-eE005,E042",
                          *map(str, st.PLUGIN_FILES)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "error" not in res.stdout.lower()
