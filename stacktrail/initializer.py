"""Switch tracing on from a service's configuration alone.

``init_from_conf`` is osprofiler's entry point; it also applies every
integration flag and registers a mutate hook, so a SIGHUP config reload
changes sampling, keys and flags without a restart.  It never raises: a
misconfigured tracer logs one line and the service runs untraced.
"""

import logging

from stacktrail import notifier
from stacktrail import opts
from stacktrail import web
from stacktrail.common import settings

LOG = logging.getLogger(__name__)


def init_from_conf(conf, context, project, service, host, **kwargs):
    """Create the notifier and apply ``[profiler]`` of ``conf``."""
    target = dict(context=context, project=project, service=service,
                  host=host, conf=conf, **kwargs)
    try:
        opts.register_opts(conf)
        _apply(conf, target)
        conf.register_mutate_hook(lambda conf, changed: _reload(conf, target))
    except Exception as exc:
        LOG.error("stacktrail: tracing disabled, bad [profiler] "
                  "configuration: %s", exc)


def _apply(conf, target):
    live = settings.load(conf)
    if live.enabled:
        notifier.set(notifier.create(conf.profiler.connection_string,
                                     **target))
        web.enable(conf.profiler.hmac_keys)
        if not live.validation_keys:
            LOG.warning("stacktrail: no usable [profiler] hmac_keys: signed "
                        "trace headers are ignored; only sampling_rate or "
                        "trust_traceparent start traces here")
    else:
        web.disable()
    _apply_integrations(live.flags)


def _reload(conf, target):
    try:
        _apply(conf, target)
    except Exception as exc:
        LOG.error("stacktrail: kept the previous tracing settings, bad "
                  "[profiler] configuration: %s", exc)


def _apply_integrations(flags):
    try:
        from stacktrail import integrations
    except ImportError:
        return
    try:
        integrations.apply(flags)
    except Exception:
        LOG.exception("stacktrail: could not apply the trace_* flags")
