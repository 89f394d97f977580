"""``stacktrail agent install-unit``: the systemd unit for this install.

The unit is written from the agent's own config file, so that it fits it:

* ``ExecStart`` is the ``stacktrail-agent`` script of the Python that runs
  this command (a virtualenv's, pip's ``/usr/local/bin``, ...), never a
  guessed ``/usr/bin``;
* exit status 2 (a configuration the agent refuses) is not restarted:
  restarting cannot fix it, and a loop would bury the one line saying why;
* the filesystem is read-only (``ProtectSystem=strict``) except what the
  agent writes: its spool and socket directories, and the directories
  of its ``file://`` and ``sqlite://`` stores;
* the agent runs as ``--user`` with group ``--group``, which also owns the
  sockets (``--agent-socket_group``): the services' users join that group.
"""

import os
import shlex
import sys
import urllib.parse

from stacktrail.agent import opts
from stacktrail.agent import protocol

DEFAULT_OUTPUT = "/etc/systemd/system/stacktrail-agent.service"
DEFAULT_USER = "stacktrail"
DEFAULT_GROUP = "stacktrail"
EXAMPLE_SCRIPT = "/usr/local/bin/stacktrail-agent"

TEMPLATE = """\
# Written by `stacktrail agent install-unit` for {script}.
# Then: systemctl daemon-reload && systemctl enable --now stacktrail-agent
# Services on this node: [profiler] connection_string = {service_url}
# (their users in group {group}).

[Unit]
Description=stacktrail trace agent (per-node trace point collector)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={group}
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM drains to the backends for [agent] shutdown_timeout seconds;
# what is left stays in the spool and is replayed on the next start.
KillSignal=SIGTERM
TimeoutStopSec=30
# One descriptor per service connection (max_connections) plus spool
# files, backends and status endpoints.
LimitNOFILE=65536
Restart=on-failure
RestartSec=1
# Exit status 2: a configuration error, said in one line; not retried.
RestartPreventExitStatus=2
{directories}NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={protect_home}
PrivateTmp={private_tmp}

[Install]
WantedBy=multi-user.target
"""


def agent_script():
    """The real path of the ``stacktrail-agent`` next to this Python."""
    here = os.path.join(os.path.dirname(sys.executable), "stacktrail-agent")
    if os.access(here, os.X_OK):
        return os.path.realpath(here)
    import shutil
    found = shutil.which("stacktrail-agent")
    if found is None:
        raise ValueError("stacktrail-agent is not installed next to %s nor "
                         "on PATH" % sys.executable)
    return os.path.realpath(found)


def store_dirs(connection_strings):
    """The directories the ``file://`` and ``sqlite://`` stores write in:
    the file is created there, SQLite's journal files beside the
    database."""
    paths = []
    for text in connection_strings:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        path = urllib.parse.unquote(rest.split("?", 1)[0])
        if scheme.split("+")[0] == "sqlite":
            path = path[1:]   # sqlite:////abs/path.db
        elif scheme != "file":
            continue
        if not os.path.isabs(path):
            raise ValueError("%s: use an absolute path for a store the "
                             "agent writes (systemd starts it in /)" % text)
        paths.append(os.path.dirname(os.path.normpath(path)))
    return paths


def _directory_lines(conf):
    """StateDirectory/RuntimeDirectory where systemd can create them,
    ReadWritePaths for everything else the agent writes."""
    lines = []
    writable = []
    spool = os.path.normpath(conf.spool_dir)
    if os.path.dirname(spool) == "/var/lib":
        lines += ["StateDirectory=%s" % os.path.basename(spool),
                  "StateDirectoryMode=0750"]
    else:
        writable.append(spool)
    address = protocol.parse_listen(conf.listen)
    if address.kind == "unix":
        run_dir = os.path.dirname(address.target)
        if os.path.dirname(run_dir) == "/run":
            lines += ["RuntimeDirectory=%s" % os.path.basename(run_dir),
                      "RuntimeDirectoryMode=0755",
                      "RuntimeDirectoryPreserve=yes"]
        else:
            writable.append(run_dir)
    writable = list(dict.fromkeys(writable
                                  + store_dirs(conf.connection_string)))
    lines += ["ReadWritePaths=%s" % path for path in writable]
    return lines, writable


def _under(paths, *tops):
    return any(p == top or p.startswith(top + "/")
               for p in paths for top in tops)


def render(conf, config_files, script, user=DEFAULT_USER,
           group=DEFAULT_GROUP):
    """The unit's text for the agent options ``conf`` (``[agent]``) read
    from ``config_files``, and the directories it lets the agent write
    (they must exist at start)."""
    command = [script]
    for path in config_files:
        command += ["--config-file", os.path.abspath(path)]
    command += ["--agent-socket_group", group]
    lines, writable = _directory_lines(conf)
    home = ("/home", "/root", "/run/user")
    address = protocol.parse_listen(conf.listen)
    service_url = ("agent://" + address.target if address.kind == "unix"
                   else str(address).replace("tcp://", "agent://"))
    return writable, TEMPLATE.format(
        script=script, user=user, group=group, service_url=service_url,
        exec_start=" ".join(shlex.quote(part) for part in command),
        directories="".join(line + "\n" for line in lines),
        # the script or a store in a home directory: readable, or writable
        # through ReadWritePaths; /tmp stores are the host's own /tmp
        protect_home="read-only" if _under(writable + [script], *home)
        else "yes",
        private_tmp="no" if _under(writable, "/tmp", "/var/tmp") else "yes")


def example():
    """The packaged ``stacktrail-agent.service``: the unit for the default
    options and a pip install into /usr/local (``tools/genconfig.py``)."""
    conf = opts.make_conf([], cli=False, config_files=[]).agent
    return render(conf, [opts.DEFAULT_CONFIG], EXAMPLE_SCRIPT)[1]


def add_arguments(parser):
    parser.add_argument("--output", default=DEFAULT_OUTPUT, metavar="PATH",
                        help="where to write the unit (default %(default)s;"
                             " - for stdout)")
    parser.add_argument("--config-file", action="append", default=None,
                        metavar="FILE",
                        help="the agent's config file (repeatable; default "
                             "%s)" % opts.DEFAULT_CONFIG)
    parser.add_argument("--user", default=DEFAULT_USER,
                        help="the user the agent runs as (default "
                             "%(default)s)")
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help="the agent's group, which owns its sockets; "
                             "add the services' users to it (default "
                             "%(default)s)")


def run(args):
    config_files = args.config_file or [opts.DEFAULT_CONFIG]
    missing = [path for path in config_files if not os.path.exists(path)]
    if missing:
        raise ValueError("no config file %s: write the agent's [agent] "
                         "section first" % ", ".join(missing))
    conf = opts.make_conf([], cli=False, config_files=config_files).agent
    writable, text = render(conf, config_files, agent_script(), args.user,
                            args.group)
    for path in writable:
        if not os.path.isdir(path):
            print("note: create %s (writable by %s) before starting the "
                  "agent: ProtectSystem=strict lets it write only there"
                  % (path, args.user), file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.output)
    print("wrote %s; now: systemctl daemon-reload && systemctl enable --now "
          "%s" % (args.output, os.path.basename(args.output)))
    return 0
