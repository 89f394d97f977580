"""Switch tracing on from a service's configuration alone.

``init_from_conf`` is osprofiler's entry point.  It hands over to the
process's one runtime (``stacktrail.runtime``), which also applies every
integration flag and keeps one reload hook, so a SIGHUP config reload
changes sampling, keys and flags without a restart, however often the
service calls it.  It never raises: a misconfigured tracer logs one line
and the service runs untraced.
"""

from stacktrail import runtime


def init_from_conf(conf, context, project, service, host, **kwargs):
    """Create the notifier and apply ``[profiler]`` of ``conf``."""
    runtime.activate(conf, project=project, service=service, host=host,
                     context=context, **kwargs)
