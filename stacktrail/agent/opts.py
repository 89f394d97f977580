"""Options of stacktrail-agent: the ``[agent]`` group.

Registered on a private ``ConfigOpts`` (never the global CONF), and as
command-line flags too (``--agent-listen``, ``--agent-connection_string``,
...).  Options marked mutable are re-read on SIGHUP.
"""

import os

from oslo_config import cfg

GROUP = "agent"
DEFAULT_CONFIG = "/etc/stacktrail/agent.conf"

AGENT_OPTS = [
    cfg.StrOpt("listen", default="unix:///run/stacktrail/agent.sock",
               help="Where services send trace points: unix:///abs/path.sock "
                    "(recommended), tcp://127.0.0.1:PORT or "
                    "udp://127.0.0.1:PORT. Only loopback addresses are "
                    "accepted. Services use the same address as "
                    "connection_string=agent:///abs/path.sock or "
                    "agent://127.0.0.1:PORT[?transport=udp]."),
    cfg.MultiStrOpt("connection_string", default=[], mutable=True,
                    help="A store the agent writes to, any stacktrail "
                         "driver: redis://, redissentinel://, mongodb://, "
                         "mysql+pymysql://, postgresql://, file://, "
                         "otlp://collector:4318. Repeat for several "
                         "backends; each has its own delivery state."),
    cfg.StrOpt("spool_dir", default="/var/lib/stacktrail-agent",
               help="Directory of the on-disk spool (segment files and "
                    "acknowledged offsets) and of status.sock."),
    cfg.IntOpt("spool_max_bytes", default=1 << 30, min=1 << 20,
               mutable=True,
               help="Disk space the spool may use; past it new points are "
                    "dropped and counted (reason spool_full)."),
    cfg.FloatOpt("spool_fsync_interval", default=1.0, min=0.0,
                 help="Seconds between fsync of the spool: what a power "
                      "loss may cost. 0 syncs every received frame. A "
                      "crash of the agent itself loses nothing either way."),
    cfg.IntOpt("batch_size", default=2000, min=1, mutable=True,
               help="Points per write to a backend."),
    cfg.FloatOpt("flush_interval", default=0.2, min=0.0, mutable=True,
                 help="Seconds a partial batch waits for more points."),
    cfg.FloatOpt("retry_max_interval", default=10.0, min=0.05, mutable=True,
                 help="Longest pause between retries of a failing backend "
                      "(exponential backoff with jitter up to this)."),
    cfg.FloatOpt("shutdown_timeout", default=10.0, min=0.0, mutable=True,
                 help="On SIGTERM, seconds to drain to the backends; what "
                      "is left stays in the spool for the next start."),
    cfg.IntOpt("max_frame_bytes", default=1 << 20, min=1024,
               help="Largest frame accepted; larger input is dropped "
                    "(reason oversized)."),
    cfg.IntOpt("nice", default=10, min=0, max=19,
               help="CPU priority the agent gives itself at start (the "
                    "nice value, raised to this, never lowered), and the "
                    "kernel's batch scheduling: on a busy node the "
                    "services it serves run first and the agent catches "
                    "up when a core is free (points wait in the spool "
                    "meanwhile). 0: the priority it was started with."),
    cfg.StrOpt("metrics_listen", default="",
               help="Optional loopback HOST:PORT serving Prometheus text "
                    "on /metrics and JSON on /status."),
    cfg.StrOpt("socket_group", default="",
               help="Group whose members (the users the OpenStack services "
                    "run as) may use the agent: it owns the Unix listen "
                    "socket and status.sock (both mode 0660), and spool_dir "
                    "becomes 0750 with this group so that `stacktrail agent "
                    "status` works for them. Empty: the agent's own user "
                    "only."),
    cfg.StrOpt("socket_mode", default="",
               help="Octal file mode of the Unix listen socket. Empty: "
                    "0660 with socket_group, else 0600. A mode that lets "
                    "every local user write is accepted with a warning."),
    cfg.IntOpt("max_connections", default=1024, min=1,
               help="Service connections held at once; never more than the "
                    "descriptor limit leaves room for (the agent raises its "
                    "soft RLIMIT_NOFILE to the hard limit). When full, the "
                    "connection idle the longest is closed for a new one; "
                    "refusals are counted (refused: too_many_connections)."),
    cfg.FloatOpt("idle_timeout", default=300.0, min=0.0,
                 help="Seconds a connection may send nothing before it is "
                      "closed (services reconnect on their next batch); 0: "
                      "never."),
    cfg.FloatOpt("frame_timeout", default=30.0, min=0.0,
                 help="Seconds a sender may take to finish a frame it began; "
                      "slower connections are closed (refused: slow_frame); "
                      "0: no limit."),
    cfg.IntOpt("max_buffered_bytes", default=64 << 20, min=1 << 16,
               help="Memory for partial frames of all connections together; "
                    "past it the connections waiting longest are closed "
                    "(refused: memory_limit)."),
    cfg.FloatOpt("log_interval", default=60.0, min=0.0,
                 help="At most one log line per kind of refusal or error in "
                      "this many seconds (the counters count every one)."),
    cfg.IntOpt("dead_letter_max_bytes", default=16 << 20, min=0,
               mutable=True,
               help="Size limit of each backend's dead-letter file in "
                    "spool_dir (points a backend refused for their "
                    "content); past it such points are dropped and counted "
                    "(poison_dropped)."),
    # sampling policy (stacktrail.agent.policy)
    cfg.StrOpt("sampling_policy_file", default="",
               help="A JSON sampling policy the agent re-reads every "
                    "second and serves to the services of its node on "
                    "<listen socket>.policy (change it with `stacktrail "
                    "sampling set`). Empty: services use their [profiler] "
                    "sampling options."),
    cfg.StrOpt("sampling_policy_store", default="",
               help="A redis:// URL holding the sampling policy (key "
                    "stacktrail:sampling_policy) for every agent that "
                    "points at it; instead of sampling_policy_file."),
    # tail sampling (stacktrail.agent.tail)
    cfg.BoolOpt("tail_sampling", default=False,
                help="Hold each trace until it ends and write only those "
                     "worth keeping: an error, a span slower than the "
                     "policy's slow_ms, an always_keep rule, or the "
                     "policy's rate. Services then record every request "
                     "(rate 1)."),
    cfg.FloatOpt("tail_timeout", default=5.0, min=0.1,
                 help="Seconds a trace is held at most before it is "
                      "decided; longer requests are decided on what "
                      "arrived so far."),
    cfg.FloatOpt("tail_settle", default=1.0, min=0.0,
                 help="Seconds to wait after a trace's root span ended, "
                      "for other nodes' agents to say they keep it."),
    cfg.IntOpt("tail_max_traces", default=100000, min=1,
               help="Traces held at once; past it the oldest are decided "
                    "early."),
    cfg.IntOpt("tail_max_points", default=2000000, min=1,
               help="Points held at once; past it the oldest traces are "
                    "decided early."),
    cfg.StrOpt("tail_decision_store", default="",
               help="redis:// URL where agents share which traces they "
                    "keep, so a trace is kept whole on every node. "
                    "Default: the first redis:// connection_string."),
]


