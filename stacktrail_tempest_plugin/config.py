"""The ``[stacktrail_tracing]`` group of tempest.conf.

Named so that it never meets ``[stacktrail]``, the config-source group in
the services' own files.  The devstack plugin writes every option (its
test-config stage); against a standalone endpoint without keystone, write
them by hand::

    [stacktrail_tracing]
    auth_strategy = noauth
    endpoints = zaqar:http://127.0.0.1:8888
    hmac_key = <one of the services' [profiler] hmac_keys>
    connection_string = redis://127.0.0.1:6379/0
    services = zaqar
"""

from oslo_config import cfg

group = cfg.OptGroup(
    name="stacktrail_tracing", title="stacktrail: end-to-end tracing checks",
    help="What the services trace and where they store it.")

opts = [
    cfg.StrOpt("hmac_key", secret=True,
               help="One of the services' [profiler] hmac_keys: the tests "
                    "sign their requests with it."),
    cfg.StrOpt("connection_string", secret=True,
               help="The trace store the services (or their agent) write "
                    "to, as the stacktrail CLI reads it: redis://, "
                    "mongodb://, mysql+pymysql://, file://..."),
    cfg.ListOpt("services", default=[],
                help="The projects whose tracing is checked: zaqar, "
                     "cinder, nova.  The tests of the others skip."),
    cfg.IntOpt("poll_timeout", default=60, min=1,
               help="Seconds a test waits for its trace to be complete in "
                    "the store (the services' flushers and the agent write "
                    "asynchronously)."),
    cfg.FloatOpt("poll_interval", default=0.5, min=0.05,
                 help="Seconds between two reads of the store."),
    cfg.FloatOpt("settle_time", default=1.5, min=0.0,
                 help="A trace is read as complete once its expected spans "
                      "are there and nothing was added for this long."),
    cfg.BoolOpt("trust_traceparent", default=False,
                help="The services' [profiler] trust_traceparent: whether "
                     "a sampled W3C traceparent alone starts a trace."),
    cfg.FloatOpt("sampling_rate", default=0.0, min=0.0, max=1.0,
                 help="The services' [profiler] sampling_rate.  Above 0, an "
                      "unsigned request may be traced, so the checks that "
                      "one is not are skipped."),
    cfg.StrOpt("auth_strategy", default="keystone",
               choices=["keystone", "noauth"],
               help="keystone: the tests get a primary user's credentials "
                    "and the endpoints from the catalog; noauth: no "
                    "credentials, the endpoints below."),
    cfg.DictOpt("endpoints", default={},
                help="noauth: project -> endpoint URL, e.g. "
                     "zaqar:http://127.0.0.1:8888"),
    cfg.StrOpt("project_id", default="stacktrail-tempest",
               help="noauth: the project sent as X-Project-ID."),
    cfg.StrOpt("zaqar_catalog_type", default="messaging",
               help="Zaqar's service type in the catalog."),
    cfg.StrOpt("endpoint_type", default="publicURL",
               choices=["public", "admin", "internal", "publicURL",
                        "adminURL", "internalURL"],
               help="The catalog endpoint type the tests call."),
]


def register_opts(conf):
    conf.register_group(group)
    conf.register_opts(opts, group=group)
