"""Run the devstack plugin's stages without a cloud.

``Stack(tmp_path, ...)`` lays out what devstack would have on disk when the
plugin's stages run (the conf files of the enabled services, tempest.conf,
tempest's venv pip), with every path under ``tmp_path``, then ``run(...)``
sources ``fake_devstack.sh`` (devstack's functions, faithful or recording)
and the plugins in a bash process under ``errexit`` and ``nounset``, as
stack.sh, unstack.sh and clean.sh do::

    stack = Stack(tmp_path, services=DEFAULT_SERVICES)
    stack.run(("stack", "install"), ("stack", "post-config"))
    stack.ini("nova")["profiler"]["enabled"]      # 'True'
    stack.calls("run_process")                    # [('stacktrail-agent', cmd)]
"""

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAKE = HERE / "fake_devstack.sh"
PLUGIN_FILES = [ROOT / "devstack" / "plugin.sh",
                ROOT / "devstack" / "settings",
                ROOT / "devstack" / "lib" / "stacktrail"]

# What a default devstack with zaqar's plugin enables.
DEFAULT_SERVICES = ("key,n-api,n-api-meta,n-cond,n-sch,n-cpu,n-novnc,"
                    "placement-api,g-api,c-api,c-sch,c-vol,c-bak,q-svc,"
                    "q-agt,mysql,rabbit,tempest")
STACK = (("stack", "install"), ("stack", "post-config"),
         ("stack", "test-config"))

# A stand-in for zaqar's devstack plugin: its settings, and the lines of
# its post-config that create zaqar.conf (configure_zaqar).
ZAQAR_SETTINGS = """\
ZAQAR_CONF_DIR=${ZAQAR_CONF_DIR:-/etc/zaqar}
ZAQAR_CONF=$ZAQAR_CONF_DIR/zaqar.conf
enable_service zaqar-websocket zaqar-wsgi
"""
ZAQAR_PLUGIN = """\
if [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    [ ! -d $ZAQAR_CONF_DIR ] && sudo mkdir -m 755 -p $ZAQAR_CONF_DIR
    if [[ -n "${FAKE_ZAQAR_TEMPLATE:-}" ]]; then
        cp "$FAKE_ZAQAR_TEMPLATE" "$ZAQAR_CONF"
    fi
    iniset $ZAQAR_CONF DEFAULT unreliable True
    iniset $ZAQAR_CONF DEFAULT admin_mode True
fi
"""

# Conf files devstack has written before post-config: name -> (variable,
# path under etc/).  nova-cpu.conf is copied from nova.conf later, when
# nova-compute starts.
CONFS = {
    "nova": ("NOVA_CONF", "nova/nova.conf"),
    "nova_cell1": (None, "nova/nova_cell1.conf"),
    "cinder": ("CINDER_CONF", "cinder/cinder.conf"),
    "keystone": ("KEYSTONE_CONF", "keystone/keystone.conf"),
    "glance": ("GLANCE_API_CONF", "glance/glance-api.conf"),
    "neutron": ("NEUTRON_CONF", "neutron/neutron.conf"),
    "placement": ("PLACEMENT_CONF", "placement/placement.conf"),
    "heat": ("HEAT_CONF", "heat/heat.conf"),
}
CONF_TEXT = "[DEFAULT]\ndebug = True\n\n[database]\nconnection = sqlite://\n"
TEMPEST_TEXT = ("[DEFAULT]\nlog_file = tempest.log\n\n"
                "[auth]\nuse_dynamic_credentials = True\n")


class StageFailed(AssertionError):
    pass