def list_opts():
    """For oslo-config-generator (entry point ``stacktrail.agent``)."""
    return [(GROUP, AGENT_OPTS)]


def make_conf(argv=None, cli=True, config_files=None):
    """A private ConfigOpts with the agent's options, parsed from argv."""
    conf = cfg.ConfigOpts()
    if cli:
        conf.register_cli_opts(AGENT_OPTS, group=GROUP)
    else:
        conf.register_opts(AGENT_OPTS, group=GROUP)
    if config_files is None:
        config_files = [DEFAULT_CONFIG] if os.path.exists(DEFAULT_CONFIG) \
            else []
    from stacktrail import __version__
    conf(args=list(argv or []), project="stacktrail",
         prog="stacktrail-agent", version=__version__,
         default_config_files=config_files)
    return conf


def socket_mode(text, group=""):
    if not text:
        return 0o660 if group else 0o600
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError("socket_mode must be octal like 0600, got %r"
                         % text) from None


def socket_gid(name):
    """The gid of ``socket_group`` (None when unset); ValueError if no such
    group exists."""
    if not name:
        return None
    import grp
    try:
        gid = grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError("socket_group %r: no such group (create it: "
                         "groupadd --system %s)" % (name, name)) from None
    # Only root may give a file to a group it is not in.
    if os.geteuid() != 0 and gid != os.getegid() \
            and gid not in os.getgroups():
        raise ValueError("socket_group %r: the agent's user is not in it "
                         "(usermod -aG %s USER, or run the agent with "
                         "Group=%s)" % (name, name, name))
    return gid


def status_socket_path(spool_dir):
    """The agent's status endpoint: found from the config file alone."""
    return os.path.join(spool_dir, "status.sock")
