"""The process's tracing runtime: one activation, however many callers.

A service reaches it three ways: ``initializer.init_from_conf`` (called by
the service, directly or through osprofiler's name once an adapter took it
over), the oslo.config source (``adapters.config_source``: tracing switched
on from a config file), and tests.  Whatever the order and however often:

* a ``conf`` gets its options registered, its project's adapter wired and
  one reload hook, once;
* each identity (project, service, host) gets one sink, so a second call
  never adds a notifier; the last one initialised is the process default,
  and ``sink_for`` gives the others to code that works for another service
  of the same process (``common.context.writer``);
* the live settings, the WSGI switch and the integrations follow the
  configuration at every call and on every reload (SIGHUP).

Nothing here raises into the service: a bad ``[profiler]`` section logs one
line and leaves it running untraced (or with its previous settings).
"""

import logging
import os
import threading

from stacktrail import adapters
from stacktrail import integrations
from stacktrail import notifier
from stacktrail import opts
from stacktrail import otel
from stacktrail import policy_client
from stacktrail import web
from stacktrail.common import context
from stacktrail.common import flags
from stacktrail.common import logtext
from stacktrail.common import settings

LOG = logging.getLogger(__name__)

_lock = threading.RLock()
_activations = {}   # id(conf) -> Activation
_problems = logtext.Problems()   # by id(conf)
_latest = None
# Integrations and adapter wiring that only record are held until the
# first trace of the process: a service that is never traced never runs
# them.
_traced = False


class Activation:
    """What the runtime holds for one ConfigOpts."""

    def __init__(self, conf):
        self.conf = conf
        self.adapter = None
        self.target = {}
        self.warned_keys = False
        self.connection_string = None   # [profiler]'s, read by _apply

    def flags(self):
        own = self.adapter.flags if self.adapter else ()
        return flags.every() + tuple(own)

    def aliases(self):
        return self.adapter.aliases if self.adapter else {}


def activate(conf, project=None, service=None, host=None, **kwargs):
    """Apply ``conf``'s ``[profiler]``: tracing on, off, or as it was.

    ``project``/``service``/``host`` name who records the points (they
    default to oslo.config's project and program and the ``host`` option);
    other keywords go to the store's driver, as with osprofiler.
    """
    global _latest
    with _lock:
        try:
            state = _activation(conf, project)
            state.target.update(_identity(conf, project, service, host))
            state.target.update(kwargs)
            _apply(state)
            _latest = state
            _problems.solved(id(conf))
            return state
        except Exception as exc:
            problem = logtext.one_line(exc)
        # Logged outside the handler: oslo.log would append the exception.
        # Once per problem: a service initialises tracing from several
        # places (its own call, the config source, each store).
        if _problems.new(id(conf), problem):
            LOG.error("stacktrail: tracing disabled, bad [profiler] "
                      "configuration: %s", problem)
        return _activations.get(id(conf))


def _activation(conf, project):
    state = _activations.get(id(conf))
    if state is None:
        opts.register_opts(conf)
        # One hook however often we are called: the set keeps it once.
        conf.register_mutate_hook(_reload)
        state = _activations[id(conf)] = Activation(conf)
    if state.adapter is None:
        state.adapter = adapters.load(project or _parsed(conf, "project"))
        if state.adapter is not None:
            opts.register_opts(conf, state.adapter.options())
            adapters.wire(state.adapter, conf, hold=not _traced)
    return state


def _parsed(conf, name):
    """What oslo.config was told when it parsed (``project``, ``prog``)."""
    return getattr(conf, name, None)


def _identity(conf, project, service, host):
    """Only what is known: a later, more precise call fills in the rest."""
    found = {"project": project, "service": service, "host": host}
    known = {k: v for k, v in found.items() if v}
    if not known.get("host") and "host" in conf:
        known["host"] = conf.host
    known.setdefault("project", _parsed(conf, "project"))
    known.setdefault("service", _parsed(conf, "prog"))
    known.setdefault("host", os.uname().nodename)
    return {k: v for k, v in known.items() if v}


def _apply(state):
    conf = state.conf
    _read_every_option(conf)
    live = settings.load(conf, state.flags(), state.aliases())
    state.connection_string = conf.profiler.connection_string
    if live.enabled:
        notifier.set(_sink(state, state.target))
        web.enable(conf.profiler.hmac_keys)
        if not live.validation_keys and not state.warned_keys:
            state.warned_keys = True
            LOG.warning("stacktrail: no usable [profiler] hmac_keys: signed "
                        "trace headers are ignored; only sampling_rate or "
                        "trust_traceparent start traces here")
    else:
        web.disable()
    waits = live.enabled and not _traced
    integrations.apply(_installed(state, live), hold=waits)
    context.first_trace = _first_trace if waits else None
    otel.apply(live.enabled and conf.profiler.otel_bridge)
    # the node agent's sampling policy, on top of the [profiler] values
    policy_client.follow(state.connection_string, state.target)


def _read_every_option(conf):
    """Each ``[profiler]`` value read once, so that one oslo.config refuses
    (``buffer_size = -5``) is said here, as a refused ``sampling_rate`` is,
    rather than a driver quietly taking its default."""
    group = conf.profiler
    for name in group:
        group[name]


def _installed(state, live):
    """{flag: integration on}: a flag's own value, or tracing itself for
    an integration that carries the trace through its library (switched
    on when the service imports that library, see ``integrations``)."""
    return {flag.name: live.flags.get(flag.name, False) or bool(
        live.enabled and flag.carries) for flag in state.flags()}


def _first_trace():
    """The hook ``profiler.init`` calls until it is done: the held
    integrations on, before the trace's first span.  A trace starting in
    another thread meanwhile waits here for them too."""
    global _traced
    with _lock:
        if not _traced:
            integrations.release()
            adapters.release()
            _traced = True
        context.first_trace = None


def _sink(state, target):
    # The connection string as _apply read it: every RPC message a
    # service of a shared process serves asks for its sink (sink_for),
    # and an oslo.config lookup costs more than the rest of that.
    return notifier.create(state.connection_string, conf=state.conf,
                           **target)


def _reload(conf, changed=None):
    """oslo.config's mutate hook (SIGHUP): apply the new values."""
    with _lock:
        state = _activations.get(id(conf))
        if state is None:
            return
        try:
            _apply(state)
        except Exception as exc:
            LOG.error("stacktrail: kept the previous tracing settings, bad "
                      "[profiler] configuration: %s", exc)


def sink_for(service, host=None, project=None):
    """The sink recording as ``service`` on ``host`` (None while tracing
    is off), for code working for one of several services in a process."""
    state = _latest
    if state is None or not settings.current.enabled:
        return None
    target = dict(state.target, service=service)
    if host:
        target["host"] = host
    if project:
        target["project"] = project
    return _sink(state, target)


def active():
    """True once any configuration was activated in this process."""
    return _latest is not None


def _writer_for(service, host):
    sink = sink_for(service, host)
    return sink.put if sink is not None else None


context.writer_for = _writer_for


def reset():
    """Forget every activation and undo the adapters' wiring (tests)."""
    global _latest, _traced
    with _lock:
        _traced = False
        context.first_trace = None
        _activations.clear()
        _problems.clear()
        _latest = None
        policy_client.stop()
        adapters.unwire_all()
