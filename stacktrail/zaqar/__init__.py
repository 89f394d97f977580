"""The Zaqar adapter: a real zaqar-server traced from its configuration.

Loaded as ``zaqar`` from the ``stacktrail.adapters`` entry points when
Zaqar parses a configuration that names stacktrail's config source
(``etc/zaqar/stacktrail.conf``).  What it declares:

* Zaqar's own switches keep their names and meaning:
  ``trace_wsgi_transport`` (the ``wsgi`` spans), ``trace_message_store``
  and ``trace_management_store`` (storage controller and driver calls of
  each store); the generic ``trace_redis``, ``trace_mongodb``,
  ``trace_sqlalchemy`` and ``trace_pooling`` add the commands, statements
  and pool lookups under them.  Each is read per call, so a SIGHUP
  applies a change (zaqar-server gets a SIGHUP handler for that).
* Every storage controller and driver object is traced as it is created,
  named as Zaqar names it (``redis_message_controller``,
  ``sqlalchemy_queue_controller``, ``pooling_data_driver``), gated by the
  flag of the store it belongs to.  Zaqar's own ``trace_cls`` calls are
  left untraced, so nothing is recorded twice.
* Zaqar's storage loader returns None (and the server dies at start) when
  ``enabled = true`` and the store's flag is off: the adapter loads the
  driver the same way without that branch.
* The WSGI filter Zaqar builds in code follows the live flags instead of
  the values read at start.
* The websocket transport, which Zaqar leaves untraced: a request whose
  message ``headers`` carry trace headers is traced like an HTTP one
  (``zaqar.websocket``), its ``websocket`` span switched by
  ``trace_websocket_transport``.
"""

import logging
import signal
import threading

from stacktrail.adapters import Adapter
from stacktrail.adapters import toolkit
from stacktrail.common.flags import Flag
from stacktrail.integrations import pools
from stacktrail.zaqar import websocket

LOG = logging.getLogger(__name__)

MESSAGE_STORE = "trace_message_store"
MANAGEMENT_STORE = "trace_management_store"

# Zaqar's storage bases -> the resource word of its span names.
_RESOURCES = (("Queue", "queue"), ("Message", "message"), ("Claim", "claim"),
              ("Subscription", "subscription"), ("Topic", "topic"),
              ("PoolsBase", "pools"), ("CatalogueBase", "catalogue"),
              ("FlavorsBase", "flavors"))


def _backend(obj):
    """``redis`` of zaqar.storage.redis.messages, ``pooling`` of
    zaqar.storage.pooling."""
    parts = type(obj).__module__.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["zaqar", "storage"] \
        else parts[-1]


def _store_flag(driver):
    """The flag of the store a driver belongs to (data: message store)."""
    from zaqar.storage import base
    if isinstance(driver, base.ControlDriverBase):
        return MANAGEMENT_STORE
    return MESSAGE_STORE


def describe_controller(controller):
    from zaqar.storage import base
    resource = next((word for name, word in _RESOURCES
                     if isinstance(controller, getattr(base, name))), None)
    if resource is None:
        return None
    return ("%s_%s_controller" % (_backend(controller), resource),
            _store_flag(getattr(controller, "driver", None)))


def describe_driver(driver):
    backend = _backend(driver)
    if backend == "pipeline":
        return None  # a shell around the real driver, traced itself
    flag = _store_flag(driver)
    mode = "control" if flag == MANAGEMENT_STORE else "data"
    return "%s_%s_driver" % (backend, mode), flag


def load_storage_driver(original):
    """Zaqar's storage loader, minus the tracing branch that returns None."""
    def load(conf, cache, storage_type=None, control_mode=False,
             control_driver=None):
        from stevedore import driver
        from zaqar.common import errors
        mode = "control" if control_mode else "data"
        storage_type = storage_type or conf["drivers"][
            "management_store" if control_mode else "message_store"]
        args = (conf, cache) if control_driver is None else \
            (conf, cache, control_driver)
        try:
            return driver.DriverManager(
                "zaqar.%s.storage" % mode, storage_type,
                invoke_on_load=True, invoke_args=args).driver
        except Exception as exc:
            LOG.exception('Failed to load "%s" driver for "zaqar.%s.storage"',
                          storage_type, mode)
            raise errors.InvalidDriver(exc)
    return load


def wsgi_tracer(original):
    """The filter Zaqar builds in code, following the live flags."""
    def install_wsgi_tracer(app, conf):
        from stacktrail import web
        return web.WsgiMiddleware(app)
    return install_wsgi_tracer


class ZaqarAdapter(Adapter):
    name = "zaqar"
    flags = (
        Flag("trace_wsgi_transport", False,
             "Zaqar: trace HTTP requests (the wsgi spans).", shared=True),
        Flag(MESSAGE_STORE, False,
             "Zaqar: trace message store controller and driver calls.",
             shared=True),
        Flag(MANAGEMENT_STORE, False,
             "Zaqar: trace management store controller and driver calls.",
             shared=True),
        Flag(websocket.FLAG, True,
             "Zaqar: trace websocket requests that carry trace headers "
             "(the websocket spans)."),
    )
    aliases = {"trace_wsgi": "trace_wsgi_transport"}
    takeover = True
    wiring = (
        toolkit.Replace("zaqar.storage.utils:load_storage_driver",
                        load_storage_driver),
        toolkit.Replace(
            "zaqar.transport.middleware.profile:install_wsgi_tracer",
            wsgi_tracer),
        toolkit.TraceCreated("zaqar.storage.base:ControllerBase",
                             describe_controller),
        toolkit.TraceCreated("zaqar.storage.base:DriverBase",
                             describe_driver),
        toolkit.Replace("zaqar.storage.pooling:Catalog.lookup",
                        pools.traced("lookup", "catalogue")),
        toolkit.Replace("zaqar.storage.pooling:Catalog.register",
                        pools.traced("register", "catalogue")),
        toolkit.Replace("zaqar.storage.pooling:Catalog._pool_id",
                        pools.traced("pool_id", "catalogue")),
        toolkit.Replace("zaqar.api.handler:Handler.process_request",
                        websocket.process_request),
    )

    def setup(self, conf):
        if getattr(conf, "prog", None) == "zaqar-server":
            reload_on_sighup(conf)


def reload_on_sighup(conf):
    """zaqar-server has no SIGHUP handler (the signal ends it): reload the
    configuration files instead, as oslo.service does for other services.
    Left alone when something else already handles the signal."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
        return

    def handler(signum, frame):
        # Off the signal handler: reloading logs and takes locks.
        threading.Thread(target=conf.mutate_config_files,
                         name="stacktrail-reload", daemon=True).start()
    signal.signal(signal.SIGHUP, handler)
