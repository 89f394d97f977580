"""The ``[profiler]`` option group.

osprofiler registers options of the same names in the same group (Zaqar,
Nova and Cinder all load it).  oslo.config refuses a second, different
definition of a name, so the options osprofiler also defines compare equal
to osprofiler's option of that name and type: whichever library registers
first owns the option and the other's registration is a no-op, in either
order, and a config file written for osprofiler keeps its meaning.
"""

from oslo_config import cfg

from stacktrail.common import flags

GROUP = cfg.OptGroup(
    "profiler", title="Request tracing (stacktrail, osprofiler-compatible)",
    help="Trace requests across services; see the stacktrail README.")


class _SharedWithOsprofiler:
    """Equal to any option of the same name and kind (osprofiler's twin).

    Being a subclass of the oslo.config type makes Python try our ``__ne__``
    first even when osprofiler's option is the left operand.
    """

    def __eq__(self, other):
        return (isinstance(other, cfg.Opt) and other.name == self.name
                and _kind(other) is _kind(self))

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = cfg.Opt.__hash__


def _kind(opt):
    """The oslo.config class of an option (BoolOpt, StrOpt, ...)."""
    return next(k for k in type(opt).__mro__ if k.__module__ == cfg.__name__)


def _shared(kind):
    return type("Shared" + kind.__name__, (_SharedWithOsprofiler, kind), {})


SharedBoolOpt = _shared(cfg.BoolOpt)
SharedStrOpt = _shared(cfg.StrOpt)
SharedIntOpt = _shared(cfg.IntOpt)
SharedFloatOpt = _shared(cfg.FloatOpt)

# Names osprofiler 4.x also defines: same names and types, our own words.
OSPROFILER_OPTS = [
    SharedBoolOpt("enabled", default=False, mutable=True,
                  deprecated_name="profiler_enabled",
                  help="Switch tracing on for the services on this node. "
                       "Off, a trace started elsewhere has no part from "
                       "this service."),
    SharedStrOpt("hmac_keys", secret=True, mutable=True,
                 help="Comma-separated secret keys. A request whose trace "
                      "header is signed with one of them is traced; the "
                      "first key signs traces started here. Keys that look "
                      "like defaults (SECRET_KEY) are refused unless "
                      "allow_insecure_hmac_keys is set."),
    SharedStrOpt("connection_string", default="messaging://",
                 help="Where trace points go: agent:///path.sock (the "
                      "per-node agent), redis://, redissentinel://, "
                      "mongodb://, postgresql://, mysql+pymysql://, "
                      "sqlite:///, file:///path, messaging://, otlp://, "
                      "or noop://."),
    SharedStrOpt("es_doc_type", default="notification",
                 help="Accepted for osprofiler configs; unused here."),
    SharedStrOpt("es_scroll_time", default="2m",
                 help="Accepted for osprofiler configs; unused here."),
    SharedIntOpt("es_scroll_size", default=10000,
                 help="Accepted for osprofiler configs; unused here."),
    SharedFloatOpt("socket_timeout", default=0.1,
                   help="Socket timeout in seconds for Redis Sentinel "
                        "connections."),
    SharedStrOpt("sentinel_service_name", default="mymaster",
                 help="Name of the Redis master the sentinels watch."),
    SharedBoolOpt("filter_error_trace", default=False,
                  help="Also index traces with an error apart, so "
                       "'trace list --error-trace' finds them quickly."),
]


def flag_opt(flag):
    """The ``[profiler]`` option of a ``common.flags.Flag``."""
    kind = SharedBoolOpt if flag.shared else cfg.BoolOpt
    return kind(flag.name, default=flag.default, mutable=True,
                help=flag.help)


FLAG_OPTS = [flag_opt(flag) for flag in flags.BUILTIN]