class Stack:
    def __init__(self, tmp_path, services=DEFAULT_SERVICES,
                 plugins=("stacktrail", "zaqar"), adapters="cinder nova zaqar",
                 extra_confs=(), **settings):
        self.root = Path(tmp_path)
        self.etc = self.root / "etc"
        self.dest = self.root / "opt" / "stack"
        self.data = self.dest / "data"
        self.bin = self.root / "venv" / "bin"
        self.calls_log = self.root / "calls.log"
        for path in (self.etc, self.data, self.bin):
            path.mkdir(parents=True, exist_ok=True)
        self.calls_log.touch()
        self.plugin_dirs = [self._plugin(name) for name in plugins]
        for _, rel in CONFS.values():
            self.write_conf(rel)
        for rel in extra_confs:
            self.write_conf(rel)
        tempest = self.dest / "tempest"
        pip = tempest / ".tox" / "tempest" / "bin" / "pip"
        pip.parent.mkdir(parents=True)
        pip.write_text("#!/bin/bash\nprintf 'tempest-pip' >> %s\n"
                       "printf '\\t%%s' \"$@\" >> %s\necho >> %s\n"
                       % ((self.calls_log,) * 3))
        pip.chmod(0o755)
        self.tempest_conf = self.etc / "tempest" / "tempest.conf"
        self.tempest_conf.parent.mkdir()
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "FAKE_CALLS": str(self.calls_log),
            "FAKE_PLUGIN_DIRS": " ".join(str(d) for d in self.plugin_dirs),
            "FAKE_BIN_DIR": str(self.bin),
            "STACK_USER": _user(),
            "DEST": str(self.dest),
            "DATA_DIR": str(self.data),
            "SYSTEMD_DIR": str(self.root / "systemd"),
            "ENABLED_SERVICES": services,
            "NOVA_CONF_DIR": str(self.etc / "nova"),
            "NOVA_CPU_CONF": str(self.etc / "nova" / "nova-cpu.conf"),
            "ZAQAR_CONF_DIR": str(self.etc / "zaqar"),
            "TEMPEST_DIR": str(tempest),
            "TEMPEST_CONFIG": str(self.tempest_conf),
            "STACKTRAIL_CONF_DIR": str(self.etc / "stacktrail"),
            "STACKTRAIL_PYTHON": sys.executable,
        }
        for name, (var, rel) in CONFS.items():
            if var:
                self.env[var] = str(self.etc / rel)
        if adapters is not None:
            self.env["STACKTRAIL_ADAPTERS"] = adapters
        self.env.update({k: str(v) for k, v in settings.items()})
        self.output = ""

    # -- layout --
    def _plugin(self, name):
        if name == "stacktrail":
            return ROOT
        directory = self.root / "plugins" / name / "devstack"
        directory.mkdir(parents=True)
        if name != "zaqar":
            raise ValueError(name)
        (directory / "settings").write_text(ZAQAR_SETTINGS)
        (directory / "plugin.sh").write_text(ZAQAR_PLUGIN)
        return directory.parent

    def write_conf(self, rel, text=CONF_TEXT):
        path = self.etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def path(self, name):
        """The path of a conf by short name (``nova``, ``zaqar.d``...)."""
        if name in CONFS:
            return self.etc / CONFS[name][1]
        return {
            "nova-cpu": self.etc / "nova" / "nova-cpu.conf",
            "nova_cell2": self.etc / "nova" / "nova_cell2.conf",
            "zaqar": self.etc / "zaqar" / "zaqar.conf",
            "zaqar.d": self.etc / "zaqar" / "zaqar.conf.d" / "stacktrail.conf",
            "stacktrail": self.etc / "stacktrail" / "stacktrail.conf",
            "agent": self.etc / "stacktrail" / "agent.conf",
            "tempest": self.tempest_conf,
            "unit": (self.root / "systemd" /
                     "devstack@stacktrail-agent.service"),
        }[name]

    # -- running --
    def run(self, *phases, check=True, **env):
        """Run ``phases`` (tuples as passed to plugin.sh) in one bash
        process, as stack.sh runs its phases; the process's output."""
        lines = ["set -o errexit", "set -o nounset", "set -o pipefail",
                 "source %s" % FAKE, "load_plugin_settings"]
        for phase in phases:
            if phase == ("stack", "test-config"):
                # configure_tempest recreated tempest.conf just before.
                lines.append("printf '%s' > %s" % (TEMPEST_TEXT,
                                                   self.tempest_conf))
            lines.append("run_phase %s" % " ".join(phase))
        script = "\n".join(lines) + "\n"
        environ = dict(self.env, **{k: str(v) for k, v in env.items()})
        res = subprocess.run(["bash", "-c", script], env=environ,
                             capture_output=True, text=True, timeout=120,
                             cwd=self.root)
        self.output = res.stdout + res.stderr
        if check and res.returncode:
            raise StageFailed("stages %s failed (%d):\n%s" % (
                phases, res.returncode, textwrap.indent(self.output[-6000:],
                                                        "  ")))
        return res

    def stack(self, **env):
        return self.run(*STACK, **env)

    # -- results --
    def calls(self, name=None):
        """[(name, args...)] recorded, or [(args...)] of one name."""
        found = [tuple(line.split("\t")) for line in
                 self.calls_log.read_text().splitlines() if line]
        if name is None:
            return found
        return [c[1:] for c in found if c[0] == name]

    def ini(self, name):
        return read_ini(self.path(name))

    def key(self):
        return self.ini("stacktrail")["profiler"]["hmac_keys"]


def read_ini(path):
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       default_section="__none__")
    parser.optionxform = str
    parser.read_string(Path(path).read_text())
    return parser


def merged(*paths):
    """{section: {option: value}} of files read in this order (a later file
    wins), as oslo.config reads them."""
    result = {}
    for path in paths:
        for name, section in read_ini(path).items():
            if name != "__none__":
                result.setdefault(name, {}).update(section)
    return result


def _user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name
