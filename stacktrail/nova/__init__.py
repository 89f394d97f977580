"""The Nova adapter: a server boot traced from Nova's configuration.

Loaded as ``nova`` from the ``stacktrail.adapters`` entry points when a
Nova service parses a configuration that names stacktrail's config source
(``etc/nova/stacktrail.conf``), with or without osprofiler installed.
Nova decorates its RPC APIs, managers and ``compute.api.API`` for
osprofiler at import time, before it reads ``[profiler] enabled``, so in a
real service they never trace; the declarations below trace them once the
configuration is read (what only records, at the process's first trace),
gated by the live flags (SIGHUP switches them; off, a call costs what an
untraced call costs):

* ``wsgi``: the API's ``osprofiler`` paste filter (``nova.profiler``) is
  stacktrail's, osprofiler installed or not;
* ``compute_api`` for ``nova.compute.api.API``;
* ``rpc`` on both sides of every call and cast (``trace_rpc``), carried in
  the request context below Nova's serializer, so it survives serializers
  that drop osprofiler's ``trace_info``; each message records as the
  service whose manager serves it (``nova-conductor``, ``nova-scheduler``,
  ``nova-compute``), also when they share one process;
* ``driver`` for every call into the virt driver (``trace_drivers``);
* ``db`` for every statement of every engine, cell databases included
  (``trace_sqlalchemy``);
* ``http`` for the calls to Placement, Neutron, Glance and Cinder
  (``trace_requests``), and ``neutron_api``/``nova_image`` for Nova's
  client classes of those services;
* work handed to Nova's thread pools (futurist executors) stays in the
  trace of the request that started it.
"""

from stacktrail import web
from stacktrail.adapters import Adapter
from stacktrail.adapters import toolkit
from stacktrail.common import context

API = "osapi_compute"


class ApiFilter(web.WsgiMiddleware):
    """``nova.profiler:WsgiMiddleware``, the filter Nova's api-paste.ini
    names: stacktrail's, recording as the API."""

    def __init__(self, application, **kwargs):
        kwargs.setdefault("service", API)
        super().__init__(application, **kwargs)


def api_filter(original):
    return ApiFilter


# Classes Nova hands to osprofiler at import time whose calls are the RPC
# spans here: osprofiler's wrappers (when it was installed and enabled at
# import) would record their arguments, passwords included.
RPC_CLASSES = (
    "nova.compute.manager:ComputeManager",
    "nova.conductor.manager:ConductorManager",
    "nova.conductor.manager:ComputeTaskManager",
    "nova.scheduler.manager:SchedulerManager",
    "nova.compute.rpcapi:ComputeAPI",
    "nova.conductor.rpcapi:ConductorAPI",
    "nova.conductor.rpcapi:ComputeTaskAPI",
    "nova.scheduler.rpcapi:SchedulerAPI",
)


class NovaAdapter(Adapter):
    name = "nova"
    takeover = True
    wiring = (
        toolkit.Serves("nova.service:Service"),
        toolkit.Replace("nova.profiler:WsgiMiddleware", api_filter),
        toolkit.TraceClass("nova.compute.api:API", "compute_api"),
        toolkit.TraceClass("nova.network.neutron:API", "neutron_api",
                           flag="trace_requests"),
        toolkit.TraceClass("nova.image.glance:API", "nova_image",
                           flag="trace_requests"),
        toolkit.TraceCreated("nova.virt.driver:ComputeDriver",
                             toolkit.DRIVER),
        toolkit.Replace("futurist:ThreadPoolExecutor.submit",
                        context.carried_submit),
        toolkit.Replace("futurist:GreenThreadPoolExecutor.submit",
                        context.carried_submit),
    ) + tuple(toolkit.Untrace(path) for path in RPC_CLASSES)