STACKTRAIL_OPTS = [
    cfg.BoolOpt("rpc_signed_trace_info", default=False, mutable=True,
                help="Send RPC receivers a signed token instead of "
                     "osprofiler's plaintext HMAC key in the request "
                     "context. Only when every receiver runs stacktrail."),
    cfg.BoolOpt("show_sql_parameters", default=False, mutable=True,
                help="Record SQL parameters with statements. They may hold "
                     "secrets; leave off outside a test cloud."),
    cfg.ListOpt("redact_names", default=[], mutable=True,
                help="More parameter names whose values are hidden in "
                     "recorded URLs (query and path parameters, the path "
                     "segment after a segment of that name) and in logged "
                     "connection strings, matched as whole words of a "
                     "name, in addition to the built-in list (token, "
                     "password, secret, key, auth, signature, credential, "
                     "session, jwt, sig, pwd, pass, otp, code...; see "
                     "stacktrail.common.redact)."),
    cfg.FloatOpt("sampling_rate", default=0.0, min=0.0, max=1.0,
                 mutable=True,
                 help="Fraction of untriggered requests traced by this "
                      "service (head sampling for always-on tracing)."),
    cfg.FloatOpt("max_triggered_traces_per_second", default=100.0, min=0.0,
                 mutable=True,
                 help="Per-process limit on traces started by a signed "
                      "osprofiler header; 0 means no limit (RPC messages "
                      "continuing a trace are not counted). "
                      "A trace's first request decides for its later "
                      "ones: those of a trace let in join it (borrowing "
                      "up to a second's budget), those of a trace refused "
                      "stay out, so no trace is cut in half. "
                      "Traceparent and sampled traces have their own "
                      "budget, max_sampled_traces_per_second."),
    cfg.FloatOpt("max_sampled_traces_per_second", default=100.0, min=0.0,
                 mutable=True,
                 help="Per-process limit on traces started without a "
                      "signature: a trusted traceparent or local sampling. "
                      "A budget of its own, so unauthenticated requests "
                      "never use up max_triggered_traces_per_second; 0 "
                      "means no limit."),
    cfg.BoolOpt("rpc_accept_plaintext_key", default=True, mutable=True,
                help="Join the trace of an RPC message that carries "
                     "osprofiler's plaintext trace_info when its hmac_key "
                     "is one of hmac_keys (what osprofiler peers send). "
                     "Off: only a signed, unexpired trace_token (or the "
                     "traceparent rules) starts a trace from RPC; use with "
                     "rpc_signed_trace_info once no osprofiler peer is "
                     "left."),
    cfg.IntOpt("signed_token_ttl", default=600, min=1, mutable=True,
               help="Seconds a signed RPC trace_token stays valid after it "
                    "is sent (rpc_signed_trace_info); receivers refuse "
                    "older ones, and ones claiming a longer life than their "
                    "own setting. Keep node clocks in sync."),
    cfg.BoolOpt("trust_traceparent", default=False, mutable=True,
                help="Continue a sampled W3C traceparent from an "
                     "OpenTelemetry client. Off, an unsigned traceparent "
                     "never starts a trace, but a sampled-here trace joins "
                     "the caller's trace id."),
    cfg.ListOpt("propagation", default=["osprofiler", "w3c"],
                item_type=cfg.types.String(choices=["osprofiler", "w3c"]),
                mutable=True,
                help="Headers written on outgoing calls: osprofiler "
                     "(X-Trace-Info/X-Trace-HMAC), w3c (traceparent)."),
    cfg.BoolOpt("allow_insecure_hmac_keys", default=False, mutable=True,
                help="Accept default-looking HMAC keys such as SECRET_KEY "
                     "(test clouds only)."),
    cfg.IntOpt("retention", default=0, min=0,
               help="Seconds a store keeps a trace (Redis TTL, MongoDB TTL "
                    "index); 0 keeps traces until removed."),
    cfg.IntOpt("buffer_size", default=10000, min=1,
               help="Trace points held in memory for the background "
                    "flusher; when full, points are dropped and counted."),
    cfg.FloatOpt("store_timeout", default=5.0, min=0.1,
                 help="Seconds one call to the trace store (connect, read "
                      "or write) may take before it is given up: the "
                      "flusher counts the batch and moves on, and "
                      "'stacktrail trace' commands fail with one line. "
                      "Used by the redis, SQL and MongoDB stores."),
    cfg.FloatOpt("status_interval", default=60.0, min=0.0,
                 help="Seconds between two reports of the flusher's "
                      "counters (points written, dropped by reason): a log "
                      "line when points were dropped meanwhile, and the "
                      "status file when status_dir is set. 0 turns both "
                      "off."),
    cfg.StrOpt("status_dir", default="",
               help="Directory where each traced process keeps a JSON "
                    "file of its flusher's counters (<service>-<pid>.json), "
                    "read by 'stacktrail status'. Empty: no file."),
    cfg.BoolOpt("otel_bridge", default=False, mutable=True,
                help="Make stacktrail OpenTelemetry's tracer provider "
                     "(needs stacktrail[otel]): spans started through the "
                     "OpenTelemetry API become spans of the stacktrail "
                     "trace, OpenTelemetry's current span is stacktrail's, "
                     "and oslo.messaging's and oslo.middleware's own spans "
                     "are merged into the rpc and wsgi spans. When the "
                     "service set up another provider first, that one is "
                     "kept and only the trace context is shared."),
]

ALL_OPTS = OSPROFILER_OPTS + FLAG_OPTS + STACKTRAIL_OPTS

OTLP_GROUP = cfg.OptGroup("profiler_otlp",
                          title="OTLP export (otlp:// and otlps://)")
OTLP_OPTS = [
    SharedStrOpt("service_name_prefix",
                 help="Prefix of the OpenTelemetry service.name of spans."),
    cfg.StrOpt("headers", secret=True,
               help="Extra HTTP headers for the collector, "
                    "key=value,key2=value2 (e.g. an auth token)."),
    cfg.StrOpt("ca_file", help="CA bundle that signs the collector's "
                               "certificate (otlps://)."),
    cfg.BoolOpt("insecure", default=False,
                help="Skip verifying the collector's certificate."),
    cfg.FloatOpt("timeout", default=5.0, min=0.1,
                 help="Seconds one export request may take."),
    cfg.FloatOpt("span_timeout", default=300.0, min=1.0,
                 help="Seconds a span's start waits for its stop before it "
                      "is exported as unfinished."),
    cfg.IntOpt("max_open", default=10000, min=1,
               help="Starts held while waiting for their stop."),
]


def register_opts(conf, extra=()):
    """Register the groups on ``conf`` (idempotent, osprofiler-tolerant).

    ``extra``: more ``[profiler]`` options (an adapter's own); the flags
    third parties declared are always added.
    """
    profiler_opts = ALL_OPTS + [flag_opt(f) for f in flags.extra()] + \
        list(extra)
    for group, options in ((GROUP, profiler_opts), (OTLP_GROUP, OTLP_OPTS)):
        # A group object keeps its options' values: each conf needs its own.
        conf.register_group(cfg.OptGroup(group.name, title=group.title,
                                         help=group.help))
        conf.register_opts(options, group=group.name)
    _keep_mutable(conf, profiler_opts)


def _keep_mutable(conf, options):
    """Let SIGHUP change shared options even when another library
    (osprofiler, the service itself) registered them first.

    Their definitions are immutable, so a reload would ignore a new
    ``enabled`` or ``hmac_keys``; the option that serves both takes ours.
    """
    for opt in options:
        if opt.mutable and isinstance(opt, _SharedWithOsprofiler):
            conf._get_opt_info(opt.dest, GROUP.name)["opt"].mutable = True


def set_defaults(conf, **defaults):
    """Register the options and change the defaults of those given.

    Accepts osprofiler's keywords (enabled, trace_sqlalchemy, hmac_keys,
    connection_string, es_*, socket_timeout, sentinel_service_name) and
    any stacktrail option name; None leaves a default alone.
    """
    register_opts(conf)
    for name, value in defaults.items():
        if value is not None:
            conf.set_default(name, value, group=GROUP.name)


def list_opts():
    """osprofiler's ``list_opts``: the core options (``oslo-config-generator
    --namespace stacktrail`` adds every adapter's, see ``adapters``)."""
    return [(GROUP, ALL_OPTS + [flag_opt(f) for f in flags.extra()]),
            (OTLP_GROUP, OTLP_OPTS)]


def _conf(conf):
    if conf is None:
        conf = cfg.CONF
    register_opts(conf)
    return conf


def is_trace_enabled(conf=None):
    return bool(_conf(conf).profiler.enabled)


def is_db_trace_enabled(conf=None):
    group = _conf(conf).profiler
    return bool(group.enabled and group.trace_sqlalchemy)


def enable_web_trace(conf=None):
    from stacktrail import web
    group = _conf(conf).profiler
    if group.enabled:
        web.enable(group.hmac_keys)


def disable_web_trace(conf=None):
    from stacktrail import web
    if _conf(conf).profiler.enabled:
        web.disable()
